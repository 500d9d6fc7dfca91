"""`m6_fashion_core.canvas` and `m6_fashion_core.image`: one implementation behind the pipeline and the runtime.

The pipeline's `OutputCanvas` / `output_canvas()` and `image_processing` call the core and convert to tensors;
the runtime's `canvas` and `image` modules re-export it. These tests pin that both front ends give the same
sizes, cells, pixels and error messages, and that the core stays torch-free.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

RUNTIME_SRC = Path(__file__).resolve().parents[1] / "runtime" / "src"
sys.path.insert(0, str(RUNTIME_SRC))

from m6_fashion_core import canvas as core_canvas  # noqa: E402
from m6_fashion_core import image as core_image  # noqa: E402
from m6_fashion_runtime import canvas as rt_canvas  # noqa: E402
from m6_fashion_runtime import image as rt_image  # noqa: E402

from m6_fashion import image_processing  # noqa: E402
from m6_fashion.pipelines.pipeline_m6fashion import OutputCanvas  # noqa: E402


def test_core_never_imports_torch_or_a_front_end():
    code = (
        "import sys; import m6_fashion_core.canvas, m6_fashion_core.image; "
        "bad = [m for m in ('torch', 'onnxruntime', 'm6_fashion', 'm6_fashion_runtime') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(RUNTIME_SRC)})


def test_runtime_modules_re_export_the_core():
    assert rt_canvas.OutputCanvas is core_canvas.OutputCanvas and rt_canvas.output_canvas is core_canvas.output_canvas
    assert rt_image.preprocess is core_image.preprocess and rt_image.preprocess_mask is core_image.preprocess_mask
    assert image_processing.to_rgb is core_image.to_rgb and image_processing.fit_onto is core_image.fit_onto


@pytest.mark.parametrize("sides,grid", [([64], 16), ([64, 128], 16), ([32, 128], 8), ([256], 16)])
def test_sizes_and_canvases_agree(sides, grid):
    assert core_canvas.crop_sides(256, 16) == [128, 160, 192, 224, 256]
    assert core_canvas.portrait_width(256, 16) == 192
    for h in [None] + list(range(8, 260, 4)):
        for w in (None, 24, 48, 64, 96, 100, 128):
            try:
                ref = core_canvas.output_canvas(sides, grid, h, w)
            except ValueError as e:
                with pytest.raises(ValueError) as got:
                    OutputCanvas.for_size(sides, grid, h, w, holder="pipeline")
                assert str(got.value).split(" (this")[0] == str(e).split(" (this")[0]
                continue
            canvas = OutputCanvas.for_size(sides, grid, h, w, holder="pipeline")
            assert type(canvas) is OutputCanvas
            assert (canvas.side, canvas.height, canvas.width) == (ref.side, ref.height, ref.width)


def test_size_errors_name_the_holder():
    with pytest.raises(ValueError, match=r"\(this pipeline has no decoder_hr; load one that has it for larger sizes\)$"):
        OutputCanvas.for_size([64], 16, 128, 96, holder="pipeline")
    with pytest.raises(ValueError, match=r"\(this bundle has no decoder_hr; export a pipeline that has one for larger sizes\)$"):
        core_canvas.output_canvas([64], 16, 128, 96)
    with pytest.raises(TypeError, match="height must be an integer number of pixels; got 64.0"):
        core_canvas.output_canvas([64], 16, 64.0)


def test_torch_canvas_masks_equal_the_numpy_ones():
    ref = core_canvas.output_canvas([64, 128], 16, 128, 96)
    canvas = OutputCanvas(side=ref.side, grid=ref.grid, height=ref.height, width=ref.width)
    cells = [canvas.box_to_cells((10, 20, 50, 70)), canvas.box_to_cells((0, 0, 96, 8))]
    assert cells == [ref.box_to_cells((10, 20, 50, 70)), ref.box_to_cells((0, 0, 96, 8))]
    for value in (0.0, 1.0):
        m = canvas.cells_mask(cells, value, 2)
        assert isinstance(m, torch.Tensor) and m.dtype == torch.float32
        np.testing.assert_array_equal(m.numpy(), ref.cells_mask(cells, value, 2))
    pixels = np.arange(2 * 3 * 128 * 128, dtype=np.float32).reshape(2, 3, 128, 128)
    np.testing.assert_array_equal(canvas.crop(torch.from_numpy(pixels)).numpy(), ref.crop(pixels))


def _images():
    rng = np.random.default_rng(0)
    images = [PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(80, 60), (33, 47), (5, 90)]]
    return images + [images[0].convert("RGBA"), PIL.Image.fromarray(rng.integers(0, 65536, (20, 30), dtype=np.uint16))]


@pytest.mark.parametrize("size", [8, 17, 64])
def test_images_and_masks_read_the_same_in_both_front_ends(size):
    images = _images()
    np.testing.assert_array_equal(image_processing.preprocess(images, size).numpy(), rt_image.preprocess(images, size))
    mask = PIL.Image.fromarray((np.random.default_rng(1).random((80, 60)) > 0.5).astype(np.uint8) * 255)
    np.testing.assert_array_equal(image_processing.preprocess_mask(mask, size).numpy(), rt_image.preprocess_mask(mask, size))


def test_postprocess_rounds_as_the_runtime():
    x = torch.linspace(-1.2, 1.2, 3 * 40 * 40).reshape(1, 3, 40, 40)
    arr = image_processing.postprocess(x, "np")
    assert arr.dtype == np.uint8 and arr.shape == (1, 40, 40, 3)
    np.testing.assert_array_equal(arr[0], np.asarray(rt_image.postprocess(x.numpy())[0]))
    np.testing.assert_array_equal(np.asarray(image_processing.postprocess(x, "pil")[0]), arr[0])


def test_each_front_end_names_what_it_accepts():
    with pytest.raises(ValueError, match=r"\(H, W\), \(H, W, C\) or \(B, H, W, C\) with C in 1/3/4"):
        image_processing.preprocess(np.zeros((2, 2, 2, 5), np.uint8), 8)
    with pytest.raises(ValueError, match=r"\(H, W\), \(H, W, 3\) or \(H, W, 4\); got \(2, 2, 2, 5\)"):
        rt_image.preprocess(np.zeros((2, 2, 2, 5), np.uint8), 8)
    with pytest.raises(ValueError, match=r"\(pass uint8 for 0-255 images, or a tensor in \[-1, 1\]\)"):
        image_processing.preprocess(np.full((4, 4), 2.0), 8)
    with pytest.raises(ValueError, match=r"\(pass uint8 for 0-255 images\)"):
        rt_image.preprocess(np.full((4, 4), 2.0), 8)
    with pytest.raises(TypeError, match="mask_image must be a PIL image, numpy array or tensor; got int"):
        image_processing.preprocess_mask(5, 8)
    with pytest.raises(TypeError, match="mask_image must be a PIL image or a numpy array; got int"):
        rt_image.preprocess_mask(5, 8)
