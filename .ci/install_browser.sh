#!/usr/bin/env bash
# Installs Debian's Chromium and its WebDriver for the studio browser test (tests/test_studio_browser.py).
# Best effort: always exits 0; without a browser that test skips with the reason.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "install_browser: chromium and chromedriver already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: no apt-get here; the browser test will skip"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install_browser: not root and no passwordless sudo; the browser test will skip"
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver; then
    echo "install_browser: installed $(chromium --version 2>/dev/null | head -n1)"
else
    echo "install_browser: apt-get could not install chromium; the browser test will skip"
fi
exit 0
