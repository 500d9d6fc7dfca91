"""A shared test harness for `M6FashionPipeline`, in the style of diffusers' `PipelineTesterMixin`.

* `get_dummy_components(with_decoder_hr=False)`: tiny, randomly initialised, seeded components (32-px canvas,
  8x8 grid, M=4, K=16; optionally a 64-px `decoder_hr`) and a word-level caption tokenizer trained on
  `DUMMY_CAPTIONS`. No dataset, no download; building them takes a few milliseconds.
* `get_dummy_inputs(seed=0)`: the keyword arguments of a short text-to-image call.
* `PipelineTesterMixin`: generic tests; a concrete class sets `with_decoder_hr` (or overrides the two
  `get_dummy_*` methods) and inherits them. See tests/test_pipeline_common.py.

This module holds no tests itself (its name does not start with `test_`).
"""

from __future__ import annotations

import contextlib
import inspect
import io
from typing import Any, Dict, List

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import spread_codebooks

from m6_fashion import M6FashionConfig, M6FashionPipeline, M6FashionTransformer, PQTokenizer, SMARTScheduler, StyleDecoder
from m6_fashion.models.transformer_m6fashion import TOKEN_TYPE_TARGET
from m6_fashion.training.text_tokenizer import config_token_kwargs, train_text_tokenizer

DUMMY_CAPTIONS = (
    "Men Navy Blue Casual Shirt",
    "Women Red Top",
    "Women Pink Handbag",
    "Men Black Casual Shoes",
    "Unisex White Tshirt",
    "Girls Green Summer Dress",
)
PROMPT_A = "Men Navy Blue Casual Shirt"
PROMPT_B = "Women Pink Handbag"

DUMMY_SAMPLE_SIZE = 32  # the image tokenizer's / decoder's square canvas
DUMMY_HR_SIZE = 64  # decoder_hr's canvas (one more upsampling level)
DUMMY_GRID = 8
DUMMY_GROUPS = 4
DUMMY_CODEBOOK = 16  # K, also the MASK code
DUMMY_STEPS = 4


def get_dummy_components(with_decoder_hr: bool = False, prefix_attention: str = "isolated") -> Dict[str, Any]:
    """The components of a tiny random `M6FashionPipeline`, the same for every call (seeded, without touching
    the global RNG). The transformer is initialised with a large `initializer_range` so the caption (and
    therefore classifier-free guidance) visibly changes its predictions; at the default 0.02 a tiny random
    model ignores the text entirely."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tokenizer = train_text_tokenizer(DUMMY_CAPTIONS, min_frequency=1, max_length=16)
        image_tokenizer = PQTokenizer(
            sample_size=DUMMY_SAMPLE_SIZE, block_out_channels=(8, 16, 16), latent_channels=16,
            num_groups=DUMMY_GROUPS, codebook_size=DUMMY_CODEBOOK,
        )
        spread_codebooks(image_tokenizer, num_images=4)  # codes drawn from the encoder's output range
        decoder = StyleDecoder(latent_channels=16, style_channels=8, mapping_layers=1, block_out_channels=(16, 8, 8),
                               layers_per_block=1, sample_size=DUMMY_SAMPLE_SIZE)
        config = M6FashionConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, grid_size=DUMMY_GRID,
            codebook_size=DUMMY_CODEBOOK, num_groups=DUMMY_GROUPS, max_text_length=16, max_condition_tokens=16,
            prefix_attention=prefix_attention, initializer_range=0.5, **config_token_kwargs(tokenizer),
        )
        transformer = M6FashionTransformer(config)
        decoder_hr = None
        if with_decoder_hr:
            decoder_hr = StyleDecoder(latent_channels=16, style_channels=8, mapping_layers=1, block_out_channels=(16, 8, 8, 8),
                                      layers_per_block=1, sample_size=DUMMY_HR_SIZE).eval()
    return {
        "image_tokenizer": image_tokenizer.eval(),
        "decoder": decoder.eval(),
        "transformer": transformer.eval(),
        "tokenizer": tokenizer,
        "scheduler": SMARTScheduler(mask_token_id=DUMMY_CODEBOOK),
        "decoder_hr": decoder_hr,
    }


def get_dummy_inputs(seed: int = 0) -> Dict[str, Any]:
    """A short text-to-image call: one prompt, `DUMMY_STEPS` SMART passes, a seeded CPU generator, numpy output."""
    return {
        "prompt": PROMPT_A,
        "generator": torch.Generator().manual_seed(seed),
        "num_inference_steps": DUMMY_STEPS,
        "output_type": "np",
    }


def _np(images) -> np.ndarray:
    if isinstance(images, list):
        return np.stack([np.asarray(im) for im in images])
    if isinstance(images, torch.Tensor):
        return images.cpu().numpy()
    return np.asarray(images)


class _PassCounter:
    """Counts the transformer's forwards: sampling passes (inputs with target positions) and prefix encodings
    (inputs without), keeping the logits of the sampling passes in call order."""

    def __init__(self, transformer: torch.nn.Module):
        self.passes = 0
        self.prefix = 0
        self.logits: List[torch.Tensor] = []
        self._pre = transformer.register_forward_pre_hook(self._count, with_kwargs=True)
        self._post = transformer.register_forward_hook(self._keep, with_kwargs=True)

    @staticmethod
    def _has_target(args, kwargs) -> bool:
        types = kwargs.get("token_type_ids", args[3] if len(args) > 3 else None)
        return bool((types == TOKEN_TYPE_TARGET).any())

    def _count(self, module, args, kwargs):
        if self._has_target(args, kwargs):
            self.passes += 1
        else:
            self.prefix += 1

    def _keep(self, module, args, kwargs, output):
        if self._has_target(args, kwargs):
            self.logits.append(output.logits.detach().clone())

    def remove(self):
        self._pre.remove()
        self._post.remove()


def _spy_scheduler_logits(pipe) -> List[torch.Tensor]:
    """Makes `pipe.scheduler.step` record the logits it is given (after guidance); returns the list it fills."""
    fed: List[torch.Tensor] = []
    step = pipe.scheduler.step

    def spy(model_output, *args, **kwargs):
        fed.append(model_output.detach().clone())
        return step(model_output, *args, **kwargs)

    pipe.scheduler.step = spy
    return fed


class PipelineTesterMixin:
    """Generic `M6FashionPipeline` tests. A concrete pytest class mixes this in and may set:

    * `with_decoder_hr`: build the dummy pipeline with a `decoder_hr`;
    * `prefix_attention`: the dummy transformer's `prefix_attention`;
    * or override `get_dummy_components` / `get_dummy_inputs` for other components or inputs.

    Every test builds its own pipeline from `get_dummy_components()` (a few milliseconds), so tests may change
    it freely (scheduler, dtype, progress bar) without affecting each other.
    """

    pipeline_class = M6FashionPipeline
    with_decoder_hr: bool = False
    prefix_attention: str = "isolated"
    # keyword arguments `__call__` must accept (diffusers' `params` / `batch_params`, for this pipeline)
    required_call_params = frozenset({
        "prompt", "image", "mask_image", "style_image", "image_box", "reference_images", "height", "width",
        "num_inference_steps", "num_images_per_prompt", "guidance_scale", "temperature", "generator", "output_type",
        "return_dict", "callback_on_step_end", "callback_on_step_end_tensor_inputs",
    })
    component_names = frozenset({"image_tokenizer", "decoder", "decoder_hr", "transformer", "tokenizer", "scheduler"})

    # ------------------------------------------------------------------ helpers
    @pytest.fixture(autouse=True)
    def _single_thread(self, one_thread):
        """Every test on one torch thread (conftest's `one_thread`): tiny tensors gain nothing from intra-op threads."""
        yield

    def get_dummy_components(self) -> Dict[str, Any]:
        return get_dummy_components(with_decoder_hr=self.with_decoder_hr, prefix_attention=self.prefix_attention)

    def get_dummy_inputs(self, seed: int = 0) -> Dict[str, Any]:
        return get_dummy_inputs(seed)

    def get_pipeline(self, deterministic: bool = False) -> M6FashionPipeline:
        """A fresh dummy pipeline (progress bar off); `deterministic` swaps in an argmax SMART scheduler."""
        components = self.get_dummy_components()
        if deterministic:
            components["scheduler"] = SMARTScheduler.from_config(components["scheduler"].config, deterministic=True)
        pipe = self.pipeline_class(**components)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def call(self, pipe: M6FashionPipeline, seed: int = 0, **overrides):
        inputs = self.get_dummy_inputs(seed)
        inputs.update(overrides)
        return pipe(**inputs)

    # ------------------------------------------------------------------ construction, save / load
    def test_call_signature_has_the_common_parameters(self):
        params = set(inspect.signature(self.pipeline_class.__call__).parameters)
        missing = self.required_call_params - params
        assert not missing, f"__call__ lacks {sorted(missing)}"

    def test_components_rebuild_an_identical_pipeline(self):
        pipe = self.get_pipeline()
        assert set(pipe.components) == self.component_names
        assert (pipe.components["decoder_hr"] is not None) == self.with_decoder_hr
        rebuilt = self.pipeline_class(**pipe.components)
        rebuilt.set_progress_bar_config(disable=True)
        a, b = self.call(pipe), self.call(rebuilt)
        assert np.array_equal(a.images, b.images) and torch.equal(a.tokens, b.tokens)

    def test_same_seed_same_output_other_seed_differs(self):
        pipe = self.get_pipeline()
        a, b, c = self.call(pipe, seed=0), self.call(pipe, seed=0), self.call(pipe, seed=1)
        assert torch.equal(a.tokens, b.tokens) and np.array_equal(a.images, b.images)
        assert not torch.equal(a.tokens, c.tokens)

    def test_save_load_round_trip_gives_identical_output(self, tmp_path):
        pipe = self.get_pipeline()
        pipe.save_pretrained(tmp_path)
        assert list(tmp_path.rglob("*.safetensors")) and not list(tmp_path.rglob("*.bin"))
        loaded = self.pipeline_class.from_pretrained(str(tmp_path))
        loaded.set_progress_bar_config(disable=True)
        assert set(loaded.components) == set(pipe.components)
        for name, component in pipe.components.items():
            other = loaded.components[name]
            assert (other is None) == (component is None), name
            if isinstance(component, torch.nn.Module):
                assert other.dtype == torch.float32 and not other.training, name
        assert loaded.default_size == pipe.default_size and loaded.output_sizes() == pipe.output_sizes()
        a, b = self.call(pipe), self.call(loaded)
        assert torch.equal(a.tokens, b.tokens)
        assert np.array_equal(a.images, b.images)

    # ------------------------------------------------------------------ outputs
    def test_tuple_output_equals_dict_output(self):
        pipe = self.get_pipeline()
        for output_type in ("pil", "np", "pt", "tokens"):
            d = self.call(pipe, output_type=output_type)
            t = self.call(pipe, output_type=output_type, return_dict=False)
            assert isinstance(t, tuple) and len(t) == 2
            images, tokens = t
            assert torch.equal(tokens, d.tokens), output_type
            if output_type == "tokens":
                assert images is None and d.images is None
            else:
                assert type(images) is type(d.images) and np.array_equal(_np(images), _np(d.images)), output_type

    def test_output_types_agree(self):
        pipe = self.get_pipeline()
        outs = {ot: self.call(pipe, output_type=ot) for ot in ("pil", "np", "pt", "tokens")}
        for ot, out in outs.items():
            assert torch.equal(out.tokens, outs["np"].tokens), ot
        h, w = pipe.default_size
        arr = outs["np"].images
        assert arr.dtype == np.uint8 and arr.shape == (1, h, w, 3)
        pil = outs["pil"].images
        assert isinstance(pil, list) and all(isinstance(im, PIL.Image.Image) and im.mode == "RGB" for im in pil)
        assert np.array_equal(_np(pil), arr)
        pt = outs["pt"].images
        assert isinstance(pt, torch.Tensor) and pt.dtype == torch.float32 and pt.shape == (1, 3, h, w)
        assert float(pt.min()) >= -1 and float(pt.max()) <= 1
        from_pt = ((pt + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        assert np.array_equal(from_pt, arr)
        assert outs["tokens"].images is None
        # the tokens are what the images show: decoding them again gives the same pixels
        side = pipe.output_canvas(h, w).side
        again = pipe.output_canvas(h, w).crop(pipe.decode_tokens(outs["pt"].tokens, side=side))
        assert torch.allclose(again, pt, atol=1e-6)

    def test_tokens_are_valid_codes(self):
        pipe = self.get_pipeline()
        tokens = self.call(pipe, output_type="tokens").tokens
        cfg = pipe.transformer.config
        assert tokens.dtype == torch.long and tokens.shape == (1, cfg.grid_size, cfg.grid_size, cfg.num_groups)
        assert int(tokens.min()) >= 0 and int(tokens.max()) < cfg.codebook_size  # no MASK code is left

    # ------------------------------------------------------------------ batching
    def test_num_images_per_prompt(self):
        pipe = self.get_pipeline()
        h, w = pipe.default_size
        g, m = pipe.grid_size, pipe.transformer.config.num_groups
        for prompts in (PROMPT_A, [PROMPT_A, PROMPT_B]):
            n = 1 if isinstance(prompts, str) else len(prompts)
            for k in (1, 3):
                out = self.call(pipe, prompt=prompts, num_images_per_prompt=k)
                assert out.images.shape == (n * k, h, w, 3)
                assert out.tokens.shape == (n * k, g, g, m)
        out = self.call(pipe, prompt=None, num_images_per_prompt=2, output_type="pil")  # unconditional
        assert len(out.images) == 2 and all(im.size == (w, h) for im in out.images)

    def test_batch_is_prompt_major_and_matches_single_calls_when_deterministic(self):
        # With one generator shared by the batch, a stochastic sampler's draws for an image depend on the batch
        # around it (so a batch does NOT reproduce single calls); an argmax sampler does.
        pipe = self.get_pipeline(deterministic=True)
        batch = self.call(pipe, prompt=[PROMPT_A, PROMPT_B], num_images_per_prompt=2, output_type="tokens").tokens
        single_a = self.call(pipe, prompt=PROMPT_A, output_type="tokens").tokens[0]
        single_b = self.call(pipe, prompt=PROMPT_B, output_type="tokens").tokens[0]
        assert not torch.equal(single_a, single_b)  # the prompt matters, so the order below is observable
        for i, expected in enumerate((single_a, single_a, single_b, single_b)):
            assert torch.equal(batch[i], expected), f"image {i} of [A, B] x 2"

    def test_identical_prompts_in_one_call_differ_only_through_the_sampler(self):
        stochastic = self.call(self.get_pipeline(), prompt=[PROMPT_A, PROMPT_A], output_type="tokens").tokens
        assert not torch.equal(stochastic[0], stochastic[1])
        k = self.call(self.get_pipeline(), prompt=PROMPT_A, num_images_per_prompt=2, output_type="tokens").tokens
        assert not torch.equal(k[0], k[1])
        argmax = self.call(self.get_pipeline(deterministic=True), prompt=[PROMPT_A, PROMPT_A], num_images_per_prompt=2,
                           output_type="tokens").tokens
        assert all(torch.equal(argmax[0], argmax[i]) for i in range(1, 4))

    def test_inpainting_batch_keeps_each_image_outside_the_mask_and_matches_single_calls(self):
        # two images x two prompts x num_images_per_prompt=2: image i of the batch edits image i // 2 (prompt-major),
        # keeps its tokens outside the mask, and (argmax sampler) equals the single call for its image and prompt
        from m6_fashion.image_processing import preprocess, preprocess_mask

        pipe = self.get_pipeline(deterministic=True)
        s, g, m = pipe.sample_size, pipe.grid_size, pipe.transformer.config.num_groups
        d = pipe.output_canvas().side
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for _ in range(2)]
        mask = np.zeros((s, s), dtype=np.uint8)
        mask[s // 2 :, : s // 2] = 255  # the lower-left quarter
        kwargs = dict(mask_image=mask, output_type="tokens")
        batch = self.call(pipe, prompt=[PROMPT_A, PROMPT_B], image=images, num_images_per_prompt=2, **kwargs).tokens
        pixel_mask = preprocess_mask(mask, d)
        c = d // g
        region = (pixel_mask.reshape(g, c, g, c).amax(dim=(1, 3)) > 0.5).reshape(-1)
        assert region.any() and not region.all()
        for i, (prompt, image) in enumerate([(PROMPT_A, images[0])] * 2 + [(PROMPT_B, images[1])] * 2):
            base = pipe.encode_images(preprocess(image, s))[0]
            got = batch[i].reshape(-1, m)
            assert torch.equal(got[~region], base[~region]), f"image {i}: the kept cells"
            assert not torch.equal(got[region], base[region]), f"image {i}: the masked cells are regenerated"
            single = self.call(pipe, prompt=prompt, image=image, **kwargs).tokens[0]
            assert torch.equal(batch[i], single), f"image {i} of [A, B] x 2"

    # ------------------------------------------------------------------ callbacks
    def test_callback_sees_every_step_and_its_tokens_replace_the_pipelines(self):
        pipe = self.get_pipeline()
        seen = []

        def record(p, i, t, kwargs):
            assert p is pipe and set(kwargs) == set(pipe._callback_tensor_inputs)
            seen.append((i, t, tuple(kwargs["tokens"].shape)))
            return kwargs

        plain = self.call(pipe, output_type="tokens", callback_on_step_end=record).tokens
        n = pipe.transformer.config.num_image_tokens
        m = pipe.transformer.config.num_groups
        assert [s[0] for s in seen] == list(range(DUMMY_STEPS))
        assert [s[1] for s in seen] == [int(t) for t in pipe.scheduler.timesteps]
        assert all(s[2] == (1, n, m) for s in seen)
        assert torch.equal(plain, self.call(pipe, output_type="tokens").tokens)  # a pass-through callback changes nothing

        def rewrite_last(p, i, t, kwargs):  # the returned tensor is the result
            return {"tokens": torch.full_like(kwargs["tokens"], 3)} if i == DUMMY_STEPS - 1 else kwargs

        last = self.call(pipe, output_type="tokens", callback_on_step_end=rewrite_last).tokens
        assert bool((last == 3).all()) and not torch.equal(last, plain)

        def rewrite_first(p, i, t, kwargs):  # the returned tensor feeds the next pass
            tokens, mask = kwargs["tokens"], p.scheduler.config.mask_token_id
            return {"tokens": torch.where(tokens == mask, tokens, (tokens + 1) % mask)} if i == 0 else kwargs

        first = self.call(pipe, output_type="tokens", callback_on_step_end=rewrite_first).tokens
        assert not torch.equal(first, plain)
        out = self.call(pipe, output_type="pt", callback_on_step_end=rewrite_last)  # the images show the new tokens
        canvas = pipe.output_canvas()
        assert torch.equal(out.tokens, last)
        assert torch.allclose(out.images, canvas.crop(pipe.decode_tokens(last, side=canvas.side)), atol=1e-6)

    def test_callback_gets_only_the_tensors_asked_for(self):
        pipe = self.get_pipeline()
        seen = []
        self.call(pipe, output_type="tokens", callback_on_step_end_tensor_inputs=[],
                  callback_on_step_end=lambda p, i, t, kw: seen.append(sorted(kw)) or kw)
        assert seen and all(keys == [] for keys in seen)

    def test_callback_is_called_for_every_step_even_when_nothing_is_left_to_sample(self):
        # one editable cell: floor(1 * remask ratio) = 0 cells are re-masked after pass 0, so passes 1..T-1 have
        # nothing to sample; the callback must still be called after each of them (diffusers' contract)
        pipe = self.get_pipeline()
        s = pipe.sample_size
        image = np.full((s, s, 3), 200, dtype=np.uint8)
        mask = np.zeros((s, s), dtype=np.uint8)
        mask[: pipe.cell, : pipe.cell] = 255
        seen = []
        self.call(pipe, image=image, mask_image=mask, height=s, width=s, output_type="tokens",
                  callback_on_step_end=lambda p, i, t, kw: seen.append(i) or kw)
        assert seen == list(range(DUMMY_STEPS))

    # ------------------------------------------------------------------ classifier-free guidance
    def test_guidance_changes_tokens(self):
        pipe = self.get_pipeline()
        plain = self.call(pipe, output_type="tokens", guidance_scale=1.0).tokens
        guided = self.call(pipe, output_type="tokens", guidance_scale=4.0).tokens
        assert not torch.equal(plain, guided)
        argmax = self.get_pipeline(deterministic=True)
        assert not torch.equal(self.call(argmax, output_type="tokens", guidance_scale=1.0).tokens,
                               self.call(argmax, output_type="tokens", guidance_scale=4.0).tokens)

    def test_guidance_scale_one_runs_no_unconditional_pass(self):
        pipe = self.get_pipeline()
        counter = _PassCounter(pipe.transformer)
        try:
            self.call(pipe, output_type="tokens", guidance_scale=1.0)
            plain_passes, plain_prefix = counter.passes, counter.prefix
            counter.passes = counter.prefix = 0
            self.call(pipe, output_type="tokens", guidance_scale=2.5)
        finally:
            counter.remove()
        assert plain_passes == DUMMY_STEPS
        assert counter.passes == 2 * DUMMY_STEPS
        assert counter.prefix == 2 * plain_prefix  # the unconditional prefix is encoded once, like the conditional one

    def test_guided_logits_are_uncond_plus_scale_times_difference(self):
        pipe = self.get_pipeline()
        scale = 3.0
        counter = _PassCounter(pipe.transformer)
        fed = _spy_scheduler_logits(pipe)
        try:
            self.call(pipe, output_type="tokens", guidance_scale=scale, guidance_min_p=0.0)
            n = len(counter.logits)
            self.call(pipe, output_type="tokens", guidance_scale=scale, guidance_min_p=0.5)
        finally:
            counter.remove()
        assert len(fed) == 2 * DUMMY_STEPS and n == 2 * DUMMY_STEPS and len(counter.logits) == 4 * DUMMY_STEPS
        for i, logits in enumerate(fed):
            cond, uncond = counter.logits[2 * i], counter.logits[2 * i + 1]
            assert not torch.allclose(cond, uncond)  # the unconditional pass really drops the prompt
            mixed = uncond + scale * (cond - uncond)
            if i < DUMMY_STEPS:  # min-p off: the plain mix
                assert torch.allclose(logits, mixed, atol=1e-5)
                continue
            # min-p 0.5: tokens below half the conditional pass's most likely one are excluded, the rest is the mix
            probs = torch.softmax(cond.float(), -1)
            kept = probs >= 0.5 * probs.amax(-1, keepdim=True)
            assert kept.any(-1).all() and (~kept).any()
            assert torch.equal(torch.isinf(logits), ~kept)
            assert torch.allclose(logits[kept], mixed[kept], atol=1e-5)

    def test_negative_guidance_scale_adds_a_pass_on_the_negative_prompt(self):
        pipe = self.get_pipeline()
        scale, scale_n = 3.0, 2.0
        counter = _PassCounter(pipe.transformer)
        fed = _spy_scheduler_logits(pipe)
        try:
            self.call(pipe, output_type="tokens", guidance_scale=scale, guidance_min_p=0.0, negative_prompt="black",
                      negative_guidance_scale=scale_n)
        finally:
            counter.remove()
        # three passes per step: the prompt, no text, the negative prompt
        assert len(fed) == DUMMY_STEPS and len(counter.logits) == 3 * DUMMY_STEPS
        for i, logits in enumerate(fed):
            cond, uncond, neg = counter.logits[3 * i : 3 * i + 3]
            assert not torch.allclose(uncond, neg)  # the negative prompt is read, and not instead of the empty text
            assert torch.allclose(logits, uncond + scale * (cond - uncond) + scale_n * (cond - neg), atol=1e-5)
        # without a negative prompt there is nothing for it to weigh: refused
        with pytest.raises(ValueError, match="negative_guidance_scale=2.0 weighs a pass on the negative prompt"):
            self.call(pipe, output_type="tokens", guidance_scale=scale, negative_guidance_scale=scale_n)

    # ------------------------------------------------------------------ sizes
    def test_height_and_width(self):
        pipe = self.get_pipeline()
        sides = pipe.canvas_sides()
        assert (len(sides) > 1) == self.with_decoder_hr
        big = max(sides)
        full = self.call(pipe, output_type="pt", height=big, width=big)
        assert full.images.shape == (1, 3, big, big)
        # what each decoder paints from these tokens, computed here without the pipeline's decoding code
        with torch.no_grad():
            latents = pipe.image_tokenizer.lookup(full.tokens)
            painted = {int(dec.config.sample_size): dec(latents).sample.float().clamp(-1, 1)
                       for dec in (pipe.decoder, pipe.decoder_hr) if dec is not None}
        assert sorted(painted) == sorted(sides)
        for h, w in pipe.output_sizes():
            out = self.call(pipe, output_type="pt", height=h, width=w)
            assert out.images.shape == (1, 3, h, w), (h, w)
            assert torch.equal(out.tokens, full.tokens), (h, w)  # the size changes the decoding, not the sampling
            side = min(s for s in sides if s >= max(h, w))  # the smallest canvas holding the size paints it
            assert pipe.output_canvas(h, w).side == side, (h, w)
            top, left = (side - h) // 2, (side - w) // 2
            expected = painted[side][..., top : top + h, left : left + w]  # the centred crop
            assert torch.allclose(out.images, expected, atol=1e-6), (h, w)
        if self.with_decoder_hr:
            dh, dw = pipe.default_size
            assert (dh, dw) == (big, 3 * big // 4) and self.call(pipe).images.shape == (1, dh, dw, 3)
            assert self.call(pipe, height=dh).images.shape == (1, dh, dw, 3)  # one side keeps the default aspect
            assert self.call(pipe, width=dw).images.shape == (1, dh, dw, 3)
        else:
            assert pipe.default_size == (pipe.sample_size, pipe.sample_size)
        with pytest.raises(ValueError, match="cannot make"):
            self.call(pipe, height=2 * big, width=2 * big)
        with pytest.raises(ValueError, match="cannot make"):
            self.call(pipe, height=big - 1, width=big)

    # ------------------------------------------------------------------ progress bar
    def test_progress_bar_config_is_respected(self):
        pipe = self.get_pipeline()
        pipe.set_progress_bar_config(disable=False, desc="m6-dummy", mininterval=0)
        with contextlib.redirect_stderr(io.StringIO()) as err:
            self.call(pipe, output_type="tokens")
        text = err.getvalue()
        assert "m6-dummy" in text and f"{DUMMY_STEPS}/{DUMMY_STEPS}" in text
        pipe.set_progress_bar_config(disable=True)
        with contextlib.redirect_stderr(io.StringIO()) as err:
            self.call(pipe, output_type="tokens")
        assert err.getvalue() == ""

    # ------------------------------------------------------------------ dtype / device
    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_to_dtype_keeps_outputs_finite(self, dtype):
        pipe = self.get_pipeline().to(dtype)
        modules = [c for c in pipe.components.values() if isinstance(c, torch.nn.Module)]
        assert modules and all(c.dtype == dtype for c in modules)
        out = self.call(pipe, output_type="pt")
        h, w = pipe.default_size
        assert out.images.shape == (1, 3, h, w) and out.images.dtype == torch.float32
        assert torch.isfinite(out.images).all()
        k = pipe.transformer.config.codebook_size
        assert int(out.tokens.min()) >= 0 and int(out.tokens.max()) < k
        assert self.call(pipe, output_type="np").images.dtype == np.uint8

    def test_to_device_places_every_module_and_keeps_outputs_finite(self):
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            pipe = self.get_pipeline().to(device)
            assert pipe.device.type == device
            for name, component in pipe.components.items():
                if isinstance(component, torch.nn.Module):
                    assert {p.device.type for p in component.parameters()} == {device}, name
            out = self.call(pipe, output_type="pt")  # the generator stays on the CPU
            assert torch.isfinite(out.images).all() and out.images.device.type == "cpu"
            k = pipe.transformer.config.codebook_size
            assert out.tokens.device.type == device and int(out.tokens.min()) >= 0 and int(out.tokens.max()) < k
