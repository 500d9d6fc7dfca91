"""Makes the README's example grids with the shipped model (real test-split photos for the editing tasks).

    python examples/make_readme_figures.py --out docs/images
"""

import argparse
import os

import PIL.Image
import PIL.ImageDraw
import torch

from m6_fashion import M6FashionPipeline
from m6_fashion.image_processing import make_grid, pad_to_square, to_rgb

PROMPTS = [
    "Men Navy Blue Casual Shirt", "Women Pink Handbag", "Men Black Sports Shoes", "Women Red Kurta",
    "Unisex Black Sunglasses", "Men White Tshirt", "Women Blue Jeans", "Men Brown Leather Wallet",
]


def _show(im, size=128):
    return pad_to_square(to_rgb(im)).resize((size, size), PIL.Image.BICUBIC)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default="../shared/data/fashion-product-images/test.parquet")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    pipe = M6FashionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)

    # text-to-image: 8 prompts x 2 seeds
    images = []
    for seed in (0, 1):
        images += pipe(PROMPTS, generator=torch.Generator().manual_seed(seed)).images
    make_grid([_show(im) for im in images], cols=8).save(os.path.join(args.out, "text_to_image.png"))
    with open(os.path.join(args.out, "text_to_image_prompts.txt"), "w") as f:
        f.write("columns, left to right (rows: seeds 0 and 1):\n" + "\n".join(PROMPTS) + "\n")

    # editing tasks on real test photos
    import datasets

    ds = datasets.load_dataset("parquet", data_files={"test": args.data})["test"]
    shirt = next(r for r in ds if r["articleType"] == "Shirts")["image"]
    tshirt = next(r for r in ds if r["articleType"] == "Tshirts" and r["baseColour"] == "Red")["image"]
    shoe = next(r for r in ds if r["articleType"] == "Casual Shoes")["image"]
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    s = pipe.sample_size
    lower = PIL.Image.new("L", (s, s), 0)
    lower.paste(255, (0, s // 2, s, s))
    rows = []
    base = pad_to_square(to_rgb(shirt)).resize((s, s), PIL.Image.BICUBIC)
    other = pad_to_square(to_rgb(tshirt)).resize((s, s), PIL.Image.BICUBIC)
    mask_vis = PIL.Image.composite(PIL.Image.new("RGB", (s, s), (255, 0, 255)), base, lower.point(lambda v: 120 if v else 0))
    rows.append([base, mask_vis, pipe("Men Red Casual Shirt", image=base, mask_image=lower, generator=g()).images[0],
                 pipe("Men Green Casual Shirt", image=base, mask_image=lower, generator=g()).images[0]])
    rows.append([base, other, pipe(image=base, style_image=other, mask_image=lower, generator=g()).images[0],
                 pipe(image=base, image_box=(16, 16, 48, 48), generator=g()).images[0]])
    patch_box = (8, 32, 56, 64)
    canvas = PIL.Image.new("RGB", (s, s), (255, 255, 255))
    canvas.paste(pad_to_square(to_rgb(shoe)).resize((48, 32)), (8, 32))
    rows.append([canvas, pipe("Men Black Casual Shoes", reference_images=[(shoe, patch_box)], generator=g()).images[0],
                 pipe("Women White Casual Shoes", reference_images=[(shoe, patch_box)], generator=g()).images[0],
                 pipe(reference_images=[(shirt, (0, 0, 32, 60)), (tshirt, (32, 4, 64, 64))], generator=g()).images[0]])
    make_grid([_show(im) for row in rows for im in row], cols=4).save(os.path.join(args.out, "editing.png"))
    with open(os.path.join(args.out, "editing.txt"), "w") as f:
        f.write(
            "row 1: real test photo | lower half masked | inpainted 'Men Red Casual Shirt' | inpainted 'Men Green Casual Shirt'\n"
            "row 2: garment A | garment B | style mix (lower half from B, seam refined) | outpainting (A placed in the centre)\n"
            "row 3: reference patch placed at a box | 'Men Black Casual Shoes' + patch | 'Women White Casual Shoes' + patch | "
            "two visual conditions (left half: A, right half: B)\n"
        )


if __name__ == "__main__":
    main()
