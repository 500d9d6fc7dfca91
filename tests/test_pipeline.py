"""M6FashionPipeline: every task end to end on real photos through a tiny pipeline."""

from unittest import mock

import numpy as np
import PIL.Image
import pytest
import torch

from m6_fashion import M6FashionPipeline
from m6_fashion.image_processing import preprocess, preprocess_mask


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _lower_half_mask(image):
    mask = PIL.Image.new("L", image.size, 0)
    mask.paste(255, (0, image.size[1] // 2, image.size[0], image.size[1]))
    return mask


def _tokens_of(pipe, image):
    return pipe.encode_images(preprocess(image, 64))[0]


def test_text_to_image_and_unconditional(tiny_pipeline, real_images):
    out = tiny_pipeline([r["text"] for r in real_images[:2]], generator=_g())
    assert len(out.images) == 2 and out.images[0].size == (64, 64)
    assert out.tokens.shape == (2, 16, 16, 4) and int(out.tokens.max()) < 256
    out = tiny_pipeline(generator=_g(), num_images_per_prompt=2, output_type="np")
    assert out.images.shape == (2, 64, 64, 3) and out.images.dtype == np.uint8


def test_same_generator_same_output_different_generator_different(tiny_pipeline):
    a = tiny_pipeline("Men Navy Blue Shirt", generator=_g(0), output_type="tokens").tokens
    b = tiny_pipeline("Men Navy Blue Shirt", generator=_g(0), output_type="tokens").tokens
    c = tiny_pipeline("Men Navy Blue Shirt", generator=_g(1), output_type="tokens").tokens
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_inpainting_keeps_tokens_and_pixels_outside_mask(tiny_pipeline, real_images):
    image = real_images[0]["image"]
    mask = _lower_half_mask(image)
    out = tiny_pipeline("Women Red Top", image=image, mask_image=mask, generator=_g(), output_type="pt")
    editable = tiny_pipeline._cell_mask(preprocess_mask(mask, 64)[None])[0]
    assert editable.any() and not editable.all()
    base = _tokens_of(tiny_pipeline, image)
    got = out.tokens.reshape(-1, 4)
    assert torch.equal(got[~editable], base[~editable])
    pix_mask = preprocess_mask(mask, 64).bool()
    original = preprocess(image, 64)[0]
    assert torch.allclose(out.images[0][:, ~pix_mask[0]], original[:, ~pix_mask[0]], atol=1e-6)


def test_outpainting_extends_the_canvas(tiny_pipeline, real_images):
    from m6_fashion.image_processing import fit_onto

    image, box = real_images[1]["image"], (16, 16, 48, 48)
    out = tiny_pipeline(image=image, image_box=box, generator=_g(), output_type="pt")
    assert out.tokens.shape == (1, 16, 16, 4)
    # the placed image's cells are kept: the image fitted into the box of a white canvas, its border pixels
    # continued one cell outward for the encoder, encoded, inside the box
    from m6_fashion_core.image import extend_edges

    top, left, h, w = tiny_pipeline.box_to_cells(box)
    c = tiny_pipeline.cell
    sheet = PIL.Image.new("RGB", (64, 64), (255, 255, 255))
    sheet.paste(fit_onto(image, w * c, h * c), (left * c, top * c))
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[top : top + h, left : left + w] = True
    context = extend_edges(sheet, (left * c, top * c, (left + w) * c, (top + h) * c), c)
    assert torch.equal(out.tokens[0][inside], _tokens_of(tiny_pipeline, context).reshape(16, 16, 4)[inside])
    assert (out.tokens[0][~inside] < 256).all()  # everything around it is sampled
    assert not torch.equal(out.tokens[0][~inside], _tokens_of(tiny_pipeline, sheet).reshape(16, 16, 4)[~inside])
    # and its pixels are pasted back
    pixels = preprocess(sheet, 64)[0][:, top * c : (top + h) * c, left * c : (left + w) * c]
    assert torch.allclose(out.images[0][:, top * c : (top + h) * c, left * c : (left + w) * c], pixels, atol=1e-6)


def test_local_editing_with_reference_patches(tiny_pipeline, real_images):
    refs = [(real_images[2]["image"], (0, 0, 32, 32)), (real_images[3]["image"], (32, 32, 64, 64))]
    out = tiny_pipeline("Men Black Shoes", reference_images=refs, generator=_g())
    assert out.images[0].size == (64, 64)
    # text-guided local editing of an existing image: only the masked cells change
    image = real_images[4]["image"]
    mask = _lower_half_mask(image)
    out = tiny_pipeline("Men Blue Tshirt", image=image, mask_image=mask, reference_images=refs[:1], generator=_g(),
                        output_type="tokens")
    editable = tiny_pipeline._cell_mask(preprocess_mask(mask, 64)[None])[0]
    assert torch.equal(out.tokens.reshape(-1, 4)[~editable], _tokens_of(tiny_pipeline, image)[~editable])


def test_style_mixing_takes_regions_from_both(tiny_pipeline, real_images):
    a, b = real_images[5]["image"], real_images[6]["image"]
    mask = _lower_half_mask(a)
    out = tiny_pipeline(image=a, style_image=b, mask_image=mask, refine_ratio=0.0, generator=_g(), output_type="tokens")
    region = tiny_pipeline._cell_mask(preprocess_mask(mask, 64)[None])[0].reshape(16, 16)
    seam = tiny_pipeline._seam(region.reshape(1, -1), 0.0, None)[0].reshape(16, 16)
    ta, tb = _tokens_of(tiny_pipeline, a).reshape(16, 16, 4), _tokens_of(tiny_pipeline, b).reshape(16, 16, 4)
    got = out.tokens[0]
    assert torch.equal(got[~region & ~seam], ta[~region & ~seam])
    assert torch.equal(got[region & ~seam], tb[region & ~seam])


def _text_reading_pipeline(tiny_pipeline):
    """`tiny_pipeline` with a transformer of the same config initialised at `initializer_range=0.5`: at the default
    0.02 a tiny random model hardly reads the text (conditional and unconditional logits differ by about 1e-4, so
    guidance changes at most a few of 1024 codes), at 0.5 the prompt visibly changes its predictions."""
    from m6_fashion import M6FashionConfig, M6FashionTransformer

    config = M6FashionConfig.from_dict({**tiny_pipeline.transformer.config.to_dict(), "initializer_range": 0.5})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = M6FashionTransformer(config).eval()
    pipe = M6FashionPipeline(**{**tiny_pipeline.components, "transformer": transformer})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_classifier_free_guidance_and_callback(tiny_pipeline, real_images):
    """guidance_scale > 1 runs an unconditional pass beside every conditional one, and changes the tokens against
    guidance 1.0 with the same seed; the callback sees every pass and its last tokens are the output."""
    pipe = _text_reading_pipeline(tiny_pipeline)
    prompt = real_images[2]["text"]
    forwards = []  # the logits of the sampling passes (prefix encodings return none: shape (B, 0, M, K))

    def keep(module, args, output):
        if output.logits.shape[1]:
            forwards.append(output.logits)

    hook = pipe.transformer.register_forward_hook(keep)
    try:
        plain = pipe(prompt, guidance_scale=1.0, num_inference_steps=4, generator=_g(), output_type="tokens").tokens
        assert len(forwards) == 4  # no unconditional pass at 1.0
        forwards.clear()
        seen = []
        out = pipe(prompt, guidance_scale=3.0, num_inference_steps=4, generator=_g(),
                   callback_on_step_end=lambda p, i, t, kw: seen.append((i, kw["tokens"].clone())) or kw,
                   output_type="tokens")
    finally:
        hook.remove()
    assert len(forwards) == 8  # a conditional and an unconditional pass per step
    assert not torch.allclose(forwards[0], forwards[1])  # the unconditional pass does not see the prompt
    assert [i for i, _ in seen] == [0, 1, 2, 3] and out.tokens.shape == (1, 16, 16, 4)
    assert torch.equal(seen[-1][1].reshape(out.tokens.shape), out.tokens)
    changed = (out.tokens != plain).float().mean().item()
    assert changed > 0.5, changed  # same seed, only the guidance differs (measured: about 90% of the codes)


def test_negative_prompt_is_what_the_guidance_pass_reads(tiny_pipeline, real_images):
    """The guidance pass reads the negative prompt instead of no text: "" is exactly plain guidance, a caption
    changes the tokens, one string or one per prompt; refused where no guidance pass runs or the batch disagrees."""
    pipe = _text_reading_pipeline(tiny_pipeline)
    prompts = [real_images[2]["text"], real_images[5]["text"]]
    seen_text = []
    encode = pipe.encode_prompt
    pipe.encode_prompt = lambda texts: seen_text.append(list(texts)) or encode(texts)

    def run(**kw):
        return pipe(prompts, guidance_scale=3.0, num_inference_steps=4, generator=_g(), output_type="tokens", **kw).tokens

    plain = run()
    assert torch.equal(run(negative_prompt=""), plain)  # no text either way
    seen_text.clear()
    negative = run(negative_prompt="Men Black Jeans", num_images_per_prompt=2)
    assert seen_text[-1] == ["Men Black Jeans"] * 4  # one negative for every image of every prompt
    per_prompt = run(negative_prompt=["Men Black Jeans", "Women White Tops"])
    assert seen_text[-1] == ["Men Black Jeans", "Women White Tops"]
    assert (per_prompt != plain).float().mean() > 0.3 and negative.shape[0] == 4
    for kwargs, err, match in [
        (dict(negative_prompt="x", guidance_scale=1.0), ValueError, "runs only with guidance_scale > 1"),
        (dict(negative_prompt=["a", "b", "c"], guidance_scale=3.0), ValueError, "3 entries but the call has 2 prompt"),
        (dict(negative_prompt=[], guidance_scale=3.0), ValueError, "empty list"),
        (dict(negative_prompt=7, guidance_scale=3.0), TypeError, "negative_prompt must be a string"),
        (dict(negative_prompt=["a", 7], guidance_scale=3.0), TypeError, r"negative_prompt\[1\] is a int"),
    ]:
        with pytest.raises(err, match=match):
            pipe(prompts, num_inference_steps=2, output_type="tokens", **kwargs)


def test_save_load_round_trip_identical(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    assert not list((tmp_path / "pipe").rglob("*.bin")) and list((tmp_path / "pipe").rglob("*.safetensors"))
    loaded = M6FashionPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    a = tiny_pipeline("Men Navy Blue Shirt", generator=_g(3), output_type="np").images
    b = loaded("Men Navy Blue Shirt", generator=_g(3), output_type="np").images
    assert np.array_equal(a, b)


def test_push_to_hub_uploads_the_pipeline_and_card(tiny_pipeline):
    uploaded = {}

    def fake_commit(self, repo_id, operations, **kw):  # the real HTTP path is tested in tests/test_hub.py
        uploaded["files"] = sorted(op.path_in_repo for op in operations)
        uploaded["card"] = open(next(op.path_or_fileobj for op in operations if op.path_in_repo == "README.md")).read()
        uploaded["repo_id"] = repo_id

    fake_repo = mock.Mock(repo_id="user/m6-fashion-test")
    with mock.patch("huggingface_hub.HfApi.create_repo", return_value=fake_repo) as create, \
            mock.patch("huggingface_hub.HfApi.create_commit", fake_commit):
        tiny_pipeline.push_to_hub("user/m6-fashion-test", model_card="# Test card")
    create.assert_called_once()
    files = uploaded["files"]
    assert "model_index.json" in files and "README.md" in files
    for comp in ("image_tokenizer", "decoder", "transformer"):
        assert any(f.startswith(comp + "/") and f.endswith(".safetensors") for f in files), comp
    assert not any(f.endswith(".bin") for f in files)
    assert "pipeline_tag: text-to-image" in uploaded["card"] and "library_name: m6-fashion" in uploaded["card"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prompt=[]), "empty"),
        (dict(prompt="x", num_inference_steps=0), "num_inference_steps"),
        (dict(prompt="x", reference_images=[("IMG", (0, 0, 80, 80))]), "outside"),
        (dict(prompt="x", output_type="jpeg"), "output_type"),
        (dict(prompt="x", guidance_scale=0.5), "guidance_scale"),
        (dict(prompt="x", image="IMG"), "says nothing to edit"),
    ],
)
def test_bad_inputs(tiny_pipeline, real_images, kwargs, match):
    kwargs = {k: (real_images[0]["image"] if v == "IMG" else v) for k, v in kwargs.items()}
    if "reference_images" in kwargs:
        kwargs["reference_images"] = [(real_images[0]["image"], kwargs["reference_images"][0][1])]
    with pytest.raises(ValueError, match=match):
        tiny_pipeline(**kwargs)


def test_mask_size_mismatch_and_wrong_mode(tiny_pipeline, real_images):
    image = real_images[0]["image"]
    with pytest.raises(ValueError, match="does not match"):
        tiny_pipeline("x", image=image, mask_image=PIL.Image.new("L", (10, 10), 255))
    with pytest.raises(ValueError, match="mode"):
        tiny_pipeline("x", image=image.convert("F"), mask_image=_lower_half_mask(image))


class _Logged:
    """Collects what the pipeline logs (a child of diffusers' library logger, which does not propagate to root)."""

    def __enter__(self):
        import logging

        self.records = []
        self.handler = logging.Handler()
        self.handler.emit = self.records.append
        self.logger = logging.getLogger("diffusers.pipelines.m6_fashion")
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)

    @property
    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.records if r.levelname == "WARNING")


def test_long_prompt_is_truncated_with_warning(tiny_pipeline):
    with _Logged() as log:
        out = tiny_pipeline(" ".join(["shirt"] * 60), num_inference_steps=2, generator=_g(), output_type="tokens")
    assert "truncated" in log.text
    assert out.tokens.shape == (1, 16, 16, 4)


def test_pipeline_warnings_follow_diffusers_verbosity(tiny_pipeline):
    from diffusers.utils import logging as dl

    before = dl.get_verbosity()
    try:
        dl.set_verbosity_error()
        with _Logged() as log:
            tiny_pipeline(" ".join(["shirt"] * 60), num_inference_steps=1, generator=_g(), output_type="tokens")
        assert log.text == ""
    finally:
        dl.set_verbosity(before)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(temperature=0), ValueError, "temperature"),
        (dict(temperature=-1.0), ValueError, "temperature"),
        (dict(temperature=float("nan")), ValueError, "temperature"),
        (dict(temperature=float("inf")), ValueError, "temperature"),
        (dict(temperature="0.7"), ValueError, "temperature"),
        (dict(guidance_scale=float("inf")), ValueError, "guidance_scale"),
        (dict(guidance_scale=float("nan")), ValueError, "guidance_scale"),
        (dict(guidance_scale="2"), ValueError, "guidance_scale"),
        (dict(guidance_scale=True), ValueError, "guidance_scale"),
        (dict(num_inference_steps=10**7), ValueError, "num_inference_steps"),
        (dict(num_inference_steps=2.0), ValueError, "num_inference_steps"),
        (dict(num_inference_steps=True), ValueError, "num_inference_steps"),
        (dict(num_images_per_prompt=65), ValueError, "at most 64"),
        (dict(num_images_per_prompt=0), ValueError, "num_images_per_prompt"),
        (dict(refine_ratio=1.5), ValueError, "refine_ratio"),
        (dict(generator=0), TypeError, "generator"),
        (dict(generator=np.random.default_rng(0)), TypeError, "generator"),
        (dict(generator=[torch.Generator(), torch.Generator()]), TypeError, "generator"),
        (dict(reference_images=[(None, (0, 0, 16, 16))]), TypeError, r"reference_images\[0\]\[0\]"),
        (dict(reference_images=[("IMG", (0, 0, 64, 64))] * 2), ValueError, "token cells"),
    ],
)
def test_bad_numbers_generators_and_patches_are_refused_before_work(tiny_pipeline, real_images, kwargs, error, match):
    """Each bad value is refused by check_inputs, naming the argument, before any image is encoded."""
    if "reference_images" in kwargs:
        kwargs["reference_images"] = [
            (real_images[0]["image"] if im == "IMG" else im, box) for im, box in kwargs["reference_images"]
        ]
    with mock.patch.object(type(tiny_pipeline), "encode_images", side_effect=AssertionError("encoded before checking")):
        with pytest.raises(error, match=match):
            tiny_pipeline("Men Navy Blue Casual Shirt", output_type="tokens", **kwargs)


def test_per_call_temperature_leaves_the_scheduler_config_alone(tiny_pipeline):
    before = dict(tiny_pipeline.scheduler.config)
    a = tiny_pipeline("shirt", temperature=0.3, num_inference_steps=3, generator=_g(), output_type="tokens").tokens
    assert dict(tiny_pipeline.scheduler.config) == before
    b = tiny_pipeline("shirt", temperature=3.0, num_inference_steps=3, generator=_g(), output_type="tokens").tokens
    assert not torch.equal(a, b)  # the temperature really reaches the sampler


def test_a_one_element_generator_list_is_the_generator(tiny_pipeline):
    a = tiny_pipeline("shirt", num_inference_steps=2, generator=[_g(5)], output_type="tokens").tokens
    b = tiny_pipeline("shirt", num_inference_steps=2, generator=_g(5), output_type="tokens").tokens
    assert torch.equal(a, b)


def test_all_black_mask_is_refused(tiny_pipeline, real_images):
    image = real_images[0]["image"]
    with pytest.raises(ValueError, match="selects no pixel"):
        tiny_pipeline("x", image=image, mask_image=PIL.Image.new("L", image.size, 0))


def test_reference_patch_inside_an_image_without_mask_edits_its_box(tiny_pipeline, real_images):
    """image + reference_images and no mask_image: the boxes are the edited region (it used to be a silent no-op)."""
    image, patch = real_images[0]["image"], real_images[1]["image"]
    base = _tokens_of(tiny_pipeline, image).reshape(16, 16, 4)
    out = tiny_pipeline(image=image, reference_images=[(patch, (0, 0, 32, 32))], num_inference_steps=3,
                        generator=_g(), output_type="tokens").tokens[0]
    assert torch.equal(out[8:, :], base[8:, :]) and torch.equal(out[:8, 8:], base[:8, 8:])  # outside the box: kept
    assert not torch.equal(out[:8, :8], base[:8, :8])  # inside: regenerated


def test_components_that_do_not_fit_are_refused(tiny_pipeline):
    from m6_fashion import SMARTScheduler

    comps = dict(tiny_pipeline.components)
    comps["scheduler"] = SMARTScheduler(mask_token_id=255)
    with pytest.raises(ValueError, match="mask_token_id=255"):
        M6FashionPipeline(**comps)


def test_a_prompt_of_unknown_words_warns_naming_them(tiny_pipeline):
    import re

    with _Logged() as log:
        tiny_pipeline("zzyzx qwertyuiop 🙂", num_inference_steps=1, generator=_g(), output_type="tokens")
    assert re.search("unknown to the model's vocabulary.*'zzyzx'", log.text), log.text
    with _Logged() as log:  # a known caption warns about nothing
        tiny_pipeline("Men Navy Blue Casual Shirt", num_inference_steps=1, generator=_g(), output_type="tokens")
    assert log.text == ""


def test_checksum_manifest_refuses_a_corrupt_saved_pipeline(tiny_pipeline, tmp_path):
    import json
    import shutil

    tiny_pipeline.save_pretrained(tmp_path / "p")
    manifest = (tmp_path / "p" / "checksums.sha256").read_text()
    assert "transformer/model.safetensors" in manifest and "model_index.json" in manifest
    M6FashionPipeline.from_pretrained(tmp_path / "p")  # intact: loads

    bad = tmp_path / "bitflip"
    shutil.copytree(tmp_path / "p", bad)
    weights = bad / "transformer" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="transformer/model.safetensors does not match"):
        M6FashionPipeline.from_pretrained(bad)

    edited = tmp_path / "edited"
    shutil.copytree(tmp_path / "p", edited)
    cfg = json.loads((edited / "transformer" / "config.json").read_text())
    cfg["num_hidden_layers"] += 1
    (edited / "transformer" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="transformer/config.json does not match"):
        M6FashionPipeline.from_pretrained(edited)


def test_shipped_model_matches_its_manifest():
    from m6_fashion.default_model import default_model_path
    from m6_fashion.pipelines.pipeline_m6fashion import verify_checksums

    verify_checksums(default_model_path())  # raises naming the file if anything shipped was changed
