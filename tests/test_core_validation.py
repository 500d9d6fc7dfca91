"""`m6_fashion_core.validation`: the argument rules and component invariants both front ends call.

The catalogue of bad inputs per front end is test_fuzz_bad_inputs.py; here: the core's functions themselves
(plain values, no model), that the pipeline and the runtime take their limits and messages from them, and that
components which do not fit (a scheduler whose MASK code is not the codebook size, a tokenizer larger than the
transformer's vocabulary, special ids outside it) are refused when a pipeline is assembled or a bundle loaded.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

RUNTIME_SRC = Path(__file__).resolve().parents[1] / "runtime" / "src"
if str(RUNTIME_SRC) not in sys.path:
    sys.path.insert(0, str(RUNTIME_SRC))

from m6_fashion_core import validation as v  # noqa: E402

IMAGE_TYPES, KINDS = (PIL.Image.Image, np.ndarray), "a PIL image or a numpy array"
IMG = PIL.Image.new("RGB", (48, 64), (200, 30, 30))
MASK = PIL.Image.new("L", (48, 64), 255)


# ---------------------------------------------------------------------------------------------- arguments
def test_sampling_arguments_come_back_as_plain_numbers():
    steps, n, scale, temperature, ratio = v.check_sampling_arguments(
        "shirt", None, None, None, np.int64(4), np.int64(2), np.float32(3.0), np.float64(0.5), 0.25
    )
    assert (steps, n, scale, temperature, ratio) == (4, 2, 3.0, 0.5, 0.25)
    assert all(type(x) in (int, float) for x in (steps, n, scale, temperature, ratio))


def test_a_prompt_list_holding_a_non_string_is_a_type_and_a_value_error():
    for error in (TypeError, ValueError):  # the pipeline's tests expect TypeError, the runtime's ValueError
        with pytest.raises(error, match=r"prompt\[1\] is a int"):
            v.check_prompt(["a", 1])
    with pytest.raises(ValueError, match="prompt is an empty list"):
        v.check_prompt([])


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_images_per_prompt=0), "num_images_per_prompt must be an integer >= 1"),
    (dict(prompt=["a"] * 3, num_images_per_prompt=22), r"3 prompt\(s\) x num_images_per_prompt=22 = 66 images; at most 64"),
    (dict(image=[IMG] * 65), "65 prompt"),
])
def test_the_number_of_images_per_call_is_bounded(kwargs, match):
    args = {"prompt": None, "image": None, "num_images_per_prompt": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        v.check_num_images(**args)


def test_default_guidance_is_the_tasks():
    assert v.default_guidance_scale(None, "Men Navy Blue Casual Shirt", None, None) == v.DEFAULT_TEXT_GUIDANCE_SCALE == 12.0
    assert v.default_guidance_scale(None, ["shirt", ""], None, None) == 12.0  # some text: text-to-image
    assert v.default_guidance_scale(None, None, None, None) == 1.0  # unconditional
    assert v.default_guidance_scale(None, ["", " "], None, None) == 1.0
    assert v.default_guidance_scale(None, "shirt", IMG, None) == 1.0  # inpainting, outpainting, mixing
    assert v.default_guidance_scale(None, "shirt", None, [(IMG, (0, 0, 8, 8))]) == 1.0  # reference patches
    assert v.default_guidance_scale(3, None, IMG, None) == 3  # given: kept (checked by check_guidance_scale)
    with pytest.raises(TypeError, match="prompt must be a string or a list of strings; got int"):
        v.default_guidance_scale(None, 3, None, None)


def test_guidance_min_p_needs_guidance():
    assert v.check_guidance_min_p(v.DEFAULT_GUIDANCE_MIN_P, 1.0) == 0.1  # the default is fine without guidance
    assert v.check_guidance_min_p(0, 8.0) == 0.0
    assert v.check_guidance_min_p(0.5, 2.0) == 0.5
    with pytest.raises(ValueError, match=r"guidance_min_p=0.0 filters the tokens of classifier-free guidance.*guidance_scale=1.0"):
        v.check_guidance_min_p(0.0, 1.0)
    for bad in (1.0, -0.1, float("nan"), "0.2", True):
        with pytest.raises(ValueError, match=r"guidance_min_p must be a number in \[0, 1\)"):
            v.check_guidance_min_p(bad, 8.0)


def test_guidance_needs_text_or_patches():
    assert v.check_guidance_scale(2, "shirt", None) == 2.0
    assert v.check_guidance_scale(2, None, [(IMG, (0, 0, 8, 8))]) == 2.0
    with pytest.raises(ValueError, match=r"guidance_scale=2 steers .* neither"):
        v.check_guidance_scale(2, ["", " "], None)
    with pytest.raises(ValueError, match=r"guidance_scale must be a finite number in \[1, 50\]"):
        v.check_guidance_scale(float("nan"), "shirt", None)


def test_refine_ratio_acts_in_style_mixing_only():
    assert v.check_refine_ratio(v.DEFAULT_REFINE_RATIO, None) == 0.25
    assert v.check_refine_ratio(0.0, IMG) == 0.0
    with pytest.raises(ValueError, match="refine_ratio=0.5 only acts in style mixing"):
        v.check_refine_ratio(0.5, None)


def test_output_type_and_blend_pixels_name_the_front_ends_types():
    with pytest.raises(ValueError, match="output_type must be 'pil', 'np' or 'tokens'; got 'pt'"):
        v.check_output_type("pt", ("pil", "np", "tokens"))
    with pytest.raises(ValueError, match=r"\(output_type 'pil', 'np' or 'pt'\), and this call has no image"):
        v.check_blend_pixels(False, None, "pil", ("pil", "np", "pt", "tokens"))
    with pytest.raises(TypeError, match="blend_pixels must be True or False"):
        v.check_blend_pixels("no", IMG, "pil", ("pil", "np"))


def test_context_dropout_default_and_refusals():
    assert v.context_dropout_steps(None, 10, "Red Top", IMG, MASK, None) == round(v.CONTEXT_DROPOUT_SHARE * 10) == 8
    assert v.context_dropout_steps(None, 10, "", IMG, MASK, None) == 0  # no text: nothing to follow
    assert v.context_dropout_steps(None, 10, "Red Top", IMG, MASK, IMG) == 0  # style mixing
    assert v.context_dropout_steps(np.int64(3), 10, "Red Top", IMG, MASK, None) == 3
    with pytest.raises(ValueError, match=r"in \[0, num_inference_steps=4\]"):
        v.context_dropout_steps(5, 4, "Red Top", IMG, MASK, None)
    with pytest.raises(ValueError, match="context_dropout_steps=1 only acts in text-guided inpainting"):
        v.context_dropout_steps(1, 4, "Red Top", None, None, None)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(mask_image=MASK), ValueError, "mask_image needs an image"),
    (dict(image=IMG, style_image=IMG), ValueError, "style mixing needs image"),
    (dict(image_box=(0, 0, 8, 8)), ValueError, "image_box .*needs an image.*needs image"),
    (dict(image=IMG, mask_image=MASK, image_box=(0, 0, 8, 8)), ValueError, "either image_box"),
    (dict(image=[IMG, 3], mask_image=MASK), TypeError, r"image\[1\] must be a PIL image or a numpy array \(or a list of them\)"),
    (dict(image=IMG), ValueError, "an image alone says nothing to edit"),
    (dict(image=[], mask_image=MASK), ValueError, "image is an empty list"),
    (dict(image=IMG, mask_image=PIL.Image.new("L", (10, 10))), ValueError, r"mask_image size \(10, 10\) does not match image size \(48, 64\)"),
    # one mask for two images: it must fit both
    (dict(image=[IMG, PIL.Image.new("RGB", (32, 32))], mask_image=MASK), ValueError, r"mask_image size \(48, 64\) does not match image size \(32, 32\)"),
])
def test_image_combinations_are_refused_naming_the_task(kwargs, error, match):
    args = dict(image=None, mask_image=None, style_image=None, image_box=None, reference_images=None)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        v.check_images(**args, image_types=IMAGE_TYPES, kinds=KINDS)


def test_image_sizes_of_every_layout():
    assert v.image_size(IMG) == (48, 64)
    assert v.image_size(np.zeros((64, 48, 3))) == (48, 64)
    assert v.image_size(np.zeros(5)) is None

    class ChannelsFirst:  # a tensor-like (..., H, W) array
        ndim, shape = 3, (3, 64, 48)

    assert v.image_size(ChannelsFirst()) == (48, 64)


def test_boxes_and_patches_fit_the_canvas():
    from m6_fashion_core.canvas import OutputCanvas

    canvas = OutputCanvas(side=64, grid=16, height=64, width=64)
    v.check_boxes(canvas, (0, 0, 32, 32), [(IMG, (0, 0, 16, 16))], 256, IMAGE_TYPES, KINDS)
    with pytest.raises(ValueError, match="covers the whole 64x64 .* 4-px token cells"):
        v.check_boxes(canvas, (1, 1, 63, 63), None, 256, IMAGE_TYPES, KINDS)
    with pytest.raises(ValueError, match=r"cover 129 token cells .* at most 100"):
        v.check_boxes(canvas, None, [(IMG, (0, 0, 32, 32)), (IMG, (32, 32, 64, 64))], 100, IMAGE_TYPES, KINDS)
    with pytest.raises(ValueError, match=r"reference_images\[0\] must be a pair"):
        v.check_boxes(canvas, None, [IMG], 256, IMAGE_TYPES, KINDS)


def test_lists_expand_per_prompt():
    assert v.batch_prompts(["a", "b"], None, 2) == ["a", "a", "b", "b"]
    assert v.batch_prompts(None, [IMG, IMG, IMG], 1) == ["", "", ""]
    assert v.expand_per_prompt([1], 3, "image") == [1, 1, 1]
    with pytest.raises(ValueError, match="mask_image has 2 entries but there are 3 prompts"):
        v.expand_per_prompt([1, 2], 3, "mask_image")


# ---------------------------------------------------------------------------------------------- seam
def test_seam_cells_are_the_border_plus_drawn_cells_next_to_the_region():
    region = np.zeros((1, 64), dtype=bool)
    region[0, 32:] = True  # lower half of an 8x8 grid
    border = v.seam_cells(region, 8, 0.0, draw=None)  # refine_ratio 0: nothing is drawn
    assert border[0].reshape(8, 8)[3:5].all() and not border[0].reshape(8, 8)[[0, 1, 2, 5, 6, 7]].any()
    drawn = []

    def draw(shape):
        drawn.append(shape)
        u = np.ones(shape, dtype=np.float32)
        u[0, 0, 0] = u[0, 7, 7] = 0.0  # (0, 0) is far from the region; (7, 7) is inside it
        return u

    cells = v.seam_cells(region, 8, 0.5, draw)
    assert drawn == [(1, 8, 8)]
    expected = border[0].reshape(8, 8).copy()
    expected[7, 7] = True
    assert (cells[0].reshape(8, 8) == expected).all()


def test_the_seam_compares_in_the_precision_of_the_draws():
    """torch draws float32 uniforms and compares them in float32; numpy's are float64 (the runtime)."""
    region = np.ones((1, 4), dtype=bool)
    u32 = np.full((1, 2, 2), 0.7, dtype=np.float32)  # float32(0.7) < 0.7 in float64, == in float32
    assert not v.seam_cells(region, 2, 0.7, lambda shape: u32).any()
    assert v.seam_cells(region, 2, 0.7, lambda shape: u32.astype(np.float64)).all()


def test_both_front_ends_use_the_core_seam(tiny_pipeline):
    import torch

    from m6_fashion_runtime.pipeline import seam

    region = np.zeros((2, 256), dtype=bool)
    region[0, 128:] = True
    region[1, [17, 18, 33, 34]] = True
    g = torch.Generator().manual_seed(3)
    got = tiny_pipeline._seam(torch.from_numpy(region), 0.3, g).numpy()
    u = torch.rand((2, 1, 16, 16), generator=torch.Generator().manual_seed(3)).numpy().reshape(2, 16, 16)
    assert (got == v.seam_cells(region, 16, 0.3, lambda shape: u)).all()
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert (seam(region, 16, 0.3, rng_a) == v.seam_cells(region, 16, 0.3, rng_b.random)).all()


# ---------------------------------------------------------------------------------------------- front ends
def test_the_front_ends_take_their_limits_from_the_core():
    import m6_fashion_runtime.pipeline as rpl
    from m6_fashion.pipelines import pipeline_m6fashion as pl

    for name in ("CONTEXT_DROPOUT_SHARE", "MAX_IMAGES_PER_CALL", "MAX_GUIDANCE_SCALE", "DEFAULT_REFINE_RATIO"):
        assert getattr(pl, name) == getattr(rpl, name) == getattr(v, name), name


def test_check_inputs_is_short():
    from m6_fashion import M6FashionPipeline

    assert len(inspect.getsource(M6FashionPipeline.check_inputs).splitlines()) < 100


# ---------------------------------------------------------------------------------------------- invariants
def test_component_mismatches_name_both_values():
    fit = dict(grid_size=16, codebook_size=256, num_groups=4, vocab_size=4734)
    assert v.component_mismatches(**fit, mask_code=256, sample_size=64, num_image_tokens=256, tokenizer_grid_size=16,
                                  tokenizer_codebook_size=256, tokenizer_num_groups=4, text_vocab_size=4734,
                                  special_token_ids={"pad": 0, "mask": 6}) == []
    problems = v.component_mismatches(**fit, mask_code=6, sample_size=60, num_image_tokens=255, tokenizer_grid_size=8,
                                      tokenizer_codebook_size=512, tokenizer_num_groups=2, text_vocab_size=5000,
                                      special_token_ids={"mask": 4734})
    text = "; ".join(problems)
    assert len(problems) == 8, problems
    for both in (("mask_token_id=6", "codebook_size=256"), ("sample_size 60", "grid_size 16"), ("num_image_tokens 255", "256"),
                 ("grid 8x8", "grid_size=16"), ("codebook_size=512", "codebook_size=256"), ("2 codes", "num_groups=4"),
                 ("5000 tokens", "vocab_size=4734"), ("mask=4734", "vocab_size=4734")):
        assert all(s in text for s in both), both


@pytest.fixture(scope="module")
def shipped_pipeline():
    from m6_fashion import M6FashionPipeline

    pipe = M6FashionPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("mask_token_id", [255, 6])  # 6: the text [MASK] id of the shipped transformer, not the image MASK code
def test_a_scheduler_with_another_mask_code_is_refused_at_assembly(shipped_pipeline, mask_token_id):
    from m6_fashion import M6FashionPipeline, SMARTScheduler

    wrong = SMARTScheduler.from_config(shipped_pipeline.scheduler.config, mask_token_id=mask_token_id)
    match = rf"scheduler.mask_token_id {mask_token_id} is not the image MASK code: .*mask_token_id={mask_token_id} must equal the transformer's codebook_size=256"
    with pytest.raises(ValueError, match=match):
        M6FashionPipeline(**{**shipped_pipeline.components, "scheduler": wrong})
    with pytest.raises(ValueError, match=match):
        M6FashionPipeline.from_pretrained(scheduler=wrong)
    with pytest.raises(ValueError, match=match):  # swapping the component re-assembles the pipeline
        shipped_pipeline.scheduler = wrong
    assert shipped_pipeline.scheduler.config.mask_token_id == 256  # the refused scheduler never took its place
    shipped_pipeline.scheduler = SMARTScheduler.from_config(shipped_pipeline.scheduler.config)  # a fitting one does


def _bundle_copy(src: Path, dst: Path, **geometry) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix == ".onnx" or f.suffix == ".weights":
            os.symlink(f, dst / f.name)
        else:
            (dst / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((dst / "bundle.json").read_text())
    cfg["geometry"].update(geometry)
    (dst / "bundle.json").write_text(json.dumps(cfg))
    return dst


def test_bundle_invariants_are_the_core_ones(tiny_onnx_bundle, tmp_path):
    import m6_fashion_runtime as mrt

    root = _bundle_copy(tiny_onnx_bundle, tmp_path / "small_vocab", vocab_size=5)  # special ids 0..6
    with pytest.raises(mrt.BundleError, match=r"special token mask=6 is outside the text vocabulary \[0, vocab_size=5\)"):
        mrt.load_bundle(str(root))
    root = _bundle_copy(tiny_onnx_bundle, tmp_path / "tokenizer_too_large", vocab_size=100)
    mrt.load_bundle(str(root))  # the geometry fits; the tokenizer (read by the runtime) does not
    with pytest.raises(mrt.BundleError, match=r"tokenizer.json .* the text tokenizer has \d+ tokens but the transformer's vocab_size=100"):
        mrt.M6FashionRuntime(str(root))
