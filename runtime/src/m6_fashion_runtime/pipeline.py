"""`M6FashionRuntime`: every task of the pipeline from a bundle with ONNX Runtime + numpy.

    >>> from m6_fashion_runtime import M6FashionRuntime
    >>> rt = M6FashionRuntime("bundle/")
    >>> out = rt("Men Navy Blue Casual Shirt", seed=0)              # rt.default_size, e.g. 192x256
    >>> out.images[0].save("shirt.png")
    >>> edited = rt("Men Red Casual Shirt", image=out.images[0], mask_image=mask, seed=0)
    >>> square = rt("Women Pink Handbag", height=64, width=64, seed=0)   # rt.output_sizes() lists the sizes

The SMART loop and the sequence layout run in numpy, so the sampling semantics are those of the
PyTorch ``M6FashionPipeline``: in deterministic mode the same inputs give the same tokens.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .bundle import Bundle, load_bundle
from .canvas import OutputCanvas, output_canvas, output_sizes
from .image import ImageInput, cell_mask, fit_onto, postprocess, preprocess, preprocess_mask, to_rgb
from .layout import build_model_inputs
from .scheduler import SMARTSampler, check_temperature

TRANSFORMER_INPUTS = ("input_ids", "image_codes", "position_ids", "token_type_ids", "attention_mask")
MAX_IMAGES_PER_CALL = 64  # prompts x num_images_per_prompt, as the pipeline
MAX_GUIDANCE_SCALE = 50.0
IMAGE_TYPES = (Image.Image, np.ndarray)
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
        spin_wait: let idle ONNX Runtime threads spin (busy-wait) for the next op. Off by default: on a machine
            shared with other work, spinning threads steal the cores the next op needs, as OpenMP's active
            waiting does for PyTorch (``benchmarks/bench_busy_machine.py`` measures both).
    """

    def __init__(self, bundle: Union[str, Bundle], provider: str = "cpu", int8: bool = False, num_threads: Optional[int] = None,
                 spin_wait: bool = False):
        if not isinstance(bundle, (Bundle, str, os.PathLike)):
            raise TypeError(f"bundle must be a bundle folder path or a loaded Bundle; got {type(bundle).__name__}")
        if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1):
            raise ValueError(f"num_threads must be a positive integer or None (onnxruntime's choice); got {num_threads!r}")
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
        if not isinstance(spin_wait, (bool, np.bool_)):
            raise TypeError(f"spin_wait must be True or False; got {spin_wait!r}")
        self.spin_wait = bool(spin_wait)
        self.int8 = bool(int8)
        if self.int8 and not self.bundle.has_int8:
            raise FileNotFoundError(
                f"the bundle {self.bundle.root!r} has no int8 transformer; re-create it with "
                "`m6-fashion export onnx --model PIPELINE_DIR --out BUNDLE_DIR --int8`"
            )
        self._sessions: Dict[str, object] = {}
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(self.bundle.path("tokenizer"))
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception for an unreadable file
            from .bundle import REEXPORT_HINT, BundleError

            raise BundleError(f"{self.bundle.files['tokenizer']} in {self.bundle.root!r} is not a readable tokenizer "
                              f"({str(e).strip()[:200]}); {REEXPORT_HINT}") from None
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
            if not self.spin_wait:
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            path = self.bundle.path(f"{key}_int8" if key in ("transformer", "transformer_target") and self.int8 else key)
            try:
                self._sessions[key] = self._ort.InferenceSession(path, opts, providers=self.providers)
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for unreadable graphs
                from .bundle import REEXPORT_HINT, BundleError

                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise BundleError(f"{os.path.basename(path)} in {self.bundle.root!r} cannot be loaded by onnxruntime "
                                  f"({type(e).__name__}: {first}); {REEXPORT_HINT}") from None
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

    def decode_tokens(self, tokens: np.ndarray, side: Optional[int] = None) -> np.ndarray:
        """Tokens (B, N, M) or (B, h, w, M) in [0, K) -> pixels (B, 3, side, side) in [-1, 1].

        ``side`` picks the decoder graph: ``sample_size`` (default, ``image_decoder``) or the high-resolution
        decoder's canvas (``image_decoder_hr``); ``canvas_sides()`` lists them.
        """
        g, m, k = self.geometry.grid_size, self.geometry.num_groups, self.geometry.codebook_size
        tokens = np.asarray(tokens)
        if tokens.ndim == 3:
            tokens = tokens.reshape(tokens.shape[0], g, g, tokens.shape[-1])
        if tokens.ndim != 4 or tokens.shape[1:] != (g, g, m):
            raise ValueError(f"tokens must have shape (B, {g * g}, {m}) or (B, {g}, {g}, {m}); got {tokens.shape}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= k):
            raise ValueError(f"token values must lie in [0, {k}) (no MASK left); got [{tokens.min()}, {tokens.max()}]")
        key = self.bundle.decoder_for(self.sample_size if side is None else side)
        return self._session(key).run(None, {"tokens": tokens.astype(np.int64)})[0]

    def transformer_logits(self, inputs: Dict[str, np.ndarray]) -> np.ndarray:
        """One SMART pass on the whole sequence: the layout tensors -> logits (B, N, M, K) float32."""
        return self._session("transformer").run(None, {k: inputs[k].astype(np.int64) for k in TRANSFORMER_INPUTS})[0]

    @property
    def uses_prefix_cache(self) -> bool:
        """Passes run on the target positions only, reading the prefix's keys/values computed once per call
        (bundles of format 3 of a model whose prefix never attends to the target)."""
        return self.bundle.has_split

    def prepare(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The state the SMART passes of one input set read: with the prefix cache, the prefix's keys/values
        (one run of the prefix graph) and its mask; else the layout tensors themselves."""
        if not self.uses_prefix_cache:
            return {k: inputs[k].astype(np.int64) for k in TRANSFORMER_INPUTS}
        n = self.geometry.num_image_tokens
        prefix = {k: np.ascontiguousarray(inputs[k][:, :-n], dtype=np.int64) for k in TRANSFORMER_INPUTS}
        keys, values = self._session("transformer_prefix").run(None, prefix)
        return {"prefix_keys": keys, "prefix_values": values, "prefix_mask": prefix["attention_mask"]}

    def transformer_scores(self, prepared: Dict[str, np.ndarray], tokens: np.ndarray) -> Tuple[np.ndarray, bool]:
        """One SMART pass with the target holding ``tokens (B, N, M)``: ``(scores (B, N, M, K), normalized)``,
        log-probabilities (``normalized``) from the target graph, logits from the full-pass graph."""
        if "prefix_keys" in prepared:
            feed = dict(prepared, image_codes=np.ascontiguousarray(tokens, dtype=np.int64))
            return self._session("transformer_target").run(None, feed)[0], True
        prepared["image_codes"][:, -tokens.shape[1]:] = tokens
        return self._session("transformer").run(None, prepared)[0], False

    # ------------------------------------------------------------------ output geometry
    def canvas_sides(self) -> List[int]:
        """Sides of the squares the bundle's decoders paint: ``sample_size``, and the high-resolution one if present."""
        return self.bundle.canvas_sides()

    @property
    def default_size(self) -> Tuple[int, int]:
        """``(height, width)`` made when none is given: the 3:4 portrait of the high-resolution canvas when the
        bundle has ``image_decoder_hr`` (192x256 for the shipped model), else the ``sample_size`` square."""
        return self.bundle.default_size

    def output_sizes(self) -> List[Tuple[int, int]]:
        """Every ``(height, width)`` this bundle can make: centred crops of a canvas, at least half its side,
        aligned to whole token cells on both sides."""
        return output_sizes(self.canvas_sides(), self.geometry.grid_size)

    def output_canvas(self, height: Optional[int] = None, width: Optional[int] = None) -> OutputCanvas:
        """The canvas and crop for an output of ``height`` x ``width`` pixels (default: ``default_size``; one side
        alone keeps the default aspect ratio); raises ``ValueError`` naming the accepted sizes."""
        return output_canvas(self.canvas_sides(), self.geometry.grid_size, height, width)

    def box_to_cells(self, box: Sequence[int], canvas: Optional[OutputCanvas] = None) -> Tuple[int, int, int, int]:
        """Pixel box (left, top, right, bottom) on the output image -> grid box (top, left, height, width),
        rounded outwards. ``canvas`` defaults to the default output size."""
        return (canvas or self.output_canvas()).box_to_cells(box)

    def _reference_patch(self, image: ImageInput, box: Sequence[int], canvas: OutputCanvas,
                         name: str = "reference_images") -> Tuple[np.ndarray, np.ndarray]:
        """A reference patch resized into ``box`` (on the output) on a white ``sample_size`` square and encoded:
        (codes (n, M), positions (n,))."""
        s, c, g = self.sample_size, self.geometry.cell, self.geometry.grid_size
        top, left, h, w = canvas.box_to_cells(box, f"{name} box")
        pil = image if isinstance(image, Image.Image) else postprocess(preprocess(image, s, name))[0]
        sheet = Image.new("RGB", (s, s), (255, 255, 255))  # the image encoder reads the sample_size square
        sheet.paste(to_rgb(pil, name).resize((w * c, h * c), Image.BICUBIC), (left * c, top * c))
        tokens = self.encode_images(preprocess(sheet, s))[0]
        positions = (np.arange(top, top + h)[:, None] * g + np.arange(left, left + w)[None, :]).reshape(-1)
        return tokens[positions], positions

    def _outpainting_sheets(self, images: List[ImageInput], cells: Tuple[int, int, int, int],
                            canvas: OutputCanvas) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each image fitted (aspect kept, centred on white) into the grid box ``cells`` of a white canvas.

        Returns ``(pixels (B, 3, D, D), encoder pixels (B, 3, S, S), pixel mask (B, 1, D, D))`` with ``D`` the
        canvas side, ``S`` the sample size and the mask 1 outside the box (generated), 0 inside (kept).
        """
        d, c = canvas.side, canvas.cell
        top, left, h, w = cells
        sheets = []
        for im in images:
            pil = im if isinstance(im, Image.Image) else postprocess(preprocess(im, d))[0]
            sheet = Image.new("RGB", (d, d), (255, 255, 255))
            sheet.paste(fit_onto(pil, w * c, h * c), (left * c, top * c))  # aspect kept, on white
            sheets.append(sheet)
        return preprocess(sheets, d), preprocess(sheets, self.sample_size), canvas.cells_mask([cells], 0.0, len(sheets))

    @staticmethod
    def _mask_pixels(images: List[ImageInput], masks: List[ImageInput], side: int) -> np.ndarray:
        """Masks (one per image, same size as it) -> float32 (B, 1, side, side) in {0, 1}; each must select a pixel."""
        for im, mk in zip(images, masks):
            if _size(im) is not None and _size(mk) is not None and _size(im) != _size(mk):
                raise ValueError(f"mask_image size {_size(mk)} does not match image size {_size(im)}")
        pixel_mask = np.stack([preprocess_mask(mk, side, "mask_image") for mk in masks])
        if not pixel_mask.reshape(pixel_mask.shape[0], -1).max(axis=1).all():
            raise ValueError(
                "mask_image selects no pixel (all black after thresholding at 0.5): white (>= 128, or >= 0.5 "
                "for float masks) marks the region to regenerate"
            )
        return pixel_mask

    def _check_boxes(self, canvas: OutputCanvas, image_box, reference_images) -> None:
        """Boxes fit the output and the reference patches fit the condition segment (before anything is encoded)."""
        if image_box is not None and canvas.box_to_cells(image_box, "image_box") == canvas.box_to_cells((0, 0, canvas.width, canvas.height)):
            raise ValueError(f"image_box {tuple(image_box)!r} covers the whole {canvas.width}x{canvas.height} (width x height) output once "
                             f"widened to whole {canvas.cell}-px token cells, so outpainting would generate nothing; leave at least one "
                             "token cell of the output outside the box (or use mask_image to regenerate part of the image)")
        if reference_images is None:
            return
        if not isinstance(reference_images, (list, tuple)) or len(reference_images) == 0:
            raise ValueError("reference_images must be a non-empty list of (image, box) pairs")
        cells = 0
        for i, ref in enumerate(reference_images):
            if not isinstance(ref, (list, tuple)) or len(ref) != 2:
                raise ValueError(f"reference_images[{i}] must be a pair (image, box) with box = (left, top, right, bottom) in pixels")
            if not isinstance(ref[0], IMAGE_TYPES):
                raise TypeError(f"reference_images[{i}][0] must be a PIL image or a numpy array; got {type(ref[0]).__name__}")
            _, _, h, w = canvas.box_to_cells(ref[1], f"reference_images[{i}] box")
            cells += h * w + (1 if i else 0)
        limit = self.geometry.max_condition_tokens
        if cells > limit:
            raise ValueError(
                f"the {len(reference_images)} reference patch(es) cover {cells} token cells (one separator between "
                f"two patches counts); the model takes at most {limit}: use fewer or smaller boxes"
            )

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
        height: Optional[int] = None,
        width: Optional[int] = None,
        context_dropout_steps: Optional[int] = None,
    ) -> RuntimeOutput:
        """Every task of the PyTorch pipeline, with the same arguments and semantics:

        * text-to-image (``prompt``) or unconditional (no prompt);
        * inpainting: ``image`` + ``mask_image`` (white = regenerate), text-guided with ``prompt``;
        * outpainting: ``image`` placed in the pixel ``image_box``, the rest generated;
        * local editing: ``reference_images=[(patch, box), ...]``, each patch resized into its pixel box and
          given as a visual condition (several pairs = several conditions), text-guided with ``prompt``; with
          ``image`` and no ``mask_image`` the boxes are the region of ``image`` that is regenerated;
        * style mixing: ``image`` + ``style_image`` + ``mask_image`` (white = taken from ``style_image``); the
          seam, plus ``refine_ratio`` of the cells around it, is re-sampled.

        ``height`` x ``width``: output size in pixels (default ``default_size``: 192x256 portrait with a
        high-resolution decoder, else the ``sample_size`` square; one side alone keeps the default aspect
        ratio); ``output_sizes()`` lists the accepted sizes, others raise ``ValueError``. The decoder paints a
        square canvas and the output is its centred crop; boxes are pixel boxes on the output. Images and masks
        may have any size: they are padded to a square (white / black) and resized to the canvas.

        ``context_dropout_steps``: text-guided inpainting only (image + mask_image + prompt, no style_image): the
        first this many passes show the model the kept tokens as masked, so the region follows the text; ``None``
        (default) = ``round(0.8 * num_inference_steps)`` there and 0 elsewhere, as in the pipeline.

        ``deterministic`` overrides the bundle's scheduler (argmax tokens, lowest-confidence re-masking);
        ``seed`` seeds numpy's generator for sampling mode (and the random part of the style-mixing seam).
        Returns ``images`` of ``width`` x ``height`` (PIL, or uint8 (B, height, width, 3) for ``"np"``) and
        ``tokens`` (B, h, w, M).
        """
        canvas = self.output_canvas(height, width)
        geo = self.geometry
        g, n, m, k, s = geo.grid_size, geo.num_image_tokens, geo.num_groups, geo.codebook_size, geo.sample_size
        d = canvas.side  # pixels for blending live on the decoded canvas; the image encoder reads the S square
        if prompt is not None and not isinstance(prompt, (str, list, tuple)):
            raise TypeError(f"prompt must be a string or a list of strings; got {type(prompt).__name__}")
        if isinstance(prompt, (list, tuple)) and (not prompt or not all(isinstance(p, str) for p in prompt)):
            raise ValueError("prompt must be a non-empty list of strings (use '' for no text)")
        num_inference_steps, num_images_per_prompt = _as_int(num_inference_steps), _as_int(num_images_per_prompt)
        if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be an integer >= 1; got {num_images_per_prompt!r}")
        n_prompts = len(prompt) if isinstance(prompt, (list, tuple)) else len(image) if isinstance(image, (list, tuple)) else 1
        if n_prompts * num_images_per_prompt > MAX_IMAGES_PER_CALL:
            raise ValueError(
                f"{n_prompts} prompt(s) x num_images_per_prompt={num_images_per_prompt} = {n_prompts * num_images_per_prompt} "
                f"images; at most {MAX_IMAGES_PER_CALL} per call (call again for more)"
            )
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float, np.integer, np.floating)) or not (
            np.isfinite(guidance_scale) and 1.0 <= guidance_scale <= MAX_GUIDANCE_SCALE
        ):
            raise ValueError(f"guidance_scale must be a finite number in [1, {MAX_GUIDANCE_SCALE:g}] (1.0 = off); got {guidance_scale!r}")
        texts = [prompt] if isinstance(prompt, str) else list(prompt or [])
        if guidance_scale > 1.0 and reference_images is None and not any(t.strip() for t in texts):
            raise ValueError(f"guidance_scale={guidance_scale:g} steers the image towards the prompt or the reference patches, and this "
                             "call has neither (no prompt text, no reference_images), so it would change nothing; pass a prompt or "
                             "reference_images, or leave guidance_scale at 1.0")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None; got {seed!r}")
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
        if isinstance(refine_ratio, bool) or not isinstance(refine_ratio, (int, float, np.integer, np.floating)) or not (
            0.0 <= refine_ratio <= 1.0
        ):
            raise ValueError(f"refine_ratio must be a number in [0, 1]; got {refine_ratio!r}")
        if style_image is None and refine_ratio != 0.25:
            raise ValueError(f"refine_ratio={refine_ratio!r} only acts in style mixing (image + style_image + mask_image: the share of "
                             "the cells around the seam that are re-sampled); this call mixes no styles, so drop refine_ratio")
        if not isinstance(blend_pixels, (bool, np.bool_)):
            raise TypeError(f"blend_pixels must be True or False; got {blend_pixels!r}")
        if not blend_pixels and (image is None or output_type == "tokens"):
            raise ValueError("blend_pixels=False keeps the decoded pixels outside the edited region instead of pasting the pixels of "
                             "image back; it needs an image to edit and decoded pixels (output_type 'pil' or 'np'), and this call has "
                             + ("no image" if image is None else "output_type='tokens'") + ", so drop blend_pixels")
        for name, value in (("image", image), ("mask_image", mask_image), ("style_image", style_image)):
            for i, item in enumerate(value if isinstance(value, (list, tuple)) else [value]):
                if value is not None and not isinstance(item, IMAGE_TYPES):
                    where = f"{name}[{i}]" if isinstance(value, (list, tuple)) else name
                    raise TypeError(f"{where} must be a PIL image or a numpy array (or a list of them); got {type(item).__name__}")
        if isinstance(image, (list, tuple)) and not image:
            raise ValueError("image is an empty list; pass at least one image")
        self._check_boxes(canvas, image_box, reference_images)
        if temperature is not None:
            check_temperature(temperature, "temperature")
        sampler = SMARTSampler.from_config(self.bundle.scheduler, temperature=temperature, deterministic=deterministic)
        sampler.set_timesteps(num_inference_steps)  # checks the number before any image is encoded
        context_dropout_steps = _context_dropout(context_dropout_steps, num_inference_steps, prompt, image, mask_image, style_image)
        rng = np.random.default_rng(seed)

        images_in = _as_list(image) if image is not None else []
        if prompt is None:
            prompts = [""] * max(1, len(images_in))
        else:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        n_prompts, r = len(prompts), num_images_per_prompt
        prompts = [p for p in prompts for _ in range(r)]
        b = len(prompts)

        tokens = np.full((b, n, m), k, dtype=np.int64)
        editable = np.ones((b, n), dtype=bool)
        base_pixels = pixel_mask = None
        if image is not None:
            imgs = _expand(images_in, n_prompts, "image")
            if image_box is not None:
                base_pixels, token_pixels, pixel_mask = self._outpainting_sheets(imgs, canvas.box_to_cells(image_box, "image_box"), canvas)
            else:
                base_pixels = preprocess(imgs, d)
                token_pixels = base_pixels if d == s else preprocess(imgs, s)
                if mask_image is not None:
                    pixel_mask = self._mask_pixels(imgs, _expand(_as_list(mask_image), n_prompts, "mask_image"), d)
                else:  # reference patches inside an image without a mask: their boxes are the region to edit
                    cells = [canvas.box_to_cells(box) for _, box in reference_images]
                    pixel_mask = canvas.cells_mask(cells, 1.0, base_pixels.shape[0])
            base_pixels = np.repeat(base_pixels, r, axis=0)
            pixel_mask = np.repeat(pixel_mask, r, axis=0)
            if style_image is not None:  # read before anything is encoded: a bad style_image fails early
                styles = _expand(_as_list(style_image), n_prompts, "style_image")
                style_pixels = np.repeat(preprocess(styles, d, "style_image"), r, axis=0)
                style_token_pixels = style_pixels if d == s else np.repeat(preprocess(styles, s, "style_image"), r, axis=0)
            base_tokens = self.encode_images(np.repeat(token_pixels, r, axis=0))
            editable = cell_mask(pixel_mask, g)
            if style_image is not None:
                base_tokens = np.where(editable[..., None], self.encode_images(style_token_pixels), base_tokens)
                base_pixels = np.where(pixel_mask.astype(bool), style_pixels, base_pixels)
                editable = seam(editable, g, float(refine_ratio), rng)
                pixel_mask = canvas.upsample_cells(editable)
            tokens = np.where(editable[..., None], k, base_tokens).astype(np.int64)

        conditions = None
        if reference_images is not None:
            patches = [self._reference_patch(im, box, canvas, f"reference_images[{i}]") for i, (im, box) in enumerate(reference_images)]
            conditions = [patches for _ in range(b)]

        text_ids = self.encode_prompt(prompts)
        inputs = build_model_inputs(geo, self.special, text_ids, tokens, conditions)
        uncond = build_model_inputs(geo, self.special, [[] for _ in range(b)], tokens) if guidance_scale > 1.0 else None

        cond = self.prepare(inputs)
        uncond = self.prepare(uncond) if uncond is not None else None
        for i in sampler.set_timesteps(num_inference_steps):
            if not (tokens == k).any():
                continue
            # context dropout: the first passes see the kept tokens as MASK (the sampler still gets the true ones)
            seen = np.where(editable[..., None], tokens, k) if i < context_dropout_steps else tokens
            scores, normalized = self.transformer_scores(cond, seen)
            if uncond is not None:  # guidance on log-probabilities equals guidance on logits after the softmax
                scores_u, _ = self.transformer_scores(uncond, seen)
                scores, normalized = scores_u + np.float32(guidance_scale) * (scores - scores_u), False
            tokens = sampler.step(scores, int(i), tokens, editable=editable, rng=rng, normalized=normalized)

        grid_tokens = tokens.reshape(b, g, g, m)
        if output_type == "tokens":
            return RuntimeOutput(images=None, tokens=grid_tokens)
        pixels = self.decode_tokens(tokens, side=d)
        if base_pixels is not None and blend_pixels:
            pixels = np.where(pixel_mask.astype(bool), pixels, base_pixels)
        pixels = canvas.crop(pixels)
        if output_type == "np":
            arr = np.round((np.clip(pixels, -1, 1) + 1) * np.float32(127.5)).astype(np.uint8).transpose(0, 2, 3, 1)
            return RuntimeOutput(images=arr, tokens=grid_tokens)
        return RuntimeOutput(images=postprocess(pixels), tokens=grid_tokens)


CONTEXT_DROPOUT_SHARE = 0.8  # as the pipeline's: share of the passes that hide the kept tokens in text-guided inpainting


def _context_dropout(value, steps: int, prompt, image, mask_image, style_image) -> int:
    """``context_dropout_steps`` checked and resolved (``None`` -> the pipeline's default), as ``M6FashionPipeline``."""
    texts = [prompt] if isinstance(prompt, str) else list(prompt or [])
    text_guided = image is not None and mask_image is not None and style_image is None and any(t.strip() for t in texts)
    if value is None:
        return round(CONTEXT_DROPOUT_SHARE * steps) if text_guided else 0
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= steps:
        raise ValueError(f"context_dropout_steps must be None (automatic) or a whole number in [0, num_inference_steps={steps}] "
                         f"(the first SMART passes that hide the kept tokens from the model); got {value!r}")
    if value and not text_guided:
        raise ValueError(f"context_dropout_steps={value!r} only acts in text-guided inpainting (image + mask_image + a prompt, "
                         "no style_image): it hides the kept tokens around the masked region from the model for the first "
                         "passes so the region follows the text; this call is not one, so drop context_dropout_steps")
    return int(value)


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


def _as_int(value):
    """numpy integers as Python ints; anything else unchanged for the checks."""
    return int(value) if isinstance(value, np.integer) else value


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


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
