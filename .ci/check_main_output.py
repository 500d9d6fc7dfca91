"""Checks what the README's main command left behind: a non-blank PNG of at least 192x256 and a log free of warnings.

Usage: python .ci/check_main_output.py IMAGE LOG
"""

import re
import sys

from PIL import Image, ImageStat

image_path, log_path = sys.argv[1], sys.argv[2]
log = open(log_path, encoding="utf-8", errors="replace").read()
bad = re.findall(r"^.*(?:Traceback|FutureWarning|DeprecationWarning|UserWarning|error:).*$", log, flags=re.M)
if bad:
    sys.exit("main command printed warnings or errors:\n" + "\n".join(bad))
try:
    img = Image.open(image_path)
    img.load()
except Exception as e:  # noqa: BLE001 - any unreadable output is a failure
    sys.exit(f"main command wrote no readable PNG at {image_path}: {e}")
if img.format != "PNG":
    sys.exit(f"{image_path} is a {img.format}, not a PNG")
MIN_WIDTH, MIN_HEIGHT = 192, 256  # the shipped default makes catalogue-size 192x256 images
if img.size[0] < MIN_WIDTH or img.size[1] < MIN_HEIGHT:
    sys.exit(f"{image_path} is {img.size[0]}x{img.size[1]}; the main command must write at least {MIN_WIDTH}x{MIN_HEIGHT}")
stddev = max(ImageStat.Stat(img.convert("RGB")).stddev)
if stddev < 5.0:
    sys.exit(f"{image_path} is blank (largest channel standard deviation {stddev:.2f} < 5)")
print(f"main command OK: {image_path} {img.size[0]}x{img.size[1]}, channel stddev {stddev:.1f}, no warnings")
