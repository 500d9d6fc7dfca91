"""The torch-free runtime (`runtime/`, package `m6_fashion_runtime`).

Checks the numpy sequence layout and SMART sampler against the PyTorch ones, runtime vs pipeline token
parity in deterministic mode (tiny pipeline and the shipped model), the CLI in a process where importing
torch fails, and the errors for bad bundles and bad inputs.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNTIME_DIR = REPO_ROOT / "runtime"
RUNTIME_SRC = RUNTIME_DIR / "src"
if str(RUNTIME_SRC) not in sys.path:
    sys.path.insert(0, str(RUNTIME_SRC))

import m6_fashion_runtime as mrt  # noqa: E402
from m6_fashion_runtime.layout import build_model_inputs as np_build_model_inputs  # noqa: E402
from m6_fashion_runtime.scheduler import SMARTSampler  # noqa: E402

FORBIDDEN = ("torch", "m6_fashion", "transformers", "diffusers", "accelerate", "safetensors")

# The tiny pipelines (`tiny_onnx_pipeline`, `tiny_onnx_hr_pipeline`: deterministic SMART sampler), their bundles
# (`tiny_onnx_bundle`, `tiny_onnx_hr_bundle`), the shipped model's bundle (`shipped_onnx_bundle`) and the real
# test-split rows (`real_images`) are fixtures of conftest.py.


def _half_mask(size):
    from PIL import Image

    w, h = size
    mask = Image.new("L", (w, h), 0)
    mask.paste(255, (0, h // 2, w, h))
    return mask


# ---------------------------------------------------------------------------------------------- package
def test_runtime_sources_never_import_torch_or_m6_fashion():
    for path in sorted((RUNTIME_SRC / "m6_fashion_runtime").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_runtime_pyproject_declares_only_the_small_dependencies():
    import re

    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    meta = tomllib.loads((RUNTIME_DIR / "pyproject.toml").read_text())["project"]
    assert meta["name"] == "m6-fashion-runtime"
    deps = {re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower() for d in meta["dependencies"]}
    assert deps == {"numpy", "onnxruntime", "tokenizers", "pillow"}
    assert meta["scripts"]["m6-fashion-runtime"] == "m6_fashion_runtime.cli:main"


# ---------------------------------------------------------------------------------------------- numpy mirrors
def test_numpy_layout_matches_sequence_layout(tiny_onnx_pipeline, tiny_onnx_bundle):
    import torch

    from m6_fashion.models.sequence_layout import build_model_inputs, crop_patch

    bundle = mrt.load_bundle(str(tiny_onnx_bundle))
    cfg = tiny_onnx_pipeline.transformer.config
    rng = np.random.default_rng(0)
    grid = torch.from_numpy(rng.integers(0, 32, (8, 8, 4)))
    cases = [
        ([[10, 11, 12], [], [7] * cfg.max_text_length], None, None),
        ([[5, 9], [13]], rng.integers(0, 33, (2, 64, 4)), [[crop_patch(grid, (0, 0, 2, 3), 8)], None]),
        ([[8], [9], [10]], rng.integers(0, 33, (3, 8, 8, 4)),
         [[crop_patch(grid, (1, 1, 2, 2), 8), crop_patch(grid, (5, 5, 1, 3), 8)], [crop_patch(grid, (7, 0, 1, 1), 8)], []]),
    ]
    for texts, target, conditions in cases:
        ref = build_model_inputs(cfg, texts, None if target is None else torch.from_numpy(target), conditions)
        np_conditions = None if conditions is None else [[(c.numpy(), p.numpy()) for c, p in (cond or [])] for cond in conditions]
        got = np_build_model_inputs(bundle.geometry, bundle.special_token_ids, texts, target, np_conditions)
        assert set(got) == set(ref)
        for key in ref:
            np.testing.assert_array_equal(got[key], ref[key].numpy(), err_msg=key)
    with pytest.raises(ValueError, match="max_text_length"):
        np_build_model_inputs(bundle.geometry, bundle.special_token_ids, [[7] * (cfg.max_text_length + 1)])


@pytest.mark.parametrize("schedule,steps", [("smart", 10), ("smart", 2), ("cosine", 6), ("smart", 1)])
def test_numpy_sampler_matches_smart_scheduler_in_deterministic_mode(schedule, steps):
    import torch

    from m6_fashion import SMARTScheduler

    B, N, M, K = 3, 64, 4, 32
    rng = np.random.default_rng(steps)
    ref_s = SMARTScheduler(mask_token_id=K, mask_schedule=schedule, deterministic=True)
    got_s = SMARTSampler.from_config(dict(ref_s.config))
    ref_s.set_timesteps(steps)
    got_s.set_timesteps(steps)
    editable = rng.random((B, N)) < 0.7
    editable[0] = True
    start = rng.integers(0, K, (B, N, M))
    start[editable] = K
    ref_tok, got_tok = torch.from_numpy(start), start.copy()
    for i in range(steps):
        logits = (rng.standard_normal((B, N, M, K)) * 3).astype(np.float32)
        ref_tok = ref_s.step(torch.from_numpy(logits), i, ref_tok, editable=torch.from_numpy(editable)).prev_sample
        got_tok = got_s.step(logits, i, got_tok, editable=editable)
        np.testing.assert_array_equal(got_tok, ref_tok.numpy(), err_msg=f"step {i}")
    assert not (got_tok == K).any()
    np.testing.assert_array_equal(got_tok[~editable], start[~editable])


def test_numpy_sampler_sampling_mode_semantics():
    B, N, M, K, T = 2, 64, 4, 32, 5
    sampler = SMARTSampler(mask_token_id=K, temperature=1.5)
    sampler.set_timesteps(T)
    rng = np.random.default_rng(0)
    editable = np.ones((B, N), dtype=bool)
    editable[1, :16] = False
    start = np.full((B, N, M), K)
    start[~editable] = 3
    logits = [rng.standard_normal((B, N, M, K)).astype(np.float32) for _ in range(T)]

    def run(seed):
        g = np.random.default_rng(seed)
        tokens, history = start.copy(), []
        for i in range(T):
            tokens = sampler.step(logits[i], i, tokens, editable=editable, rng=g)
            history.append(tokens.copy())
        return history

    h1, h2, h3 = run(1), run(1), run(2)
    assert all((a == b).all() for a, b in zip(h1, h2))  # same seed, same tokens
    assert any((a != b).any() for a, b in zip(h1, h3))
    for i, tokens in enumerate(h1[:-1]):
        n_masked = (tokens == K).any(-1).sum(-1)
        expected = np.floor(editable.sum(-1).astype(np.float32) * np.float32(sampler.remask_ratio(i)))
        np.testing.assert_array_equal(n_masked, expected)
    assert not (h1[-1] == K).any() and (h1[-1][~editable] == 3).all()
    assert h1[-1].min() >= 0 and h1[-1].max() < K


# ---------------------------------------------------------------------------------------------- parity with the pipeline
def _agreement(a, b) -> str:
    return f"token agreement {np.mean(np.asarray(a) == np.asarray(b)):.4%}"


def test_runtime_matches_pipeline_tokens_text_to_image(tiny_onnx_pipeline, tiny_onnx_bundle):
    rt = mrt.M6FashionRuntime(str(tiny_onnx_bundle))
    prompts = ["Men Navy Blue Casual Shirt", "Women Pink Handbag", "Unisex Black Sports Shoes"]
    for kwargs in ({"num_inference_steps": 10, "guidance_scale": 1.0}, {"num_inference_steps": 4, "num_images_per_prompt": 2, "guidance_scale": 1.0},
                   {"num_inference_steps": 3, "guidance_scale": 2.0},
                   {"num_inference_steps": 3, "guidance_scale": 2.0, "negative_prompt": "Men Shirt", "negative_guidance_scale": 1.5}):
        ref = tiny_onnx_pipeline(prompts, output_type="tokens", **kwargs).tokens.numpy()
        got = rt(prompts, output_type="tokens", **kwargs).tokens
        assert got.shape == ref.shape
        assert (got == ref).all(), f"{kwargs}: {_agreement(got, ref)}"
    # the default for text-to-image is guidance 12 in both; it multiplies the ONNX-vs-torch float differences of the
    # two passes by 23, so a near-tied draw may flip: nearly all tokens agree (unguided vs guided agree far less)
    ref = tiny_onnx_pipeline(prompts, output_type="tokens", num_inference_steps=10).tokens.numpy()
    got = rt(prompts, output_type="tokens", num_inference_steps=10).tokens
    assert (got == ref).mean() >= 0.98, _agreement(got, ref)
    # the default is guidance 12 with min-p 0.1 in both (the tiny bundle samples deterministically)
    assert (ref == tiny_onnx_pipeline(prompts, output_type="tokens", num_inference_steps=10, guidance_scale=12.0).tokens.numpy()).all()
    assert (got == rt(prompts, output_type="tokens", num_inference_steps=10, guidance_scale=12.0, guidance_min_p=0.1).tokens).all()
    ref = tiny_onnx_pipeline(None, output_type="tokens", num_inference_steps=5).tokens.numpy()
    assert (rt(None, output_type="tokens", num_inference_steps=5).tokens == ref).all()
    for negative in ("Men Black Jeans", ["Women White Tops", "", "Men Jeans"]):  # the guidance pass reads it in both
        kwargs = {"num_inference_steps": 3, "guidance_scale": 3.0, "negative_prompt": negative}
        ref = tiny_onnx_pipeline(prompts, output_type="tokens", **kwargs).tokens.numpy()
        got = rt(prompts, output_type="tokens", **kwargs).tokens
        assert (got == ref).all(), f"{kwargs}: {_agreement(got, ref)}"
    # the guidance filter off, and a stronger one: the same tokens too
    for min_p in (0.0, 0.5):
        kwargs = {"num_inference_steps": 3, "guidance_scale": 4.0, "guidance_min_p": min_p}
        ref = tiny_onnx_pipeline(prompts, output_type="tokens", **kwargs).tokens.numpy()
        assert (rt(prompts, output_type="tokens", **kwargs).tokens == ref).all(), kwargs
    with pytest.raises(ValueError, match="runs only with guidance_scale > 1"):
        rt(prompts, negative_prompt="Men Jeans", guidance_scale=1.0)


def _without_split(src: Path, dst: Path) -> Path:
    """A copy of a bundle whose bundle.json does not list the split graphs: the runtime runs the full-pass graph."""
    b = _copy_bundle(src, dst)
    cfg = json.loads((b / "bundle.json").read_text())
    for key in ("transformer_prefix", "transformer_target", "transformer_target_int8"):
        cfg["files"].pop(key, None)
        cfg["sha256"].pop(key, None)
    (b / "bundle.json").write_text(json.dumps(cfg))
    return b


def test_prefix_cached_passes_give_the_full_pass_tokens(tiny_onnx_bundle, tmp_path):
    """The split graphs (prefix once, target every pass) and the full-pass graph make the same tokens, with and
    without guidance, with a reference patch (a longer prefix) and in sampling mode at one seed."""
    split = mrt.M6FashionRuntime(str(tiny_onnx_bundle))
    full = mrt.M6FashionRuntime(str(_without_split(tiny_onnx_bundle, tmp_path / "full")))
    assert split.uses_prefix_cache and not full.uses_prefix_cache
    prompts = ["Men Navy Blue Casual Shirt", "Women Pink Handbag", "Unisex Black Sports Shoes"]
    patch = Image.new("RGB", (16, 16), (200, 30, 30))
    for kwargs in ({"num_inference_steps": 6}, {"num_inference_steps": 4, "guidance_scale": 2.5},
                   {"num_inference_steps": 4, "reference_images": [(patch, (0, 0, 16, 16))]},
                   {"num_inference_steps": 4, "deterministic": False, "seed": 3}):
        a = split(prompts, output_type="tokens", **kwargs).tokens
        b = full(prompts, output_type="tokens", **kwargs).tokens
        assert (a == b).all(), f"{kwargs}: {_agreement(a, b)}"
    # the int8 target graph runs too (its tokens differ from float32 by quantisation)
    int8 = mrt.M6FashionRuntime(str(tiny_onnx_bundle), int8=True)
    assert int8(prompts[:1], output_type="tokens", num_inference_steps=3).tokens.shape == (1, 8, 8, 4)


def test_runtime_matches_pipeline_inpainting_on_real_images(tiny_onnx_pipeline, tiny_onnx_bundle, real_images):
    rt = mrt.M6FashionRuntime(str(tiny_onnx_bundle))
    images = [r["image"] for r in real_images[:3]]
    masks = [_half_mask(im.size) for im in images]
    prompts = [r["text"] for r in real_images[:3]]
    ref = tiny_onnx_pipeline(prompts, image=images, mask_image=masks, output_type="np", num_inference_steps=6)
    got = rt(prompts, image=images, mask_image=masks, output_type="np", num_inference_steps=6)
    assert (got.tokens == ref.tokens.numpy()).all(), _agreement(got.tokens, ref.tokens.numpy())
    diff = np.abs(got.images.astype(int) - ref.images.astype(int))
    assert diff.max() <= 1, f"pixel uint8 max diff {diff.max()}"
    # outpainting: the image shrunk into a box, the rest generated
    ref = tiny_onnx_pipeline(prompts[0], image=images[0], image_box=(8, 8, 24, 24), output_type="tokens",
                             num_inference_steps=4).tokens.numpy()
    got = rt(prompts[0], image=images[0], image_box=(8, 8, 24, 24), output_type="tokens", num_inference_steps=4).tokens
    assert (got == ref).all(), _agreement(got, ref)


def test_runtime_matches_pipeline_local_editing_and_style_mixing(tiny_onnx_pipeline, tiny_onnx_bundle, real_images):
    rt = mrt.M6FashionRuntime(str(tiny_onnx_bundle))
    a, b, c = (r["image"] for r in real_images[:3])
    # local editing, text-guided, with one and with two reference patches (several visual conditions)
    for refs, prompt in (([(b, (0, 0, 16, 16))], "Men Black Shoes"), ([(a, (0, 0, 8, 16)), (c, (16, 8, 24, 16))], None)):
        ref = tiny_onnx_pipeline(prompt, reference_images=refs, output_type="tokens", num_inference_steps=5).tokens.numpy()
        got = rt(prompt, reference_images=refs, output_type="tokens", num_inference_steps=5).tokens
        assert (got == ref).all(), _agreement(got, ref)
    # local editing inside a masked region of an image
    ref = tiny_onnx_pipeline(image=a, mask_image=_half_mask(a.size), reference_images=[(b, (0, 16, 16, 32))], output_type="tokens",
                    num_inference_steps=4).tokens.numpy()
    got = rt(image=a, mask_image=_half_mask(a.size), reference_images=[(b, (0, 16, 16, 32))], output_type="tokens",
             num_inference_steps=4).tokens
    assert (got == ref).all(), _agreement(got, ref)
    # style mixing: the seam only (refine_ratio=0 has no random part, so both sides re-sample the same cells)
    ref = tiny_onnx_pipeline(image=a, style_image=b, mask_image=_half_mask(a.size), refine_ratio=0.0, output_type="np",
                             num_inference_steps=4)
    got = rt(image=a, style_image=b, mask_image=_half_mask(a.size), refine_ratio=0.0, output_type="np", num_inference_steps=4)
    assert (got.tokens == ref.tokens.numpy()).all(), _agreement(got.tokens, ref.tokens.numpy())
    assert np.abs(got.images.astype(int) - ref.images.astype(int)).max() <= 1
    # cells away from the seam hold the style tokens inside the mask and the base tokens outside, exactly
    from m6_fashion_runtime.image import cell_mask, preprocess, preprocess_mask
    from m6_fashion_runtime.pipeline import seam

    region = cell_mask(preprocess_mask(_half_mask(a.size), 32)[None], 8)
    expected = np.where(region[..., None], rt.encode_images(preprocess(b, 32)), rt.encode_images(preprocess(a, 32)))
    kept = ~seam(region, 8, 0.0, np.random.default_rng(0))
    assert kept.sum() >= 32 and (got.tokens.reshape(1, 64, -1)[kept] == expected[kept]).all()


def test_numpy_seam_matches_the_pipeline_seam(tiny_onnx_pipeline):
    import torch

    from m6_fashion_runtime.pipeline import seam

    region = np.zeros((2, 64), dtype=bool)
    region[0, 32:] = True  # lower half
    region[1, [9, 10, 17, 18, 63]] = True  # a block and a corner cell
    ref = tiny_onnx_pipeline._seam(torch.from_numpy(region), 0.0, None).numpy()
    got = seam(region, 8, 0.0, np.random.default_rng(0))
    assert (got == ref).all()
    assert got[0].reshape(8, 8)[3:5].all() and not got[0].reshape(8, 8)[[0, 1, 2, 5, 6, 7]].any()


def test_runtime_cli_edit_and_mix(tiny_onnx_bundle, real_images, tmp_path):
    from m6_fashion_runtime.cli import main

    a, b = real_images[0]["image"], real_images[1]["image"]
    a.save(tmp_path / "a.png")
    b.save(tmp_path / "b.png")
    _half_mask(a.size).save(tmp_path / "m.png")
    main(["edit", "--bundle", str(tiny_onnx_bundle), "--reference", str(tmp_path / "b.png"), "--box", "0", "0", "16", "16",
          "--prompt", "Men Black Shoes", "--steps", "2", "--out", str(tmp_path / "edit.png")])
    main(["mix", "--bundle", str(tiny_onnx_bundle), "--image", str(tmp_path / "a.png"), "--style-image", str(tmp_path / "b.png"),
          "--mask", str(tmp_path / "m.png"), "--steps", "2", "--out", str(tmp_path / "mix.png")])
    from PIL import Image

    assert Image.open(tmp_path / "edit.png").size == (32, 32) and Image.open(tmp_path / "mix.png").size == (32, 32)
    with pytest.raises(SystemExit, match="one --box per --reference"):
        main(["edit", "--bundle", str(tiny_onnx_bundle), "--reference", str(tmp_path / "b.png"), "--box", "0", "0", "16", "16",
              "--box", "0", "0", "8", "8", "--out", str(tmp_path / "x.png")])


@pytest.mark.slow
def test_runtime_matches_shipped_pipeline_tokens(shipped_onnx_bundle, real_images):
    from m6_fashion import M6FashionPipeline, SMARTScheduler

    bundle = shipped_onnx_bundle
    pipe = M6FashionPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = SMARTScheduler.from_config(pipe.scheduler.config, deterministic=True)
    rt = mrt.M6FashionRuntime(str(bundle))
    prompts = [r["text"] for r in real_images[:2]]
    ref = pipe(prompts, output_type="tokens", num_inference_steps=8).tokens.numpy()
    got = rt(prompts, deterministic=True, output_type="tokens", num_inference_steps=8).tokens
    assert (got == ref).all(), f"text-to-image: {_agreement(got, ref)}"
    image = real_images[2]["image"]
    ref = pipe(prompts[0], image=image, mask_image=_half_mask(image.size), output_type="tokens", num_inference_steps=4).tokens.numpy()
    got = rt(prompts[0], image=image, mask_image=_half_mask(image.size), deterministic=True, output_type="tokens", num_inference_steps=4).tokens
    assert (got == ref).all(), f"inpainting: {_agreement(got, ref)}"
    # a reference patch on the default 192x256 output (boxes shift by the 32-px crop margin on the 256-px canvas)
    assert rt.default_size == pipe.default_size == (256, 192)
    refs = [(real_images[3]["image"], (0, 0, 96, 128))]
    ref = pipe(prompts[0], reference_images=refs, output_type="tokens", num_inference_steps=4).tokens.numpy()
    got = rt(prompts[0], reference_images=refs, deterministic=True, output_type="tokens", num_inference_steps=4).tokens
    assert (got == ref).all(), f"reference patch: {_agreement(got, ref)}"


# ---------------------------------------------------------------------------------------------- output sizes (decoder_hr)
SIZE_CASES = [(None, None), (128, 96), (96, 128), (64, 64), (128, 128), (32, 24), (16, 32), (24, 24), (64, None),
              (None, 64), (96, None), (None, 24), (32, None), (100, 96), (128, 48), (256, 192), (0, 96), (40, None),
              (None, 100), (np.int64(96), np.int64(64)), (128.0, 96), (True, None), ("96", 64)]


def _canvas_or_error(fn, height, width):
    """``(side, height, width)`` of the canvas ``fn`` picks, or ``(exception type, message)`` without the hint
    saying which kind of object (pipeline or bundle) lacks decoder_hr."""
    try:
        c = fn(height, width)
    except (TypeError, ValueError) as e:
        return type(e).__name__, str(e).split(" (this ")[0]
    return c.side, c.height, c.width


@pytest.mark.parametrize("hr", [False, True], ids=["sample_size only", "with decoder_hr"])
def test_runtime_sizes_defaults_and_errors_are_the_pipelines(hr, tiny_onnx_pipeline, tiny_onnx_hr_pipeline, tiny_onnx_bundle,
                                                             tiny_onnx_hr_bundle):
    pipe, bundle = (tiny_onnx_hr_pipeline, tiny_onnx_hr_bundle) if hr else (tiny_onnx_pipeline, tiny_onnx_bundle)
    rt = mrt.M6FashionRuntime(str(bundle))
    assert rt.default_size == pipe.default_size == ((128, 96) if hr else (32, 32))
    assert rt.canvas_sides() == pipe.canvas_sides()
    assert rt.output_sizes() == pipe.output_sizes()
    for height, width in SIZE_CASES:
        ref = _canvas_or_error(pipe.output_canvas, height, width)
        assert _canvas_or_error(rt.output_canvas, height, width) == ref, (height, width)
    for height, width in [(128, 96), (64, 128), (32, 24), (24, 32)] if hr else [(32, 32), (24, 16)]:
        ref_canvas, got_canvas = pipe.output_canvas(height, width), rt.output_canvas(height, width)
        for box in [(0, 0, width, height), (1, 2, 3, 4), (width // 3, height // 4, width - 1, height), (0.4, 0, 7.6, 8)]:
            assert got_canvas.box_to_cells(box) == ref_canvas.box_to_cells(box), (height, width, box)


def test_runtime_matches_pipeline_text_to_image_at_the_portrait_size(tiny_onnx_hr_pipeline, tiny_onnx_hr_bundle):
    rt = mrt.M6FashionRuntime(str(tiny_onnx_hr_bundle))
    prompts = ["Men Navy Blue Casual Shirt", "Women Pink Handbag"]
    for size in ({}, {"height": 64, "width": 128}, {"height": 32, "width": 24}):
        ref = tiny_onnx_hr_pipeline(prompts, output_type="np", num_inference_steps=4, **size)
        got = rt(prompts, output_type="np", num_inference_steps=4, **size)
        assert (got.tokens == ref.tokens.numpy()).all(), f"{size}: {_agreement(got.tokens, ref.tokens.numpy())}"
        assert got.images.shape == ref.images.shape
        assert np.abs(got.images.astype(int) - ref.images.astype(int)).max() <= 1, size
    out = rt(prompts[0], num_inference_steps=2)
    assert out.images[0].size == (96, 128)  # (width, height) of the default 128x96
    assert rt(prompts[0], num_inference_steps=2, height=64, width=128).images[0].size == (128, 64)


def test_runtime_matches_pipeline_boxes_and_masks_on_a_portrait_output(tiny_onnx_hr_pipeline, tiny_onnx_hr_bundle, real_images):
    """Boxes on the 96x128 output sit one 16-px cell right of the canvas' left edge; every task at that size."""
    rt = mrt.M6FashionRuntime(str(tiny_onnx_hr_bundle))
    a, b, c = (r["image"] for r in real_images[:3])
    cases = {
        "outpainting": dict(prompt="Men Navy Blue Shirt", image=a, image_box=(16, 16, 80, 112)),
        "reference patch": dict(prompt="Men Black Shoes", reference_images=[(b, (0, 0, 48, 64))]),
        "two patches": dict(reference_images=[(a, (0, 64, 32, 96)), (c, (48, 0, 96, 32))]),
        "patch inside an image": dict(image=a, reference_images=[(b, (40, 60, 80, 100))]),
        "inpainting": dict(prompt=["Men Red Shirt", "Women Blue Top"], image=[a, b], mask_image=[_half_mask(a.size), _half_mask(b.size)]),
        "style mixing": dict(image=a, style_image=b, mask_image=_half_mask(a.size), refine_ratio=0.0),
        "outpainting at 64x128": dict(image=c, image_box=(30, 0, 90, 64), height=64, width=128),
    }
    for name, kwargs in cases.items():
        ref = tiny_onnx_hr_pipeline(output_type="np", num_inference_steps=4, **kwargs)
        got = rt(output_type="np", num_inference_steps=4, **kwargs)
        assert (got.tokens == ref.tokens.numpy()).all(), f"{name}: {_agreement(got.tokens, ref.tokens.numpy())}"
        assert got.images.shape == ref.images.shape == (ref.tokens.shape[0], kwargs.get("height", 128), kwargs.get("width", 96), 3), name
        diff = np.abs(got.images.astype(int) - ref.images.astype(int))
        assert diff.max() <= 1, f"{name}: pixel uint8 max diff {diff.max()}"
    # the patch inside an image regenerates its box only: cells outside keep the image's tokens
    got = rt(image=a, reference_images=[(b, (40, 60, 80, 100))], output_type="tokens", num_inference_steps=2)
    from m6_fashion_runtime.image import preprocess

    kept = rt.output_canvas().cells_mask([rt.box_to_cells((40, 60, 80, 100))], 0.0, 1)[:, :, ::16, ::16].reshape(1, 64) > 0.5
    base = rt.encode_images(preprocess(a, 32))
    assert kept.sum() == 64 - 12 and (got.tokens.reshape(1, 64, -1)[kept] == base[kept]).all()


def test_runtime_refuses_sizes_and_boxes_it_cannot_make(tiny_onnx_bundle, tiny_onnx_hr_bundle, tmp_path):
    from PIL import Image

    from m6_fashion_runtime.cli import main

    rt = mrt.M6FashionRuntime(str(tiny_onnx_hr_bundle))
    with pytest.raises(ValueError, match=r"cannot make a 96x100 \(width x height\) image; accepted: 32x32 canvas: height and "
                                         r"width each in \[16, 24, 32\]; 128x128 canvas \(decoder_hr\): height and width each in \[64, 96, 128\]$"):
        rt("x", height=100, width=96)
    with pytest.raises(ValueError, match=r"cannot make a width=100 image"):
        rt("x", width=100)
    with pytest.raises(TypeError, match="height must be an integer number of pixels; got 128.0"):
        rt("x", height=128.0)
    with pytest.raises(ValueError, match=r"outside the 96x128 \(width x height\) output"):
        rt("x", image=Image.new("RGB", (60, 80)), image_box=(0, 0, 128, 96))  # a landscape box on the portrait output
    with pytest.raises(ValueError, match="cover 24 token cells.*at most 16"):
        rt("x", reference_images=[(Image.new("RGB", (8, 8)), (0, 0, 96, 64))])
    with pytest.raises(ValueError, match=r"accepted: 32x32 canvas: height and width each in \[16, 24, 32\] \(this bundle has no decoder_hr"):
        mrt.M6FashionRuntime(str(tiny_onnx_bundle))("x", height=128, width=96)
    with pytest.raises(SystemExit, match=r"error: this model cannot make a 100x100"):
        main(["generate", "--bundle", str(tiny_onnx_hr_bundle), "--height", "100", "--width", "100", "--out", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()


def test_runtime_cli_height_width_and_info(tiny_onnx_hr_bundle, tmp_path, capsys):
    from PIL import Image

    from m6_fashion_runtime.cli import main

    main(["generate", "--bundle", str(tiny_onnx_hr_bundle), "--prompt", "Men Navy Blue Shirt", "--steps", "1",
          "--out", str(tmp_path / "d.png")])
    assert Image.open(tmp_path / "d.png").size == (96, 128)
    main(["generate", "--bundle", str(tiny_onnx_hr_bundle), "--steps", "1", "--height", "32", "--out", str(tmp_path / "h.png")])
    assert Image.open(tmp_path / "h.png").size == (24, 32)  # one side keeps the default 3:4 aspect (on the 32-px canvas)
    Image.new("RGB", (60, 80), (200, 30, 30)).save(tmp_path / "in.png")
    main(["outpaint", "--bundle", str(tiny_onnx_hr_bundle), "--image", str(tmp_path / "in.png"), "--box", "16", "16", "112", "112",
          "--height", "128", "--width", "128", "--steps", "1", "--out", str(tmp_path / "o.png")])
    assert Image.open(tmp_path / "o.png").size == (128, 128)
    main(["edit", "--bundle", str(tiny_onnx_hr_bundle), "--image", str(tmp_path / "in.png"), "--reference", str(tmp_path / "in.png"),
          "--box", "40", "60", "80", "100", "--steps", "1", "--out", str(tmp_path / "e.png")])  # the box of --image is edited
    assert Image.open(tmp_path / "e.png").size == (96, 128)
    with pytest.raises(SystemExit, match="--mask needs --image"):
        main(["edit", "--bundle", str(tiny_onnx_hr_bundle), "--mask", str(tmp_path / "in.png"), "--reference", str(tmp_path / "in.png"),
              "--box", "0", "0", "8", "8", "--out", str(tmp_path / "x.png")])
    capsys.readouterr()
    main(["info", "--bundle", str(tiny_onnx_hr_bundle), "--verify"])
    info = json.loads(capsys.readouterr().out)
    assert info["format_version"] == 4 and info["canvases"] == {"image_decoder": 32, "image_decoder_hr": 128}
    assert info["default_size"] == {"height": 128, "width": 96} and "96x128" in info["output_sizes"] and "24x32" in info["output_sizes"]


def test_bundle_canvases_are_checked_and_version_1_bundles_still_load(tiny_onnx_bundle, tiny_onnx_hr_bundle, tmp_path):
    b = _copy_bundle(tiny_onnx_bundle, tmp_path / "v1")
    cfg = json.loads((b / "bundle.json").read_text())
    cfg["format_version"] = 1
    del cfg["canvases"], cfg["default_size"]
    (b / "bundle.json").write_text(json.dumps(cfg))
    rt = mrt.M6FashionRuntime(str(b))
    assert rt.default_size == (32, 32) and rt.canvas_sides() == [32]
    assert rt("x", num_inference_steps=1).images[0].size == (32, 32)

    def broken(name, edit):
        d = _copy_bundle(tiny_onnx_hr_bundle, tmp_path / name)
        cfg = json.loads((d / "bundle.json").read_text())
        edit(cfg)
        (d / "bundle.json").write_text(json.dumps(cfg))
        return str(d)

    with pytest.raises(mrt.BundleError, match="missing or malformed 'canvases'"):
        mrt.load_bundle(broken("no_canvases", lambda c: c.pop("canvases")))
    with pytest.raises(mrt.BundleError, match="side 100 must be a multiple of grid_size 8"):
        mrt.load_bundle(broken("bad_side", lambda c: c["canvases"].update(image_decoder_hr=100)))
    with pytest.raises(mrt.BundleError, match=r"default_size 128x128 \(width x height\) is not the default"):
        mrt.load_bundle(broken("bad_default", lambda c: c["default_size"].update(width=128)))
    with pytest.raises(mrt.BundleError, match="canvases names 'image_decoder_xl' but files has no such entry"):
        mrt.load_bundle(broken("unknown", lambda c: c["canvases"].update(image_decoder_xl=256)))
    d = _copy_bundle(tiny_onnx_hr_bundle, tmp_path / "no_hr_file")
    (d / "image_decoder_hr.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=r"image_decoder_hr\.onnx \(image_decoder_hr\) is missing"):
        mrt.load_bundle(str(d))


# ---------------------------------------------------------------------------------------------- no torch
def _no_torch_env(tmp_path) -> dict:
    shim = tmp_path / "no_torch_shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(
        "import sys\n"
        f"for _name in {FORBIDDEN!r}:\n"
        "    sys.modules[_name] = None  # importing it raises ImportError\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(shim), str(RUNTIME_SRC)])
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_runtime_cli_runs_where_torch_cannot_be_imported(tiny_onnx_bundle, tmp_path):
    from PIL import Image

    env = _no_torch_env(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "import of torch halted" in probe.stderr  # the shim works

    script = (
        "import sys, m6_fashion_runtime as m\n"
        f"rt = m.M6FashionRuntime({str(tiny_onnx_bundle)!r}, num_threads=1)\n"
        "out = rt('men navy blue shirt', num_inference_steps=3, seed=0)\n"
        "assert out.images[0].size == (32, 32)\n"
        "assert not any(k.split('.')[0] in ('torch', 'm6_fashion') and sys.modules[k] is not None for k in sys.modules)\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr

    cli = [sys.executable, "-m", "m6_fashion_runtime", ]
    out = tmp_path / "gen.png"
    res = subprocess.run(cli + ["generate", "--bundle", str(tiny_onnx_bundle), "--prompt", "Women Pink Handbag", "--steps", "3",
                                "--num-images", "2", "--out", str(out), "--threads", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert out.is_file() and (tmp_path / "gen-1.png").is_file()
    assert Image.open(out).size == (32, 32)

    src = tmp_path / "in.png"
    Image.new("RGB", (30, 40), (200, 30, 30)).save(src)
    _half_mask((30, 40)).save(tmp_path / "mask.png")
    res = subprocess.run(cli + ["inpaint", "--bundle", str(tiny_onnx_bundle), "--image", str(src), "--mask", str(tmp_path / "mask.png"),
                                "--prompt", "red dress", "--steps", "3", "--deterministic", "--int8", "--out", str(tmp_path / "inp.png")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert Image.open(tmp_path / "inp.png").size == (32, 32)

    res = subprocess.run(cli + ["inpaint", "--bundle", str(tiny_onnx_bundle), "--image", str(tmp_path / "nope.png"), "--mask", str(src),
                                "--out", str(tmp_path / "x.png")], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "does not exist" in res.stderr


# ---------------------------------------------------------------------------------------------- errors
def _copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_bad_bundles_give_clear_errors(tiny_onnx_bundle, tmp_path):
    with pytest.raises(mrt.BundleFileNotFoundError, match="does not exist"):
        mrt.load_bundle(str(tmp_path / "missing"))

    b = _copy_bundle(tiny_onnx_bundle, tmp_path / "no_transformer")
    (b / "transformer.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=r"transformer\.onnx \(transformer\) is missing.*m6-fashion export onnx"):
        mrt.M6FashionRuntime(str(b))

    b = _copy_bundle(tiny_onnx_bundle, tmp_path / "no_json")
    (b / "bundle.json").unlink()
    with pytest.raises(FileNotFoundError, match="bundle.json is missing"):
        mrt.load_bundle(str(b))

    b = _copy_bundle(tiny_onnx_bundle, tmp_path / "future")
    cfg = json.loads((b / "bundle.json").read_text())
    cfg["format_version"] = 99
    (b / "bundle.json").write_text(json.dumps(cfg))
    with pytest.raises(mrt.BundleError, match="format version 99 is not supported.*supported: 1"):
        mrt.load_bundle(str(b))

    (b / "bundle.json").write_text("{not json")
    with pytest.raises(mrt.BundleError, match="not valid JSON"):
        mrt.load_bundle(str(b))

    b = _copy_bundle(tiny_onnx_bundle, tmp_path / "no_int8")
    cfg = json.loads((b / "bundle.json").read_text())
    del cfg["files"]["transformer_int8"], cfg["files"]["transformer_target_int8"]
    (b / "bundle.json").write_text(json.dumps(cfg))
    with pytest.raises(FileNotFoundError, match="no int8 transformer.*--int8"):
        mrt.M6FashionRuntime(str(b), int8=True)

    b = _copy_bundle(tiny_onnx_bundle, tmp_path / "half_split")
    cfg = json.loads((b / "bundle.json").read_text())
    del cfg["files"]["transformer_prefix"]
    (b / "bundle.json").write_text(json.dumps(cfg))
    with pytest.raises(mrt.BundleError, match="only one of.*transformer_prefix"):
        mrt.load_bundle(str(b))

    b = _copy_bundle(tiny_onnx_bundle, tmp_path / "no_weights")
    (b / "transformer.weights").unlink()
    with pytest.raises(FileNotFoundError, match=r"transformer\.weights \(transformer_weights\) is missing"):
        mrt.load_bundle(str(b))

    b = _copy_bundle(tiny_onnx_bundle, tmp_path / "corrupt")
    with open(b / "image_decoder.onnx", "ab") as f:
        f.write(b"\0")
    bundle = mrt.load_bundle(str(b))
    with pytest.raises(mrt.BundleError, match="checksum"):
        bundle.verify_checksums()

    from m6_fashion_runtime.cli import main

    with pytest.raises(SystemExit, match="format version 99"):
        cfg = json.loads((tiny_onnx_bundle / "bundle.json").read_text())
        cfg["format_version"] = 99
        (tmp_path / "future" / "bundle.json").write_text(json.dumps(cfg))
        main(["generate", "--bundle", str(tmp_path / "future"), "--out", str(tmp_path / "x.png")])


def test_runtime_rejects_bad_inputs(tiny_onnx_bundle):
    from PIL import Image

    rt = mrt.M6FashionRuntime(str(tiny_onnx_bundle))
    img = Image.new("RGB", (32, 32))
    with pytest.raises(ValueError, match="mask_image needs an image"):
        rt("x", mask_image=img)
    with pytest.raises(ValueError, match="guidance_scale"):
        rt("x", guidance_scale=0.5)
    with pytest.raises(ValueError, match="num_inference_steps"):
        rt("x", num_inference_steps=0)
    with pytest.raises(ValueError, match="does not match image size"):
        rt("x", image=img, mask_image=Image.new("L", (16, 16)))
    with pytest.raises(ValueError, match=r"outside the 32x32 \(width x height\) output"):
        rt("x", image=img, image_box=(0, 0, 40, 40))
    with pytest.raises(ValueError, match="style mixing needs image"):
        rt("x", image=img, style_image=img)
    with pytest.raises(ValueError, match="non-empty list of"):
        rt("x", reference_images=[])
    with pytest.raises(ValueError, match=r"reference_images\[0\] must be a pair"):
        rt("x", reference_images=[img])
    with pytest.raises(ValueError, match=r"outside the 32x32 \(width x height\) output"):
        rt("x", reference_images=[(img, (0, 0, 64, 8))])
    with pytest.raises(ValueError, match=r"token values must lie in \[0, 32\)"):
        rt.decode_tokens(np.full((1, 64, 4), 32))
    with pytest.warns(UserWarning, match="truncated"):
        rt(" ".join(["shirt"] * 40), num_inference_steps=1, output_type="tokens")
