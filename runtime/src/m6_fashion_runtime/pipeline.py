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

from m6_fashion_core import image as core_image
from m6_fashion_core import outpainting as core_outpainting
from m6_fashion_core import validation

from .bundle import Bundle, load_bundle
from .canvas import OutputCanvas, output_canvas, output_sizes
from .image import ImageInput, cell_mask, postprocess, preprocess, preprocess_mask, to_rgb
from .layout import build_model_inputs
from .scheduler import SMARTSampler

TRANSFORMER_INPUTS = ("input_ids", "image_codes", "position_ids", "token_type_ids", "attention_mask")
# the limits and defaults of a call, shared with the pipeline (m6_fashion_core.validation)
MAX_IMAGES_PER_CALL = validation.MAX_IMAGES_PER_CALL
MAX_GUIDANCE_SCALE = validation.MAX_GUIDANCE_SCALE
CONTEXT_DROPOUT_SHARE = validation.CONTEXT_DROPOUT_SHARE
DEFAULT_REFINE_RATIO = validation.DEFAULT_REFINE_RATIO
IMAGE_TYPES = (Image.Image, np.ndarray)  # what `image`, `mask_image`, `style_image` and patches may be
IMAGE_KINDS = "a PIL image or a numpy array"
OUTPUT_TYPES = ("pil", "np", "tokens")
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
        geo = self.geometry
        mismatches = validation.component_mismatches(  # load_bundle checked the rest; the tokenizer is read here
            grid_size=geo.grid_size, codebook_size=geo.codebook_size, num_groups=geo.num_groups, vocab_size=geo.vocab_size,
            text_vocab_size=self.tokenizer.get_vocab_size(), grid_shape=geo.grid_shape,
        )
        if mismatches:
            from .bundle import REEXPORT_HINT, BundleError

            raise BundleError(f"{self.bundle.files['tokenizer']} in {self.bundle.root!r} does not fit the model: "
                              f"{'; '.join(mismatches)}; {REEXPORT_HINT}")

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
        """Longest side in pixels of the canvas the image encoder reads (the side of the square for square models)."""
        return self.geometry.sample_size

    @property
    def grid_size(self) -> int:
        """Longest side of the token grid (the side of a square grid)."""
        return self.geometry.grid_size

    @property
    def grid_shape(self) -> Tuple[int, int]:
        """``(rows, cols)`` of the token grid (``(grid_size, grid_size)`` for a square model; 16 x 12 for 3:4)."""
        return self.geometry.grid_shape

    @property
    def sample_shape(self) -> Tuple[int, int]:
        """``(height, width)`` in pixels of the canvas the image encoder reads: ``grid_shape * cell``."""
        return self.geometry.sample_shape

    def _guidance_passes(self, negatives: Optional[List[str]], b: int, tokens: np.ndarray,
                         negative_guidance_scale: Optional[float]):
        """The prepared guidance pass and the negative prompt's own pass (``None`` unless ``negative_guidance_scale``
        is set; the guidance pass then reads no text), for target ``tokens`` (B, N, M)."""
        geo = self.geometry
        if negative_guidance_scale is None:
            return self.prepare(build_model_inputs(geo, self.special, self._guidance_text(negatives, b), tokens)), None
        return (self.prepare(build_model_inputs(geo, self.special, self._guidance_text(None, b), tokens)),
                self.prepare(build_model_inputs(geo, self.special, self.encode_prompt(negatives), tokens)))

    def _guidance_text(self, negatives: Optional[List[str]], b: int) -> List[List[int]]:
        """The text the guidance pass reads: the negative prompts' token ids, or no text."""
        return self.encode_prompt(negatives) if negatives is not None else [[] for _ in range(b)]

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
        """Pixels (B, 3, H, W) float32 in [-1, 1] (``sample_shape``, or a wide outpainting canvas) -> tokens (B, N, M)
        int64."""
        sh, sw = self.sample_shape
        if pixels.ndim != 4 or pixels.shape[1:] != (3, sh, sw):
            if not (pixels.ndim == 4 and pixels.shape[1] == 3 and self._wide_grid_fits(pixels.shape[2:], self.geometry.cell)):
                raise ValueError(f"pixels must have shape (B, 3, {sh}, {sw}); got {pixels.shape}")
        tokens = self._session("image_encoder").run(None, {"pixel_values": pixels.astype(np.float32)})[0]
        return tokens.reshape(tokens.shape[0], -1, tokens.shape[-1]).astype(np.int64)

    def decode_tokens(self, tokens: np.ndarray, side: Optional[int] = None) -> np.ndarray:
        """Tokens (B, N, M) (the model's ``grid_shape``) or (B, h, w, M) in [0, K) -> pixels (B, 3, h * cell,
        w * cell) in [-1, 1] (``side`` x ``side`` for a square grid).

        ``side`` picks the decoder graph by the longest side of its canvas: ``sample_size`` (default,
        ``image_decoder``) or the high-resolution decoder's (``image_decoder_hr``); ``canvas_sides()`` lists them.
        """
        (gr, gc), m, k = self.grid_shape, self.geometry.num_groups, self.geometry.codebook_size
        tokens = np.asarray(tokens)
        if tokens.ndim == 3 and tokens.shape[1] == gr * gc:
            tokens = tokens.reshape(tokens.shape[0], gr, gc, tokens.shape[-1])
        if tokens.ndim != 4 or tokens.shape[1:] != (gr, gc, m):
            if not (tokens.ndim == 4 and tokens.shape[-1] == m and self._wide_grid_fits(tokens.shape[1:3], 1)):
                raise ValueError(f"tokens must have shape (B, {gr * gc}, {m}) or (B, {gr}, {gc}, {m}); got {tokens.shape}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= k):
            raise ValueError(f"token values must lie in [0, {k}) (no MASK left); got [{tokens.min()}, {tokens.max()}]")
        key = self.bundle.decoder_for(self.sample_size if side is None else side)
        return self._session(key).run(None, {"tokens": tokens.astype(np.int64)})[0]

    def _wide_grid_fits(self, shape: Sequence[int], cell: int) -> bool:
        """Whether a wide outpainting grid of `shape` (pixels of `cell`, or cells with `cell=1`) fits the bundle's
        image graphs (format 4 exports them with free grid sides from the model's grid to `image_grid_max`, each
        side of a non-square grid to its own limit, `Bundle.image_grid_max_shape`)."""
        lows, tops = self.grid_shape, self.bundle.image_grid_max_shape
        return self.bundle.image_grid_max > 0 and all(
            v % cell == 0 and low <= v // cell <= top for v, low, top in zip(shape, lows, tops)
        )

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
        """Longest sides of the canvases the bundle's decoders paint (``grid_shape`` cells each): ``sample_size``,
        and the high-resolution one if present."""
        return self.bundle.canvas_sides()

    @property
    def default_size(self) -> Tuple[int, int]:
        """``(height, width)`` made when none is given: the 3:4 portrait of the high-resolution canvas when the
        bundle has ``image_decoder_hr`` (192x256 for the shipped model), else the ``sample_size`` square; a
        non-square model: its whole largest canvas."""
        return self.bundle.default_size

    def output_sizes(self) -> List[Tuple[int, int]]:
        """Every ``(height, width)`` this bundle can make: centred crops of a canvas, at least half its side,
        aligned to whole token cells on both sides."""
        return output_sizes(self.canvas_sides(), self.grid_shape)

    def output_canvas(self, height: Optional[int] = None, width: Optional[int] = None, outpainting: bool = False) -> OutputCanvas:
        """The canvas and crop for an output of ``height`` x ``width`` pixels (default: ``default_size``; one side
        alone keeps the default aspect ratio); raises ``ValueError`` naming the accepted sizes. ``outpainting=True``
        (an ``image`` with an ``image_box``) also accepts sizes larger than the largest canvas and returns a
        ``WideCanvas`` for them, as the pipeline does (``m6_fashion_core.outpainting``)."""
        sides, grid = self.canvas_sides(), self.grid_shape
        if outpainting:
            wide = core_outpainting.wide_canvas(sides, grid, height, width)
            if wide is not None:
                top_r, top_c = self.bundle.image_grid_max_shape
                if wide.rows > top_r or wide.cols > top_c:
                    raise ValueError(
                        f"outpainting onto a {width}x{height} (width x height) canvas needs image graphs that take "
                        f"{wide.rows}x{wide.cols} token grids; this bundle's take only {grid[0]}x{grid[1]} (bundle "
                        f"format {self.bundle.format_version}): re-export it with `m6-fashion export onnx` (format 4)"
                    )
                return wide
        try:
            return output_canvas(sides, grid, height, width)
        except ValueError as error:
            if not outpainting:
                raise
            raise ValueError(f"{error}; {core_outpainting.wide_sizes_hint(sides, grid)}") from None

    def box_to_cells(self, box: Sequence[int], canvas: Optional[OutputCanvas] = None) -> Tuple[int, int, int, int]:
        """Pixel box (left, top, right, bottom) on the output image -> grid box (top, left, height, width),
        rounded outwards. ``canvas`` defaults to the default output size."""
        return (canvas or self.output_canvas()).box_to_cells(box)

    def _reference_patch(self, image: ImageInput, box: Sequence[int], canvas: OutputCanvas,
                         name: str = "reference_images") -> Tuple[np.ndarray, np.ndarray]:
        """A reference patch resized into ``box`` (on the output) on a white ``sample_shape`` canvas and encoded:
        (codes (n, M), positions (n,))."""
        s, c, cols = self.sample_shape, self.geometry.cell, self.grid_shape[1]
        top, left, h, w = canvas.box_to_cells(box, f"{name} box")
        pil = image if isinstance(image, Image.Image) else postprocess(preprocess(image, s, name))[0]
        sheet = Image.new("RGB", (s[1], s[0]), (255, 255, 255))  # the image encoder reads the sample_shape canvas
        sheet.paste(to_rgb(pil, name).resize((w * c, h * c), Image.BICUBIC), (left * c, top * c))
        tokens = self.encode_images(preprocess(sheet, s))[0]
        positions = (np.arange(top, top + h)[:, None] * cols + np.arange(left, left + w)[None, :]).reshape(-1)
        return tokens[positions], positions

    def _outpainting_sheets(self, images: List[ImageInput], cells: Tuple[int, int, int, int],
                            canvas: OutputCanvas) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each image fitted (aspect kept, centred on white) into the grid box ``cells`` of a white canvas
        (``m6_fashion_core.image.outpainting_sheets``: the encoder's copy continues the image's border one cell outward).

        Returns ``(pixels (B, 3, *D), encoder pixels (B, 3, *S), pixel mask (B, 1, *D))`` with ``D`` the canvas's
        ``(height, width)``, ``S`` the ``sample_shape`` and the mask 1 outside the box (generated), 0 inside (kept).
        """
        d, s = canvas.canvas_shape, self.sample_shape
        pils = [im if isinstance(im, Image.Image) else postprocess(preprocess(im, d))[0] for im in images]
        pixels, token_pixels = core_image.outpainting_sheets(pils, d[1], d[0], cells, canvas.cell, (s[1], s[0]))
        return pixels, token_pixels, canvas.cells_mask([cells], 0.0, len(pils))

    @staticmethod
    def _mask_pixels(masks: List[ImageInput], size) -> np.ndarray:
        """Masks -> float32 (B, 1, height, width) in {0, 1} (``size``: ``(height, width)`` or a square's side); each
        must select a pixel."""
        pixel_mask = np.stack([preprocess_mask(mk, size, "mask_image") for mk in masks])
        validation.check_masks_select_pixels(pixel_mask.reshape(pixel_mask.shape[0], -1).max(axis=1))
        return pixel_mask

    # ------------------------------------------------------------------ sampling
    def __call__(
        self,
        prompt: Union[str, Sequence[str], None] = None,
        image: Union[ImageInput, Sequence[ImageInput], None] = None,
        mask_image: Union[ImageInput, Sequence[ImageInput], None] = None,
        image_box: Optional[Sequence[int]] = None,
        num_inference_steps: int = 10,
        num_images_per_prompt: int = 1,
        guidance_scale: Optional[float] = None,
        negative_prompt: Union[str, Sequence[str], None] = None,
        guidance_min_p: float = validation.DEFAULT_GUIDANCE_MIN_P,
        negative_guidance_scale: Optional[float] = None,
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
        canvas (square, or ``grid_shape`` cells for a non-square model) and the output is its centred crop; boxes
        are pixel boxes on the output. Images and masks may have any size: they are padded to the canvas's aspect
        ratio (white / black) and resized to it.

        ``context_dropout_steps``: text-guided inpainting only (image + mask_image + prompt, no style_image): the
        first this many passes show the model the kept tokens as masked, so the region follows the text; ``None``
        (default) = ``round(0.8 * num_inference_steps)`` there and 0 elsewhere, as in the pipeline.

        ``guidance_scale``: classifier-free guidance (1.0 = off); ``None`` (default) = 12.0 for text-to-image (prompt
        text, no image, no reference patches) and 1.0 for every other task, as in the pipeline.
        ``negative_prompt``: what the guidance pass reads instead of no text (one string or one per prompt; only
        with ``guidance_scale`` > 1), as in the pipeline. ``guidance_min_p``: with guidance, tokens below this share
        of the conditional pass's most likely token are excluded (default 0.1; 0 = off; other values need guidance).
        ``negative_guidance_scale``: ``None`` (default) or a number ``s_n``: keep the empty-text guidance pass and add
        a third pass on ``negative_prompt``, ``l_u + s (l_c - l_u) + s_n (l_c - l_n)``, as in the pipeline.

        ``deterministic`` overrides the bundle's scheduler (argmax tokens, lowest-confidence re-masking);
        ``seed`` seeds numpy's generator for sampling mode (and the random part of the style-mixing seam).
        Returns ``images`` of ``width`` x ``height`` (PIL, or uint8 (B, height, width, 3) for ``"np"``) and
        ``tokens`` (B, h, w, M).
        """
        canvas = self.output_canvas(height, width, outpainting=image is not None and image_box is not None)
        geo = self.geometry
        (rows, cols), n, m, k, s = self.grid_shape, geo.num_image_tokens, geo.num_groups, geo.codebook_size, self.sample_shape
        d = canvas.canvas_shape  # pixels for blending live on the decoded canvas; the image encoder reads sample_shape
        guidance_scale = validation.default_guidance_scale(guidance_scale, prompt, image, reference_images)
        steps, r, guidance_scale, temperature, refine_ratio = validation.check_sampling_arguments(
            prompt, image, style_image, reference_images, num_inference_steps, num_images_per_prompt, guidance_scale,
            temperature, refine_ratio,
        )
        validation.check_negative_prompt(negative_prompt, prompt, image, guidance_scale)
        negative_guidance_scale = validation.check_negative_guidance_scale(negative_guidance_scale, negative_prompt)
        guidance_min_p = validation.check_guidance_min_p(guidance_min_p, guidance_scale)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None; got {seed!r}")
        validation.check_output_type(output_type, OUTPUT_TYPES)
        validation.check_blend_pixels(blend_pixels, image, output_type, OUTPUT_TYPES)
        validation.check_images(image, mask_image, style_image, image_box, reference_images, IMAGE_TYPES, IMAGE_KINDS)
        validation.check_boxes(canvas, image_box, reference_images, geo.max_condition_tokens, IMAGE_TYPES, IMAGE_KINDS)
        context_dropout_steps = validation.context_dropout_steps(context_dropout_steps, steps, prompt, image, mask_image, style_image)
        sampler = SMARTSampler.from_config(self.bundle.scheduler, temperature=temperature, deterministic=deterministic)
        rng = np.random.default_rng(seed)

        images_in = validation.as_list(image) if image is not None else []
        prompts = validation.batch_prompts(prompt, image, r)
        b = len(prompts)
        n_prompts = b // r
        negatives = validation.batch_negative_prompts(negative_prompt, prompts, r)

        if isinstance(canvas, core_outpainting.WideCanvas):
            imgs = validation.expand_per_prompt(images_in, n_prompts, "image")
            return self._outpaint_wide(canvas, prompts, imgs, image_box, r, sampler, rng, steps, guidance_scale,
                                       output_type, blend_pixels, negatives, guidance_min_p, negative_guidance_scale)

        tokens = np.full((b, n, m), k, dtype=np.int64)
        editable = np.ones((b, n), dtype=bool)
        base_pixels = pixel_mask = None
        if image is not None:
            imgs = validation.expand_per_prompt(images_in, n_prompts, "image")
            if image_box is not None:
                base_pixels, token_pixels, pixel_mask = self._outpainting_sheets(imgs, canvas.box_to_cells(image_box, "image_box"), canvas)
            else:
                base_pixels = preprocess(imgs, d)
                token_pixels = base_pixels if d == s else preprocess(imgs, s)
                if mask_image is not None:
                    pixel_mask = self._mask_pixels(validation.expand_per_prompt(validation.as_list(mask_image), n_prompts, "mask_image"), d)
                else:  # reference patches inside an image without a mask: their boxes are the region to edit
                    cells = [canvas.box_to_cells(box) for _, box in reference_images]
                    pixel_mask = canvas.cells_mask(cells, 1.0, base_pixels.shape[0])
            base_pixels = np.repeat(base_pixels, r, axis=0)
            pixel_mask = np.repeat(pixel_mask, r, axis=0)
            if style_image is not None:  # read before anything is encoded: a bad style_image fails early
                styles = validation.expand_per_prompt(validation.as_list(style_image), n_prompts, "style_image")
                style_pixels = np.repeat(preprocess(styles, d, "style_image"), r, axis=0)
                style_token_pixels = style_pixels if d == s else np.repeat(preprocess(styles, s, "style_image"), r, axis=0)
            base_tokens = self.encode_images(np.repeat(token_pixels, r, axis=0))
            editable = cell_mask(pixel_mask, (rows, cols))
            if style_image is not None:
                base_tokens = np.where(editable[..., None], self.encode_images(style_token_pixels), base_tokens)
                base_pixels = np.where(pixel_mask.astype(bool), style_pixels, base_pixels)
                editable = seam(editable, (rows, cols), refine_ratio, rng)
                pixel_mask = canvas.upsample_cells(editable)
            tokens = np.where(editable[..., None], k, base_tokens).astype(np.int64)

        conditions = None
        if reference_images is not None:
            patches = [self._reference_patch(im, box, canvas, f"reference_images[{i}]") for i, (im, box) in enumerate(reference_images)]
            conditions = [patches for _ in range(b)]

        text_ids = self.encode_prompt(prompts)
        inputs = build_model_inputs(geo, self.special, text_ids, tokens, conditions)
        cond = self.prepare(inputs)
        uncond, contrast = self._guidance_passes(negatives, b, tokens, negative_guidance_scale) if guidance_scale > 1.0 else (None, None)
        tokens = self._sample(cond, uncond, tokens, editable, sampler, steps, rng, guidance_scale, context_dropout_steps,
                              guidance_min_p, contrast, negative_guidance_scale)

        grid_tokens = tokens.reshape(b, rows, cols, m)
        if output_type == "tokens":
            return RuntimeOutput(images=None, tokens=grid_tokens)
        pixels = self.decode_tokens(grid_tokens, side=canvas.side)
        if base_pixels is not None and blend_pixels:
            pixels = np.where(pixel_mask.astype(bool), pixels, base_pixels)
        return _output(canvas.crop(pixels), grid_tokens, output_type)

    def _sample(self, cond, uncond, tokens: np.ndarray, editable: np.ndarray, sampler: SMARTSampler, steps: int,
                rng: np.random.Generator, guidance_scale: float, context_dropout_steps: int = 0,
                guidance_min_p: float = 0.0, contrast=None, negative_guidance_scale: Optional[float] = None) -> np.ndarray:
        """The SMART loop: ``steps`` passes over ``tokens`` (B, N, M) (MASK = codebook_size where still to generate),
        re-sampling only ``editable`` (B, N) cells; returns the final tokens. With guidance (plus
        ``negative_guidance_scale`` x (conditional - ``contrast``) with a pass on the negative prompt), tokens below
        ``guidance_min_p`` x the conditional pass's most likely one get ``-inf`` after the mix."""
        k = self.geometry.codebook_size
        for i in sampler.set_timesteps(steps):
            if not (tokens == k).any():
                continue
            # context dropout: the first passes see the kept tokens as MASK (the sampler still gets the true ones)
            seen = np.where(editable[..., None], tokens, k) if i < context_dropout_steps else tokens
            scores, normalized = self.transformer_scores(cond, seen)
            if uncond is not None:  # guidance on log-probabilities equals guidance on logits after the softmax
                scores_u, _ = self.transformer_scores(uncond, seen)
                guided = scores_u + np.float32(guidance_scale) * (scores - scores_u)
                if contrast is not None:
                    scores_n, _ = self.transformer_scores(contrast, seen)
                    guided = guided + np.float32(negative_guidance_scale) * (scores - scores_n)
                if guidance_min_p > 0.0:  # p_c < min_p * max p_c  <=>  l_c - max l_c < log(min_p)
                    implausible = scores - scores.max(-1, keepdims=True) < np.float32(np.log(guidance_min_p))
                    guided = np.where(implausible, np.float32(-np.inf), guided)
                scores, normalized = guided, False
            tokens = sampler.step(scores, int(i), tokens, editable=editable, rng=rng, normalized=normalized)
        return tokens

    def _outpaint_wide(self, canvas, prompts: List[str], images: List[ImageInput], image_box, r: int,
                       sampler: SMARTSampler, rng: np.random.Generator, steps: int, guidance_scale: float,
                       output_type: str, blend_pixels: bool, negatives: Optional[List[str]] = None,
                       guidance_min_p: float = 0.0, negative_guidance_scale: Optional[float] = None) -> RuntimeOutput:
        """Outpainting onto a canvas larger than the decoder's, window by window, as the pipeline's
        ``_outpaint_wide`` (``m6_fashion_core.outpainting``): the placed image is tokenised whole, the cells outside
        its box are generated in windows of the model's ``grid_shape`` (gr x gc cells) in ``plan_windows`` order,
        the whole grid is decoded at once. Tokens are returned as (B, rows, cols, M)."""
        geo = self.geometry
        (gr, gc), m, k, c_small = self.grid_shape, geo.num_groups, geo.codebook_size, geo.cell
        b, rows, cols, c = len(prompts), canvas.rows, canvas.cols, canvas.cell
        cells = canvas.box_to_cells(image_box, "image_box")
        pils = [im if isinstance(im, Image.Image) else postprocess(preprocess(im, canvas.canvas_shape))[0] for im in images]
        base_pixels, token_pixels = core_image.outpainting_sheets(
            pils, canvas.width, canvas.height, cells, c, (cols * c_small, rows * c_small)
        )
        grid = np.repeat(self.encode_images(token_pixels).reshape(-1, rows, cols, m), r, axis=0)
        known = canvas.known_cells(cells)
        grid = np.where(known[None, :, :, None], grid, k).astype(np.int64)
        text_ids = self.encode_prompt(prompts)
        # the prefix (caption, no conditions) is the same for every window and every pass writes the window's
        # tokens into the target, so the inputs (and the prefix keys/values) are prepared once
        masked = np.full((b, gr * gc, m), k, dtype=np.int64)
        cond = self.prepare(build_model_inputs(geo, self.special, text_ids, masked))
        uncond, contrast = self._guidance_passes(negatives, b, masked, negative_guidance_scale) if guidance_scale > 1.0 else (None, None)
        for top, left in core_outpainting.plan_windows(known, (gr, gc)):
            window = np.ascontiguousarray(grid[:, top : top + gr, left : left + gc]).reshape(b, gr * gc, m)
            editable = (window == k).all(-1)
            window = self._sample(cond, uncond, window, editable, sampler, steps, rng, guidance_scale, guidance_min_p=guidance_min_p,
                                  contrast=contrast, negative_guidance_scale=negative_guidance_scale)
            grid[:, top : top + gr, left : left + gc] = window.reshape(b, gr, gc, m)
        if output_type == "tokens":
            return RuntimeOutput(images=None, tokens=grid)
        pixels = self.decode_tokens(grid, side=canvas.side)
        if blend_pixels:
            generated = canvas.cells_mask([cells], 0.0, b).astype(bool)  # everything but the placed image
            pixels = np.where(generated, pixels, np.repeat(base_pixels, r, axis=0))
        return _output(pixels, grid, output_type)


def _output(pixels: np.ndarray, tokens: np.ndarray, output_type: str) -> RuntimeOutput:
    """Pixels (B, 3, H, W) in [-1, 1] -> a ``RuntimeOutput`` with PIL images or a uint8 (B, H, W, 3) array."""
    if output_type == "np":
        arr = np.round((np.clip(pixels, -1, 1) + 1) * np.float32(127.5)).astype(np.uint8).transpose(0, 2, 3, 1)
        return RuntimeOutput(images=arr, tokens=tokens)
    return RuntimeOutput(images=postprocess(pixels), tokens=tokens)


def seam(region: np.ndarray, grid_size, refine_ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Cells on both sides of the border of ``region`` (B, N) bool, plus ``refine_ratio`` of the cells in and
    next to the region drawn with ``rng``: the part SMART refines after style mixing
    (``m6_fashion_core.validation.seam_cells``, as in the pipeline). ``grid_size``: an int side (square grid) or
    ``(rows, cols)``."""
    return validation.seam_cells(region, grid_size, refine_ratio, rng.random)


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
