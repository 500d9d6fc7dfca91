"""Output sizes: `height`/`width`, the high-resolution decoder, and boxes/masks on non-square outputs.

The tiny pipelines: `tiny_pipeline` paints a 64-px canvas from 16x16 tokens (4 px cells); `tiny_hr_pipeline`
adds a `decoder_hr` painting 128 px from the same tokens (8 px cells), so its default output is the 96x128
portrait crop, with a margin of 2 cells on the left and right.
"""

import numpy as np
import PIL.Image
import pytest
import torch

from m6_fashion import M6FashionPipeline
from m6_fashion.image_processing import fit_onto, preprocess


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_default_size_and_accepted_sizes(tiny_pipeline, tiny_hr_pipeline):
    assert tiny_pipeline.default_size == (64, 64)
    assert tiny_hr_pipeline.default_size == (128, 96)
    sizes = tiny_hr_pipeline.output_sizes()
    assert (128, 96) in sizes and (64, 64) in sizes and (64, 48) in sizes
    assert all(h >= 32 and w >= 32 for h, w in sizes)
    out = tiny_hr_pipeline("Men Navy Blue Shirt", generator=_g())
    assert out.images[0].size == (96, 128)
    out = tiny_hr_pipeline("Men Navy Blue Shirt", generator=_g(), height=64, width=48, output_type="np")
    assert out.images.shape == (1, 64, 48, 3)


def test_one_side_keeps_the_default_aspect(tiny_hr_pipeline):
    c = tiny_hr_pipeline.output_canvas(height=64)
    assert (c.side, c.height, c.width) == (64, 64, 48)
    c = tiny_hr_pipeline.output_canvas(width=96)
    assert (c.side, c.height, c.width) == (128, 128, 96)


def test_same_tokens_whatever_the_size(tiny_hr_pipeline):
    """The size only changes decoding: the sampled tokens of a seed are the same at every size."""
    runs = [tiny_hr_pipeline("Women Red Top", generator=_g(5), height=h, width=w) for h, w in [(128, 96), (64, 64), (128, 128), (48, 40)]]
    for out in runs[1:]:
        assert torch.equal(out.tokens, runs[0].tokens)
    assert [o.images[0].size for o in runs] == [(96, 128), (64, 64), (128, 128), (40, 48)]


def test_the_crop_is_the_centre_of_the_canvas(tiny_hr_pipeline):
    full = tiny_hr_pipeline("Men Navy Blue Shirt", generator=_g(2), height=128, width=128, output_type="pt").images[0]
    crop = tiny_hr_pipeline("Men Navy Blue Shirt", generator=_g(2), height=128, width=96, output_type="pt").images[0]
    assert torch.equal(crop, full[:, :, 16:112])


@pytest.mark.parametrize(
    "size, match",
    [((100, 96), "cannot make a 96x100"), ((128, 48), "cannot make a 48x128"), ((256, 256), "cannot make"),
     ((16, 16), "cannot make"), ((0, 96), "cannot make")],
)
def test_sizes_the_model_cannot_make_are_refused_naming_the_accepted_ones(tiny_hr_pipeline, size, match):
    with pytest.raises(ValueError, match=match) as e:
        tiny_hr_pipeline("Men Navy Blue Shirt", height=size[0], width=size[1])
    assert "accepted" in str(e.value) and "[64, 80, 96, 112, 128]" in str(e.value)


@pytest.mark.parametrize("value", [128.0, "128", True])
def test_height_must_be_an_integer(tiny_hr_pipeline, value):
    with pytest.raises(TypeError, match="height must be an integer"):
        tiny_hr_pipeline("Men Navy Blue Shirt", height=value)


def test_without_decoder_hr_large_sizes_say_what_to_load(tiny_pipeline):
    with pytest.raises(ValueError, match="no decoder_hr"):
        tiny_pipeline("Men Navy Blue Shirt", height=128, width=96)


def test_boxes_are_on_the_output_image(tiny_hr_pipeline):
    """A box at the output's left edge lies 2 cells (16 px) into the 128-px canvas of a 96x128 output."""
    canvas = tiny_hr_pipeline.output_canvas(128, 96)
    assert canvas.box_to_cells((0, 0, 16, 16)) == (0, 2, 2, 2)
    assert canvas.box_to_cells((0, 0, 96, 128)) == (0, 2, 16, 12)
    with pytest.raises(ValueError, match="outside the 96x128"):
        canvas.box_to_cells((0, 0, 128, 128))
    square = tiny_hr_pipeline.output_canvas(64, 64)
    assert square.box_to_cells((0, 0, 16, 16)) == (0, 0, 4, 4)


def test_inpainting_at_high_resolution_keeps_pixels_outside_the_mask(tiny_hr_pipeline, real_images):
    """Photo and mask at the output's 3:4 size: outside the mask the output is the photo itself."""
    image = real_images[0]["image"].resize((96, 128), PIL.Image.BICUBIC)
    mask = PIL.Image.new("L", image.size, 0)
    mask.paste(255, (0, 64, 96, 128))  # lower half of the output
    out = tiny_hr_pipeline("Women Red Top", image=image, mask_image=mask, generator=_g(), output_type="pt")
    got = out.images[0]
    assert got.shape == (3, 128, 96)
    original = preprocess(image, 128)[0][:, :, 16:112]  # padded to the canvas as the pipeline does, then cropped
    assert torch.allclose(got[:, :64], original[:, :64], atol=1e-6)
    assert not torch.allclose(got[:, 64:], original[:, 64:], atol=1e-2)
    # the tokens above the masked rows (and in the padding columns) are the photo's own
    base = tiny_hr_pipeline.encode_images(preprocess(image, 64))[0].reshape(16, 16, 4)
    assert torch.equal(out.tokens[0, :8], base[:8])


def test_outpainting_places_the_image_in_a_box_of_the_output(tiny_hr_pipeline, real_images):
    box = (16, 32, 80, 96)  # cells: rows 4..12, columns 4..12 of the canvas (2-cell margin + 2)
    out = tiny_hr_pipeline(image=real_images[1]["image"], image_box=box, generator=_g(), output_type="pt")
    got = out.images[0]
    assert got.shape == (3, 128, 96)
    sheet = PIL.Image.new("RGB", (128, 128), (255, 255, 255))
    sheet.paste(fit_onto(real_images[1]["image"], 64, 64), (32, 32))
    want = preprocess(sheet, 128)[0][:, :, 16:112]
    assert torch.allclose(got[:, 32:96, 16:80], want[:, 32:96, 16:80], atol=1e-6)


def test_reference_patch_box_on_a_portrait_output(tiny_hr_pipeline, real_images):
    """The patch's cells are where the box lies on the output: columns shifted by the 2-cell crop margin."""
    canvas = tiny_hr_pipeline.output_canvas()
    box = (0, 0, 48, 64)  # left half of the top half of the 96x128 output
    assert canvas.box_to_cells(box) == (0, 2, 8, 6)
    codes, positions = tiny_hr_pipeline._reference_patch(real_images[2]["image"], box, canvas)
    want = sorted(r * 16 + c for r in range(0, 8) for c in range(2, 8))
    assert sorted(positions.tolist()) == want and codes.shape == (48, 4)
    out = tiny_hr_pipeline("Men Black Shoes", reference_images=[(real_images[2]["image"], box)], generator=_g())
    assert out.images[0].size == (96, 128)


def test_style_mixing_and_several_conditions_at_high_resolution(tiny_hr_pipeline, real_images):
    a, b = real_images[5]["image"], real_images[6]["image"]
    mask = PIL.Image.new("L", a.size, 0)  # a mask of the photo's own size (60x80): its lower half
    mask.paste(255, (0, a.size[1] // 2, *a.size))
    out = tiny_hr_pipeline(image=a, style_image=b, mask_image=mask, generator=_g())
    assert out.images[0].size == (96, 128)
    refs = [(a, (0, 0, 48, 64)), (b, (48, 64, 96, 128))]
    out = tiny_hr_pipeline(reference_images=refs, generator=_g(), height=128, width=128)
    assert out.images[0].size == (128, 128)


def test_save_load_keeps_decoder_hr_and_a_pipeline_without_it_stays_without(tiny_pipeline, tiny_hr_pipeline, tmp_path):
    tiny_hr_pipeline.save_pretrained(tmp_path / "hr")
    loaded = M6FashionPipeline.from_pretrained(tmp_path / "hr")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.default_size == (128, 96)
    a = tiny_hr_pipeline("Men Navy Blue Shirt", generator=_g(3), output_type="np").images
    b = loaded("Men Navy Blue Shirt", generator=_g(3), output_type="np").images
    assert np.array_equal(a, b)
    without = M6FashionPipeline.from_pretrained(tmp_path / "hr", decoder_hr=None)
    assert without.decoder_hr is None and without.default_size == (64, 64)
    tiny_pipeline.save_pretrained(tmp_path / "lo")
    assert M6FashionPipeline.from_pretrained(tmp_path / "lo").decoder_hr is None


def test_a_decoder_hr_that_does_not_fit_is_refused(tiny_pipeline):
    from m6_fashion import StyleDecoder

    parts = {k: v for k, v in tiny_pipeline.components.items() if k != "decoder_hr"}
    wrong_latent = StyleDecoder(latent_channels=8, style_channels=8, block_out_channels=(16, 8, 8, 8), sample_size=128)
    with pytest.raises(ValueError, match="decoder_hr reads latent_channels=8"):
        M6FashionPipeline(**parts, decoder_hr=wrong_latent)
    wrong_side = StyleDecoder(latent_channels=16, style_channels=8, block_out_channels=(16, 8, 8, 8), sample_size=256)
    with pytest.raises(ValueError, match="decoder_hr sample_size=256 but it paints 128"):
        M6FashionPipeline(**parts, decoder_hr=wrong_side)
    same = StyleDecoder(latent_channels=16, style_channels=8, block_out_channels=(16, 8, 8), sample_size=64)
    with pytest.raises(ValueError, match="not more than the decoder"):
        M6FashionPipeline(**parts, decoder_hr=same)


def test_outpainting_keeps_the_aspect_of_the_image(tiny_hr_pipeline, real_images):
    """A 3:4 photo in a 3:4 box fills it exactly (no stretching, no white bars); a wide box gets bars beside it."""
    photo = real_images[1]["image"]  # 60x80
    out = tiny_hr_pipeline(image=photo, image_box=(24, 32, 72, 96), generator=_g(), output_type="pt").images[0]
    fitted = fit_onto(photo, 48, 64)
    want = torch.from_numpy(np.asarray(fitted).copy()).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(out[:, 32:96, 24:72], want, atol=1e-6)
    assert np.asarray(fitted)[:, :2].mean() < 250  # the photo reaches the box's sides: nothing was squeezed
    wide = fit_onto(photo, 96, 32)
    assert wide.getpixel((0, 16)) == (255, 255, 255) and wide.getpixel((95, 16)) == (255, 255, 255)
