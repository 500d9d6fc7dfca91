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
import math
import os
import sys
from typing import List, Optional

BOX_HELP = ("pixel box LEFT TOP RIGHT BOTTOM on the output image (e.g. 0 0 96 128, the top-left quarter of the "
            "default 192x256 output)")


def _add_common(p: argparse.ArgumentParser, with_prompt: bool = True) -> None:
    p.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the shipped model)")
    if with_prompt:
        p.add_argument("--prompt", default=None, help="caption, e.g. 'Women Pink Handbag' (default: none)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same image)")
    p.add_argument("--steps", type=_positive_int, default=10, help="SMART passes T (default 10)")
    p.add_argument("--num-images", type=_positive_int, default=1, help="images to write (out.png, out-1.png, ...)")
    p.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance (1.0 = off)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the scheduler's)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="the transformer's dtype; auto (default): bfloat16 on CPUs with AVX512-BF16 or AMX (1.76x "
                        "faster per call on an AVX512-BF16 EPYC, same measured quality), float32 elsewhere (bfloat16 "
                        "is ~6x slower without them); tokenizer and decoder stay float32")
    p.add_argument("--bf16", action="store_true", help="same as --dtype bfloat16")
    p.add_argument("--height", type=_positive_int, default=None,
                   help="output height in pixels (default: the model's, 256 for the shipped model)")
    p.add_argument("--width", type=_positive_int, default=None,
                   help="output width in pixels (default: the model's, 192 for the shipped model); sizes the model "
                        "cannot make are refused with the list of accepted ones")
    p.add_argument("--size", type=_positive_int, default=None,
                   help="resize the written PNG (bicubic) so that its longer side has this many pixels, aspect kept")
    p.add_argument("--out", required=True, help="output PNG path (with --num-images N: out.png, out-1.png, ...)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (refused otherwise)")


def _open_image(path: str, what: str):
    import PIL.Image

    if os.path.isdir(path):
        raise SystemExit(f"error: {what} {path!r} is a folder, not an image file")
    if not os.path.isfile(path):
        raise SystemExit(f"error: {what} {path!r} does not exist")
    try:
        im = PIL.Image.open(path)
        im.load()
        return im
    except Exception as e:  # noqa: BLE001 - reported to the user
        raise SystemExit(f"error: cannot read {what} {path!r}: {e}")


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


MAX_SIZE = 4096  # --size, --height, --width: pixels per side
MAX_NUM_IMAGES = 64  # the pipeline's limit per call
# the pipeline's and the scheduler's limits, repeated here so that parsing imports nothing heavy (a test checks they agree)
MAX_STEPS = 1000  # scheduling_smart.MAX_INFERENCE_STEPS
MAX_GUIDANCE_SCALE = 50.0  # pipeline_m6fashion.MAX_GUIDANCE_SCALE
MAX_TEMPERATURE = 100.0  # scheduling_smart.MAX_TEMPERATURE
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts


def _output_paths(out: str, n: int) -> List[str]:
    root, ext = os.path.splitext(out)
    ext = ext or ".png"
    return [f"{root}{ext}" if i == 0 else f"{root}-{i}{ext}" for i in range(n)]


def _check_output_args(args) -> None:
    """--out, --size, --height, --width and --num-images are checked before any model is loaded: nothing is lost or wasted."""
    if not args.out or args.out.endswith(("/", os.sep)) or os.path.isdir(args.out):
        raise SystemExit(f"error: --out {args.out!r} is not a file path; give a path ending in .png")
    ext = os.path.splitext(args.out)[1].lower()
    if ext not in ("", ".png"):
        raise SystemExit(f"error: --out {args.out!r}: the output is a PNG; give a path ending in .png")
    for flag in ("size", "height", "width"):
        value = getattr(args, flag, None)
        if value is not None and value > MAX_SIZE:
            raise SystemExit(f"error: --{flag} {value} is too large; at most {MAX_SIZE} pixels")
    if args.num_images > MAX_NUM_IMAGES:
        raise SystemExit(f"error: --num-images {args.num_images} is too many; at most {MAX_NUM_IMAGES} per call")
    _check_numbers(args)
    folder = os.path.dirname(os.path.abspath(args.out))
    existing = folder
    while not os.path.isdir(existing):
        if os.path.exists(existing):
            raise SystemExit(f"error: --out {args.out!r}: {existing!r} is a file, not a folder")
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK):
        raise SystemExit(f"error: --out {args.out!r}: cannot write into {existing!r} (permission denied)")
    taken = [p for p in _output_paths(args.out, args.num_images) if os.path.exists(p)]
    if taken and not args.overwrite:
        raise SystemExit(f"error: {', '.join(taken)} already exist(s); pass --overwrite to replace, or choose another --out")


def _check_numbers(args) -> None:
    """--steps, --guidance-scale, --temperature, --seed and --box, checked before any model is loaded."""
    if args.steps > MAX_STEPS:
        raise SystemExit(f"error: --steps {args.steps} is too many; at most {MAX_STEPS}")
    if not (math.isfinite(args.guidance_scale) and 1.0 <= args.guidance_scale <= MAX_GUIDANCE_SCALE):
        raise SystemExit(f"error: --guidance-scale must be a finite number in [1, {MAX_GUIDANCE_SCALE:g}] (1.0 = off); got {args.guidance_scale}")
    if args.temperature is not None and not (math.isfinite(args.temperature) and 0 < args.temperature <= MAX_TEMPERATURE):
        raise SystemExit(f"error: --temperature must be a finite number in (0, {MAX_TEMPERATURE:g}]; got {args.temperature}")
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        raise SystemExit(f"error: --seed {args.seed} is out of range; use an integer from 0 to 2^64-1")
    boxes = getattr(args, "box", None) or []
    for box in boxes if boxes and isinstance(boxes[0], list) else [boxes] if boxes else []:
        left, top, right, bottom = box
        if not (0 <= left < right and 0 <= top < bottom):
            raise SystemExit(f"error: --box {left} {top} {right} {bottom} is empty or negative; give LEFT TOP RIGHT BOTTOM "
                             "with 0 <= LEFT < RIGHT and 0 <= TOP < BOTTOM (pixels on the output)")


def _check_mask(mask, image, what: str = "--mask") -> None:
    """The mask has the image's size and selects at least one pixel: checked before the model is loaded."""
    if image is not None and mask.size != image.size:
        raise SystemExit(f"error: {what} is {mask.size[0]}x{mask.size[1]} but --image is {image.size[0]}x{image.size[1]}; "
                         "give a mask of the same size as the image")
    try:
        grey = mask.convert("L") if mask.mode not in ("I;16", "I;16L", "I;16B", "I", "F") else None
    except ValueError as e:
        raise SystemExit(f"error: cannot read {what} as a mask: {e}")
    if grey is not None and grey.getextrema()[1] < 128:
        raise SystemExit(f"error: {what} selects no pixel (all black after thresholding at 0.5): white marks the region to regenerate")


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
    try:
        out = pipe(
            prompt=args.prompt, num_inference_steps=args.steps, num_images_per_prompt=args.num_images,
            guidance_scale=args.guidance_scale, temperature=args.temperature, generator=generator,
            height=args.height, width=args.width, **kwargs,
        )
    except (ValueError, TypeError) as e:
        raise SystemExit(f"error: {e}")
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


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: MESSAGE (see 'PROG --help')`` on stderr, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


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
        if name == "inpaint":
            p.add_argument("--image", required=True, help="image to edit")
            p.add_argument("--mask", required=True, help="mask image, same size as --image; white = regenerate")
        elif name == "outpaint":
            p.add_argument("--image", required=True)
            p.add_argument("--box", type=int, nargs=4, required=True, metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"), help=BOX_HELP)
        elif name == "edit":
            p.add_argument("--reference", action="append", required=True, help="reference patch image (repeat for several)")
            p.add_argument("--box", type=int, nargs=4, action="append", required=True, metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"),
                           help=BOX_HELP + "; one per --reference")
            p.add_argument("--image", default=None, help="optional canvas image; with --mask only its white region changes")
            p.add_argument("--mask", default=None, help="optional mask for --image (white = may change)")
        elif name == "mix":
            p.add_argument("--image", required=True, help="base garment")
            p.add_argument("--style-image", required=True, help="garment that supplies the masked region")
            p.add_argument("--mask", required=True, help="white = take from --style-image")
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


def main(argv: Optional[List[str]] = None) -> None:
    from .cpu import apply_thread_defaults

    apply_thread_defaults()  # passive OpenMP waiting, threads = available cores: before torch is imported
    argv = list(sys.argv[1:] if argv is None else argv)
    # training / evaluation / studio commands forward their arguments untouched to their own parsers
    if argv and argv[0] in FORWARDED:
        import importlib

        module, func = FORWARDED[argv[0]]
        with _one_line_usage_errors(f"m6-fashion {argv[0]}"):
            from .errors import BadInput

            try:
                getattr(importlib.import_module(module), func)(argv[1:])
            except BadInput as e:  # a bad argument or data set, found before any work: one line, no traceback
                raise SystemExit(f"error: {e} (see 'm6-fashion {argv[0]} --help')")
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
    if args.command == "generate":
        _run_pipeline(args)
    elif args.command == "inpaint":
        image, mask = _open_image(args.image, "--image"), _open_image(args.mask, "--mask")
        _check_mask(mask, image)
        _run_pipeline(args, image=image, mask_image=mask)
    elif args.command == "outpaint":
        _run_pipeline(args, image=_open_image(args.image, "--image"), image_box=tuple(args.box))
    elif args.command == "edit":
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
    elif args.command == "mix":
        image, style, mask = (_open_image(args.image, "--image"), _open_image(args.style_image, "--style-image"),
                              _open_image(args.mask, "--mask"))
        _check_mask(mask, image)
        _run_pipeline(args, image=image, style_image=style, mask_image=mask)


if __name__ == "__main__":
    main()
