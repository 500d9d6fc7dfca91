"""The shared arguments and checks of the two command lines (`m6_fashion_core.cli`): messages, limits, and that
parsing imports nothing heavy. The commands themselves are tested in test_cli.py and test_runtime.py."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUNTIME_SRC = Path(__file__).resolve().parents[1] / "runtime" / "src"
if str(RUNTIME_SRC) not in sys.path:  # tests run from a checkout without installing the runtime
    sys.path.insert(0, str(RUNTIME_SRC))

from m6_fashion_core import cli as core  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = core.OneLineErrorParser(prog="prog")
    core.add_sampling_arguments(p, seed_help="seed", steps_help="steps", temperature_help="temperature")
    core.add_size_arguments(p, height_help="height", width_help="width")
    core.add_output_arguments(p)
    return p


def test_parsing_imports_nothing_heavy():
    code = ("import sys; from m6_fashion_core import cli; "
            "print(sorted(m for m in ('numpy', 'PIL', 'torch', 'onnxruntime', 'm6_fashion', 'm6_fashion_runtime') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(RUNTIME_SRC)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)


def test_both_command_lines_use_the_shared_definitions():
    import m6_fashion.cli as torch_cli
    import m6_fashion_runtime.cli as runtime_cli

    for cli in (torch_cli, runtime_cli):
        assert cli._Parser is core.OneLineErrorParser and cli._positive_int is core.positive_int
        assert (cli.MAX_STEPS, cli.MAX_NUM_IMAGES, cli.MAX_GUIDANCE_SCALE, cli.MAX_TEMPERATURE) == (
            core.MAX_STEPS, core.MAX_NUM_IMAGES, core.MAX_GUIDANCE_SCALE, core.MAX_TEMPERATURE)
    assert torch_cli.MAX_SIZE == runtime_cli.MAX_SIDE == core.MAX_SIDE


def test_limits_repeat_the_core_libraries():
    from m6_fashion_core import sampling, validation

    assert (core.MAX_STEPS, core.MAX_TEMPERATURE) == (sampling.MAX_INFERENCE_STEPS, sampling.MAX_TEMPERATURE)
    assert (core.MAX_NUM_IMAGES, core.MAX_GUIDANCE_SCALE) == (validation.MAX_IMAGES_PER_CALL, validation.MAX_GUIDANCE_SCALE)


def test_usage_errors_are_one_line_with_status_2(capsys):
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["--out", "a.png", "--steps", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: argument --steps: must be a positive integer, got 0 (see 'prog --help')\n"
    with pytest.raises(SystemExit):
        _parser().parse_args(["--out", "a.png", "--num-images", "two"])
    assert "invalid int value: 'two'" in capsys.readouterr().err


def test_defaults():
    args = _parser().parse_args(["--out", "a.png"])
    assert (args.prompt, args.seed, args.steps, args.num_images, args.guidance_scale, args.temperature) == (None, 0, 10, 1, None, None)
    assert args.guidance_min_p is None  # the pipeline's default
    assert (args.height, args.width, args.overwrite) == (None, None, False)


def test_negative_prompt_needs_guidance():
    args = _parser().parse_args(["--out", "a.png", "--prompt", "Men Orange Jeans", "--negative-prompt", "Men Jeans", "--guidance-scale", "1"])
    assert args.negative_prompt == "Men Jeans"
    with pytest.raises(SystemExit, match=r"--negative-prompt is read by the guidance pass.*got 1\); add e.g. --guidance-scale 3"):
        core.check_negative_prompt(args)
    core.check_negative_prompt(_parser().parse_args(["--out", "a.png", "--negative-prompt", "x", "--guidance-scale", "3"]))
    # without --guidance-scale the task's default decides (12 for text-to-image); the pipeline refuses the others
    core.check_negative_prompt(_parser().parse_args(["--out", "a.png", "--prompt", "Men Orange Jeans", "--negative-prompt", "Men Jeans"]))
    core.check_negative_prompt(_parser().parse_args(["--out", "a.png"]))  # no negative prompt: nothing to check


def test_negative_guidance_scale_needs_a_negative_prompt_and_a_finite_positive_value():
    args = _parser().parse_args(["--out", "a.png", "--prompt", "Men Orange Jeans", "--negative-guidance-scale", "4"])
    assert args.negative_guidance_scale == 4.0
    with pytest.raises(SystemExit, match="--negative-guidance-scale weighs a pass on --negative-prompt; add --negative-prompt"):
        core.check_negative_prompt(args)
    for bad in ("0", "-1", "nan", "inf", "51"):
        args = _parser().parse_args(["--out", "a.png", "--negative-prompt", "Men Jeans", "--negative-guidance-scale", bad])
        with pytest.raises(SystemExit, match=r"--negative-guidance-scale must be a finite number in \(0, 50\]"):
            core.check_negative_prompt(args)
    core.check_negative_prompt(_parser().parse_args(["--out", "a.png", "--prompt", "Men Orange Jeans", "--negative-prompt", "Men Jeans",
                                                      "--negative-guidance-scale", "4"]))
    assert core.guidance_kwargs(None, None, "Men Jeans", 4.0) == {"guidance_scale": None, "negative_prompt": "Men Jeans",
                                                                  "negative_guidance_scale": 4.0}
    assert "negative_guidance_scale" not in core.guidance_kwargs(None, None, "Men Jeans")  # None: the pipeline's default


def test_output_paths():
    assert core.output_paths("out.png", 3) == ["out.png", "out-1.png", "out-2.png"]
    assert core.output_paths(os.path.join("d", "out"), 2) == [os.path.join("d", "out.png"), os.path.join("d", "out-1.png")]


@pytest.mark.parametrize("check, value, match", [
    (core.check_steps, core.MAX_STEPS + 1, "--steps 1001 is too many; at most 1000"),
    (core.check_num_images, core.MAX_NUM_IMAGES + 1, "--num-images 65 is too many; at most 64 per call"),
    (core.check_guidance_scale, float("nan"), r"--guidance-scale must be a finite number in \[1, 50\] \(1.0 = off\); got nan"),
    (core.check_guidance_scale, 0.5, "got 0.5"),
    (core.check_guidance_min_p, 1.0, r"--guidance-min-p must be a number in \[0, 1\) \(0 = off\); got 1.0"),
    (core.check_guidance_min_p, float("nan"), "got nan"),
    (core.check_temperature, 0.0, r"--temperature must be a finite number in \(0, 100\]; got 0.0"),
    (core.check_temperature, float("inf"), "got inf"),
])
def test_number_checks(check, value, match):
    with pytest.raises(SystemExit, match=match) as e:
        check(value)
    assert str(e.value.code).startswith("error: ")


def test_number_checks_accept_the_limits():
    core.check_steps(core.MAX_STEPS)
    core.check_num_images(core.MAX_NUM_IMAGES)
    core.check_guidance_scale(1.0)
    core.check_guidance_scale(core.MAX_GUIDANCE_SCALE)
    core.check_guidance_scale(None)  # the task's default
    core.check_guidance_min_p(None)
    core.check_guidance_min_p(0.0)
    core.check_temperature(None)
    core.check_temperature(core.MAX_TEMPERATURE)
    core.check_sides(argparse.Namespace(height=core.MAX_SIDE, width=None))
    with pytest.raises(SystemExit, match="--size 4097 is too large; at most 4096 pixels"):
        core.check_sides(argparse.Namespace(size=4097, height=None, width=None), ("size", "height", "width"))


def test_boxes():
    assert core.boxes_of(argparse.Namespace()) == []
    assert core.boxes_of(argparse.Namespace(box=[0, 0, 8, 8])) == [[0, 0, 8, 8]]
    assert core.boxes_of(argparse.Namespace(box=[[0, 0, 8, 8], [1, 1, 2, 2]])) == [[0, 0, 8, 8], [1, 1, 2, 2]]
    core.check_boxes(argparse.Namespace(box=[[0, 0, 8, 8], [1, 1, 2, 2]]))
    with pytest.raises(SystemExit, match="--box 1 1 1 2 is empty or negative; give LEFT TOP RIGHT BOTTOM"):
        core.check_boxes(argparse.Namespace(box=[[0, 0, 8, 8], [1, 1, 1, 2]]))


def test_out_checks(tmp_path):
    core.check_out_name(str(tmp_path / "a.png"))
    core.check_out_name(str(tmp_path / "a"))
    with pytest.raises(SystemExit, match="is not a file path"):
        core.check_out_name(str(tmp_path))
    with pytest.raises(SystemExit, match="the output is a PNG"):
        core.check_out_name(str(tmp_path / "a.jpg"))
    core.check_out_folder(str(tmp_path / "new" / "deeper" / "a.png"), 2, False)  # missing folders are made later
    (tmp_path / "a-1.png").write_bytes(b"")
    with pytest.raises(SystemExit, match=r"a-1\.png already exist\(s\); pass --overwrite"):
        core.check_out_folder(str(tmp_path / "a.png"), 2, False)
    core.check_out_folder(str(tmp_path / "a.png"), 2, True)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(SystemExit, match="is a file, not a folder"):
        core.check_out_folder(str(tmp_path / "file" / "a.png"), 1, False)


def test_mask_checks():
    core.check_mask_size((8, 6), (8, 6))
    core.check_mask_size((8, 6), None)
    with pytest.raises(SystemExit, match="--mask is 8x6 but --image is 6x8; give a mask of the same size"):
        core.check_mask_size((8, 6), (6, 8))
    assert "selects no pixel" in str(core.empty_mask_error("--mask").code)


def test_open_input(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("x")
    assert core.open_input(str(path), "--image", lambda p: Path(p).read_text()) == "x"
    with pytest.raises(SystemExit, match="is a folder, not an image file"):
        core.open_input(str(tmp_path), "--image", print)
    with pytest.raises(SystemExit, match="does not exist"):
        core.open_input(str(tmp_path / "missing.png"), "--mask", print)
    with pytest.raises(SystemExit, match=r"cannot read --image .*a\.txt': bad"):
        core.open_input(str(path), "--image", lambda p: (_ for _ in ()).throw(OSError("bad")))


def test_errors_exit():
    with pytest.raises(SystemExit, match="^error: bad size$"):
        with core.errors_exit():
            raise ValueError("bad size")
    with pytest.raises(KeyError):
        with core.errors_exit(ValueError):
            raise KeyError("not caught")
