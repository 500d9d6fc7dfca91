"""context_dropout_steps (issue 16, text-guided inpainting): the first passes hide the kept tokens from the model."""

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import build_tiny_pipeline
from m6_fashion.image_processing import preprocess, preprocess_mask
from m6_fashion.models.transformer_m6fashion import TOKEN_TYPE_TARGET

K = 32  # mask code of build_tiny_pipeline (codebook_size)
N = 64  # 8x8 target tokens


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(1)
    return build_tiny_pipeline(deterministic=True)


@pytest.fixture(scope="module")
def photo_and_mask():
    rng = np.random.default_rng(0)
    image = PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    mask = PIL.Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))  # the central 4x4 of the 8x8 cells
    return image, mask


def _run(pipe, image, mask, **kwargs):
    """Calls the pipeline; returns its output tokens (N, M) and the target codes the transformer got in each pass."""
    seen = []

    def spy(module, args, kwargs_):  # sampling passes only (the text prefix is encoded once, without target positions)
        if "image_codes" in kwargs_ and (kwargs_["token_type_ids"] == TOKEN_TYPE_TARGET).any():
            seen.append(kwargs_["image_codes"][0, -N:].clone())

    hook = pipe.transformer.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        out = pipe("Women Red Top", image=image, mask_image=mask, num_inference_steps=4, output_type="tokens",
                   generator=torch.Generator().manual_seed(0), **kwargs)
    finally:
        hook.remove()
    return out.tokens.reshape(N, -1), seen


def test_first_passes_see_the_kept_tokens_as_mask_and_the_output_keeps_them(pipe, photo_and_mask):
    image, mask = photo_and_mask
    base = pipe.encode_images(preprocess(image, 32))[0]
    editable = pipe._cell_mask(preprocess_mask(mask, 32)[None])[0]
    assert editable.any() and not editable.all()

    plain, seen_plain = _run(pipe, image, mask, context_dropout_steps=0)
    dropped, seen_drop = _run(pipe, image, mask, context_dropout_steps=2)
    assert len(seen_plain) == len(seen_drop) == 4
    # off: every pass shows the kept tokens
    for codes in seen_plain:
        assert torch.equal(codes[~editable], base[~editable])
    # on: the first 2 passes show them as MASK, the later ones show them again
    for codes in seen_drop[:2]:
        assert (codes[~editable] == K).all()
    for codes in seen_drop[2:]:
        assert torch.equal(codes[~editable], base[~editable])
    assert torch.equal(seen_drop[0][editable], seen_plain[0][editable])  # the region starts masked either way
    # the kept tokens are never changed in the output; the region is generated
    for out in (plain, dropped):
        assert torch.equal(out[~editable], base[~editable])
        assert (out[editable] < K).all()


def test_all_passes_with_guidance(pipe, photo_and_mask):
    image, mask = photo_and_mask
    base = pipe.encode_images(preprocess(image, 32))[0]
    editable = pipe._cell_mask(preprocess_mask(mask, 32)[None])[0]
    out, seen = _run(pipe, image, mask, context_dropout_steps=4, guidance_scale=3.0)
    assert len(seen) == 8  # conditional + unconditional branch per pass, both without the context
    assert all((codes[~editable] == K).all() for codes in seen)
    assert torch.equal(out[~editable], base[~editable])


@pytest.mark.parametrize("bad", [-1, 5, 1.5, True, "2"])
def test_bad_values_are_refused(pipe, photo_and_mask, bad):
    image, mask = photo_and_mask
    with pytest.raises(ValueError, match="context_dropout_steps"):
        pipe("Women Red Top", image=image, mask_image=mask, num_inference_steps=4, context_dropout_steps=bad, output_type="tokens")


@pytest.mark.parametrize("call", ["text_to_image", "no_prompt", "outpainting", "style_mixing"])
def test_refused_where_it_would_do_nothing(pipe, photo_and_mask, call):
    image, mask = photo_and_mask
    kwargs = {
        "text_to_image": dict(prompt="Women Red Top"),
        "no_prompt": dict(image=image, mask_image=mask),
        "outpainting": dict(prompt="Women Red Top", image=image, image_box=(8, 8, 24, 24)),
        "style_mixing": dict(prompt="Women Red Top", image=image, style_image=image, mask_image=mask),
    }[call]
    with pytest.raises(ValueError, match="context_dropout_steps"):
        pipe(**kwargs, context_dropout_steps=1, output_type="tokens")


def test_default_hides_the_context_for_most_passes_of_text_guided_inpainting_only(pipe, photo_and_mask):
    """None (the default) = round(0.8 * T) passes for text-guided inpainting, none elsewhere (no prompt: 0)."""
    image, mask = photo_and_mask
    editable = pipe._cell_mask(preprocess_mask(mask, 32)[None])[0]
    _, seen = _run(pipe, image, mask)  # T=4: round(3.2) = 3 passes without the context
    assert [bool((codes[~editable] == K).all()) for codes in seen] == [True, True, True, False]
    seen = []

    def spy(module, args, kwargs_):
        if "image_codes" in kwargs_ and (kwargs_["token_type_ids"] == TOKEN_TYPE_TARGET).any():
            seen.append(kwargs_["image_codes"][0, -N:].clone())

    hook = pipe.transformer.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        pipe(image=image, mask_image=mask, num_inference_steps=4, output_type="tokens")  # plain inpainting: context shown
    finally:
        hook.remove()
    assert seen and not any(bool((codes[~editable] == K).all()) for codes in seen)
