"""The `m6-fashion-runtime` command line (no PyTorch needed).

    m6-fashion-runtime generate --bundle DIR --prompt "Men Navy Blue Casual Shirt" --seed 0 --out shirt.png
    m6-fashion-runtime generate --bundle DIR --prompt "Women Pink Handbag" --height 64 --width 64 --out bag.png
    m6-fashion-runtime inpaint  --bundle DIR --image in.png --mask mask.png --prompt "Men Red Shirt" --out out.png
    m6-fashion-runtime outpaint --bundle DIR --image in.png --box 48 64 144 192 --out out.png
    m6-fashion-runtime info     --bundle DIR [--verify]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from m6_fashion_core import cli as core
from m6_fashion_core.cli import (  # noqa: F401 - the limits, importable from this module as before
    MAX_GUIDANCE_SCALE,
    MAX_NUM_IMAGES,
    MAX_SIDE,
    MAX_STEPS,
    MAX_TEMPERATURE,
)

_Parser = core.OneLineErrorParser
_positive_int = core.positive_int
_output_paths = core.output_paths
_boxes = core.boxes_of


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="bundle folder (written by `m6-fashion export onnx`)")
    core.add_sampling_arguments(p, seed_help="random seed for sampling (same seed, same image)",
                                steps_help=f"SMART passes T (default 10, at most {MAX_STEPS})",
                                temperature_help="sampling temperature (default: the bundle's scheduler)")
    p.add_argument("--deterministic", action="store_true", help="argmax tokens and lowest-confidence re-masking")
    p.add_argument("--int8", action="store_true", help="use the int8-quantised transformer (bundle exported with --int8)")
    p.add_argument("--provider", default="cpu", choices=["cpu", "cuda", "tensorrt"], help="ONNX Runtime execution provider")
    p.add_argument("--threads", type=_positive_int, default=None, help="ONNX Runtime intra-op threads")
    core.add_size_arguments(
        p, height_help="output height in pixels (default: the bundle's, 256 with a high-resolution decoder); boxes are on the output",
        width_help="output width in pixels (default: the bundle's, 192 with a high-resolution decoder); sizes the model "
                   "cannot make are refused with the list of accepted ones (see `info`)")
    core.add_output_arguments(p)


def _check_args(args) -> None:
    """Numbers, boxes and --out are checked before the bundle is loaded: nothing is lost or wasted."""
    core.check_out_name(args.out)
    core.check_steps(args.steps)
    core.check_num_images(args.num_images)
    core.check_sides(args, ("height", "width"))
    core.check_guidance_scale(args.guidance_scale)
    core.check_guidance_min_p(args.guidance_min_p)
    core.check_negative_prompt(args)
    core.check_temperature(args.temperature)
    if args.seed < 0:
        raise SystemExit(f"error: --seed must be a non-negative integer; got {args.seed}")
    if not 0.0 <= getattr(args, "refine_ratio", 0.0) <= 1.0:  # NaN fails too
        raise SystemExit(f"error: --refine-ratio must be a number in [0, 1]; got {args.refine_ratio}")
    core.check_boxes(args)
    core.check_out_folder(args.out, args.num_images, args.overwrite)


def _read_image(path: str):
    from PIL import Image

    im = Image.open(path)
    im.load()
    return im


def _open_image(path: str, what: str):
    return core.open_input(path, what, _read_image)


def _runtime(args):
    from .bundle import BundleError, BundleFileNotFoundError
    from .pipeline import M6FashionRuntime

    with core.errors_exit(BundleError, BundleFileNotFoundError, FileNotFoundError, RuntimeError, ValueError, TypeError):
        return M6FashionRuntime(args.bundle, provider=args.provider, int8=args.int8, num_threads=args.threads)


def _check_mask(mask, image, what: str = "--mask") -> None:
    """The mask has the image's size and selects at least one pixel (checked before the bundle is loaded)."""
    core.check_mask_size(mask.size, None if image is None else image.size, what)
    from .image import preprocess_mask

    try:
        selects = preprocess_mask(mask, max(mask.size)).max() > 0
    except (ValueError, TypeError) as e:
        raise SystemExit(f"error: {what}: {e}")
    if not selects:
        raise core.empty_mask_error(what)


def _generate(args, **kwargs) -> None:
    from .pipeline import save_images

    if "mask_image" in kwargs:
        _check_mask(kwargs["mask_image"], kwargs.get("image"))
    rt = _runtime(args)
    with core.errors_exit():
        out = rt(prompt=args.prompt, num_inference_steps=args.steps, num_images_per_prompt=args.num_images,
                 **core.guidance_kwargs(args.guidance_scale, args.guidance_min_p, args.negative_prompt, args.negative_guidance_scale), temperature=args.temperature,
                 deterministic=True if args.deterministic else None, seed=args.seed, height=args.height,
                 width=args.width, **kwargs)
    for path in save_images(out.images, args.out):
        print(path)


def build_parser() -> argparse.ArgumentParser:
    """The command tree: generate, inpaint, outpaint, edit, mix (the image commands) and info."""
    parser = _Parser(prog="m6-fashion-runtime", description="M6-Fashion inference without PyTorch (ONNX Runtime).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("generate", help="text-to-image (or unconditional without --prompt)")
    _add_common(p)
    p = sub.add_parser("inpaint", help="regenerate the white region of --mask in --image (text-guided with --prompt)")
    _add_common(p)
    core.add_inpaint_arguments(p)
    p = sub.add_parser("outpaint", help="place --image inside --box and generate the rest of the canvas")
    _add_common(p)
    p.add_argument("--image", required=True)
    core.add_box_argument(p, help="pixel box on the output image (e.g. 48 64 144 192 on the default 192x256 output)")
    p = sub.add_parser("edit", help="local editing: --reference images placed at --box as visual conditions")
    _add_common(p)
    p.add_argument("--reference", action="append", required=True, help="reference patch image (repeat with --box for several)")
    core.add_box_argument(p, help="pixel box of the matching --reference on the output image", repeated=True)
    p.add_argument("--image", default=None, help="optional image to edit: its --box regions are regenerated (or, with --mask, the mask's)")
    p.add_argument("--mask", default=None, help="mask for --image; white = regenerate")
    p = sub.add_parser("mix", help="style mixing: the white region of --mask comes from --style-image, the seam is refined")
    _add_common(p)
    core.add_mix_arguments(p, style_help="garment whose region is taken", mask_help="mask, white = taken from --style-image")
    p.add_argument("--refine-ratio", type=float, default=0.25, help="share of cells around the seam re-sampled (default 0.25)")
    p = sub.add_parser("info", help="print the bundle's configuration")
    p.add_argument("--bundle", required=True)
    p.add_argument("--verify", action="store_true", help="also verify the files' sha256 checksums")
    return parser


def _info(args) -> None:
    """`info`: the bundle's configuration and the output sizes it can make, as JSON on stdout."""
    from .bundle import BundleError, BundleFileNotFoundError, load_bundle
    from .canvas import output_sizes

    with core.errors_exit(BundleError, BundleFileNotFoundError):
        b = load_bundle(args.bundle)
        if args.verify:
            b.verify_checksums()
    sizes = output_sizes(b.canvas_sides(), b.geometry.grid_shape)
    print(json.dumps({"format_version": b.format_version, "geometry": vars(b.geometry), "special_token_ids": b.special_token_ids,
                      "scheduler": b.scheduler, "files": b.files, "int8": b.has_int8, "canvases": b.canvases,
                      "default_size": {"height": b.default_size[0], "width": b.default_size[1]},
                      "output_sizes": [f"{w}x{h}" for h, w in sizes]}, indent=2))


def _edit(args) -> None:
    """`edit`: one --box per --reference; an optional --image (and its --mask) to edit."""
    if len(args.reference) != len(args.box):
        raise SystemExit(f"error: give one --box per --reference; got {len(args.reference)} references and {len(args.box)} boxes")
    if args.mask is not None and args.image is None:
        raise SystemExit("error: --mask needs --image (the image it masks)")
    refs = [(_open_image(r, "--reference"), tuple(b)) for r, b in zip(args.reference, args.box)]
    extra = {} if args.image is None else {"image": _open_image(args.image, "--image")}
    if args.mask is not None:
        extra["mask_image"] = _open_image(args.mask, "--mask")
    _generate(args, reference_images=refs, **extra)


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "info":
        _info(args)
        return
    _check_args(args)
    if args.command == "generate":
        _generate(args)
    elif args.command == "inpaint":
        _generate(args, image=_open_image(args.image, "--image"), mask_image=_open_image(args.mask, "--mask"))
    elif args.command == "outpaint":
        _generate(args, image=_open_image(args.image, "--image"), image_box=tuple(args.box))
    elif args.command == "edit":
        _edit(args)
    elif args.command == "mix":
        _generate(args, image=_open_image(args.image, "--image"), style_image=_open_image(args.style_image, "--style-image"),
                  mask_image=_open_image(args.mask, "--mask"), refine_ratio=args.refine_ratio)


if __name__ == "__main__":
    main()
