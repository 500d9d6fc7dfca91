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
import math
import os
import sys
from typing import List, Optional

MAX_STEPS = 1000  # = scheduler.MAX_INFERENCE_STEPS (not imported: parsing imports nothing heavy)
MAX_NUM_IMAGES = 64  # = pipeline.MAX_IMAGES_PER_CALL
MAX_GUIDANCE_SCALE = 50.0
MAX_TEMPERATURE = 100.0
MAX_SIDE = 4096  # --height / --width


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: MESSAGE (see 'PROG --help')`` on stderr, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="bundle folder (written by `m6-fashion export onnx`)")
    p.add_argument("--prompt", default=None, help="caption, e.g. 'Women Pink Handbag' (default: none)")
    p.add_argument("--seed", type=int, default=0, help="random seed for sampling (same seed, same image)")
    p.add_argument("--steps", type=_positive_int, default=10, help=f"SMART passes T (default 10, at most {MAX_STEPS})")
    p.add_argument("--num-images", type=_positive_int, default=1, help="images to write (out.png, out-1.png, ...)")
    p.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance (1.0 = off)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the bundle's scheduler)")
    p.add_argument("--deterministic", action="store_true", help="argmax tokens and lowest-confidence re-masking")
    p.add_argument("--int8", action="store_true", help="use the int8-quantised transformer (bundle exported with --int8)")
    p.add_argument("--provider", default="cpu", choices=["cpu", "cuda", "tensorrt"], help="ONNX Runtime execution provider")
    p.add_argument("--threads", type=_positive_int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--height", type=_positive_int, default=None,
                   help="output height in pixels (default: the bundle's, 256 with a high-resolution decoder); boxes are on the output")
    p.add_argument("--width", type=_positive_int, default=None,
                   help="output width in pixels (default: the bundle's, 192 with a high-resolution decoder); sizes the model "
                        "cannot make are refused with the list of accepted ones (see `info`)")
    p.add_argument("--out", required=True, help="output PNG path (with --num-images N: out.png, out-1.png, ...)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (refused otherwise)")


def _output_paths(out: str, n: int) -> List[str]:
    root, ext = os.path.splitext(out)
    ext = ext or ".png"
    return [f"{root}{ext}" if i == 0 else f"{root}-{i}{ext}" for i in range(n)]


def _check_args(args) -> None:
    """Numbers, boxes and --out are checked before the bundle is loaded: nothing is lost or wasted."""
    if not args.out or args.out.endswith(("/", os.sep)) or os.path.isdir(args.out):
        raise SystemExit(f"error: --out {args.out!r} is not a file path; give a path ending in .png")
    if os.path.splitext(args.out)[1].lower() not in ("", ".png"):
        raise SystemExit(f"error: --out {args.out!r}: the output is a PNG; give a path ending in .png")
    if args.steps > MAX_STEPS:
        raise SystemExit(f"error: --steps {args.steps} is too many; at most {MAX_STEPS}")
    if args.num_images > MAX_NUM_IMAGES:
        raise SystemExit(f"error: --num-images {args.num_images} is too many; at most {MAX_NUM_IMAGES} per call")
    for flag in ("height", "width"):
        value = getattr(args, flag)
        if value is not None and value > MAX_SIDE:
            raise SystemExit(f"error: --{flag} {value} is too large; at most {MAX_SIDE} pixels")
    if not (math.isfinite(args.guidance_scale) and 1.0 <= args.guidance_scale <= MAX_GUIDANCE_SCALE):
        raise SystemExit(f"error: --guidance-scale must be a finite number in [1, {MAX_GUIDANCE_SCALE:g}] (1.0 = off); got {args.guidance_scale}")
    if args.temperature is not None and not (math.isfinite(args.temperature) and 0 < args.temperature <= MAX_TEMPERATURE):
        raise SystemExit(f"error: --temperature must be a finite number in (0, {MAX_TEMPERATURE:g}]; got {args.temperature}")
    if args.seed < 0:
        raise SystemExit(f"error: --seed must be a non-negative integer; got {args.seed}")
    if not 0.0 <= getattr(args, "refine_ratio", 0.0) <= 1.0:  # NaN fails too
        raise SystemExit(f"error: --refine-ratio must be a number in [0, 1]; got {args.refine_ratio}")
    for box in _boxes(args):
        left, top, right, bottom = box
        if not (0 <= left < right and 0 <= top < bottom):
            raise SystemExit(f"error: --box {left} {top} {right} {bottom} is empty or negative; give LEFT TOP RIGHT BOTTOM "
                             "with 0 <= LEFT < RIGHT and 0 <= TOP < BOTTOM (pixels on the output)")
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


def _boxes(args) -> list:
    box = getattr(args, "box", None)
    if box is None:
        return []
    return box if box and isinstance(box[0], list) else [box]


def _open_image(path: str, what: str):
    from PIL import Image

    if os.path.isdir(path):
        raise SystemExit(f"error: {what} {path!r} is a folder, not an image file")
    if not os.path.isfile(path):
        raise SystemExit(f"error: {what} {path!r} does not exist")
    try:
        im = Image.open(path)
        im.load()
        return im
    except Exception as e:  # noqa: BLE001 - reported to the user
        raise SystemExit(f"error: cannot read {what} {path!r}: {e}")


def _runtime(args):
    from .bundle import BundleError, BundleFileNotFoundError
    from .pipeline import M6FashionRuntime

    try:
        return M6FashionRuntime(args.bundle, provider=args.provider, int8=args.int8, num_threads=args.threads)
    except (BundleError, BundleFileNotFoundError, FileNotFoundError, RuntimeError, ValueError, TypeError) as e:
        raise SystemExit(f"error: {e}")


def _check_mask(mask, image, what: str = "--mask") -> None:
    """The mask has the image's size and selects at least one pixel (checked before the bundle is loaded)."""
    if image is not None and mask.size != image.size:
        raise SystemExit(f"error: {what} is {mask.size[0]}x{mask.size[1]} but --image is {image.size[0]}x{image.size[1]}; "
                         "give a mask of the same size as the image")
    from .image import preprocess_mask

    try:
        selects = preprocess_mask(mask, max(mask.size)).max() > 0
    except (ValueError, TypeError) as e:
        raise SystemExit(f"error: {what}: {e}")
    if not selects:
        raise SystemExit(f"error: {what} selects no pixel (all black after thresholding at 0.5): white marks the region to regenerate")


def _generate(args, **kwargs) -> None:
    from .pipeline import save_images

    if "mask_image" in kwargs:
        _check_mask(kwargs["mask_image"], kwargs.get("image"))
    rt = _runtime(args)
    try:
        out = rt(prompt=args.prompt, num_inference_steps=args.steps, num_images_per_prompt=args.num_images,
                 guidance_scale=args.guidance_scale, temperature=args.temperature,
                 deterministic=True if args.deterministic else None, seed=args.seed, height=args.height,
                 width=args.width, **kwargs)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"error: {e}")
    for path in save_images(out.images, args.out):
        print(path)


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(prog="m6-fashion-runtime", description="M6-Fashion inference without PyTorch (ONNX Runtime).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("generate", help="text-to-image (or unconditional without --prompt)")
    _add_common(p)
    p = sub.add_parser("inpaint", help="regenerate the white region of --mask in --image (text-guided with --prompt)")
    _add_common(p)
    p.add_argument("--image", required=True, help="image to edit")
    p.add_argument("--mask", required=True, help="mask image, same size as --image; white = regenerate")
    p = sub.add_parser("outpaint", help="place --image inside --box and generate the rest of the canvas")
    _add_common(p)
    p.add_argument("--image", required=True)
    p.add_argument("--box", type=int, nargs=4, required=True, metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"),
                   help="pixel box on the output image (e.g. 48 64 144 192 on the default 192x256 output)")
    p = sub.add_parser("edit", help="local editing: --reference images placed at --box as visual conditions")
    _add_common(p)
    p.add_argument("--reference", action="append", required=True, help="reference patch image (repeat with --box for several)")
    p.add_argument("--box", type=int, nargs=4, action="append", required=True, metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"),
                   help="pixel box of the matching --reference on the output image")
    p.add_argument("--image", default=None, help="optional image to edit: its --box regions are regenerated (or, with --mask, the mask's)")
    p.add_argument("--mask", default=None, help="mask for --image; white = regenerate")
    p = sub.add_parser("mix", help="style mixing: the white region of --mask comes from --style-image, the seam is refined")
    _add_common(p)
    p.add_argument("--image", required=True, help="base garment")
    p.add_argument("--style-image", required=True, help="garment whose region is taken")
    p.add_argument("--mask", required=True, help="mask, white = taken from --style-image")
    p.add_argument("--refine-ratio", type=float, default=0.25, help="share of cells around the seam re-sampled (default 0.25)")
    p = sub.add_parser("info", help="print the bundle's configuration")
    p.add_argument("--bundle", required=True)
    p.add_argument("--verify", action="store_true", help="also verify the files' sha256 checksums")
    args = parser.parse_args(argv)
    if args.command != "info":
        _check_args(args)

    if args.command == "info":
        from .bundle import BundleError, BundleFileNotFoundError, load_bundle

        try:
            b = load_bundle(args.bundle)
            if args.verify:
                b.verify_checksums()
        except (BundleError, BundleFileNotFoundError) as e:
            raise SystemExit(f"error: {e}")
        from .canvas import output_sizes

        sizes = output_sizes(b.canvas_sides(), b.geometry.grid_size)
        print(json.dumps({"format_version": b.format_version, "geometry": vars(b.geometry), "special_token_ids": b.special_token_ids,
                          "scheduler": b.scheduler, "files": b.files, "int8": b.has_int8, "canvases": b.canvases,
                          "default_size": {"height": b.default_size[0], "width": b.default_size[1]},
                          "output_sizes": [f"{w}x{h}" for h, w in sizes]}, indent=2))
    elif args.command == "generate":
        _generate(args)
    elif args.command == "inpaint":
        _generate(args, image=_open_image(args.image, "--image"), mask_image=_open_image(args.mask, "--mask"))
    elif args.command == "outpaint":
        _generate(args, image=_open_image(args.image, "--image"), image_box=tuple(args.box))
    elif args.command == "edit":
        if len(args.reference) != len(args.box):
            raise SystemExit(f"error: give one --box per --reference; got {len(args.reference)} references and {len(args.box)} boxes")
        if args.mask is not None and args.image is None:
            raise SystemExit("error: --mask needs --image (the image it masks)")
        refs = [(_open_image(r, "--reference"), tuple(b)) for r, b in zip(args.reference, args.box)]
        extra = {} if args.image is None else {"image": _open_image(args.image, "--image")}
        if args.mask is not None:
            extra["mask_image"] = _open_image(args.mask, "--mask")
        _generate(args, reference_images=refs, **extra)
    elif args.command == "mix":
        _generate(args, image=_open_image(args.image, "--image"), style_image=_open_image(args.style_image, "--style-image"),
                  mask_image=_open_image(args.mask, "--mask"), refine_ratio=args.refine_ratio)


if __name__ == "__main__":
    main()
