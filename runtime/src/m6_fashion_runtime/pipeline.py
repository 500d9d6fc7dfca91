"""`M6FashionRuntime`: text-to-image, inpainting and outpainting from a bundle with ONNX Runtime + numpy.

    >>> from m6_fashion_runtime import M6FashionRuntime
    >>> rt = M6FashionRuntime("bundle/")
    >>> out = rt("Men Navy Blue Casual Shirt", seed=0)
    >>> out.images[0].save("shirt.png")
    >>> edited = rt("Men Red Casual Shirt", image=out.images[0], mask_image=mask, seed=0)

The SMART loop and the sequence layout run in numpy, so the sampling semantics are those of the
PyTorch ``M6FashionPipeline``: in deterministic mode the same inputs give the same tokens.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .bundle import Bundle, load_bundle
from .image import ImageInput, cell_mask, postprocess, preprocess, preprocess_mask, to_rgb
from .layout import build_model_inputs
from .scheduler import SMARTSampler

TRANSFORMER_INPUTS = ("input_ids", "image_codes", "position_ids", "token_type_ids", "attention_mask")
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


@dataclass
class RuntimeOutput:
    """``images``: list of PIL images (``None`` with ``output_type="tokens"``); ``tokens``: (B, h, w, M) int64."""

    images: Optional[List[Image.Image]]
    tokens: np.ndarray


class M6FashionRuntime:
    """Loads a bundle and generates or inpaints garment images without PyTorch.

    Args:
        bundle: bundle folder (or a loaded :class:`Bundle`).
        provider: ``"cpu"`` (default), ``"cuda"`` or ``"tensorrt"`` (needs ``onnxruntime-gpu``).
        int8: use ``transformer.int8.onnx`` (dynamic int8 quantisation) for the transformer passes.
        num_threads: ONNX Runtime intra-op threads (default: onnxruntime's choice).
    """

    def __init__(self, bundle: Union[str, Bundle], provider: str = "cpu", int8: bool = False, num_threads: Optional[int] = None):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; accepted: {', '.join(PROVIDERS)}")
        import onnxruntime as ort

        available = ort.get_available_providers()
        if PROVIDERS[provider][0] not in available:
            raise RuntimeError(
                f"provider {provider!r} needs {PROVIDERS[provider][0]}, which this onnxruntime build lacks "
                f"(available: {', '.join(available)}); install onnxruntime-gpu or use provider='cpu'"
            )
        self._ort = ort
        self.providers = [p for p in PROVIDERS[provider] if p in available]
        self.num_threads = num_threads
        self.int8 = bool(int8)
        if self.int8 and not self.bundle.has_int8:
            raise FileNotFoundError(
                f"the bundle {self.bundle.root!r} has no int8 transformer; re-create it with "
                "`python conversion/export_onnx.py --model PIPELINE_DIR --out BUNDLE_DIR --int8`"
            )
        self._sessions: Dict[str, object] = {}
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(self.bundle.path("tokenizer"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.geometry = self.bundle.geometry
        self.special = self.bundle.special_token_ids

    # ------------------------------------------------------------------ sessions
    def _session(self, key: str):
        if key not in self._sessions:
            opts = self._ort.SessionOptions()
            opts.log_severity_level = 3
            opts.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if self.num_threads:
                opts.intra_op_num_threads = int(self.num_threads)
                opts.inter_op_num_threads = 1
            path = self.bundle.path("transformer_int8" if key == "transformer" and self.int8 else key)
            self._sessions[key] = self._ort.InferenceSession(path, opts, providers=self.providers)
        return self._sessions[key]

    # ------------------------------------------------------------------ components
    @property
    def sample_size(self) -> int:
        return self.geometry.sample_size

    def encode_prompt(self, prompts: Sequence[str]) -> List[List[int]]:
        """Captions -> id lists (no special tokens), truncated to ``max_text_length`` with a warning."""
        limit = self.geometry.max_text_length
        out = []
        for p, enc in zip(prompts, self.tokenizer.encode_batch(list(prompts), add_special_tokens=False)):
            ids = list(enc.ids)
            if len(ids) > limit:
                warnings.warn(f"prompt {p!r} has {len(ids)} tokens; truncated to the model's limit of {limit}")
                ids = ids[:limit]
            out.append(ids)
        return out

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels (B, 3, S, S) float32 in [-1, 1] -> tokens (B, N, M) int64."""
        s = self.sample_size
        if pixels.ndim != 4 or pixels.shape[1:] != (3, s, s):
            raise ValueError(f"pixels must have shape (B, 3, {s}, {s}); got {pixels.shape}")
        tokens = self._session("image_encoder").run(None, {"pixel_values": pixels.astype(np.float32)})[0]
        return tokens.reshape(tokens.shape[0], -1, tokens.shape[-1]).astype(np.int64)

    def decode_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """Tokens (B, N, M) or (B, h, w, M) in [0, K) -> pixels (B, 3, S, S) in [-1, 1]."""
        g, m, k = self.geometry.grid_size, self.geometry.num_groups, self.geometry.codebook_size
        tokens = np.asarray(tokens)
        if tokens.ndim == 3:
            tokens = tokens.reshape(tokens.shape[0], g, g, tokens.shape[-1])
        if tokens.ndim != 4 or tokens.shape[1:] != (g, g, m):
            raise ValueError(f"tokens must have shape (B, {g * g}, {m}) or (B, {g}, {g}, {m}); got {tokens.shape}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= k):
            raise ValueError(f"token values must lie in [0, {k}) (no MASK left); got [{tokens.min()}, {tokens.max()}]")
        return self._session("image_decoder").run(None, {"tokens": tokens.astype(np.int64)})[0]

    def transformer_logits(self, inputs: Dict[str, np.ndarray]) -> np.ndarray:
        """One SMART pass: the layout tensors -> logits (B, N, M, K) float32."""
        return self._session("transformer").run(None, {k: inputs[k].astype(np.int64) for k in TRANSFORMER_INPUTS})[0]

    def box_to_cells(self, box: Sequence[int]) -> Tuple[int, int, int, int]:
        """Pixel box (left, top, right, bottom) -> grid box (top, left, height, width), rounded outwards."""
        s, c = self.sample_size, self.geometry.cell
        try:
            left, top, right, bottom = (int(round(float(v))) for v in box)
        except (TypeError, ValueError):
            raise ValueError(f"a box must be 4 numbers (left, top, right, bottom) in pixels; got {box!r}") from None
        if not (0 <= left < right <= s and 0 <= top < bottom <= s):
            raise ValueError(f"box {box!r} is outside the {s}x{s} canvas or empty; accepted: 0 <= left < right <= {s}, 0 <= top < bottom <= {s}")
        t, l = top // c, left // c
        return t, l, math.ceil(bottom / c) - t, math.ceil(right / c) - l

    def _reference_patch(self, image: ImageInput, box: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
        """A reference patch resized into ``box`` on a white canvas and encoded: (codes (n, M), positions (n,))."""
        s, c, g = self.sample_size, self.geometry.cell, self.geometry.grid_size
        top, left, h, w = self.box_to_cells(box)
        pil = image if isinstance(image, Image.Image) else postprocess(preprocess(image, s))[0]
        canvas = Image.new("RGB", (s, s), (255, 255, 255))
        canvas.paste(to_rgb(pil).resize((w * c, h * c), Image.BICUBIC), (left * c, top * c))
        tokens = self.encode_images(preprocess(canvas, s))[0]
        positions = (np.arange(top, top + h)[:, None] * g + np.arange(left, left + w)[None, :]).reshape(-1)
        return tokens[positions], positions

    # ------------------------------------------------------------------ sampling
    def __call__(
        self,
        prompt: Union[str, Sequence[str], None] = None,
        image: Union[ImageInput, Sequence[ImageInput], None] = None,
        mask_image: Union[ImageInput, Sequence[ImageInput], None] = None,
        image_box: Optional[Sequence[int]] = None,
        num_inference_steps: int = 10,
        num_images_per_prompt: int = 1,
        guidance_scale: float = 1.0,
        temperature: Optional[float] = None,
        deterministic: Optional[bool] = None,
        seed: Optional[int] = None,
        output_type: str = "pil",
        blend_pixels: bool = True,
        style_image: Union[ImageInput, Sequence[ImageInput], None] = None,
        reference_images: Optional[Sequence[Tuple[ImageInput, Sequence[int]]]] = None,
        refine_ratio: float = 0.25,
    ) -> RuntimeOutput:
        """Every task of the PyTorch pipeline, with the same arguments and semantics:

        * text-to-image (``prompt``) or unconditional (no prompt);
        * inpainting: ``image`` + ``mask_image`` (white = regenerate), text-guided with ``prompt``;
        * outpainting: ``image`` placed in the pixel ``image_box``, the rest generated;
        * local editing: ``reference_images=[(patch, box), ...]``, each patch resized into its pixel box and
          given as a visual condition (several pairs = several conditions), text-guided with ``prompt``;
        * style mixing: ``image`` + ``style_image`` + ``mask_image`` (white = taken from ``style_image``); the
          seam, plus ``refine_ratio`` of the cells around it, is re-sampled.

        ``deterministic`` overrides the bundle's scheduler (argmax tokens, lowest-confidence re-masking);
        ``seed`` seeds numpy's generator for sampling mode (and the random part of the style-mixing seam).
        """
        geo = self.geometry
        g, n, m, k, s = geo.grid_size, geo.num_image_tokens, geo.num_groups, geo.codebook_size, geo.sample_size
        if prompt is not None and not isinstance(prompt, (str, list, tuple)):
            raise TypeError(f"prompt must be a string or a list of strings; got {type(prompt).__name__}")
        if isinstance(prompt, (list, tuple)) and (not prompt or not all(isinstance(p, str) for p in prompt)):
            raise ValueError("prompt must be a non-empty list of strings (use '' for no text)")
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be an integer >= 1; got {num_images_per_prompt!r}")
        if guidance_scale < 1.0:
            raise ValueError(f"guidance_scale must be >= 1.0 (1.0 = off); got {guidance_scale}")
        if output_type not in ("pil", "np", "tokens"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'tokens'; got {output_type!r}")
        if mask_image is not None and image is None:
            raise ValueError("mask_image needs an image to edit: pass image=...")
        if style_image is not None and (image is None or mask_image is None):
            raise ValueError("style mixing needs image (the base garment), style_image and mask_image (region taken from style_image)")
        if image is not None and mask_image is None and image_box is None and reference_images is None:
            raise ValueError("an image needs mask_image (inpainting), image_box (outpainting), style_image + mask_image "
                             "(style mixing) or reference_images (local editing)")
        if image_box is not None and (image is None or mask_image is not None):
            raise ValueError("image_box (outpainting) needs image and no mask_image")
        if not 0.0 <= float(refine_ratio) <= 1.0:
            raise ValueError(f"refine_ratio must lie in [0, 1]; got {refine_ratio}")
        if reference_images is not None:
            if not isinstance(reference_images, (list, tuple)) or len(reference_images) == 0:
                raise ValueError("reference_images must be a non-empty list of (image, box) pairs")
            for i, ref in enumerate(reference_images):
                if not isinstance(ref, (list, tuple)) or len(ref) != 2:
                    raise ValueError(f"reference_images[{i}] must be a pair (image, box) with box = (left, top, right, bottom) in pixels")
        sampler = SMARTSampler.from_config(self.bundle.scheduler, temperature=temperature, deterministic=deterministic)
        rng = np.random.default_rng(seed)

        images_in = list(image) if isinstance(image, (list, tuple)) else ([image] if image is not None else [])
        if prompt is None:
            prompts = [""] * max(1, len(images_in))
        else:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        n_prompts = len(prompts)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        b = len(prompts)

        tokens = np.full((b, n, m), k, dtype=np.int64)
        editable = np.ones((b, n), dtype=bool)
        base_pixels = pixel_mask = None
        if image is not None:
            imgs = _expand(images_in, n_prompts, "image")
            if image_box is not None:
                top, left, h, w = self.box_to_cells(image_box)
                c = geo.cell
                canvases = []
                for im in imgs:
                    pil = postprocess(preprocess(im, s))[0]
                    canvas = Image.new("RGB", (s, s), (255, 255, 255))
                    canvas.paste(pil.resize((w * c, h * c), Image.BICUBIC), (left * c, top * c))
                    canvases.append(canvas)
                base_pixels = preprocess(canvases, s)
                pixel_mask = np.ones((len(canvases), 1, s, s), dtype=np.float32)
                pixel_mask[:, :, top * c : (top + h) * c, left * c : (left + w) * c] = 0
            elif mask_image is not None:
                base_pixels = preprocess(imgs, s)
                masks = list(mask_image) if isinstance(mask_image, (list, tuple)) else [mask_image]
                for im, mk in zip(imgs, _expand(masks, n_prompts, "mask_image")):
                    if _size(im) is not None and _size(mk) is not None and _size(im) != _size(mk):
                        raise ValueError(f"mask_image size {_size(mk)} does not match image size {_size(im)}")
                pixel_mask = np.stack([preprocess_mask(mk, s) for mk in _expand(masks, n_prompts, "mask_image")])
            else:  # local editing on top of an image: nothing regenerated outside the conditions' influence
                base_pixels = preprocess(imgs, s)
                pixel_mask = np.zeros((base_pixels.shape[0], 1, s, s), dtype=np.float32)
            base_pixels = np.repeat(base_pixels, num_images_per_prompt, axis=0)
            pixel_mask = np.repeat(pixel_mask, num_images_per_prompt, axis=0)
            base_tokens = self.encode_images(base_pixels)
            editable = cell_mask(pixel_mask, g)
            if style_image is not None:
                styles = list(style_image) if isinstance(style_image, (list, tuple)) else [style_image]
                style_pixels = np.repeat(preprocess(_expand(styles, n_prompts, "style_image"), s), num_images_per_prompt, axis=0)
                base_tokens = np.where(editable[..., None], self.encode_images(style_pixels), base_tokens)
                base_pixels = np.where(pixel_mask.astype(bool), style_pixels, base_pixels)
                editable = seam(editable, g, float(refine_ratio), rng)
                c = geo.cell
                pixel_mask = editable.reshape(b, 1, g, g).repeat(c, axis=2).repeat(c, axis=3).astype(np.float32)
            tokens = np.where(editable[..., None], k, base_tokens).astype(np.int64)

        conditions = None
        if reference_images is not None:
            patches = [self._reference_patch(im, box) for im, box in reference_images]
            conditions = [patches for _ in range(b)]

        text_ids = self.encode_prompt(prompts)
        inputs = build_model_inputs(geo, self.special, text_ids, tokens, conditions)
        uncond = build_model_inputs(geo, self.special, [[] for _ in range(b)], tokens) if guidance_scale > 1.0 else None

        for i in sampler.set_timesteps(num_inference_steps):
            if not (tokens == k).any():
                continue
            inputs["image_codes"][:, -n:] = tokens
            logits = self.transformer_logits(inputs)
            if uncond is not None:
                uncond["image_codes"][:, -n:] = tokens
                logits_u = self.transformer_logits(uncond)
                logits = logits_u + np.float32(guidance_scale) * (logits - logits_u)
            tokens = sampler.step(logits, int(i), tokens, editable=editable, rng=rng)

        grid_tokens = tokens.reshape(b, g, g, m)
        if output_type == "tokens":
            return RuntimeOutput(images=None, tokens=grid_tokens)
        pixels = self.decode_tokens(tokens)
        if base_pixels is not None and blend_pixels:
            pixels = np.where(pixel_mask.astype(bool), pixels, base_pixels)
        if output_type == "np":
            arr = np.round((np.clip(pixels, -1, 1) + 1) * np.float32(127.5)).astype(np.uint8).transpose(0, 2, 3, 1)
            return RuntimeOutput(images=arr, tokens=grid_tokens)
        return RuntimeOutput(images=postprocess(pixels), tokens=grid_tokens)


def seam(region: np.ndarray, grid_size: int, refine_ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Cells on both sides of the border of ``region`` (B, N) bool, plus ``refine_ratio`` of the cells in and
    next to the region, drawn at random: the part SMART refines after style mixing (as in the pipeline)."""
    b = region.shape[0]
    r = region.reshape(b, grid_size, grid_size)
    grown = np.pad(r, ((0, 0), (1, 1), (1, 1)), constant_values=False)
    shrunk = np.pad(r, ((0, 0), (1, 1), (1, 1)), constant_values=True)
    windows = [(dy, dx) for dy in range(3) for dx in range(3)]
    grown = np.logical_or.reduce([grown[:, dy : dy + grid_size, dx : dx + grid_size] for dy, dx in windows])
    shrunk = np.logical_and.reduce([shrunk[:, dy : dy + grid_size, dx : dx + grid_size] for dy, dx in windows])
    out = grown & ~shrunk
    if refine_ratio > 0:
        out |= (rng.random(r.shape) < refine_ratio) & grown
    return out.reshape(b, -1)


def _size(im) -> Optional[Tuple[int, int]]:
    if isinstance(im, Image.Image):
        return im.size
    if isinstance(im, np.ndarray) and im.ndim >= 2:
        return (im.shape[1], im.shape[0])
    return None


def _expand(items: list, batch: int, name: str) -> list:
    if len(items) == 1:
        return items * batch
    if len(items) != batch:
        raise ValueError(f"{name} has {len(items)} entries but there are {batch} prompts; give one, or one per prompt")
    return items


def save_images(images: List[Image.Image], out: str) -> List[str]:
    """Writes ``out`` (first image), ``out-1.png``, ... and returns the paths."""
    root, ext = os.path.splitext(out)
    ext = ext or ".png"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        path = f"{root}{ext}" if i == 0 else f"{root}-{i}{ext}"
        im.save(path)
        paths.append(path)
    return paths
