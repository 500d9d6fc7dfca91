"""Outpainting onto a canvas larger than the decoder's square: window planning (torch-free core), the pipeline's
wide path (size rules, kept cells and pixels, shapes) and the refusals."""

import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from pipeline_tester import DUMMY_GRID, DUMMY_SAMPLE_SIZE, get_dummy_components

from m6_fashion import M6FashionPipeline
from m6_fashion_core import outpainting

RUNTIME_SRC = Path(__file__).resolve().parents[1] / "runtime" / "src"
if str(RUNTIME_SRC) not in sys.path:  # the runtime package is not installed with the library
    sys.path.insert(0, str(RUNTIME_SRC))


def _covered(shape, windows, g):
    seen = np.zeros(shape, dtype=bool)
    for r, c in windows:
        seen[r : r + g, c : c + g] = True
    return seen


def test_plan_windows_fills_every_unknown_cell_most_context_first():
    known = np.zeros((16, 18), dtype=bool)
    known[:, 3:15] = True  # a 192-px photo in the middle of a 288-px canvas (16-px cells)
    assert outpainting.plan_windows(known, 16) == [(0, 0), (0, 2)]
    known = np.zeros((24, 24), dtype=bool)
    known[4:20, 4:20] = True  # a centred square, generated all around
    windows = outpainting.plan_windows(known, 16)
    assert _covered(known.shape, windows, 16).all() and len(windows) == len(set(windows))
    assert windows[0] == (0, 4)  # 12 of its 16 rows known: the most context of any window with something to make
    fresh = known.copy()
    for r, c in windows:  # every window generates something and sees at least half of its cells known
        view = fresh[r : r + 16, c : c + 16]
        assert not view.all() and view.mean() >= 0.5, (r, c)
        fresh[r : r + 16, c : c + 16] = True
    assert outpainting.plan_windows(np.ones((16, 20), dtype=bool), 16) == []  # nothing to generate
    assert outpainting.window_starts(16, 16) == [0] and outpainting.window_starts(40, 16) == [0, 4, 8, 12, 16, 20, 24]
    with pytest.raises(ValueError, match="shorter than the 16-cell window"):
        outpainting.window_starts(12, 16)


def test_wide_canvas_sizes():
    sides, g = [64, 256], 16
    wide = outpainting.wide_canvas(sides, g, 256, 288)
    assert (wide.rows, wide.cols, wide.cell, wide.offset) == (16, 18, 16, (0, 0))
    assert wide.box_to_cells((48, 0, 240, 256)) == (0, 3, 16, 12)
    assert outpainting.wide_canvas(sides, g, 256, 192) is None  # a crop of the canvas, not wide
    for h, w in [(256, 290), (256, 528), (240, 288), (None, 288)]:  # off-cell, above 2x, below the canvas, one side
        assert outpainting.wide_canvas(sides, g, h, w) is None
    mask = wide.cells_mask([(0, 3, 16, 12)], 0.0, 2)
    assert mask.shape == (2, 1, 256, 288) and mask[:, :, :, 48:240].max() == 0 and mask[:, :, :, :48].min() == 1


@pytest.fixture(scope="module")
def pipe():
    return M6FashionPipeline(**get_dummy_components())


@pytest.fixture(scope="module")
def photo(real_images):
    return real_images[0]["image"].convert("RGB")


def test_extend_edges_continues_the_border_one_margin_outward():
    from m6_fashion_core.image import extend_edges

    a = np.full((10, 12, 3), 255, np.uint8)
    a[3:7, 4:8] = np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 10  # the box (4, 3, 8, 7), each pixel its own value
    got = np.asarray(extend_edges(PIL.Image.fromarray(a), (4, 3, 8, 7), 2))
    assert np.array_equal(got[3:7, 4:8], a[3:7, 4:8])  # the box itself is untouched
    assert np.array_equal(got[3:7, 2], a[3:7, 4]) and np.array_equal(got[3:7, 9], a[3:7, 7])  # left / right columns
    assert np.array_equal(got[1, 4:8], a[3, 4:8]) and np.array_equal(got[8, 4:8], a[6, 4:8])  # top / bottom rows
    assert (got[1, 2] == a[3, 4]).all() and (got[8, 9] == a[6, 7]).all()  # corners take the corner pixel
    assert (got[:, :2] == 255).all() and (got[:, 10:] == 255).all() and (got[0] == 255).all() and (got[9] == 255).all()
    # a margin reaching past the sheet is clipped to it
    assert np.asarray(extend_edges(PIL.Image.fromarray(a), (4, 3, 8, 7), 50)).shape == a.shape


def test_pipeline_outpaints_onto_a_wider_canvas(pipe, photo):
    s, cell = DUMMY_SAMPLE_SIZE, DUMMY_SAMPLE_SIZE // DUMMY_GRID
    width = s + s // 2  # 1.5x the canvas
    box = (s // 4, 0, s // 4 + s, s)  # the photo at the canvas's size, centred
    out = pipe(image=photo, image_box=box, height=s, width=width, num_inference_steps=3,
               generator=torch.Generator().manual_seed(0), output_type="np")
    rows, cols = s // cell, width // cell
    assert out.images.shape == (1, s, width, 3)
    assert tuple(out.tokens.shape) == (1, rows, cols, pipe.transformer.config.num_groups)
    assert int(out.tokens.max()) < pipe.transformer.config.codebook_size  # no MASK left
    # the placed photo's cells keep the tokens of the photo on the white sheet, and its pixels are pasted back
    from m6_fashion_core.image import outpainting_sheets

    left = box[0] // cell
    base, token_px = outpainting_sheets([photo], width, s, (0, left, rows, s // cell), cell, (width, s))
    want = pipe.encode_images(torch.from_numpy(token_px)).reshape(1, rows, cols, -1)
    assert torch.equal(out.tokens[:, :, left : left + s // cell], want[:, :, left : left + s // cell])
    placed = np.round((base[0].transpose(1, 2, 0) + 1) * 127.5).astype(np.uint8)[:, box[0] : box[2]]
    assert np.abs(out.images[0][:, box[0] : box[2]].astype(int) - placed.astype(int)).max() <= 1
    # the new columns were generated (the MASK is gone there); a different seed changes them
    other = pipe(image=photo, image_box=box, height=s, width=width, num_inference_steps=3,
                 generator=torch.Generator().manual_seed(1), output_type="tokens").tokens
    assert not torch.equal(other[:, :, :left], out.tokens[:, :, :left])


def test_pipeline_wide_sizes_need_outpainting_and_fit_the_rules(pipe, photo):
    s = DUMMY_SAMPLE_SIZE
    with pytest.raises(ValueError, match="cannot make a 48x32") as err:
        pipe(prompt="x", height=s, width=s + s // 2)  # no image_box: no wide canvas
    assert "outpainting" not in str(err.value)
    with pytest.raises(ValueError, match="outpainting \\(image with image_box\\) also makes larger images"):
        pipe(image=photo, image_box=(0, 0, 8, 8), height=s, width=s + 2)  # not whole cells
    with pytest.raises(ValueError, match="outside the 48x32"):
        pipe(image=photo, image_box=(0, 0, 60, 32), height=s, width=s + s // 2)
    with pytest.raises(ValueError, match="covers the whole 48x32"):
        pipe(image=photo, image_box=(0, 0, 48, 32), height=s, width=s + s // 2)


def test_pipeline_wide_outpainting_with_text_guidance_and_callback(pipe, photo):
    s = DUMMY_SAMPLE_SIZE
    seen = []

    def callback(p, i, t, tensors):
        seen.append(tuple(tensors["tokens"].shape))
        return {}

    out = pipe(["Men Navy Blue Casual Shirt", "Women Red Top"], image=[photo, photo], image_box=(0, 0, s, s), height=s * 2, width=s * 2,
               guidance_scale=2.0, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
               callback_on_step_end=callback, output_type="pil")
    assert [im.size for im in out.images] == [(2 * s, 2 * s)] * 2
    g, m = DUMMY_GRID, pipe.transformer.config.num_groups
    windows = outpainting.plan_windows(np.pad(np.ones((g, g), bool), ((0, g), (0, g))), g)
    assert seen == [(2, g * g, m)] * (2 * len(windows))  # each window's tokens, once per step


def test_wide_canvas_gives_no_mask_image_or_style_combinations(pipe, photo):
    s = DUMMY_SAMPLE_SIZE
    mask = PIL.Image.new("L", photo.size, 255)
    with pytest.raises(ValueError):
        pipe(image=photo, mask_image=mask, image_box=(0, 0, s, s), height=s, width=s + s // 2)


@pytest.fixture(scope="module")
def wide_bundle(pipe, tmp_path_factory):
    """The dummy pipeline exported with a deterministic scheduler (format 4: image graphs with free grid sides)."""
    pytest.importorskip("onnxruntime")
    from m6_fashion.export.export_onnx import export_bundle

    out = tmp_path_factory.mktemp("wide_bundle")
    export_bundle(None, str(out), pipe=pipe, parity=False, log=lambda *a, **k: None)
    return out


def test_runtime_outpaints_onto_a_wider_canvas_with_token_parity(pipe, photo, wide_bundle):
    import json

    from m6_fashion import SMARTScheduler
    from m6_fashion_runtime import M6FashionRuntime

    s = DUMMY_SAMPLE_SIZE
    box, size = (s // 4, 0, s // 4 + s, s), dict(height=s, width=s + s // 2)
    assert json.loads((wide_bundle / "bundle.json").read_text())["image_grid_max"] == 2 * DUMMY_GRID
    saved = pipe.scheduler
    pipe.scheduler = SMARTScheduler.from_config(saved.config, deterministic=True)
    try:
        want = pipe("Men Navy Blue Casual Shirt", image=photo, image_box=box, num_inference_steps=3, output_type="np", **size)
    finally:
        pipe.scheduler = saved
    rt = M6FashionRuntime(str(wide_bundle))
    got = rt("Men Navy Blue Casual Shirt", image=photo, image_box=box, num_inference_steps=3, deterministic=True,
             output_type="np", **size)
    assert got.tokens.shape == tuple(want.tokens.shape) and (got.tokens == want.tokens.numpy()).all()
    assert got.images.shape == want.images.shape and np.abs(got.images.astype(int) - want.images.astype(int)).max() <= 2


def test_runtime_refuses_wide_canvases_from_square_only_bundles(wide_bundle, photo, tmp_path):
    import json
    import shutil

    from m6_fashion_runtime import M6FashionRuntime

    old = tmp_path / "format3"
    shutil.copytree(wide_bundle, old)
    cfg = json.loads((old / "bundle.json").read_text())
    cfg["format_version"] = 3
    del cfg["image_grid_max"]
    (old / "bundle.json").write_text(json.dumps(cfg))
    s = DUMMY_SAMPLE_SIZE
    with pytest.raises(ValueError, match="re-export it with `m6-fashion export onnx` \\(format 4\\)"):
        M6FashionRuntime(str(old))(image=photo, image_box=(0, 0, s, s), height=s, width=s + s // 2)
