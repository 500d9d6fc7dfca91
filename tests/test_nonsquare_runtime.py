"""Non-square token grids through the ONNX export, the torch-free runtime, the TensorRT profiles and the studio.

`build_tiny_nonsquare_pipeline` (32 x 24 px read as an 8 x 6 grid; with `hr`, a `decoder_hr` painting 128 x 96) is
exported to bundles of format 5, and the runtime must give exactly the pipeline's tokens (deterministic SMART) for
every task, at the default size and at cropped sizes, on real photos of the `fashion-product-images-hr` test split.
A square model's bundle keeps format 4, key for key.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNTIME_SRC = REPO_ROOT / "runtime" / "src"
if str(RUNTIME_SRC) not in sys.path:
    sys.path.insert(0, str(RUNTIME_SRC))
if str(REPO_ROOT) not in sys.path:  # the TensorRT builder's wrapper lives in conversion/
    sys.path.insert(0, str(REPO_ROOT))

from conftest import build_tiny_nonsquare_pipeline, build_tiny_pipeline  # noqa: E402

pytest.importorskip("onnxruntime", reason="the runtime needs onnxruntime: pip install -e '.[export]'")

from m6_fashion.export import export_onnx as ex  # noqa: E402

import m6_fashion_runtime as mrt  # noqa: E402

STEPS = 2  # few SMART passes keep the file quick; parity does not depend on the count
GRID = (8, 6)  # rows x cols of the tiny non-square model
HR_DEFAULT, BASE_DEFAULT = (128, 96), (32, 24)  # (height, width): the whole largest canvas


# ---------------------------------------------------------------------------------------------- fixtures
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread is faster (conftest)


@pytest.fixture(scope="module")
def photos(hr_test_photos):
    """Three real catalogue photos (192 x 256, RGB) and their captions from the hr test split."""
    return hr_test_photos[:3]


@pytest.fixture(scope="module")
def hr_pipe():
    return build_tiny_nonsquare_pipeline(hr=True)


@pytest.fixture(scope="module")
def base_pipe():
    return build_tiny_nonsquare_pipeline(hr=False)


@pytest.fixture(scope="module")
def hr_export(hr_pipe, tmp_path_factory):
    """`(bundle folder, export report)` of the hr pipeline, parity-checked at export."""
    out = tmp_path_factory.mktemp("nonsquare_hr_bundle")
    report = ex.export_bundle(None, str(out), pipe=hr_pipe, parity=True, log=lambda *a: None)
    return out, report


@pytest.fixture(scope="module")
def base_bundle(base_pipe, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nonsquare_bundle")
    ex.export_bundle(None, str(out), pipe=base_pipe, parity=False, log=lambda *a: None)
    return out


@pytest.fixture(scope="module")
def hr_rt(hr_export):
    return mrt.M6FashionRuntime(str(hr_export[0]), num_threads=1)


@pytest.fixture(scope="module")
def base_rt(base_bundle):
    return mrt.M6FashionRuntime(str(base_bundle), num_threads=1)


def _half_mask(size):
    w, h = size
    mask = PIL.Image.new("L", (w, h), 0)
    mask.paste(255, (0, h // 2, w, h))
    return mask


def _agreement(a, b) -> str:
    return f"token agreement {np.mean(np.asarray(a) == np.asarray(b)):.4%}"


def _check_parity(pipe, rt, name: str, **kwargs):
    """The pipeline and the runtime (deterministic SMART) give the same tokens and, up to one uint8 level, images."""
    ref = pipe(output_type="np", num_inference_steps=STEPS, **kwargs)
    got = rt(output_type="np", num_inference_steps=STEPS, **kwargs)
    want = ref.tokens.numpy()
    assert got.tokens.shape == want.shape, f"{name}: tokens {got.tokens.shape} vs {want.shape}"
    assert np.array_equal(got.tokens, want), f"{name}: {_agreement(got.tokens, want)}"
    assert got.images.shape == ref.images.shape, f"{name}: images {got.images.shape} vs {ref.images.shape}"
    diff = np.abs(got.images.astype(int) - ref.images.astype(int)).max()
    assert diff <= 2, f"{name}: pixel uint8 max diff {diff}"
    return got


def _tasks(photos, height: int, width: int) -> dict:
    """Every task of the pipeline on a `height` x `width` output (boxes in its pixels)."""
    (a, ta), (b, tb), (c, tc) = photos
    h, w = height, width
    return {
        "text-to-image": dict(prompt=[ta, tb]),
        "text-to-image with guidance, two per prompt": dict(prompt=[tc], guidance_scale=2.0, num_images_per_prompt=2),
        "unconditional": dict(prompt=None),
        "inpainting": dict(prompt=[ta, tb], image=[a, b], mask_image=[_half_mask(a.size), _half_mask(b.size)]),
        "inpainting with guidance": dict(prompt=tc, image=c, mask_image=_half_mask(c.size), guidance_scale=2.0),
        "outpainting in the canvas": dict(prompt=tc, image=c, image_box=(w // 4, h // 4, 3 * w // 4, 3 * h // 4)),
        "reference patch": dict(prompt=tb, reference_images=[(b, (0, 0, w // 2, h // 2))]),
        "several conditions": dict(reference_images=[(a, (0, 0, w // 4, h // 4)), (c, (w // 2, h // 2, 3 * w // 4, 3 * h // 4))]),
        "patch inside an image": dict(image=a, reference_images=[(b, (w // 4, h // 4, w // 2, h // 2))]),
        "style mixing": dict(image=a, style_image=b, mask_image=_half_mask(a.size), refine_ratio=0.0),
    }


# ---------------------------------------------------------------------------------------------- bundle
def test_nonsquare_bundle_records_the_grid_and_its_graphs_take_it(hr_export, base_bundle, hr_pipe):
    bundle, report = hr_export
    cfg = json.loads((bundle / ex.BUNDLE_JSON).read_text())
    assert cfg["format_version"] == ex.NONSQUARE_FORMAT_VERSION == 5
    tcfg = hr_pipe.transformer.config
    assert cfg["geometry"] == {
        "sample_size": 32, "grid_size": 8, "num_groups": 4, "codebook_size": 32, "num_image_tokens": 48,
        "max_text_length": tcfg.max_text_length, "max_condition_tokens": 16,
        "max_position_embeddings": tcfg.max_position_embeddings, "vocab_size": tcfg.vocab_size,
        "grid_height": 8, "grid_width": 6, "sample_height": 32, "sample_width": 24,
    }
    assert cfg["canvases"] == {"image_decoder": 32, "image_decoder_hr": 128}
    assert cfg["default_size"] == {"height": 128, "width": 96} and cfg["image_grid_max"] == 16
    # the export-time parity check ran on the non-square graphs
    assert report["parity"]["image_encoder"][0]["token_match"] >= ex.TOKEN_MATCH_MIN
    assert {"image_decoder", "image_decoder_hr", "transformer", "transformer_split"} <= set(report["parity"])
    # free grid sides for wide outpainting; the transformer's target has N = rows * cols positions
    shapes = report["shapes"]
    assert shapes["image_encoder"]["pixel_values"][1] == 3 and all(isinstance(d, str) for d in shapes["image_encoder"]["pixel_values"][2:])
    assert shapes["image_decoder"]["tokens"][1:3] == ["grid_rows", "grid_cols"]
    assert shapes["transformer"]["logits"][1:] == [48, 4, 32] and shapes["transformer_target"]["log_probs"][1:] == [48, 4, 32]
    b = mrt.load_bundle(str(bundle))
    assert b.format_version == 5 and b.geometry.grid_shape == GRID and b.geometry.sample_shape == (32, 24)
    assert b.image_grid_max_shape == (16, 12)
    base = json.loads((base_bundle / ex.BUNDLE_JSON).read_text())
    assert base["format_version"] == 5 and base["canvases"] == {"image_decoder": 32}
    assert base["default_size"] == {"height": 32, "width": 24} and base["geometry"] == {**cfg["geometry"]}


def _fake_bundle(folder: Path, cfg: dict) -> Path:
    """A bundle folder with `cfg` as bundle.json and empty files (load_bundle reads the json, not the graphs)."""
    folder.mkdir()
    for name in cfg["files"].values():
        (folder / name).write_bytes(b"")
    (folder / ex.BUNDLE_JSON).write_text(json.dumps(cfg))
    return folder


def test_a_square_bundle_keeps_format_4_key_for_key_and_loads_as_a_square(tmp_path):
    pipe = build_tiny_pipeline()
    files = {**ex.FILES, "tokenizer": ex.TOKENIZER_FILE}
    cfg = ex.bundle_config(pipe, files, ex.DEFAULT_OPSET)
    assert cfg["format_version"] == ex.BUNDLE_FORMAT_VERSION == 4
    assert set(cfg) == {"format", "format_version", "opset", "geometry", "canvases", "default_size", "image_grid_max",
                        "special_token_ids", "scheduler", "files"}
    assert set(cfg["geometry"]) == set(mrt.bundle.GEOMETRY_KEYS)  # no grid_height / sample_height keys
    assert cfg["image_grid_max"] == 16 and cfg["default_size"] == {"height": 32, "width": 32}
    b = mrt.load_bundle(str(_fake_bundle(tmp_path / "square", cfg)))
    assert b.geometry.grid_shape == (8, 8) and b.geometry.sample_shape == (32, 32) and b.image_grid_max_shape == (16, 16)
    # a format 5 bundle needs the grid keys, and they must agree with each other
    ns = ex.bundle_config(build_tiny_nonsquare_pipeline(), files, ex.DEFAULT_OPSET)
    broken = json.loads(json.dumps(ns))
    del broken["geometry"]["grid_width"]
    with pytest.raises(mrt.BundleError, match=r"geometry lacks \['grid_width'\] \(bundle format 5\)"):
        mrt.load_bundle(str(_fake_bundle(tmp_path / "no_width", broken)))
    broken = json.loads(json.dumps(ns))
    broken["geometry"]["sample_width"] = 32
    with pytest.raises(mrt.BundleError, match=r"sample_height x sample_width 32x32 is not the 8x6 grid at 4-px cells \(32x24\)"):
        mrt.load_bundle(str(_fake_bundle(tmp_path / "bad_width", broken)))
    broken = json.loads(json.dumps(ns))
    broken["geometry"]["num_image_tokens"] = 64
    with pytest.raises(mrt.BundleError, match=r"num_image_tokens 64 != 48 \(a 8x6 grid\)"):
        mrt.load_bundle(str(_fake_bundle(tmp_path / "bad_n", broken)))


def test_tensorrt_profiles_take_the_nonsquare_canvas(hr_export):
    from conversion import build_tensorrt as bt

    cfg = json.loads((hr_export[0] / ex.BUNDLE_JSON).read_text())
    p = bt.profiles_for(cfg, 1, 4, 16)
    assert bt.grid_max_shape(cfg) == (16, 12)  # each side up to twice the model's 8x6 grid (wide outpainting)
    assert p["image_encoder"]["pixel_values"] == ((1, 3, 32, 24), (4, 3, 32, 24), (16, 3, 64, 48))
    assert p["image_decoder"]["tokens"] == ((1, 8, 6, 4), (4, 8, 6, 4), (16, 16, 12, 4))
    assert p[ex.HR_DECODER] == p["image_decoder"]  # the hr decoder paints the default output: its engine too
    short = cfg["geometry"]["max_text_length"] + 2 + 48
    assert p["transformer"]["image_codes"] == ((1, short, 4), (4, short, 4), (16, short + 16, 4))
    assert cfg["format_version"] in bt.SUPPORTED_FORMAT_VERSIONS


# ---------------------------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("hr", [True, False], ids=["with decoder_hr", "sample_size only"])
def test_sizes_boxes_and_errors_are_the_pipelines(hr, hr_pipe, base_pipe, hr_rt, base_rt):
    pipe, rt = (hr_pipe, hr_rt) if hr else (base_pipe, base_rt)
    assert rt.default_size == pipe.default_size == (HR_DEFAULT if hr else BASE_DEFAULT)
    assert rt.canvas_sides() == pipe.canvas_sides() and rt.grid_shape == pipe.grid_shape == GRID
    assert rt.output_sizes() == pipe.output_sizes()
    for height, width in [(128, 96), (96, 64), (64, 96), (32, 24), (24, 16), (16, 24), (32, 32), (100, 96), (None, 64)]:
        try:
            ref = pipe.output_canvas(height, width)
        except ValueError as e:
            with pytest.raises(ValueError) as got:
                rt.output_canvas(height, width)
            assert str(got.value).split(" (this ")[0] == str(e).split(" (this ")[0]
            continue
        canvas = rt.output_canvas(height, width)
        assert (canvas.side, canvas.height, canvas.width, canvas.grid_shape) == (ref.side, ref.height, ref.width, ref.grid_shape)
        for box in [(0, 0, canvas.width, canvas.height), (1, 2, 3, 4), (canvas.width // 3, canvas.height // 4, canvas.width - 1, canvas.height)]:
            assert canvas.box_to_cells(box) == ref.box_to_cells(box), (height, width, box)


def test_a_bad_size_names_the_accepted_heights_and_widths(hr_pipe, hr_rt, base_rt, hr_export, tmp_path, capsys):
    from m6_fashion_runtime.cli import main

    accepted = (r"accepted: 24x32 canvas \(width x height\): height in \[16, 24, 32\], width in \[16, 24\]; 96x128 canvas "
                r"\(width x height\) \(decoder_hr\): height in \[64, 96, 128\], width in \[64, 96\]")
    with pytest.raises(ValueError, match=r"cannot make a 96x100 \(width x height\) image; " + accepted + "$"):
        hr_rt("x", height=100, width=96)
    with pytest.raises(ValueError, match=accepted + "$"):
        hr_pipe("x", height=100, width=96)
    with pytest.raises(ValueError, match=r"24x32 canvas \(width x height\): height in \[16, 24, 32\], width in \[16, 24\] "
                                         r"\(this bundle has no decoder_hr"):
        base_rt("x", height=32, width=32)  # the square of the longest side is no canvas of a 3:4 model
    with pytest.raises(ValueError, match=r"height from 128 to 256 and width from 96 to 192, in steps of 16"):
        hr_rt("x", image=PIL.Image.new("RGB", (8, 8)), image_box=(0, 0, 8, 8), height=136, width=96)
    capsys.readouterr()
    main(["info", "--bundle", str(hr_export[0])])
    info = json.loads(capsys.readouterr().out)
    assert info["format_version"] == 5 and info["geometry"]["grid_height"] == 8 and info["geometry"]["grid_width"] == 6
    assert info["output_sizes"] == [f"{w}x{h}" for h, w in hr_rt.output_sizes()]
    assert "96x128" in info["output_sizes"] and "24x32" in info["output_sizes"] and "32x32" not in info["output_sizes"]
    main(["generate", "--bundle", str(hr_export[0]), "--steps", "1", "--height", "32", "--out", str(tmp_path / "h.png")])
    assert PIL.Image.open(tmp_path / "h.png").size == (24, 32)  # one side keeps the model's 3:4


# ---------------------------------------------------------------------------------------------- token parity
@pytest.mark.parametrize("size", [None, (96, 64)], ids=["default 128x96", "cropped 96x64"])
def test_runtime_matches_the_pipeline_on_every_task_with_decoder_hr(size, hr_pipe, hr_rt, photos):
    height, width = size or HR_DEFAULT
    extra = {} if size is None else {"height": height, "width": width}
    for name, kwargs in _tasks(photos, height, width).items():
        got = _check_parity(hr_pipe, hr_rt, name, **kwargs, **extra)
        assert got.tokens.shape[1:] == (*GRID, 4) and got.images.shape[1:3] == (height, width), name


@pytest.mark.parametrize("size", [None, (24, 16)], ids=["default 32x24", "cropped 24x16"])
def test_runtime_matches_the_pipeline_on_every_task_without_decoder_hr(size, base_pipe, base_rt, photos):
    height, width = size or BASE_DEFAULT
    extra = {} if size is None else {"height": height, "width": width}
    for name, kwargs in _tasks(photos, height, width).items():
        got = _check_parity(base_pipe, base_rt, name, **kwargs, **extra)
        assert got.images.shape[1:3] == (height, width), name


@pytest.mark.parametrize("hr", [True, False], ids=["with decoder_hr", "sample_size only"])
def test_wide_outpainting_matches_the_pipeline(hr, hr_pipe, base_pipe, hr_rt, base_rt, photos):
    """Outpainting beyond the 3:4 canvas: windows of the model's 8 x 6 cells fill a wider or taller grid."""
    pipe, rt = (hr_pipe, hr_rt) if hr else (base_pipe, base_rt)
    (a, ta), (b, _), _ = photos
    ch, cw = HR_DEFAULT if hr else BASE_DEFAULT
    cell = 16 if hr else 4
    cases = {
        "wider": dict(prompt=ta, image=a, image_box=(cw // 2, 0, cw // 2 + cw, ch), height=ch, width=2 * cw),
        "taller, guided": dict(prompt=ta, image=b, image_box=(0, ch // 4, cw, ch // 4 + ch), height=ch + ch // 2, width=cw,
                               guidance_scale=2.0),
        "both, no prompt": dict(image=[a, b], image_box=(cell, cell, cw, ch), height=ch + 2 * cell, width=cw + cell),
    }
    for name, kwargs in cases.items():
        got = _check_parity(pipe, rt, name, **kwargs)
        assert got.tokens.shape[1:3] == (kwargs["height"] // cell, kwargs["width"] // cell), name
        assert got.images.shape[1:3] == (kwargs["height"], kwargs["width"]), name


# ---------------------------------------------------------------------------------------------- studio
def test_the_studio_runs_every_tab_on_a_nonsquare_model(hr_pipe, photos):
    pytest.importorskip("gradio", reason="the studio needs Gradio: pip install -e '.[studio]'")
    from m6_fashion.studio import Studio

    (a, ta), (b, _), _ = photos
    studio = Studio(hr_pipe, max_batch_size=1)
    assert (studio.height, studio.width) == HR_DEFAULT and studio.canvas.grid_shape == GRID
    w, h = studio.width, studio.height
    assert studio.snap((20, 20, 50, 70)) == (16, 16, 64, 80)
    shirt = studio.text_to_image(ta, 0, STEPS, 1)[1][0]
    runs = {
        "inpaint": studio.inpaint({"background": a, "layers": [], "composite": a}, "Men Red Shirt", "lower half", 0, STEPS),
        "reference": studio.reference_edit(b, 16, 16, 64, 80, "", None, 0, STEPS),
        "reference on a garment": studio.reference_edit(b, 16, 16, 64, 80, "", shirt, 0, STEPS),
        "mix": studio.style_mix({"background": shirt, "layers": [], "composite": shirt}, b, "lower half", 0, STEPS),
        "outpaint": studio.outpaint(a, 16, 32, 80, 96, "", 0, STEPS),
    }
    assert shirt.size == (w, h)
    for name, (gallery, images) in runs.items():
        assert len(images) == 1 and images[0].size == (w, h), name
    # the reference edit on a garment keeps every pixel outside its box
    diff = np.abs(np.asarray(runs["reference on a garment"][1][0], dtype=np.int16) - np.asarray(shirt, dtype=np.int16)).max(-1)
    outside = np.ones((h, w), dtype=bool)
    outside[16:80, 16:64] = False
    assert diff[outside].max() == 0
