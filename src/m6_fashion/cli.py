"""The `m6-fashion` command line.

    m6-fashion generate --prompt "Men Navy Blue Casual Shirt" --seed 0 --out shirt.png
    m6-fashion inpaint  --image in.png --mask mask.png --prompt "Men Red Shirt" --out out.png
    m6-fashion edit     --reference patch.png --box 16 0 48 24 --prompt "..." --out out.png
    m6-fashion mix      --image a.png --style-image b.png --mask mask.png --out out.png
    m6-fashion outpaint --image in.png --box 16 16 48 48 --out out.png
    m6-fashion train-tokenizer ... | train-transformer ...   (training scripts, see --help)
    m6-fashion studio [--model DIR] [--port N]   (the web studio on 127.0.0.1)
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

BOX_HELP = "pixel box LEFT TOP RIGHT BOTTOM on the output canvas (e.g. 0 0 32 32 on a 64x64 canvas)"


def _add_common(p: argparse.ArgumentParser, with_prompt: bool = True) -> None:
    p.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the shipped model)")
    if with_prompt:
        p.add_argument("--prompt", default=None, help="caption, e.g. 'Women Pink Handbag' (default: none)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same image)")
    p.add_argument("--steps", type=int, default=10, help="SMART passes T (default 10)")
    p.add_argument("--num-images", type=int, default=1, help="images to write (out.png, out-1.png, ...)")
    p.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance (1.0 = off)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the scheduler's)")
    p.add_argument("--bf16", action="store_true",
                   help="run the transformer in bfloat16: about 1.5x faster on CPUs with AVX512-BF16 or AMX "
                        "(slower on CPUs without them); tokenizer and decoder stay float32")
    p.add_argument("--size", type=int, default=None, help="upscale the written PNG to this many pixels (nearest-free bicubic)")
    p.add_argument("--out", required=True, help="output PNG path")


def _open_image(path: str, what: str):
    import PIL.Image

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

    root, ext = os.path.splitext(out)
    ext = ext or ".png"
    paths = []
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    for i, im in enumerate(images):
        if size:
            im = im.resize((size, size), PIL.Image.BICUBIC)
        path = f"{root}{ext}" if i == 0 else f"{root}-{i}{ext}"
        im.save(path)
        paths.append(path)
    return paths


def _run_pipeline(args, **kwargs) -> None:
    import torch

    from .pipelines import M6FashionPipeline

    dtype = {"transformer": torch.bfloat16 if args.bf16 else torch.float32, "default": torch.float32}
    pipe = M6FashionPipeline.from_pretrained(args.model, dtype=dtype)
    generator = torch.Generator().manual_seed(args.seed)
    try:
        out = pipe(
            prompt=args.prompt, num_inference_steps=args.steps, num_images_per_prompt=args.num_images,
            guidance_scale=args.guidance_scale, temperature=args.temperature, generator=generator, **kwargs,
        )
    except (ValueError, TypeError) as e:
        raise SystemExit(f"error: {e}")
    for path in _write(out.images, args.out, args.size):
        print(path)


def _export_onnx(argv: List[str]) -> None:
    """Runs `conversion/export_onnx.py` of this checkout (the exporters are not part of the installed package)."""
    import importlib.util

    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    script = os.path.join(root, "conversion", "export_onnx.py")
    if not os.path.isfile(script):
        raise SystemExit("error: `m6-fashion export onnx` needs a source checkout (conversion/export_onnx.py); "
                         "install with `pip install -e .[export]` from a clone")
    spec = importlib.util.spec_from_file_location("m6_fashion_conversion_export_onnx", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # training commands forward their arguments untouched to their own parsers
    if argv and argv[0] == "train-tokenizer":
        from .training.train_tokenizer import main as train_main

        train_main(argv[1:])
        return
    if argv and argv[0] == "train-transformer":
        from .training.train_transformer import main as train_main

        train_main(argv[1:])
        return
    if argv and argv[0] == "finetune":
        from .training.finetune import main as finetune_main

        finetune_main(argv[1:])
        return
    if argv and argv[0] == "evaluate":
        from .evaluation.evaluate import main as evaluate_main

        evaluate_main(argv[1:])
        return
    if argv[:2] == ["export", "onnx"]:
        _export_onnx(argv[2:])
        return
    if argv and argv[0] == "studio":
        from .studio import main as studio_main

        studio_main(argv[1:])
        return

    parser = argparse.ArgumentParser(prog="m6-fashion", description="M6-Fashion: generate and edit garment images.")
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
    p.add_argument("--box", type=int, nargs=4, required=True, metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"), help=BOX_HELP)

    p = sub.add_parser("edit", help="local editing: put reference patch(es) at box(es), optionally guided by --prompt")
    _add_common(p)
    p.add_argument("--reference", action="append", required=True, help="reference patch image (repeat for several)")
    p.add_argument("--box", type=int, nargs=4, action="append", required=True, metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"),
                   help=BOX_HELP + "; one per --reference")
    p.add_argument("--image", default=None, help="optional canvas image; with --mask only its white region changes")
    p.add_argument("--mask", default=None, help="optional mask for --image (white = may change)")

    p = sub.add_parser("mix", help="style mixing: --mask region from --style-image, the rest from --image, seam refined")
    _add_common(p)
    p.add_argument("--image", required=True, help="base garment")
    p.add_argument("--style-image", required=True, help="garment that supplies the masked region")
    p.add_argument("--mask", required=True, help="white = take from --style-image")

    sub.add_parser("train-tokenizer", help="train the stage-1 tokenizer + decoder (see train-tokenizer --help)")
    sub.add_parser("train-transformer", help="train the stage-2 transformer (see train-transformer --help)")
    sub.add_parser("export", help="`export onnx --model DIR --out DIR`: ONNX bundle for the torch-free runtime")
    sub.add_parser("studio", help="start the studio web page on 127.0.0.1 (see studio --help; needs the [studio] extra)")

    args = parser.parse_args(argv)
    if args.command == "generate":
        _run_pipeline(args)
    elif args.command == "inpaint":
        _run_pipeline(args, image=_open_image(args.image, "--image"), mask_image=_open_image(args.mask, "--mask"))
    elif args.command == "outpaint":
        _run_pipeline(args, image=_open_image(args.image, "--image"), image_box=tuple(args.box))
    elif args.command == "edit":
        if len(args.reference) != len(args.box):
            raise SystemExit(f"error: give one --box per --reference (got {len(args.reference)} references, {len(args.box)} boxes)")
        refs = [(_open_image(r, "--reference"), tuple(b)) for r, b in zip(args.reference, args.box)]
        kwargs = {"reference_images": refs}
        if args.image:
            kwargs["image"] = _open_image(args.image, "--image")
            if args.mask:
                kwargs["mask_image"] = _open_image(args.mask, "--mask")
        _run_pipeline(args, **kwargs)
    elif args.command == "mix":
        _run_pipeline(args, image=_open_image(args.image, "--image"), style_image=_open_image(args.style_image, "--style-image"),
                      mask_image=_open_image(args.mask, "--mask"))


if __name__ == "__main__":
    main()
