"""M6-Fashion studio: a Gradio web app for generating and editing garments.

    m6-fashion studio [--model DIR] [--port N] [--max-batch-size N]   # serves on http://127.0.0.1:7860

Tabs follow the paper's workflow: text-to-image, inpainting / text-guided local editing with a painted
mask, local editing with a reference patch placed by a box, style mixing of two garments, outpainting.
Every tab runs `M6FashionPipeline` and reports the SMART passes as progress; bad input (no mask painted,
a box outside the image, an unreadable upload, an empty prompt) is shown as a message in the page.

The studio works at the pipeline's default output size (`pipe.default_size`: 192x256 for the shipped model,
64x64 without its high-resolution decoder, the whole canvas of a non-square grid): editors have the output's shape, masks and boxes are pixels of the
output, uploads are padded on white to its shape (as the model pads photos), and results are shown at their
real size (small ones upscaled so the long side is `DISPLAY_SIZE`).

`build_app(pipe)` returns the `gr.Blocks` (the shipped model is loaded when `pipe` is None); `Studio`
holds the event handlers, which can also be called directly.

Serving several users: text-to-image requests that wait for the model at the same time are batched into one
pipeline call (`--max-batch-size`, default `DEFAULT_MAX_BATCH_SIZE`; 1 = one request per call). A batch holds
requests with the same number of SMART steps (prompts, seeds and numbers of images may differ), at most
`max_batch_size` requests and `MAX_BATCH_IMAGES` images. Each request still gets exactly the images it gets
alone: every request samples from its own seeded generator (the pipeline takes one generator per call, so the
studio splits the sampler's step by request, see `Studio._per_request_sampling`) and its images are decoded on
their own. Bad input is refused before a request joins a batch, so it fails only that request. The other tabs
take per-call settings (a mask's box, reference patches, a seam drawn at random) and run one request per call.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import functools
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image
import PIL.ImageDraw

try:
    import gradio as gr
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("the studio needs Gradio: pip install 'm6-fashion[studio]'") from e

from .image_processing import array_to_pil, fit_onto, postprocess, to_rgb

logger = logging.getLogger(__name__)

DISPLAY_SIZE = 256  # outputs smaller than this (the 64x64 model) are upscaled so that their long side is this
IMAGE_FORMAT = "png"  # images the page shows or sends back are lossless (Gradio's default, WebP, is lossy)
MAX_STEPS = 30
MAX_IMAGES = 8
DEFAULT_MAX_BATCH_SIZE = 4  # text-to-image requests per pipeline call when several users wait (1 = no batching)
MAX_BATCH_SIZE = 16  # the largest --max-batch-size accepted
MAX_BATCH_IMAGES = 32  # images per batched pipeline call (requests of up to MAX_IMAGES images each)
DEFAULT_BATCH_WAIT = 0.25  # longest wait (s) of a batch for the requests of other active users (a lone user never waits)
ACTIVE_WINDOW = 10.0  # a user who sent a text-to-image request in the last ACTIVE_WINDOW seconds counts as active
EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "studio_examples")

BOX_PRESETS = {  # fractions of the output image: (left, top, right, bottom)
    "centre": (0.25, 0.25, 0.75, 0.75),
    "upper half": (0, 0, 1, 0.5),
    "lower half": (0, 0.5, 1, 1),
    "left half": (0, 0, 0.5, 1),
    "right half": (0.5, 0, 1, 1),
    "chest": (0.25, 0.125, 0.75, 0.5),
}
MASK_PRESETS = ("painted", "upper half", "lower half", "left half", "right half", "centre")  # regions of BOX_PRESETS


def fraction_box(fractions: Sequence[float], width: int, height: int) -> Tuple[int, int, int, int]:
    """Fractions (left, top, right, bottom) of a `width` x `height` image -> a pixel box on it."""
    l, t, r, b = fractions
    return int(round(l * width)), int(round(t * height)), int(round(r * width)), int(round(b * height))


def preset_box(name: str, width: int, height: int) -> Tuple[int, int, int, int]:
    """One of `BOX_PRESETS` as a pixel box on the `width` x `height` output."""
    if name not in BOX_PRESETS:
        raise gr.Error(f"Unknown box preset {name!r}; choose one of: {', '.join(BOX_PRESETS)}.")
    return fraction_box(BOX_PRESETS[name], width, height)


def display_size(width: int, height: int) -> Tuple[int, int]:
    """(width, height) an output is shown and edited at: its own size, or upscaled so the long side is `DISPLAY_SIZE`."""
    scale = max(1.0, DISPLAY_SIZE / max(width, height))
    return int(round(width * scale)), int(round(height * scale))


# ---------------------------------------------------------------------------------------------- image helpers
UPLOAD_GUARD = "m6-upload-guard"  # elem_classes mark of the image inputs whose unreadable uploads become a clear message


def _guard_preprocess(cls) -> None:
    """Wraps `cls.preprocess` (once) so that components marked with `UPLOAD_GUARD` report an upload PIL cannot read as
    a clear message in the page (instead of a generic error). At class level because Gradio re-creates a component
    from its constructor arguments when an event updates it (loading an example does), which drops anything set on
    the instance; subclassing would make Gradio write type stubs next to this module."""
    if getattr(cls.preprocess, "_m6_guarded", False):
        return
    preprocess = cls.preprocess

    @functools.wraps(preprocess)
    def safe_preprocess(self, payload):
        if UPLOAD_GUARD not in (self.elem_classes or []):
            return preprocess(self, payload)
        try:
            return preprocess(self, payload)
        except gr.Error:
            raise
        except Exception as e:  # noqa: BLE001 - any decoding failure is the upload's fault
            raise gr.Error(f"Cannot read the uploaded file as an image ({type(e).__name__}). Upload a PNG, JPEG or WebP picture.") from None

    safe_preprocess._m6_guarded = True
    cls.preprocess = safe_preprocess


def guard_uploads(component):
    """Marks an image component (see `_guard_preprocess`). Components made here also get the mark in their
    constructor arguments (`elem_classes=[UPLOAD_GUARD]`), so that it survives Gradio re-creating them."""
    _guard_preprocess(type(component))
    classes = component.elem_classes or []
    classes = [classes] if isinstance(classes, str) else list(classes)
    if UPLOAD_GUARD not in classes:
        component.elem_classes = classes + [UPLOAD_GUARD]
    return component


def _image_input(**kwargs):
    return guard_uploads(gr.Image(type="pil", sources=("upload", "clipboard"), format=IMAGE_FORMAT, elem_classes=[UPLOAD_GUARD],
                                  **kwargs))


def load_image(value: Any, what: str = "image") -> Optional[PIL.Image.Image]:
    """A PIL image (RGB) from a PIL image, uint8 array or file path; None stays None; unreadable -> gr.Error."""
    if value is None:
        return None
    try:
        if isinstance(value, PIL.Image.Image):
            im = value
        elif isinstance(value, np.ndarray):
            im = array_to_pil(value, what)  # uint8, or floats in [0, 1]; 0-255 floats are refused, not wrapped
        elif isinstance(value, (str, os.PathLike)):
            im = PIL.Image.open(value)
            im.load()
        else:
            raise TypeError(type(value).__name__)
        return to_rgb(im)
    except Exception as e:  # noqa: BLE001 - reported to the user
        raise gr.Error(f"Cannot read the {what} as an image ({type(e).__name__}: {e}). Upload a PNG, JPEG or WebP picture.") from None


def pad_to_aspect(image: PIL.Image.Image, width: int, height: int, fill) -> PIL.Image.Image:
    """Pads an image (or mask), centred, on `fill` to the `width`:`height` aspect (never crops)."""
    w, h = image.size
    if w * height == h * width:
        return image
    pw, ph = max(w, int(round(h * width / height))), max(h, int(round(w * height / width)))
    sheet = PIL.Image.new(image.mode, (pw, ph), fill)
    sheet.paste(image, ((pw - w) // 2, (ph - h) // 2))
    return sheet


def fit_to(image: PIL.Image.Image, width: int, height: int) -> PIL.Image.Image:
    """An image placed onto a `width` x `height` output or box: scaled to fit, aspect kept, centred on white (as the
    pipeline places an outpainting image in its box, and as padding a photo to the model's canvas lines it up)."""
    image = to_rgb(image)
    return image if image.size == (width, height) else fit_onto(image, width, height)


def for_display(image: PIL.Image.Image) -> PIL.Image.Image:
    """A model output for the page: its real size, or upscaled when small (the 64x64 model) by `display_size`."""
    image = to_rgb(image)
    size = display_size(*image.size)
    return image if size == image.size else image.resize(size, PIL.Image.BICUBIC)


def preset_mask(name: str, width: int, height: int) -> PIL.Image.Image:
    """A `width` x `height` mask (L, white = change) for one of `MASK_PRESETS` other than 'painted'."""
    if name not in MASK_PRESETS[1:]:
        raise gr.Error(f"Unknown mask preset {name!r}; choose one of: {', '.join(MASK_PRESETS)}.")
    mask = PIL.Image.new("L", (width, height), 0)
    mask.paste(255, fraction_box(BOX_PRESETS[name], width, height))
    return mask


def painted_mask(editor_value: Optional[Dict[str, Any]], width: int, height: int) -> Optional[PIL.Image.Image]:
    """The painted strokes of an image-editor value as a `width` x `height` mask (white = painted), or None if
    nothing is painted.

    The strokes lie on the editor's canvas (the output's aspect, `display_size`); any other shape is padded to
    the output's aspect like the image. They are then reduced so that an output pixel is masked when any canvas
    pixel over it was painted (thin strokes are not lost).
    """
    if not editor_value:
        return None
    background = editor_value.get("background")
    layers = [load_image_rgba(layer) for layer in (editor_value.get("layers") or []) if layer is not None]
    painted = None
    for layer in layers:
        alpha = np.asarray(layer.getchannel("A")) > 0
        painted = alpha if painted is None else (painted | alpha if painted.shape == alpha.shape else painted)
    if painted is None or not painted.any():
        composite = editor_value.get("composite")
        if background is None or composite is None:
            return None
        a = np.asarray(to_rgb(load_image_rgba(background, "image")), dtype=np.int16)
        b = np.asarray(to_rgb(load_image_rgba(composite, "composite image")), dtype=np.int16)
        if a.shape != b.shape:
            return None
        painted = np.abs(a - b).max(-1) > 8
    if not painted.any():
        return None
    strokes = pad_to_aspect(PIL.Image.fromarray(painted.astype(np.uint8) * 255), width, height, 0)
    coverage = strokes.resize((width, height), PIL.Image.BOX)
    return PIL.Image.fromarray(((np.asarray(coverage) > 0) * 255).astype(np.uint8))


def load_image_rgba(value: Any, what: str = "painted layer") -> PIL.Image.Image:
    """An editor image (background, layer or composite) as RGBA; unreadable -> gr.Error naming `what`."""
    try:
        if isinstance(value, (str, os.PathLike)):
            value = PIL.Image.open(value)
        elif isinstance(value, np.ndarray):
            value = array_to_pil(value, what)
        return value.convert("RGBA")
    except Exception as e:  # noqa: BLE001 - reported to the user
        raise gr.Error(f"Cannot read the {what} of the editor as an image ({type(e).__name__}). Paint again, or pick a "
                       "preset region.") from None


def parse_box(left, top, right, bottom, width: int, height: int) -> Tuple[int, int, int, int]:
    """Four numbers from the page -> a pixel box on the `width` x `height` output; anything else -> gr.Error."""
    values = []
    for name, v in zip(("left", "top", "right", "bottom"), (left, top, right, bottom)):
        if v is None or (isinstance(v, str) and not v.strip()):
            raise gr.Error(f"The box needs all four numbers; {name} is empty.")
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise gr.Error(f"The box {name} must be a number of pixels; got {v!r}.") from None
        if not np.isfinite(f) or f != int(f):
            raise gr.Error(f"The box {name} must be a whole number of pixels; got {v!r}.")
        values.append(int(f))
    l, t, r, b = values
    if not (0 <= l < r <= width and 0 <= t < b <= height):
        raise gr.Error(
            f"The box ({l}, {t}, {r}, {b}) is outside the {width}x{height} (width x height) image or empty: "
            f"use 0 <= left < right <= {width} and 0 <= top < bottom <= {height}."
        )
    return l, t, r, b


def box_preview(image: Optional[PIL.Image.Image], box: Sequence[int], width: int, height: int,
                patch: Optional[PIL.Image.Image] = None) -> PIL.Image.Image:
    """Where a box lies on the `width` x `height` output, at `display_size`: `image` (or white) with `patch`
    resized into the box and the box outlined."""
    display = display_size(width, height)
    canvas = fit_to(image, *display) if image is not None else PIL.Image.new("RGB", display, "white")
    scale = display[0] / width
    l, t, r, b = (int(round(v * scale)) for v in box)
    if patch is not None:
        canvas.paste(to_rgb(patch).resize((r - l, b - t), PIL.Image.BICUBIC), (l, t))
    PIL.ImageDraw.Draw(canvas).rectangle((l, t, r - 1, b - 1), outline=(230, 30, 60), width=3)
    return canvas


# ---------------------------------------------------------------------------------------------- handlers
@dataclass(eq=False)
class T2IRequest:
    """One validated text-to-image request on its way through the batching queue (see `Studio.text_to_image`)."""

    text: str
    seed: int
    steps: int
    num_images: int
    progress: Any = None  # the request's gr.Progress (None: no progress reports)
    context: Optional[contextvars.Context] = None  # the request thread's context: Gradio finds the event there
    done: bool = False
    images: Optional[List[PIL.Image.Image]] = None
    error: Optional[BaseException] = None
    batch_size: int = 0  # requests in the pipeline call that served this one

    def report(self, done_steps: int, desc: str) -> None:
        """Progress of this request (from whichever thread runs its batch)."""
        if self.progress is None:
            return
        call = functools.partial(self.progress, (done_steps, self.steps), desc=desc, unit="steps")
        if self.context is not None:
            self.context.run(call)
        else:
            call()


def check_batch_settings(max_batch_size, batch_wait) -> Tuple[int, float]:
    """`max_batch_size` (a whole number, 1..MAX_BATCH_SIZE) and `batch_wait` (seconds, 0..10) checked; ValueError otherwise."""
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, (int, np.integer)) or not 1 <= max_batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"max_batch_size must be a whole number from 1 (no batching) to {MAX_BATCH_SIZE}; got {max_batch_size!r}")
    if isinstance(batch_wait, bool) or not isinstance(batch_wait, (int, float)) or not np.isfinite(batch_wait) or not 0 <= batch_wait <= 10:
        raise ValueError(f"batch_wait must be a number of seconds from 0 to 10; got {batch_wait!r}")
    return int(max_batch_size), float(batch_wait)


class Studio:
    """Event handlers of the studio around one pipeline (pipeline calls are serialised: the pipeline is not thread safe).

    Everything is in pixels of the pipeline's default output (`pipe.default_size`; 192x256 for the shipped model):
    masks, boxes and the images handed to the pipeline.

    Text-to-image requests that arrive while the pipeline is busy queue up and run together as one batched call
    of up to `max_batch_size` requests (same number of steps); 1 turns batching off. When other users are active
    (they sent a request with the same steps in the last `ACTIVE_WINDOW` seconds) and their requests are not
    waiting yet, a batch waits up to `batch_wait` seconds for them: users who get their results together send
    their next requests together, and would otherwise split into a batch of one and a batch of the rest. A lone
    user never waits. `text_to_image_batch` runs a list of requests directly (no queue).
    """

    def __init__(self, pipe, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, batch_wait: float = DEFAULT_BATCH_WAIT):
        self.pipe = pipe
        self.height, self.width = (int(v) for v in pipe.default_size)
        self.canvas = pipe.output_canvas(self.height, self.width)  # where the output lies on the canvas the model paints
        self.max_batch_size, self.batch_wait = check_batch_settings(max_batch_size, batch_wait)
        self._lock = threading.Lock()  # held during every pipeline call
        self._queue = threading.Condition()  # guards the text-to-image queue below
        self._pending: List[T2IRequest] = []  # waiting text-to-image requests, oldest first
        self._leader_active = False  # a thread is running (or gathering) a text-to-image batch
        self._active: Dict[Any, Tuple[float, int]] = {}  # user (session, else thread) -> (time, steps) of their latest request
        self.batch_sizes: List[int] = []  # sizes of the text-to-image pipeline calls so far (for tests and benchmarks)

    # -- validation
    @staticmethod
    def _seed(seed) -> int:
        try:
            f = float(seed)
        except (TypeError, ValueError):
            raise gr.Error(f"The seed must be a whole number; got {seed!r}.") from None
        if not np.isfinite(f) or f != int(f) or not 0 <= f < 2**63:
            raise gr.Error(f"The seed must be a whole number between 0 and 2^63-1; got {seed!r}.")
        return int(f)

    @staticmethod
    def _int_in(value, name: str, low: int, high: int) -> int:
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise gr.Error(f"{name} must be a whole number from {low} to {high}; got {value!r}.") from None
        if not np.isfinite(f) or f != int(f) or not low <= f <= high:
            raise gr.Error(f"{name} must be a whole number from {low} to {high}; got {value!r}.")
        return int(f)

    @staticmethod
    def _prompt(prompt, required: bool) -> Optional[str]:
        text = (prompt or "").strip() if isinstance(prompt, (str, type(None))) else None
        if text is None:
            raise gr.Error("The description must be text.")
        if required and not text:
            raise gr.Error("Type a description of the garment first, e.g. 'Men Navy Blue Casual Shirt'.")
        return text or None

    def _box(self, left, top, right, bottom) -> Tuple[int, int, int, int]:
        return parse_box(left, top, right, bottom, self.width, self.height)

    def snap(self, box: Sequence[int]) -> Tuple[int, int, int, int]:
        """The pixel box the model uses for `box`: widened to whole token cells (as the pipeline does)."""
        top, left, h, w = self.canvas.box_to_cells(box)
        y0, x0 = self.canvas.offset
        c = self.canvas.cell
        return left * c - x0, top * c - y0, (left + w) * c - x0, (top + h) * c - y0

    def _fit(self, image: PIL.Image.Image) -> PIL.Image.Image:
        return fit_to(image, self.width, self.height)

    def _mask(self, editor_value, preset: str, what: str) -> PIL.Image.Image:
        if preset and preset != "painted":
            return preset_mask(preset, self.width, self.height)
        mask = painted_mask(editor_value, self.width, self.height)
        if mask is None:
            raise gr.Error(f"No mask painted: paint over the {what} with the brush, or pick a preset region instead of 'painted'.")
        return mask

    def _box_mask(self, box: Sequence[int]) -> PIL.Image.Image:
        mask = PIL.Image.new("L", (self.width, self.height), 0)
        mask.paste(255, tuple(box))
        return mask

    def _editor_image(self, editor_value, what: str) -> PIL.Image.Image:
        background = (editor_value or {}).get("background") if isinstance(editor_value, dict) else editor_value
        image = load_image(background, what)
        if image is None:
            raise gr.Error(f"No {what}: upload an image first (or send one from the Text to image tab).")
        return self._fit(image)

    # -- running the pipeline
    @contextlib.contextmanager
    def _errors(self):
        """Pipeline failures as messages for the page (the console gets the traceback of unexpected ones)."""
        try:
            yield
        except gr.Error:
            raise
        except (ValueError, TypeError) as e:
            raise gr.Error(str(e)) from None
        except Exception as e:  # noqa: BLE001 - the page gets a message, the console the traceback
            logger.exception("studio: generation failed")
            raise gr.Error(f"Generation failed ({type(e).__name__}: {e}). The studio is still running; try again.") from None

    def _call(self, report: Callable[[int, str], None], steps: int, generator, num_images: int, **kwargs):
        """One pipeline call at the output size (the caller holds `_lock`); `report(done_steps, desc)` gets the progress."""

        def on_step(pipe, i, t, tensors):
            report(i + 1, f"SMART step {i + 1}/{steps}")
            return tensors

        report(0, "Encoding the inputs")
        with self._errors():
            return self.pipe(
                height=self.height, width=self.width, num_inference_steps=steps, num_images_per_prompt=num_images,
                generator=generator, callback_on_step_end=on_step, **kwargs,
            )

    def _run(self, progress, steps, seed, num_images: int = 1, **kwargs) -> List[PIL.Image.Image]:
        steps = self._int_in(steps, "Steps", 1, MAX_STEPS)
        seed = self._seed(seed)
        num_images = self._int_in(num_images, "Number of images", 1, MAX_IMAGES)
        import torch

        def report(done: int, desc: str) -> None:
            if progress is not None:
                progress((done, steps), desc=desc, unit="steps")

        with self._lock:
            out = self._call(report, steps, torch.Generator().manual_seed(seed), num_images, **kwargs)
        return list(out.images)

    @staticmethod
    def _gallery(images: List[PIL.Image.Image], seed) -> List[Tuple[PIL.Image.Image, str]]:
        return [(for_display(im), f"seed {int(float(seed))} · #{i + 1}") for i, im in enumerate(images)]

    # -- text-to-image batching
    def _t2i_request(self, prompt, seed, steps, num_images, progress=None) -> T2IRequest:
        """A checked text-to-image request (gr.Error naming the field otherwise; checked in the order of `_run`)."""
        text = self._prompt(prompt, required=True)
        steps = self._int_in(steps, "Steps", 1, MAX_STEPS)
        seed = self._seed(seed)
        num_images = self._int_in(num_images, "Number of images", 1, MAX_IMAGES)
        return T2IRequest(text, seed, steps, num_images, progress=progress)

    @contextlib.contextmanager
    def _per_request_sampling(self, batch: Sequence[T2IRequest]):
        """During one batched call: the scheduler's step runs request by request (rows of the batch), each with the
        request's own seeded generator, so that each request draws the random numbers it draws alone.

        The pipeline takes a single generator per call (a list of per-image generators is refused), and its
        sampler draws one stream for the whole batch, so a request's images would otherwise depend on the other
        requests in its batch. SMART's step treats rows independently apart from those draws, so stepping
        the rows of each request separately gives them exactly the tokens of their own call. A request with
        no masked cell left is passed over without a draw, as the pipeline passes over a call with none left.
        """
        import torch

        from .schedulers.scheduling_smart import SMARTSchedulerOutput

        scheduler = self.pipe.scheduler
        mask_id = scheduler.config.mask_token_id
        step = scheduler.step  # the scheduler's own (bound) step
        generators = [torch.Generator().manual_seed(r.seed) for r in batch]
        bounds = np.cumsum([0] + [r.num_images for r in batch])

        def per_request_step(model_output, timestep, sample, editable=None, generator=None, return_dict=True):
            parts = []
            for g, start, stop in zip(generators, bounds[:-1], bounds[1:]):
                rows = slice(int(start), int(stop))
                if not (sample[rows] == mask_id).any():
                    kept = sample[rows]
                    parts.append((kept, kept.clone(), torch.zeros(kept.shape[:2], device=kept.device)))
                    continue
                parts.append(step(model_output[rows], timestep, sample[rows], editable=None if editable is None else editable[rows],
                                  generator=g, return_dict=False))
            prev, pred, conf = (torch.cat(p) for p in zip(*parts))
            return SMARTSchedulerOutput(prev_sample=prev, pred_original_sample=pred, confidence=conf) if return_dict else (prev, pred, conf)

        shadowed = scheduler.__dict__.get("step", None)
        scheduler.step = per_request_step
        try:
            yield
        finally:
            if shadowed is None:
                del scheduler.step
            else:
                scheduler.step = shadowed

    def _generate(self, batch: List[T2IRequest]) -> None:
        """Runs `batch` (requests with the same steps; the caller holds `_lock`) and stores each request's images or
        error. One request runs exactly as it always has; several share one pipeline call for the tokens, and each
        request's images are then decoded on their own (a batched decode can differ from a lone one in the last bit
        of a few pixels). If a batched call fails, its requests run again one by one, so that each gets its own
        result or message."""
        for r in batch:
            r.batch_size = len(batch)
        self.batch_sizes.append(len(batch))
        steps = batch[0].steps
        if len(batch) == 1:
            r = batch[0]
            import torch

            try:
                r.images = list(self._call(r.report, steps, torch.Generator().manual_seed(r.seed), r.num_images, prompt=r.text).images)
            except gr.Error as e:
                r.error = e
            return
        if any(r.steps != steps for r in batch):
            raise ValueError("a text-to-image batch must hold requests with the same number of steps")

        def report(done: int, desc: str) -> None:
            for r in batch:
                r.report(done, desc)

        try:
            with self._per_request_sampling(batch):
                out = self._call(report, steps, None, 1, prompt=[r.text for r in batch for _ in range(r.num_images)],
                                 output_type="tokens")
            images = []
            start = 0
            with self._errors():
                for r in batch:  # decoded per request, as its own call decodes it
                    tokens = out.tokens[start:start + r.num_images]
                    start += r.num_images
                    images.append(postprocess(self.canvas.crop(self.pipe.decode_tokens(tokens, side=self.canvas.side).cpu()), "pil"))
        except gr.Error as e:
            logger.warning("studio: a batch of %d text-to-image requests failed (%s); running them one by one", len(batch), e)
            self.batch_sizes.pop()
            for r in batch:
                self._generate([r])
            return
        for r, ims in zip(batch, images):
            r.images = list(ims)

    def _take_batch(self, first: T2IRequest) -> List[T2IRequest]:
        """The requests to run with `first` (the oldest waiting one), removed from the queue: those with its steps, in
        arrival order, up to `max_batch_size` requests and `MAX_BATCH_IMAGES` images. While it holds fewer requests
        than there are active users with its steps, it waits up to `batch_wait` seconds for theirs."""
        deadline = time.monotonic() + self.batch_wait
        with self._queue:
            while True:
                batch, images = [], 0
                for r in self._pending:
                    if r is first or (r.steps == first.steps and len(batch) < self.max_batch_size
                                      and images + r.num_images <= MAX_BATCH_IMAGES):
                        batch.append(r)
                        images += r.num_images
                expected = min(self.max_batch_size, sum(steps == first.steps for _, steps in self._active.values()))
                left = deadline - time.monotonic()
                if len(batch) >= expected or left <= 0:
                    break
                self._queue.wait(left)
            for r in batch:
                self._pending.remove(r)
        return batch

    def _submit(self, request: T2IRequest, user: Any = None) -> T2IRequest:
        """Queues `request` (from `user`: a Gradio session; None = the calling thread) and returns once it is done.
        The oldest waiting request's thread runs the next batch (holding the pipeline lock, so that other tabs' calls
        take turns with it); the others wait for their result."""
        request.context = contextvars.copy_context()
        now = time.monotonic()
        with self._queue:
            self._active = {u: v for u, v in self._active.items() if now - v[0] < ACTIVE_WINDOW}
            self._active[("thread", threading.get_ident()) if user is None else user] = (now, request.steps)
            self._pending.append(request)
            self._queue.notify_all()
            while not request.done:
                if not self._leader_active and self._pending and self._pending[0] is request:
                    self._leader_active = True
                    break
                self._queue.wait()
        if request.done:
            return request
        batch = [request]
        try:
            with self._lock:
                batch = self._take_batch(request)
                self._generate(batch)
        except BaseException as e:  # noqa: BLE001 - never leave the batch's other users waiting
            for r in batch:
                if r.images is None and r.error is None:
                    r.error = e if isinstance(e, gr.Error) else gr.Error(f"Generation failed ({type(e).__name__}: {e}). Try again.")
            raise
        finally:
            with self._queue:
                for r in batch:
                    r.done = True
                    if r in self._pending:  # only when the batch could not be taken
                        self._pending.remove(r)
                self._leader_active = False
                self._queue.notify_all()
        return request

    # -- tabs
    def text_to_image(self, prompt, seed, steps, num_images, progress=gr.Progress(), request: Optional[gr.Request] = None):
        """Text-to-image: returns (gallery items, the images at the output size). Requests that wait at the same
        time share a pipeline call (see `Studio`); each gets the images it would get alone. `request` (Gradio's)
        tells users apart."""
        session = getattr(request, "session_hash", None)
        job = self._submit(self._t2i_request(prompt, seed, steps, num_images, progress),
                           user=None if session is None else ("session", session))
        if job.error is not None:
            raise job.error
        return self._gallery(job.images, job.seed), job.images

    def text_to_image_batch(self, requests: Sequence[Sequence[Any]]) -> List[Union[Tuple[list, List[PIL.Image.Image]], gr.Error]]:
        """The batched text-to-image handler, without the queue: `requests` is a list of `(prompt, seed, steps,
        num_images)` (the arguments of `text_to_image`). Returns, in order, `(gallery items, images)` for each
        request, or the `gr.Error` that says what is wrong with it (other requests still run). Requests with the same
        steps share pipeline calls of up to `max_batch_size` requests; each gets the images of its own call."""
        outcomes: List[Any] = [None] * len(requests)
        groups: Dict[int, List[Tuple[int, T2IRequest]]] = {}
        for i, values in enumerate(requests):
            try:
                if not isinstance(values, (list, tuple)) or len(values) != 4:
                    raise gr.Error(f"Request {i + 1}: give (description, seed, steps, number of images); got {values!r}.")
                r = self._t2i_request(*values)
            except gr.Error as e:
                outcomes[i] = e
                continue
            groups.setdefault(r.steps, []).append((i, r))
        for group in groups.values():
            chunk: List[Tuple[int, T2IRequest]] = []
            for j, (i, r) in enumerate(group):
                chunk.append((i, r))
                images = sum(q.num_images for _, q in chunk)
                nxt = group[j + 1][1].num_images if j + 1 < len(group) else None
                if len(chunk) == self.max_batch_size or nxt is None or images + nxt > MAX_BATCH_IMAGES:
                    with self._lock:
                        self._generate([q for _, q in chunk])
                    for k, q in chunk:
                        outcomes[k] = q.error if q.error is not None else (self._gallery(q.images, q.seed), q.images)
                    chunk = []
        return outcomes

    def inpaint(self, editor_value, prompt, mask_preset, seed, steps, progress=gr.Progress()):
        """Inpainting / text-guided local editing of the painted (or preset) region."""
        image = self._editor_image(editor_value, "image to edit")
        mask = self._mask(editor_value, mask_preset, "region to regenerate")
        images = self._run(progress, steps, seed, prompt=self._prompt(prompt, required=False), image=image, mask_image=mask)
        return self._gallery(images, seed), images

    def reference_edit(self, patch, left, top, right, bottom, prompt, base, seed, steps, progress=gr.Progress()):
        """Local editing with a reference patch placed by a box (on a blank canvas, or inside `base`'s box)."""
        patch = load_image(patch, "reference patch")
        if patch is None:
            raise gr.Error("Upload a reference patch (the detail to place, e.g. a pocket or a print) first.")
        box = self._box(left, top, right, bottom)
        kwargs: Dict[str, Any] = {"reference_images": [(patch, box)]}
        base = load_image(base, "base garment")
        if base is not None:
            kwargs.update(image=self._fit(base), mask_image=self._box_mask(box))
        images = self._run(progress, steps, seed, prompt=self._prompt(prompt, required=False), **kwargs)
        return self._gallery(images, seed), images

    def style_mix(self, base_editor, style, mask_preset, seed, steps, progress=gr.Progress()):
        """Style mixing: the masked region comes from `style`, the rest from the base, the seam is refined."""
        base = self._editor_image(base_editor, "base garment")
        style = load_image(style, "style garment")
        if style is None:
            raise gr.Error("Upload the second garment (the one that supplies the masked region) first.")
        mask = self._mask(base_editor, mask_preset, "region to take from the second garment")
        images = self._run(progress, steps, seed, image=base, style_image=self._fit(style), mask_image=mask)
        return self._gallery(images, seed), images

    def outpaint(self, image, left, top, right, bottom, prompt, seed, steps, progress=gr.Progress()):
        """Outpainting: the image is fitted into the box (aspect kept, on white), everything around it is generated."""
        image = load_image(image, "image to extend")
        if image is None:
            raise gr.Error("No image to extend: upload an image first (or send one from the Text to image tab).")
        box = self._box(left, top, right, bottom)
        if self.snap(box) == (0, 0, self.width, self.height):
            raise gr.Error(
                f"The box covers the whole {self.width}x{self.height} image (the model widens boxes to its "
                f"{self.canvas.cell}-px cells), so there is nothing around it to generate; make it smaller."
            )
        images = self._run(progress, steps, seed, prompt=self._prompt(prompt, required=False), image=image, image_box=box)
        return self._gallery(images, seed), images

    # -- box helpers (None while the box is invalid: the run button then explains what is wrong)
    def preview_reference(self, patch, left, top, right, bottom, base=None):
        """The output with the patch stretched into the box the model uses (on `base` when given), outlined."""
        try:
            box = self.snap(self._box(left, top, right, bottom))
            return box_preview(load_image(base), box, self.width, self.height, patch=load_image(patch))
        except gr.Error:
            return None

    def preview_outpaint(self, image, left, top, right, bottom):
        """The output with the image fitted into the box the model uses (aspect kept, on white), outlined."""
        try:
            box = self.snap(self._box(left, top, right, bottom))
            image = load_image(image)
            patch = None if image is None else fit_to(image, box[2] - box[0], box[3] - box[1])
            return box_preview(None, box, self.width, self.height, patch=patch)
        except gr.Error:
            return None


# ---------------------------------------------------------------------------------------------- examples
def load_examples() -> List[Dict[str, str]]:
    """The bundled test-split examples: dicts with 'path' and 'caption' (empty when the folder is missing)."""
    index = os.path.join(EXAMPLES_DIR, "examples.json")
    if not os.path.isfile(index):
        return []
    with open(index, encoding="utf-8") as f:
        entries = json.load(f).get("examples", [])
    out = []
    for e in entries:
        path = os.path.join(EXAMPLES_DIR, e["file"])
        if os.path.isfile(path):
            out.append({"path": path, "caption": e["caption"], "name": os.path.splitext(e["file"])[0]})
    return out


# ---------------------------------------------------------------------------------------------- page
def _seed_steps(prefix: str, default_steps: int = 8):
    with gr.Row():
        seed = gr.Number(value=0, precision=0, label="Seed", minimum=0, elem_id=f"{prefix}-seed")
        steps = gr.Slider(1, MAX_STEPS, value=default_steps, step=1, label="SMART steps", elem_id=f"{prefix}-steps")
    return seed, steps


def _page_style(width: int, height: int):
    """Page CSS (in the document head; Gradio 6 takes `css` only in `launch()`, which callers of `build_app` own):
    result thumbnails with the output's shape instead of squares, so that images are not shrunk to fit a square."""
    css = f".m6-results .thumbnail-item {{ aspect-ratio: {width} / {height}; }}"
    return gr.HTML(head=f"<style>{css}</style>", container=False, padding=False, elem_id="m6-style")


def _result_gallery(**kwargs):
    """A results gallery laid out as a grid (a single result is not stretched to the full width); images are shown
    at their real size (`scale-down`: made smaller only when the column is narrower), as lossless PNG."""
    import inspect

    params = inspect.signature(gr.Gallery.__init__).parameters
    extra = {k: v for k, v in {"fit_columns": False, "preview": False}.items() if k in params}
    return gr.Gallery(format=IMAGE_FORMAT, object_fit="scale-down", elem_classes=["m6-results"], **kwargs, **extra)


def _box_inputs(width: int, height: int, default: str, prefix: str):
    """Four pixel numbers (left, top, right, bottom) on the `width` x `height` output and a preset dropdown that fills them."""
    with gr.Row():
        boxes = [gr.Number(value=v, precision=0, label=f"{n} (px, 0-{limit})", min_width=100, elem_id=f"{prefix}-{n}")
                 for n, v, limit in zip(("left", "top", "right", "bottom"), preset_box(default, width, height),
                                        (width, height, width, height))]
    preset = gr.Dropdown(list(BOX_PRESETS), value=default, label="Box preset (fills the four numbers)", elem_id=f"{prefix}-preset")
    preset.input(lambda p: list(preset_box(p, width, height)), preset, boxes)
    return boxes


def _editor(label: str, elem_id: str, canvas: Tuple[int, int]):
    """A brush editor whose canvas has the output's shape (`canvas` = (width, height)): uploads are fitted into it,
    centred, and the margin around them counts as white, as the model pads photos."""
    return guard_uploads(gr.ImageEditor(
        label=label, type="pil", image_mode="RGBA", sources=("upload", "clipboard"), transforms=(), layers=False,
        canvas_size=canvas, fixed_canvas=True, format=IMAGE_FORMAT, elem_id=elem_id, elem_classes=[UPLOAD_GUARD],
        brush=gr.Brush(default_size=24, colors=["#ff2a6d"], color_mode="fixed"), eraser=gr.Eraser(default_size=24),
    ))


class _Examples:
    """The bundled example images as ``gr.Examples`` rows: a row whose image is missing is dropped (a checkout or
    install without ``studio_examples`` still builds the page); boxes are given as fractions of the output."""

    MISSING = object()

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.captions = load_examples()
        self.paths = {e["name"]: e["path"] for e in self.captions}
        if os.path.isdir(EXAMPLES_DIR) and hasattr(gr, "set_static_paths"):
            gr.set_static_paths(paths=[EXAMPLES_DIR])

    def image(self, name: Optional[str], optional: bool = False):
        """Path of a bundled example image; `MISSING` (row dropped) when absent, None for an intentionally empty input."""
        if name is None and optional:
            return None
        path = self.paths.get(name) or os.path.join(EXAMPLES_DIR, f"{name}.png")
        return path if os.path.isfile(path) else self.MISSING

    def rows(self, rows: List[list]) -> List[list]:
        return [r for r in rows if all(v is not self.MISSING for v in r)]

    def box(self, *fractions: float) -> List[int]:
        return list(fraction_box(fractions, self.width, self.height))

    def add(self, rows: List[list], inputs: list) -> None:
        """A ``gr.Examples`` block of the rows whose images exist (none when no row is left)."""
        rows = self.rows(rows)
        if rows:
            gr.Examples(rows, inputs=inputs, label="Test-split examples")


def _load_studio(pipe, max_batch_size: int, batch_wait: float) -> Studio:
    """The handlers around `pipe` (the shipped default model when None); the settings are checked before a model loads."""
    max_batch_size, batch_wait = check_batch_settings(max_batch_size, batch_wait)
    if pipe is None:
        from .pipelines import M6FashionPipeline

        pipe = M6FashionPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    return Studio(pipe, max_batch_size=max_batch_size, batch_wait=batch_wait)


def _intro(studio: Studio, display: Tuple[int, int]):
    """The page title and what the model makes: output size, display scale, boxes widened to the model's cells."""
    width, height = studio.width, studio.height
    shown = ("results are shown at their real size" if display == (width, height)
             else f"results are upscaled to {display[0]}x{display[1]} for display")
    return gr.Markdown(
        "# M6-Fashion studio\n"
        f"Generate and edit garments with M6-Fashion (KDD'22). The model makes **{width}x{height}** images "
        f"(width x height); {shown}. Masks and boxes are on the {width}x{height} image; boxes are pixels "
        f"(left, top, right, bottom), widened by the model to its {studio.canvas.cell}-px cells. Uploads are "
        "fitted to the image's shape on white, as the model pads photos. Each SMART step re-predicts the least "
        "confident tokens."
    )


def _text_to_image_tab(examples: _Examples) -> SimpleNamespace:
    """Tab "Text to image": prompt, seed, steps, number of images; buttons send the selected result to the edit tabs."""
    with gr.Tab("Text to image", id="t2i"):
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="Description", placeholder="Men Navy Blue Casual Shirt", elem_id="t2i-prompt")
                seed, steps = _seed_steps("t2i")
                num = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Number of images", elem_id="t2i-num")
                run = gr.Button("Generate", variant="primary", elem_id="t2i-run")
                if examples.captions:
                    gr.Examples([[e["caption"]] for e in examples.captions], inputs=[prompt], label="Captions from the test split")
            with gr.Column(scale=2):
                gallery = _result_gallery(label="Results", columns=4, height="auto", elem_id="t2i-gallery")
                with gr.Row():
                    to_inpaint = gr.Button("Edit selected in inpainting", size="sm", elem_id="t2i-to-inpaint")
                    to_mix = gr.Button("Use selected as style-mixing base", size="sm", elem_id="t2i-to-mix")
                    to_outpaint = gr.Button("Use selected for outpainting", size="sm", elem_id="t2i-to-outpaint")
    return SimpleNamespace(prompt=prompt, seed=seed, steps=steps, num=num, run=run, gallery=gallery,
                           to_inpaint=to_inpaint, to_mix=to_mix, to_outpaint=to_outpaint)


def _inpaint_tab(examples: _Examples, display: Tuple[int, int]) -> SimpleNamespace:
    """Tab "Inpainting": a painted (or preset) region of the image is regenerated, optionally text-guided."""
    with gr.Tab("Inpainting", id="inpaint"):
        with gr.Row():
            with gr.Column(scale=1):
                editor = _editor("Image: paint the region to regenerate", "inpaint-editor", display)
                prompt = gr.Textbox(label="Description of the new region (optional: text-guided editing)",
                                    placeholder="Men Red Casual Shirt", elem_id="inpaint-prompt")
                preset = gr.Radio(list(MASK_PRESETS), value="painted", label="Region", elem_id="inpaint-preset")
                seed, steps = _seed_steps("inpaint")
                run = gr.Button("Inpaint", variant="primary", elem_id="inpaint-run")
            with gr.Column(scale=1):
                gallery = _result_gallery(label="Edited", columns=2, height="auto", elem_id="inpaint-gallery")
        examples.add([[examples.image("red_tshirt"), "Basics Men Navy Blue T-shirt", "lower half"],
                      [examples.image("navy_top"), "Women Pink Top", "upper half"]], [editor, prompt, preset])
    return SimpleNamespace(editor=editor, prompt=prompt, preset=preset, seed=seed, steps=steps, run=run, gallery=gallery)


def _preview_and_results(prefix: str, preview_label: str, results_label: str):
    """The right column of the box tabs: where the image goes (updated live) and the results gallery."""
    with gr.Column(scale=1):
        preview = gr.Image(label=preview_label, interactive=False, format=IMAGE_FORMAT, elem_id=f"{prefix}-preview")
        gallery = _result_gallery(label=results_label, columns=2, height="auto", elem_id=f"{prefix}-gallery")
    return preview, gallery


def _reference_tab(examples: _Examples) -> SimpleNamespace:
    """Tab "Reference patch": a patch placed at a pixel box, on a new garment or on an uploaded one."""
    with gr.Tab("Reference patch", id="reference"):
        with gr.Row():
            with gr.Column(scale=1):
                patch = _image_input(label="Reference patch", elem_id="ref-patch")
                box = _box_inputs(examples.width, examples.height, "chest", prefix="ref-box")
                prompt = gr.Textbox(label="Description (optional)", elem_id="ref-prompt")
                base = _image_input(label="Garment to edit (optional: only the box changes)", elem_id="ref-base")
                seed, steps = _seed_steps("ref")
                run = gr.Button("Edit with the patch", variant="primary", elem_id="ref-run")
            preview, gallery = _preview_and_results("ref", "Where the patch goes (the box widened to the model's cells)", "Edited")
        examples.add([
            [examples.image("checked_patch"), *examples.box(0.25, 0.375, 0.75, 0.75), "Lee Men Checks Brown Shirt",
             examples.image(None, optional=True)],
            [examples.image("stripe_patch"), *examples.box(0.375, 0.375, 0.625, 0.75), "Men Striped T-shirt",
             examples.image("red_tshirt")],
        ], [patch, *box, prompt, base])
    return SimpleNamespace(patch=patch, box=box, prompt=prompt, base=base, seed=seed, steps=steps, run=run,
                           preview=preview, gallery=gallery)


def _mix_tab(examples: _Examples, display: Tuple[int, int]) -> SimpleNamespace:
    """Tab "Style mixing": a painted (or preset) region of the base garment is taken from a second garment."""
    with gr.Tab("Style mixing", id="mix"):
        with gr.Row():
            with gr.Column(scale=1):
                base = _editor("Base garment: paint the region to take from the second garment", "mix-base", display)
                style = _image_input(label="Second garment", elem_id="mix-style")
                preset = gr.Radio(list(MASK_PRESETS), value="lower half", label="Region taken from the second garment")
                seed, steps = _seed_steps("mix")
                run = gr.Button("Mix", variant="primary", elem_id="mix-run")
            with gr.Column(scale=1):
                gallery = _result_gallery(label="Mixed", columns=2, height="auto", elem_id="mix-gallery")
        examples.add([[examples.image("red_tshirt"), examples.image("striped_polo"), "lower half"],
                      [examples.image("pink_tshirt"), examples.image("navy_top"), "left half"]], [base, style, preset])
    return SimpleNamespace(base=base, style=style, preset=preset, seed=seed, steps=steps, run=run, gallery=gallery)


def _outpaint_tab(examples: _Examples) -> SimpleNamespace:
    """Tab "Outpainting": the image is placed in a pixel box of the output and the rest is generated."""
    with gr.Tab("Outpainting", id="outpaint"):
        with gr.Row():
            with gr.Column(scale=1):
                image = _image_input(label="Image to extend", elem_id="out-image")
                box = _box_inputs(examples.width, examples.height, "centre", prefix="out-box")
                prompt = gr.Textbox(label="Description (optional)", elem_id="out-prompt")
                seed, steps = _seed_steps("out")
                run = gr.Button("Outpaint", variant="primary", elem_id="out-run")
            preview, gallery = _preview_and_results(
                "out", "Where the image goes (the box widened to the model's cells; the rest is generated)", "Extended")
        examples.add([[examples.image("shoes"), *examples.box(0.25, 0.25, 0.75, 0.75), "Puma Men Graffiti FX Shoes"],
                      [examples.image("capri"), *examples.box(0, 0.25, 0.5, 1), "Women Black Capri"]], [image, *box, prompt])
    return SimpleNamespace(image=image, box=box, prompt=prompt, seed=seed, steps=steps, run=run, preview=preview, gallery=gallery)


def _connect_text_to_image(studio: Studio, t2i: SimpleNamespace, last, selected, tabs, targets: Dict[str, Any]) -> None:
    """Generate (button or Enter), remember the selected result, and send it to the tab `targets[tab id]`."""
    inputs = [t2i.prompt, t2i.seed, t2i.steps, t2i.num]
    # with batching, up to two batches of requests may be in the handler at once (one running, one gathering:
    # Studio's queue forms the batches); without, text-to-image takes turns with the other tabs as they do
    queue = ({"concurrency_id": "text_to_image", "concurrency_limit": 2 * studio.max_batch_size}
             if studio.max_batch_size > 1 else {"concurrency_id": "pipeline"})
    t2i.run.click(studio.text_to_image, inputs, [t2i.gallery, last], api_name="text_to_image", **queue)
    t2i.prompt.submit(studio.text_to_image, inputs, [t2i.gallery, last], api_visibility="undocumented", **queue)
    t2i.run.click(lambda: 0, None, selected)

    def on_select(evt: gr.SelectData):
        return evt.index if isinstance(evt.index, int) else 0

    t2i.gallery.select(on_select, None, selected)

    def pick(images, index, target):
        if not images:
            raise gr.Error("Generate an image first.")
        image = for_display(images[min(int(index or 0), len(images) - 1)])
        return image, gr.Tabs(selected=target)

    t2i.to_inpaint.click(lambda im, i: pick(im, i, "inpaint"), [last, selected], [targets["inpaint"], tabs])
    t2i.to_mix.click(lambda im, i: pick(im, i, "mix"), [last, selected], [targets["mix"], tabs])
    t2i.to_outpaint.click(lambda im, i: pick(im, i, "outpaint"), [last, selected], [targets["outpaint"], tabs])


def _connect_edits(studio: Studio, inp: SimpleNamespace, ref: SimpleNamespace, mix: SimpleNamespace,
                   out: SimpleNamespace, scratch) -> None:
    """The edit tabs' buttons (one pipeline call at a time, shared with each other) and the live box previews."""
    inp.run.click(studio.inpaint, [inp.editor, inp.prompt, inp.preset, inp.seed, inp.steps], [inp.gallery, scratch],
                  concurrency_id="pipeline")

    ref_inputs = [ref.patch, *ref.box, ref.prompt, ref.base, ref.seed, ref.steps]
    ref.run.click(studio.reference_edit, ref_inputs, [ref.gallery, scratch], concurrency_id="pipeline")
    gr.on([c.change for c in (ref.patch, ref.base, *ref.box)], studio.preview_reference, [ref.patch, *ref.box, ref.base],
          ref.preview, show_progress="hidden", trigger_mode="always_last")

    mix.run.click(studio.style_mix, [mix.base, mix.style, mix.preset, mix.seed, mix.steps], [mix.gallery, scratch],
                  concurrency_id="pipeline")

    out.run.click(studio.outpaint, [out.image, *out.box, out.prompt, out.seed, out.steps], [out.gallery, scratch],
                  concurrency_id="pipeline")
    gr.on([c.change for c in (out.image, *out.box)], studio.preview_outpaint, [out.image, *out.box], out.preview,
          show_progress="hidden", trigger_mode="always_last")


def build_app(pipe=None, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, batch_wait: float = DEFAULT_BATCH_WAIT) -> "gr.Blocks":
    """The studio page around `pipe` (the shipped default model when None). Up to `max_batch_size` text-to-image
    requests share a pipeline call (1 = one request per call, as other tabs); see `Studio` for `batch_wait`."""
    studio = _load_studio(pipe, max_batch_size, batch_wait)
    display = display_size(studio.width, studio.height)
    examples = _Examples(studio.width, studio.height)

    with gr.Blocks(title="M6-Fashion studio") as demo:
        _intro(studio, display)
        last = gr.State([])  # images (output size) of the latest text-to-image result
        selected = gr.State(0)
        scratch = gr.State([])  # images (output size) of the latest edit

        with gr.Tabs() as tabs:
            t2i = _text_to_image_tab(examples)
            inp = _inpaint_tab(examples, display)
            ref = _reference_tab(examples)
            mix = _mix_tab(examples, display)
            out = _outpaint_tab(examples)

        _page_style(studio.width, studio.height)  # last: its (empty) block adds no gap above the page

        _connect_text_to_image(studio, t2i, last, selected, tabs, {"inpaint": inp.editor, "mix": mix.base, "outpaint": out.image})
        _connect_edits(studio, inp, ref, mix, out, scratch)

    demo.queue(default_concurrency_limit=1)
    demo.studio = studio  # the handlers, for tests and scripting
    return demo


@dataclass
class StudioArguments:
    """The options of ``m6-fashion studio``; the batch settings are checked as :func:`check_batch_settings` does."""

    model: Optional[str] = field(default=None, metadata={
        "help": "pipeline folder, Hub id or shipped name (default: m6-fashion-hr, 192x256; m6-fashion-64: 64x64)"})
    port: int = field(default=7860, metadata={"help": "port on 127.0.0.1 (default 7860)"})
    max_batch_size: int = field(default=DEFAULT_MAX_BATCH_SIZE, metadata={"help": (
        f"text-to-image requests of several users that share one pipeline call (1 to {MAX_BATCH_SIZE}; "
        f"1 = no batching; default {DEFAULT_MAX_BATCH_SIZE})")})
    batch_wait: float = field(default=DEFAULT_BATCH_WAIT, metadata={"help": (
        f"seconds a text-to-image batch that is not full waits for more requests while other users are "
        f"active (0 to 10; default {DEFAULT_BATCH_WAIT:g}); a lone user never waits")})

    def __post_init__(self):
        try:
            check_batch_settings(self.max_batch_size, self.batch_wait)
        except ValueError as e:  # the same message, naming the options
            raise ValueError(str(e).replace("max_batch_size", "--max-batch-size").replace("batch_wait", "--batch-wait")) from e


def main(argv: Optional[List[str]] = None) -> None:
    from transformers import HfArgumentParser

    from .errors import parse_arguments

    parser = HfArgumentParser(StudioArguments, prog="m6-fashion studio", formatter_class=argparse.HelpFormatter,
                              description="Start the M6-Fashion studio (a local web page).")
    (args,) = parse_arguments(parser, argv)
    pipe = None
    if args.model:
        from .pipelines import M6FashionPipeline

        pipe = M6FashionPipeline.from_pretrained(args.model)
    build_app(pipe, max_batch_size=args.max_batch_size, batch_wait=args.batch_wait).launch(server_name="127.0.0.1", server_port=args.port)


if __name__ == "__main__":
    main()
