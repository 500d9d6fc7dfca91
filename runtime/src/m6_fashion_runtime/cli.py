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
import os
import sys
from typing import List, Optional


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="bundle folder (written by conversion/export_onnx.py)")
    p.add_argument("--prompt", default=None, help="caption, e.g. 'Women Pink Handbag' (default: none)")
    p.add_argument("--seed", type=int, default=0, help="random seed for sampling (same seed, same image)")
    p.add_argument("--steps", type=int, default=10, help="SMART passes T (default 10)")
    p.add_argument("--num-images", type=int, default=1, help="images to write (out.png, out-1.png, ...)")
    p.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance (1.0 = off)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the bundle's scheduler)")
    p.add_argument("--deterministic", action="store_true", help="argmax tokens and lowest-confidence re-masking")
    p.add_argument("--int8", action="store_true", help="use the int8-quantised transformer (bundle exported with --int8)")
    p.add_argument("--provider", default="cpu", choices=["cpu", "cuda", "tensorrt"], help="ONNX Runtime execution provider")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--height", type=int, default=None,
                   help="output height in pixels (default: the bundle's, 256 with a high-resolution decoder); boxes are on the output")
    p.add_argument("--width", type=int, default=None,
                   help="output width in pixels (default: the bundle's, 192 with a high-resolution decoder); sizes the model "
                        "cannot make are refused with the list of accepted ones (see `info`)")
    p.add_argument("--out", required=True, help="output PNG path")


def _open_image(path: str, what: str):
    from PIL import Image

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
    except (BundleError, BundleFileNotFoundError, FileNotFoundError, RuntimeError, ValueError) as e:
        raise SystemExit(f"error: {e}")


def _generate(args, **kwargs) -> None:
    from .pipeline import save_images

    if args.num_images < 1:
        raise SystemExit("error: --num-images must be >= 1")
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
    parser = argparse.ArgumentParser(prog="m6-fashion-runtime", description="M6-Fashion inference without PyTorch (ONNX Runtime).")
    sub = parser.add_subparsers(dest="command", required=True)
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
