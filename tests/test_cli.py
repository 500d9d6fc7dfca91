"""The m6-fashion command line writes PNGs with the shipped model and reports bad input clearly."""

import subprocess
import sys

import PIL.Image
import pytest

from conftest import subprocess_env


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "m6_fashion.cli", *args], capture_output=True, text=True,
                          env=subprocess_env(), timeout=300)


@pytest.fixture(scope="module")
def files(real_images, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    a, b = real_images[0]["image"], real_images[1]["image"]
    a.save(d / "a.png"); b.save(d / "b.png")
    mask = PIL.Image.new("L", a.size, 0)
    mask.paste(255, (0, a.size[1] // 2, a.size[0], a.size[1]))
    mask.save(d / "mask.png")
    return d


def test_generate_edit_inpaint_mix_outpaint_write_pngs(files):
    d = files
    commands = {
        "gen": ["generate", "--prompt", "Men Navy Blue Casual Shirt", "--seed", "0", "--steps", "2", "--num-images", "2"],
        "inp": ["inpaint", "--image", str(d / "a.png"), "--mask", str(d / "mask.png"), "--prompt", "Men Red Shirt", "--steps", "2"],
        "edit": ["edit", "--reference", str(d / "b.png"), "--box", "0", "0", "32", "32", "--prompt", "Men Shoes", "--steps", "2"],
        "mix": ["mix", "--image", str(d / "a.png"), "--style-image", str(d / "b.png"), "--mask", str(d / "mask.png"), "--steps", "2"],
        "out": ["outpaint", "--image", str(d / "a.png"), "--box", "16", "16", "48", "48", "--steps", "2", "--size", "128", "--bf16"],
    }
    # one process for all five would be faster, but each command is what a user types
    for name, cmd in commands.items():
        out = d / f"{name}.png"
        r = _cli(*cmd, "--out", str(out))
        assert r.returncode == 0, (name, r.stderr[-2000:])
        assert PIL.Image.open(out).size in ((64, 64), (128, 128))
    assert (d / "gen-1.png").is_file()


def test_bad_input_gives_a_clear_error(files):
    r = _cli("inpaint", "--image", str(files / "missing.png"), "--mask", str(files / "mask.png"), "--out", str(files / "x.png"))
    assert r.returncode != 0 and "does not exist" in r.stderr
    r = _cli("edit", "--reference", str(files / "b.png"), "--box", "0", "0", "99", "99", "--out", str(files / "x.png"), "--steps", "1")
    assert r.returncode != 0 and "outside" in r.stderr and "Traceback" not in r.stderr
