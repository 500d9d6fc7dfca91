"""The option parsing of `m6-fashion evaluate`, `m6-fashion export onnx`, `m6-fashion studio` and the attribute
classifier's trainer: `HfArgumentParser` over one dataclass each, with argparse's usage errors (exit status 2).

Nothing here loads a model: each `main` is stopped right after parsing (a usage error, `--help`, or a stand-in
for the work it would start).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional

import pytest

from m6_fashion.errors import parse_arguments


@dataclass
class _Arguments:
    out: str = field(metadata={"help": "where to write"})
    steps: int = field(default=10)
    temperature: Optional[List[float]] = field(default=None)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1; got {self.steps}")


def _parser(dataclass_type=_Arguments, **kwargs):
    from transformers import HfArgumentParser

    return HfArgumentParser(dataclass_type, prog="prog", **kwargs)


def _usage_error(capsys, call) -> str:
    """The message of the usage error `call()` stops with (argparse: exit status 2, `PROG: error: ...` on stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------- parse_arguments
def test_parse_arguments_reads_the_dataclass():
    (args,) = parse_arguments(_parser(), ["--out", "x", "--steps", "3", "--temperature", "0.5", "1.5"])
    assert args == _Arguments(out="x", steps=3, temperature=[0.5, 1.5])


def test_parse_arguments_keeps_argparse_usage_errors(capsys):
    parser = _parser()
    assert _usage_error(capsys, lambda: parse_arguments(parser, ["--out", "x", "--bogus", "1"])) == (
        "prog: error: unrecognized arguments: --bogus 1")
    assert _usage_error(capsys, lambda: parse_arguments(parser, ["--out", "x", "--steps", "0"])) == (
        "prog: error: --steps must be >= 1; got 0")  # a __post_init__ check
    assert "invalid int value: 'ten'" in _usage_error(capsys, lambda: parse_arguments(parser, ["--out", "x", "--steps", "ten"]))
    assert "required: --out" in _usage_error(capsys, lambda: parse_arguments(parser, []))


# ---------------------------------------------------------------------------------------------- evaluate
def _evaluate_args(argv):
    from m6_fashion.evaluation.evaluate import build_parser

    return parse_arguments(build_parser(), argv)[0]


def test_evaluate_defaults_and_types():
    from m6_fashion.evaluation.attribute_classifier import DEFAULT_CACHE_DIR

    args = _evaluate_args([])
    assert (args.model, args.split, args.height, args.width, args.temperature, args.sections, args.data_dir) == (
        None, "test", None, None, None, None, None)
    assert (args.guidance_scale, args.transformer_dtype, args.batch_size, args.seed, args.cache_dir) == (
        None, "float32", 16, 0, DEFAULT_CACHE_DIR)
    assert not (args.fast or args.quiet or args.no_reference_floor)
    args = _evaluate_args(["--fast", "--quiet", "--height", "256", "--width", "192", "--temperature", "0.8", "1",
                           "--sections", "reconstruction", "text_to_image", "--data_dir", "d", "--no_reference_floor"])
    assert args.fast is True and args.quiet is True and args.no_reference_floor is True
    assert (args.height, args.width, args.temperature, args.sections, args.data_dir) == (
        256, 192, [0.8, 1.0], ["reconstruction", "text_to_image"], "d")


def test_evaluate_usage_errors(capsys):
    from m6_fashion.evaluation.evaluate import main

    assert "argument --split: invalid choice: 'nope'" in _usage_error(capsys, lambda: main(["--split", "nope"]))
    assert "invalid choice: 'foo'" in _usage_error(capsys, lambda: main(["--sections", "foo"]))
    assert "invalid float value: 'a'" in _usage_error(capsys, lambda: main(["--temperature", "a"]))
    assert "unrecognized arguments: --bogus" in _usage_error(capsys, lambda: main(["--bogus"]))


def test_evaluate_help_names_the_command(capsys):
    from m6_fashion.evaluation.evaluate import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: m6-fashion evaluate ")
    assert "(default: False)" not in out  # argparse appends no defaults: the help texts name them where they matter


# ---------------------------------------------------------------------------------------------- export onnx
def test_export_onnx_defaults_and_aliases():
    pytest.importorskip("onnx")
    from m6_fashion.export.export_onnx import DEFAULT_OPSET, build_parser

    (args,) = parse_arguments(build_parser(), ["--out", "b"])
    assert (args.model, args.out, args.opset, args.parity_data, args.parity_images, args.parity_batch) == (
        None, "b", DEFAULT_OPSET, None, 8, 3)
    assert not (args.int8 or args.no_parity or args.no_decoder_hr) and args.decoder_hr is None
    (args,) = parse_arguments(build_parser(), ["--out", "b", "--no-parity", "--int8", "--parity-batch", "4",
                                               "--parity-data", "t.parquet", "--no-decoder-hr"])
    assert args.no_parity and args.int8 and args.no_decoder_hr and (args.parity_batch, args.parity_data) == (4, "t.parquet")


@pytest.mark.parametrize("order", [("--decoder-hr", "d", "--no-decoder-hr"), ("--no-decoder-hr", "--decoder-hr", "d")])
def test_export_onnx_decoder_hr_options_exclude_each_other(capsys, order):
    pytest.importorskip("onnx")
    from m6_fashion.export.export_onnx import main

    assert _usage_error(capsys, lambda: main(["--out", "b", *order])).endswith(
        "error: argument --no-decoder-hr: not allowed with argument --decoder-hr")


def test_export_onnx_help_names_the_command(capsys):
    pytest.importorskip("onnx")
    from m6_fashion.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["export", "onnx", "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: m6-fashion export onnx ")


def test_export_onnx_usage_error_is_one_line_from_the_cli(capsys, tmp_path):
    pytest.importorskip("onnx")
    from m6_fashion.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "onnx", "--out", str(tmp_path / "b"), "--decoder-hr", str(tmp_path), "--no-decoder-hr"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("error: argument --no-decoder-hr: not allowed with argument --decoder-hr "
                                       "(see 'm6-fashion export onnx --help')\n")
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------------------------------------- studio
def test_studio_arguments_reach_the_app(monkeypatch):
    pytest.importorskip("gradio")
    from m6_fashion import studio

    launched = {}

    class _App:
        def launch(self, **kwargs):
            launched.update(kwargs)

    def build_app(pipe, max_batch_size, batch_wait):
        launched.update(pipe=pipe, max_batch_size=max_batch_size, batch_wait=batch_wait)
        return _App()

    monkeypatch.setattr(studio, "build_app", build_app)
    studio.main(["--port", "7000", "--max-batch-size", "2", "--batch-wait", "0.5"])
    assert launched == {"pipe": None, "max_batch_size": 2, "batch_wait": 0.5, "server_name": "127.0.0.1", "server_port": 7000}
    launched.clear()
    studio.main([])
    assert (launched["max_batch_size"], launched["batch_wait"], launched["server_port"]) == (
        studio.DEFAULT_MAX_BATCH_SIZE, studio.DEFAULT_BATCH_WAIT, 7860)


def test_studio_usage_errors(capsys):
    pytest.importorskip("gradio")
    from m6_fashion.studio import MAX_BATCH_SIZE, main

    assert _usage_error(capsys, lambda: main(["--max-batch-size", str(MAX_BATCH_SIZE + 1)])).endswith(
        f"error: --max-batch-size must be a whole number from 1 (no batching) to {MAX_BATCH_SIZE}; got {MAX_BATCH_SIZE + 1}")
    assert _usage_error(capsys, lambda: main(["--batch-wait", "11"])).endswith(
        "error: --batch-wait must be a number of seconds from 0 to 10; got 11.0")
    assert re.search(r"argument --port: invalid int value: 'abc'$", _usage_error(capsys, lambda: main(["--port", "abc"])))


# ---------------------------------------------------------------------------------------------- train_classifier
def test_train_classifier_arguments_reach_the_trainer(monkeypatch):
    from m6_fashion.evaluation import train_classifier as tc

    calls = []
    monkeypatch.setattr(tc, "train_classifier", lambda **kwargs: calls.append(("train", kwargs)))
    monkeypatch.setattr(tc, "evaluate_saved", lambda *a, **kwargs: calls.append(("eval", a, kwargs)))
    tc.main(["--output_dir", "o", "--max_steps", "5", "--block_out_channels", "8", "16", "--cache_dir", ""])
    (what, kwargs), = calls
    assert what == "train" and kwargs["output_dir"] == "o" and kwargs["max_steps"] == 5
    assert kwargs["block_out_channels"] == [8, 16] and kwargs["cache_dir"] is None  # '' turns the cache off
    assert (kwargs["batch_size"], kwargs["learning_rate"], kwargs["num_threads"], kwargs["time_budget_s"]) == (128, 3e-3, 1, None)
    assert kwargs["command"].endswith("--output_dir o --max_steps 5 --block_out_channels 8 16 --cache_dir ")
    calls.clear()
    tc.main(["--output_dir", "o", "--eval_only"])
    assert calls == [("eval", ("o",), {"data_dir": tc.DEFAULT_DATA_DIR, "cache_dir": tc.DEFAULT_CACHE_DIR, "num_threads": 1})]


def test_train_classifier_usage_errors(capsys):
    from m6_fashion.evaluation.train_classifier import main

    assert "required: --output_dir" in _usage_error(capsys, lambda: main([]))
    assert "invalid int value: 'x'" in _usage_error(capsys, lambda: main(["--output_dir", "o", "--max_steps", "x"]))
