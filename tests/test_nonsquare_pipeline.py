"""Non-square models in the pipeline: sizes, canvases and every task on a 3:4 grid.

A tiny random pipeline (`build_tiny_nonsquare_pipeline`) reads 32 x 24 px (height x width) as an 8 x 6 token grid;
with `hr=True` a `decoder_hr` paints the same tokens at 128 x 96 px. The inputs are real 3:4 product photos of
`fashion-product-images-hr`. Square models are covered by the other pipeline tests and must be unchanged.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import build_tiny_nonsquare_pipeline
from m6_fashion.image_processing import preprocess
from m6_fashion_core import canvas as core_canvas
from m6_fashion_core import image as core_image
from m6_fashion_core import outpainting as core_outpainting
from m6_fashion_core import validation

@pytest.fixture(scope="module")
def hr_photos(hr_test_photos):
    """Four real high-resolution test photos (PIL, portrait 3:4) and their captions."""
    return hr_test_photos


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_nonsquare_pipeline()


@pytest.fixture(scope="module")
def hr_pipe():
    return build_tiny_nonsquare_pipeline(hr=True)


# ------------------------------------------------------------------------------------------ core geometry
def test_canvas_geometry_of_a_nonsquare_grid():
    grid = (16, 12)
    assert core_canvas.canvas_shape(256, grid) == (256, 192)
    assert core_canvas.canvas_shape(64, grid) == (64, 48)
    assert core_canvas.canvas_shape(64, 16) == (64, 64)
    heights, widths = core_canvas.crop_sizes(256, grid)
    assert heights == [128, 160, 192, 224, 256] and widths == [96, 128, 160, 192]
    assert core_canvas.default_size([64, 256], grid) == (256, 192)  # the whole largest canvas
    assert core_canvas.default_size([64], grid) == (64, 48)
    assert core_canvas.default_size([64, 256], 16) == (256, 192)  # square models: unchanged (3:4 crop)
    sizes = core_canvas.output_sizes([64, 256], grid)
    assert (256, 192) in sizes and (64, 48) in sizes and (256, 256) not in sizes and (48, 64) not in sizes
    # one side given keeps the 3:4 aspect ratio on the smallest canvas that has it
    assert core_canvas.complete_size([64, 256], grid, 192, None) == (192, 128)  # 144 ties: the smaller
    assert core_canvas.complete_size([64, 256], grid, None, 48) == (64, 48)
    c = core_canvas.OutputCanvas.for_size([64, 256], grid, 224, 160)
    assert (c.side, c.grid, c.grid_shape, c.canvas_shape, c.cell) == (256, 16, (16, 12), (256, 192), 16)
    assert c.offset == (16, 16) and c.painted == (256, 192)
    assert c.box_to_cells((0, 0, 160, 224)) == (1, 1, 14, 10)
    mask = c.upsample_cells(np.eye(1, 16 * 12, 13, dtype=bool))  # row 1, col 1
    assert mask.shape == (1, 1, 256, 192) and mask[0, 0, 16:32, 16:32].all() and mask.sum() == 256
    with pytest.raises(ValueError, match=r"height in \[128, 160, 192, 224, 256\], width in \[96, 128, 160, 192\]"):
        core_canvas.OutputCanvas.for_size([64, 256], grid, 256, 256, holder="pipeline")


def test_wide_canvas_and_windows_of_a_nonsquare_grid():
    grid = (16, 12)
    wide = core_outpainting.wide_canvas([64, 256], grid, 256, 288)  # 1.5x the 192-px width
    assert wide is not None and (wide.rows, wide.cols, wide.grid_shape) == (16, 18, (16, 12))
    assert core_outpainting.wide_canvas([64, 256], grid, 256, 192) is None  # the canvas itself is not wide
    assert core_outpainting.wide_canvas([64, 256], grid, 256, 400) is None  # beyond 2x the width
    assert "width from 192 to 384" in core_outpainting.wide_sizes_hint([64, 256], grid)
    known = wide.known_cells((0, 3, 16, 12))
    order = core_outpainting.plan_windows(known, grid)
    covered = known.copy()
    for top, left in order:
        assert 0 <= top <= 16 - 16 and 0 <= left <= 18 - 12
        covered[top : top + 16, left : left + 12] = True
    assert covered.all() and len(order) == 2


def test_image_and_mask_preprocessing_to_a_nonsquare_size(hr_photos):
    photo = hr_photos[0][0]
    arr = core_image.preprocess(photo, (64, 48))
    assert arr.shape == (1, 3, 64, 48) and arr.min() >= -1 and arr.max() <= 1
    # a square image is padded on white above and below to the 3:4 portrait (never cropped)
    square = PIL.Image.new("RGB", (40, 40), (0, 0, 0))
    padded = core_image.preprocess(square, (64, 48))[0]
    assert (padded[:, 0, :] == 1).all() and (padded[:, -1, :] == 1).all() and (padded[:, 32, :] == -1).all()
    assert core_image.preprocess(photo, 64).shape == (1, 3, 64, 64)  # int sizes unchanged
    mask = PIL.Image.new("L", (40, 40), 255)
    m = core_image.preprocess_mask(mask, (64, 48))
    assert m.shape == (1, 64, 48) and m[0, 0, 24] == 0 and m[0, 32, 0] == 1  # padding never enters the mask
    cells = core_image.cell_mask(m[None], (16, 12))
    assert cells.shape == (1, 192)
    seam = validation.seam_cells(cells, (16, 12), 0.0, None)
    assert seam.shape == (1, 192) and seam.any()


def test_component_checks_compare_grid_shapes(pipe):
    from m6_fashion import M6FashionPipeline, PQTokenizer

    square_tok = PQTokenizer(sample_size=32, block_out_channels=(8, 16, 16), latent_channels=16, num_groups=4, codebook_size=32)
    parts = {k: v for k, v in pipe.components.items()}
    parts["image_tokenizer"] = square_tok
    with pytest.raises(ValueError, match=r"image tokenizer grid 8x8 \(rows x cols\) but transformer grid 8x6"):
        M6FashionPipeline(**parts)


# ------------------------------------------------------------------------------------------ pipeline
def test_sizes_and_geometry(pipe, hr_pipe):
    assert pipe.grid_shape == (8, 6) and pipe.sample_shape == (32, 24) and pipe.default_size == (32, 24)
    assert hr_pipe.canvas_sides() == [32, 128] and hr_pipe.default_size == (128, 96)
    assert (128, 96) in hr_pipe.output_sizes() and (128, 128) not in hr_pipe.output_sizes()
    with pytest.raises(ValueError, match="height in"):
        hr_pipe(height=128, width=128, num_inference_steps=1)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("hr", [False, True])
def test_every_task_at_the_nonsquare_default_size(pipe, hr_pipe, hr_photos, hr):
    p = hr_pipe if hr else pipe
    h, w = p.default_size
    photo, caption = hr_photos[0]
    other = hr_photos[1][0]
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    run = dict(num_inference_steps=2, output_type="np")

    out = p(caption, generator=gen(), **run)
    assert out.images.shape == (1, h, w, 3) and tuple(out.tokens.shape) == (1, 8, 6, 4)

    # inpainting the lower half: the upper half keeps the photo's pixels exactly (blended back)
    mask = PIL.Image.new("L", photo.size, 0)
    mask.paste(255, (0, photo.height // 2, photo.width, photo.height))
    out = p("Men Red Casual Shirt", image=photo, mask_image=mask, generator=gen(), **run)
    base = (np.asarray(core_image.square_image(photo, (h, w))).astype(np.float32))
    assert out.images.shape == (1, h, w, 3)
    assert np.abs(out.images[0, : h // 2 - h // 8].astype(np.float32) - base[: h // 2 - h // 8]).max() <= 1
    # the lower half is regenerated: its tokens differ from the photo's own tokens somewhere
    photo_tokens = p.encode_images(preprocess(photo, p.sample_shape))
    assert tuple(photo_tokens.shape) == (1, 48, 4)
    lower = out.tokens.reshape(1, 48, 4)[:, 24:]
    assert not torch.equal(lower, photo_tokens[:, 24:])
    assert torch.equal(out.tokens.reshape(1, 48, 4)[:, :18], photo_tokens[:, :18])  # top 3 rows kept

    # outpainting inside the canvas: the photo in the middle, everything around it generated
    box = (w // 6, h // 8, w - w // 6, h - h // 8)
    out = p(caption, image=photo, image_box=box, generator=gen(), **run)
    assert out.images.shape == (1, h, w, 3)

    # outpainting onto a 1.5x wider canvas, window by window
    wide_w = w * 3 // 2
    out = p(caption, image=photo, image_box=(w // 4, 0, w // 4 + w, h), height=h, width=wide_w, generator=gen(), **run)
    assert out.images.shape == (1, h, wide_w, 3) and tuple(out.tokens.shape) == (1, 8, 9, 4)
    assert (out.tokens != p.transformer.config.codebook_size).all()

    # reference patches (two conditions) on an empty canvas, and inside an image without a mask
    refs = [(other, (0, 0, w // 3, h // 4)), (photo, (w // 2, h // 2, w // 2 + w // 3, h // 2 + h // 4))]
    out = p(caption, reference_images=refs, generator=gen(), **run)
    assert out.images.shape == (1, h, w, 3)
    out = p(caption, image=photo, reference_images=refs[:1], generator=gen(), **run)
    assert np.abs(out.images[0, h // 4 :].astype(np.float32) - base[h // 4 :]).max() <= 1  # only the box changes

    # style mixing: the lower half from another photo, the seam refined
    out = p(image=photo, style_image=other, mask_image=mask, generator=gen(), **run)
    assert out.images.shape == (1, h, w, 3)

    # a cropped size: one cell off each side
    ch, cw = h - 2 * (h // 8), w - 2 * (w // 6)
    out = p(caption, height=ch, width=cw, generator=gen(), **run)
    assert out.images.shape == (1, ch, cw, 3)
