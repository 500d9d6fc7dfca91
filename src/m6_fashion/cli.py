"""The `m6-fashion` command line (also `python -m m6_fashion`).

    m6-fashion generate --prompt "Men Navy Blue Casual Shirt" --seed 0 --out shirt.png
    m6-fashion inpaint  --image in.png --mask mask.png --prompt "Men Red Shirt" --out out.png
    m6-fashion edit     --reference patch.png --box 16 0 48 24 --prompt "..." --out out.png
    m6-fashion mix      --image a.png --style-image b.png --mask mask.png --out out.png
    m6-fashion outpaint --image in.png --box 16 16 48 48 --out out.png
    m6-fashion train-tokenizer ... | train-transformer ... | finetune ...   (training, see COMMAND --help)
    m6-fashion evaluate --model DIR --split test --out results.json
    m6-fashion export onnx --model DIR --out DIR   (ONNX bundle for the torch-free runtime)
    m6-fashion studio [--model DIR] [--port N]   (the web studio on 127.0.0.1)
    m6-fashion --version | --help

Parsing, `--help` and argument errors import nothing heavy: torch, diffusers and transformers are imported
inside the functions that run a command (the forwarded commands' modules import them when they start).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from m6_fashion_core import cli as core
from m6_fashion_core.cli import (  # noqa: F401 - the limits, importable from this module as before
    MAX_GUIDANCE_SCALE,
    MAX_NUM_IMAGES,
    MAX_STEPS,
    MAX_TEMPERATURE,
)

BOX_HELP = ("pixel box LEFT TOP RIGHT BOTTOM on the output image (e.g. 0 0 96 128, the top-left quarter of the "
            "default 192x256 output)")
MAX_SIZE = core.MAX_SIDE  # --size, --height, --width: pixels per side
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts

_Parser = core.OneLineErrorParser
_positive_int = core.positive_int
_output_paths = core.output_paths


def _add_common(p: argparse.ArgumentParser, with_prompt: bool = True) -> None:
    p.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the shipped model)")
    core.add_sampling_arguments(p, seed_help="random seed (same seed, same image)", steps_help="SMART passes T (default 10)",
                                temperature_help="sampling temperature (default: the scheduler's)", with_prompt=with_prompt)
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="the transformer's dtype; auto (default): bfloat16 on CPUs with AVX512-BF16 or AMX (1.76x "
                        "faster per call on an AVX512-BF16 EPYC, same measured quality), float32 elsewhere (bfloat16 "
                        "is ~6x slower without them); tokenizer and decoder stay float32")
    p.add_argument("--bf16", action="store_true", help="same as --dtype bfloat16")
    core.add_size_arguments(
        p, height_help="output height in pixels (default: the model's, 256 for the shipped model)",
        width_help="output width in pixels (default: the model's, 192 for the shipped model); sizes the model "
                   "cannot make are refused with the list of accepted ones")
    p.add_argument("--size", type=_positive_int, default=None,
                   help="resize the written PNG (bicubic) so that its longer side has this many pixels, aspect kept")
    core.add_output_arguments(p)


def _read_image(path: str):
    import PIL.Image

    im = PIL.Image.open(path)
    im.load()
    return im


def _open_image(path: str, what: str):
    return core.open_input(path, what, _read_image)


def _write(images, out: str, size: Optional[int]) -> List[str]:
    import PIL.Image

    paths = _output_paths(out, len(images))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    for im, path in zip(images, paths):
        if size:
            scale = size / max(im.size)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), PIL.Image.BICUBIC)
        im.save(path, format="PNG")
    return paths


def _check_output_args(args) -> None:
    """--out, --size, --height, --width and --num-images are checked before any model is loaded: nothing is lost or wasted."""
    core.check_out_name(args.out)
    core.check_sides(args, ("size", "height", "width"))
    core.check_num_images(args.num_images)
    _check_numbers(args)
    core.check_out_folder(args.out, args.num_images, args.overwrite)


def _check_numbers(args) -> None:
    """--steps, --guidance-scale, --temperature, --seed and --box, checked before any model is loaded."""
    core.check_steps(args.steps)
    core.check_guidance_scale(args.guidance_scale)
    core.check_guidance_min_p(args.guidance_min_p)
    core.check_negative_prompt(args)
    core.check_temperature(args.temperature)
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        raise SystemExit(f"error: --seed {args.seed} is out of range; use an integer from 0 to 2^64-1")
    core.check_boxes(args)


def _check_mask(mask, image, what: str = "--mask") -> None:
    """The mask has the image's size and selects at least one pixel: checked before the model is loaded."""
    core.check_mask_size(mask.size, None if image is None else image.size, what)
    try:
        grey = mask.convert("L") if mask.mode not in ("I;16", "I;16L", "I;16B", "I", "F") else None
    except ValueError as e:
        raise SystemExit(f"error: cannot read {what} as a mask: {e}")
    if grey is not None and grey.getextrema()[1] < 128:
        raise core.empty_mask_error(what)


def _check_model_arg(model: Optional[str]) -> None:
    """A --model that is written as a path (not a Hub id) must exist: checked before torch is imported."""
    if not model or os.path.exists(model):
        return
    if os.path.isabs(model) or model.startswith((".", "~")) or model.count("/") > 1 or (os.sep != "/" and os.sep in model):
        raise SystemExit(f"error: --model {model!r} does not exist (give a pipeline folder or a Hub id)")


def _transformer_dtype(args):
    """--dtype / --bf16 -> torch dtype; auto picks bfloat16 only where the CPU multiplies it natively."""
    import torch

    from .cpu import has_fast_bfloat16

    name = "bfloat16" if args.bf16 else args.dtype
    if name == "auto":
        name = "bfloat16" if not torch.cuda.is_available() and has_fast_bfloat16() else "float32"
    return getattr(torch, name)


def _run_pipeline(args, **kwargs) -> None:
    import torch

    from .pipelines import M6FashionPipeline

    dtype = {"transformer": _transformer_dtype(args), "default": torch.float32}
    try:
        pipe = M6FashionPipeline.from_pretrained(args.model, dtype=dtype)
    except (OSError, ValueError) as e:  # not a pipeline folder, not a valid / reachable Hub id
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SystemExit(f"error: cannot load --model {args.model!r}: {first_line}")
    except Exception as e:  # noqa: BLE001 - e.g. a truncated weight file in a folder without checksums.sha256
        first_line = (str(e).strip().splitlines() or [""])[0]
        raise SystemExit(f"error: cannot load --model {args.model!r}: {type(e).__name__}: {first_line}")
    generator = torch.Generator().manual_seed(args.seed)
    with core.errors_exit():
        out = pipe(
            prompt=args.prompt, num_inference_steps=args.steps, num_images_per_prompt=args.num_images,
            **core.guidance_kwargs(args.guidance_scale, args.guidance_min_p, args.negative_prompt, args.negative_guidance_scale), temperature=args.temperature,
            generator=generator, height=args.height, width=args.width, **kwargs,
        )
    for path in _write(out.images, args.out, args.size):
        print(path)


def _export_onnx(argv: List[str]) -> None:
    """`m6-fashion export onnx`: the exporter of the installed package (needs the `export` extra)."""
    try:
        from .export.export_onnx import main as export_main
    except ImportError as e:
        raise SystemExit(f"error: `m6-fashion export onnx` needs the export extra ({e.name} is missing): "
                         "pip install 'm6-fashion[export]'")
    export_main(argv)


# every command: name -> one-line description (the top-level --help lists them all, in this order)
COMMANDS = {
    "generate": "text-to-image (unconditional without --prompt)",
    "inpaint": "regenerate the white region of --mask in --image",
    "outpaint": "place --image inside --box, generate the rest",
    "edit": "local editing: reference patch(es) at box(es)",
    "mix": "style mixing: --mask region from --style-image",
    "train-tokenizer": "train the stage-1 tokenizer + decoder",
    "train-transformer": "train the stage-2 transformer",
    "finetune": "fine-tune a pipeline on your catalogue (or LoRA)",
    "evaluate": "FID/KID/IS, hit rates, PSNR/SSIM of a pipeline",
    "export": "export a pipeline (export onnx: torch-free bundle)",
    "studio": "the studio web page on 127.0.0.1 (needs [studio])",
}

# commands whose arguments go untouched to their own parsers (their modules import torch / transformers)
FORWARDED = {
    "train-tokenizer": ("m6_fashion.training.train_tokenizer", "main"),
    "train-transformer": ("m6_fashion.training.train_transformer", "main"),
    "finetune": ("m6_fashion.training.finetune", "main"),
    "evaluate": ("m6_fashion.evaluation.evaluate", "main"),
    "studio": ("m6_fashion.studio", "main"),
}

# command groups: name -> {subcommand: one-line description}
GROUPS = {
    "export": {"onnx": "ONNX bundle for the torch-free runtime (export onnx --help)"},
}

PIPELINE_COMMANDS = ("generate", "inpaint", "outpaint", "edit", "mix")


class _CommandListFormatter(argparse.HelpFormatter):
    """Keeps each command of the list on one line: argparse measures the command names one indent
    level short, so a long name (train-transformer) would push its description to the next line."""

    def __init__(self, prog, indent_increment=2, max_help_position=28, width=None):
        super().__init__(prog, indent_increment, max_help_position, width)

    def add_argument(self, action):
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction) and action.help is not argparse.SUPPRESS and action.choices:
            longest = max(len(name) for name in action.choices) + self._current_indent + 2 * self._indent_increment
            self._action_max_length = max(self._action_max_length, longest)


class _VersionAction(argparse.Action):
    """``--version``: reads the version only when asked (importlib.metadata costs a few milliseconds)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"m6-fashion {version()}")
        parser.exit(0)


def version() -> str:
    """The installed distribution's version, else the package's ``__version__`` (a bare source checkout)."""
    try:
        from importlib.metadata import PackageNotFoundError, version as dist_version

        return dist_version("m6-fashion")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def _add_task_arguments(p: argparse.ArgumentParser, command: str) -> None:
    """The inputs of an image command besides the common options (generate has none)."""
    if command == "inpaint":
        core.add_inpaint_arguments(p)
    elif command == "outpaint":
        p.add_argument("--image", required=True)
        core.add_box_argument(p, help=BOX_HELP)
    elif command == "edit":
        p.add_argument("--reference", action="append", required=True, help="reference patch image (repeat for several)")
        core.add_box_argument(p, help=BOX_HELP + "; one per --reference", repeated=True)
        p.add_argument("--image", default=None, help="optional canvas image; with --mask only its white region changes")
        p.add_argument("--mask", default=None, help="optional mask for --image (white = may change)")
    elif command == "mix":
        core.add_mix_arguments(p, style_help="garment that supplies the masked region", mask_help="white = take from --style-image")


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree; building and using it imports nothing heavy."""
    parser = _Parser(
        prog="m6-fashion", description="M6-Fashion: generate and edit garment images.",
        epilog="Run 'm6-fashion COMMAND --help' for the options of a command.",
        formatter_class=_CommandListFormatter,
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        if name in FORWARDED:  # parsed by the command itself; listed here for --help
            sub.add_parser(name, help=summary, description=summary, add_help=False)
            continue
        p = sub.add_parser(name, help=summary, description=summary)
        if name in GROUPS:
            gsub = p.add_subparsers(dest="subcommand", title="subcommands", metavar="SUBCOMMAND")
            for sname, ssummary in GROUPS[name].items():
                gsub.add_parser(sname, help=ssummary, description=ssummary, add_help=False)
            continue
        _add_common(p)
        _add_task_arguments(p, name)
    return parser


class _one_line_usage_errors:
    """While a forwarded command parses its arguments with its own argparse parser, a usage error is one line
    ``error: MESSAGE (see 'm6-fashion COMMAND --help')`` (exit status 2), as for the commands parsed here."""

    def __init__(self, prog: str):
        self.prog = prog

    def __enter__(self):
        prog, self.original = self.prog, argparse.ArgumentParser.error

        def error(parser, message):
            parser.exit(2, f"error: {message} (see '{prog} --help')\n")

        argparse.ArgumentParser.error = error
        return self

    def __exit__(self, *exc):
        argparse.ArgumentParser.error = self.original
        return False


def _subparser(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    for name in names:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def _run_forwarded(command: str, args: List[str]) -> None:
    """A training / evaluation / studio command: its own parser reads `args`; usage errors and `BadInput` are one line."""
    import importlib

    module, func = FORWARDED[command]
    with _one_line_usage_errors(f"m6-fashion {command}"):
        from .errors import BadInput

        try:
            getattr(importlib.import_module(module), func)(args)
        except BadInput as e:  # a bad argument or data set, found before any work: one line, no traceback
            raise SystemExit(f"error: {e} (see 'm6-fashion {command} --help')")


def _edit(args) -> None:
    """`edit`: one --box per --reference; an optional --image (and its --mask) to edit."""
    if len(args.reference) != len(args.box):
        raise SystemExit(f"error: give one --box per --reference (got {len(args.reference)} references, {len(args.box)} boxes)")
    if args.mask and not args.image:
        raise SystemExit("error: --mask needs --image (the image it masks)")
    refs = [(_open_image(r, "--reference"), tuple(b)) for r, b in zip(args.reference, args.box)]
    kwargs = {"reference_images": refs}
    if args.image:
        kwargs["image"] = _open_image(args.image, "--image")
        if args.mask:
            kwargs["mask_image"] = _open_image(args.mask, "--mask")
            _check_mask(kwargs["mask_image"], kwargs["image"])
    _run_pipeline(args, **kwargs)


def _run_image_command(args) -> None:
    """generate / inpaint / outpaint / edit / mix: the inputs are opened and checked, then the pipeline runs."""
    if args.command == "generate":
        _run_pipeline(args)
    elif args.command == "inpaint":
        image, mask = _open_image(args.image, "--image"), _open_image(args.mask, "--mask")
        _check_mask(mask, image)
        _run_pipeline(args, image=image, mask_image=mask)
    elif args.command == "outpaint":
        _run_pipeline(args, image=_open_image(args.image, "--image"), image_box=tuple(args.box))
    elif args.command == "edit":
        _edit(args)
    elif args.command == "mix":
        image, style, mask = (_open_image(args.image, "--image"), _open_image(args.style_image, "--style-image"),
                              _open_image(args.mask, "--mask"))
        _check_mask(mask, image)
        _run_pipeline(args, image=image, style_image=style, mask_image=mask)


def main(argv: Optional[List[str]] = None) -> None:
    from .cpu import apply_thread_defaults

    apply_thread_defaults()  # passive OpenMP waiting, threads = available cores: before torch is imported
    argv = list(sys.argv[1:] if argv is None else argv)
    # training / evaluation / studio commands forward their arguments untouched to their own parsers
    if argv and argv[0] in FORWARDED:
        _run_forwarded(argv[0], argv[1:])
        return
    if argv[:2] == ["export", "onnx"]:
        with _one_line_usage_errors("m6-fashion export onnx"):
            _export_onnx(argv[2:])
        return

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # no command: the help, and the usage-error status (argparse convention)
        parser.print_help(sys.stderr)
        parser.exit(2)
    if args.command in GROUPS:  # a group without its subcommand (a subcommand would have been forwarded above)
        _subparser(parser, args.command).print_help(sys.stderr)
        parser.exit(2)

    _check_model_arg(args.model)
    _check_output_args(args)
    _run_image_command(args)


if __name__ == "__main__":
    main()
