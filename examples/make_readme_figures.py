"""Makes the README's example grids with the shipped model (real test-split photos for the editing tasks).

    python examples/make_readme_figures.py --out docs/images
"""

import argparse
import os

import PIL.Image
import PIL.ImageDraw
import torch

from m6_fashion import M6FashionPipeline
from m6_fashion.image_processing import make_grid, to_rgb

PROMPTS = [
    "Men Navy Blue Casual Shirt", "Women Pink Handbag", "Men Black Sports Shoes", "Women Red Kurta",
    "Unisex Black Sunglasses", "Men White Tshirt", "Women Blue Jeans", "Men Brown Leather Wallet",
]


def _fit(im, width: int, height: int) -> PIL.Image.Image:
    """An image placed on a white `width` x `height` sheet, aspect kept (as the model pads its inputs)."""
    im = to_rgb(im)
    scale = min(width / im.width, height / im.height)
    small = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), PIL.Image.BICUBIC)
    sheet = PIL.Image.new("RGB", (width, height), (255, 255, 255))
    sheet.paste(small, ((width - small.width) // 2, (height - small.height) // 2))
    return sheet


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default="../shared/data/fashion-product-images-hr/test.parquet",
                        help="real photos for the editing rows (the high-resolution test split)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    pipe = M6FashionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    h, w = pipe.default_size  # 256 x 192 for the shipped model
    show = lambda im: _fit(im, w, h)  # noqa: E731  every cell at the output size, nothing enlarged

    # text-to-image: 8 prompts x 2 seeds
    images = []
    for seed in (0, 1):
        images += pipe(PROMPTS, generator=torch.Generator().manual_seed(seed)).images
    make_grid([show(im) for im in images], cols=8).save(os.path.join(args.out, "text_to_image.png"))
    with open(os.path.join(args.out, "text_to_image_prompts.txt"), "w") as f:
        f.write("columns, left to right (rows: seeds 0 and 1):\n" + "\n".join(PROMPTS) + "\n")

    # editing tasks on real test photos
    import datasets

    ds = datasets.load_dataset("parquet", data_files={"test": args.data})["test"]
    shirt = next(r for r in ds if r["articleType"] == "Shirts")["image"]
    tshirt = next(r for r in ds if r["articleType"] == "Tshirts" and r["baseColour"] == "Red")["image"]
    shoe = next(r for r in ds if r["articleType"] == "Casual Shoes")["image"]
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    lower = PIL.Image.new("L", (w, h), 0)
    lower.paste(255, (0, h // 2, w, h))
    rows = []
    base, other = show(shirt), show(tshirt)
    mask_vis = PIL.Image.composite(PIL.Image.new("RGB", (w, h), (255, 0, 255)), base, lower.point(lambda v: 120 if v else 0))
    rows.append([base, mask_vis, pipe("Men Red Casual Shirt", image=base, mask_image=lower, generator=g()).images[0],
                 pipe("Men Green Casual Shirt", image=base, mask_image=lower, generator=g()).images[0]])
    rows.append([base, other, pipe(image=base, style_image=other, mask_image=lower, generator=g()).images[0],
                 pipe(image=base, image_box=(w // 4, h // 4, 3 * w // 4, 3 * h // 4), generator=g()).images[0]])
    patch_box = (w // 8, h // 2, 7 * w // 8, h)
    canvas = PIL.Image.new("RGB", (w, h), (255, 255, 255))
    canvas.paste(_fit(shoe, patch_box[2] - patch_box[0], patch_box[3] - patch_box[1]), patch_box[:2])
    halves = [(shirt, (0, 0, w // 2, h)), (tshirt, (w // 2, 0, w, h))]
    rows.append([canvas, pipe("Men Black Casual Shoes", reference_images=[(shoe, patch_box)], generator=g()).images[0],
                 pipe("Women White Casual Shoes", reference_images=[(shoe, patch_box)], generator=g()).images[0],
                 pipe(reference_images=halves, generator=g()).images[0]])
    make_grid([show(im) for row in rows for im in row], cols=4).save(os.path.join(args.out, "editing.png"))
    with open(os.path.join(args.out, "editing.txt"), "w") as f:
        f.write(
            f"all cells {w}x{h}, the model's output size; photos from the high-resolution test split\n"
            "row 1: real test photo | lower half masked | inpainted 'Men Red Casual Shirt' | inpainted 'Men Green Casual Shirt'\n"
            "row 2: garment A | garment B | style mix (lower half from B, seam refined) | outpainting (A placed in the centre)\n"
            "row 3: reference patch placed at a box | 'Men Black Casual Shoes' + patch | 'Women White Casual Shoes' + patch | "
            "two visual conditions (left half: A, right half: B)\n"
        )


if __name__ == "__main__":
    main()
