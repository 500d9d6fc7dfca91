"""M6-Fashion studio: a Gradio web app for generating and editing garments.

    m6-fashion studio [--model DIR] [--port N]      # serves on http://127.0.0.1:7860

Tabs follow the paper's workflow: text-to-image, inpainting / text-guided local editing with a painted
mask, local editing with a reference patch placed by a box, style mixing of two garments, outpainting.
Every tab runs `M6FashionPipeline` and reports the SMART passes as progress; bad input (no mask painted,
a box outside the image, an unreadable upload, an empty prompt) is shown as a message in the page.

The studio works at the pipeline's default output size (`pipe.default_size`: 192x256 for the shipped model,
64x64 without its high-resolution decoder): editors have the output's shape, masks and boxes are pixels of the
output, uploads are padded on white to its shape (as the model pads photos), and results are shown at their
real size (small ones upscaled so the long side is `DISPLAY_SIZE`).

`build_app(pipe)` returns the `gr.Blocks` (the shipped model is loaded when `pipe` is None); `Studio`
holds the event handlers, which can also be called directly.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import PIL.Image
import PIL.ImageDraw

try:
    import gradio as gr
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("the studio needs Gradio: pip install 'm6-fashion[studio]'") from e

from .image_processing import array_to_pil, fit_onto, to_rgb

logger = logging.getLogger(__name__)

DISPLAY_SIZE = 256  # outputs smaller than this (the 64x64 model) are upscaled so that their long side is this
IMAGE_FORMAT = "png"  # images the page shows or sends back are lossless (Gradio's default, WebP, is lossy)
MAX_STEPS = 30
MAX_IMAGES = 8
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
    pipeline places an outpainting image in its box, and as padding a photo to the square canvas lines it up)."""
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
class Studio:
    """Event handlers of the studio around one pipeline (calls are serialised: the pipeline is not thread safe).

    Everything is in pixels of the pipeline's default output (`pipe.default_size`; 192x256 for the shipped model):
    masks, boxes and the images handed to the pipeline.
    """

    def __init__(self, pipe):
        self.pipe = pipe
        self.height, self.width = (int(v) for v in pipe.default_size)
        self.canvas = pipe.output_canvas(self.height, self.width)  # where the output lies on the square the model paints
        self._lock = threading.Lock()

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
    def _run(self, progress, steps, seed, num_images: int = 1, **kwargs) -> List[PIL.Image.Image]:
        steps = self._int_in(steps, "Steps", 1, MAX_STEPS)
        seed = self._seed(seed)
        num_images = self._int_in(num_images, "Number of images", 1, MAX_IMAGES)
        import torch

        def on_step(pipe, i, t, tensors):
            if progress is not None:
                progress((i + 1, steps), desc=f"SMART step {i + 1}/{steps}", unit="steps")
            return tensors

        if progress is not None:
            progress((0, steps), desc="Encoding the inputs", unit="steps")
        try:
            with self._lock:
                out = self.pipe(
                    height=self.height, width=self.width, num_inference_steps=steps, num_images_per_prompt=num_images,
                    generator=torch.Generator().manual_seed(seed), callback_on_step_end=on_step, **kwargs,
                )
        except (ValueError, TypeError) as e:
            raise gr.Error(str(e)) from None
        except Exception as e:  # noqa: BLE001 - the page gets a message, the console the traceback
            logger.exception("studio: generation failed")
            raise gr.Error(f"Generation failed ({type(e).__name__}: {e}). The studio is still running; try again.") from None
        return list(out.images)

    @staticmethod
    def _gallery(images: List[PIL.Image.Image], seed) -> List[Tuple[PIL.Image.Image, str]]:
        return [(for_display(im), f"seed {int(float(seed))} · #{i + 1}") for i, im in enumerate(images)]

    # -- tabs
    def text_to_image(self, prompt, seed, steps, num_images, progress=gr.Progress()):
        """Text-to-image: returns (gallery items, the images at the output size)."""
        text = self._prompt(prompt, required=True)
        images = self._run(progress, steps, seed, num_images=num_images, prompt=text)
        return self._gallery(images, seed), images

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


def build_app(pipe=None) -> "gr.Blocks":
    """The studio page around `pipe` (the shipped default model when None)."""
    if pipe is None:
        from .pipelines import M6FashionPipeline

        pipe = M6FashionPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    studio = Studio(pipe)
    width, height = studio.width, studio.height
    display = display_size(width, height)
    examples = load_examples()
    paths = {e["name"]: e["path"] for e in examples}
    if os.path.isdir(EXAMPLES_DIR) and hasattr(gr, "set_static_paths"):
        gr.set_static_paths(paths=[EXAMPLES_DIR])
    missing = object()

    def ex(name, optional: bool = False):
        """Path of a bundled example image; `missing` (row dropped) when absent, None for an intentionally empty input."""
        if name is None and optional:
            return None
        path = paths.get(name) or os.path.join(EXAMPLES_DIR, f"{name}.png")
        return path if os.path.isfile(path) else missing

    def example_rows(rows):
        return [r for r in rows if all(v is not missing for v in r)]

    def box(*fractions):
        return list(fraction_box(fractions, width, height))

    shown = ("results are shown at their real size" if display == (width, height)
             else f"results are upscaled to {display[0]}x{display[1]} for display")

    with gr.Blocks(title="M6-Fashion studio") as demo:
        gr.Markdown(
            "# M6-Fashion studio\n"
            f"Generate and edit garments with M6-Fashion (KDD'22). The model makes **{width}x{height}** images "
            f"(width x height); {shown}. Masks and boxes are on the {width}x{height} image; boxes are pixels "
            f"(left, top, right, bottom), widened by the model to its {studio.canvas.cell}-px cells. Uploads are "
            "fitted to the image's shape on white, as the model pads photos. Each SMART step re-predicts the least "
            "confident tokens."
        )
        last = gr.State([])  # images (output size) of the latest text-to-image result
        selected = gr.State(0)
        scratch = gr.State([])  # images (output size) of the latest edit

        with gr.Tabs() as tabs:
            # ---------------------------------------------------------------- text to image
            with gr.Tab("Text to image", id="t2i"):
                with gr.Row():
                    with gr.Column(scale=1):
                        t2i_prompt = gr.Textbox(label="Description", placeholder="Men Navy Blue Casual Shirt", elem_id="t2i-prompt")
                        t2i_seed, t2i_steps = _seed_steps("t2i")
                        t2i_n = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Number of images", elem_id="t2i-num")
                        t2i_run = gr.Button("Generate", variant="primary", elem_id="t2i-run")
                        if examples:
                            gr.Examples([[e["caption"]] for e in examples], inputs=[t2i_prompt], label="Captions from the test split")
                    with gr.Column(scale=2):
                        t2i_gallery = _result_gallery(label="Results", columns=4, height="auto", elem_id="t2i-gallery")
                        with gr.Row():
                            to_inpaint = gr.Button("Edit selected in inpainting", size="sm", elem_id="t2i-to-inpaint")
                            to_mix = gr.Button("Use selected as style-mixing base", size="sm", elem_id="t2i-to-mix")
                            to_outpaint = gr.Button("Use selected for outpainting", size="sm", elem_id="t2i-to-outpaint")

            # ---------------------------------------------------------------- inpainting
            with gr.Tab("Inpainting", id="inpaint"):
                with gr.Row():
                    with gr.Column(scale=1):
                        inp_editor = _editor("Image: paint the region to regenerate", "inpaint-editor", display)
                        inp_prompt = gr.Textbox(label="Description of the new region (optional: text-guided editing)",
                                                placeholder="Men Red Casual Shirt", elem_id="inpaint-prompt")
                        inp_preset = gr.Radio(list(MASK_PRESETS), value="painted", label="Region", elem_id="inpaint-preset")
                        inp_seed, inp_steps = _seed_steps("inpaint")
                        inp_run = gr.Button("Inpaint", variant="primary", elem_id="inpaint-run")
                    with gr.Column(scale=1):
                        inp_gallery = _result_gallery(label="Edited", columns=2, height="auto", elem_id="inpaint-gallery")
                rows = example_rows([[ex("red_tshirt"), "Basics Men Navy Blue T-shirt", "lower half"],
                                     [ex("navy_top"), "Women Pink Top", "upper half"]])
                if rows:
                    gr.Examples(rows, inputs=[inp_editor, inp_prompt, inp_preset], label="Test-split examples")

            # ---------------------------------------------------------------- reference patch
            with gr.Tab("Reference patch", id="reference"):
                with gr.Row():
                    with gr.Column(scale=1):
                        ref_patch = _image_input(label="Reference patch", elem_id="ref-patch")
                        ref_box = _box_inputs(width, height, "chest", prefix="ref-box")
                        ref_prompt = gr.Textbox(label="Description (optional)", elem_id="ref-prompt")
                        ref_base = _image_input(label="Garment to edit (optional: only the box changes)", elem_id="ref-base")
                        ref_seed, ref_steps = _seed_steps("ref")
                        ref_run = gr.Button("Edit with the patch", variant="primary", elem_id="ref-run")
                    with gr.Column(scale=1):
                        ref_preview = gr.Image(label="Where the patch goes (the box widened to the model's cells)",
                                               interactive=False, format=IMAGE_FORMAT, elem_id="ref-preview")
                        ref_gallery = _result_gallery(label="Edited", columns=2, height="auto", elem_id="ref-gallery")
                rows = example_rows([
                    [ex("checked_patch"), *box(0.25, 0.375, 0.75, 0.75), "Lee Men Checks Brown Shirt", ex(None, optional=True)],
                    [ex("stripe_patch"), *box(0.375, 0.375, 0.625, 0.75), "Men Striped T-shirt", ex("red_tshirt")],
                ])
                if rows:
                    gr.Examples(rows, inputs=[ref_patch, *ref_box, ref_prompt, ref_base], label="Test-split examples")

            # ---------------------------------------------------------------- style mixing
            with gr.Tab("Style mixing", id="mix"):
                with gr.Row():
                    with gr.Column(scale=1):
                        mix_base = _editor("Base garment: paint the region to take from the second garment", "mix-base", display)
                        mix_style = _image_input(label="Second garment", elem_id="mix-style")
                        mix_preset = gr.Radio(list(MASK_PRESETS), value="lower half", label="Region taken from the second garment")
                        mix_seed, mix_steps = _seed_steps("mix")
                        mix_run = gr.Button("Mix", variant="primary", elem_id="mix-run")
                    with gr.Column(scale=1):
                        mix_gallery = _result_gallery(label="Mixed", columns=2, height="auto", elem_id="mix-gallery")
                rows = example_rows([[ex("red_tshirt"), ex("striped_polo"), "lower half"],
                                     [ex("pink_tshirt"), ex("navy_top"), "left half"]])
                if rows:
                    gr.Examples(rows, inputs=[mix_base, mix_style, mix_preset], label="Test-split examples")

            # ---------------------------------------------------------------- outpainting
            with gr.Tab("Outpainting", id="outpaint"):
                with gr.Row():
                    with gr.Column(scale=1):
                        out_image = _image_input(label="Image to extend", elem_id="out-image")
                        out_box = _box_inputs(width, height, "centre", prefix="out-box")
                        out_prompt = gr.Textbox(label="Description (optional)", elem_id="out-prompt")
                        out_seed, out_steps = _seed_steps("out")
                        out_run = gr.Button("Outpaint", variant="primary", elem_id="out-run")
                    with gr.Column(scale=1):
                        out_preview = gr.Image(label="Where the image goes (the box widened to the model's cells; the rest is generated)",
                                               interactive=False, format=IMAGE_FORMAT, elem_id="out-preview")
                        out_gallery = _result_gallery(label="Extended", columns=2, height="auto", elem_id="out-gallery")
                rows = example_rows([[ex("shoes"), *box(0.25, 0.25, 0.75, 0.75), "Puma Men Graffiti FX Shoes"],
                                     [ex("capri"), *box(0, 0.25, 0.5, 1), "Women Black Capri"]])
                if rows:
                    gr.Examples(rows, inputs=[out_image, *out_box, out_prompt], label="Test-split examples")

        _page_style(width, height)  # last: its (empty) block adds no gap above the page

        # ---------------------------------------------------------------- events
        t2i_inputs = [t2i_prompt, t2i_seed, t2i_steps, t2i_n]
        t2i_run.click(studio.text_to_image, t2i_inputs, [t2i_gallery, last], concurrency_id="pipeline")
        t2i_prompt.submit(studio.text_to_image, t2i_inputs, [t2i_gallery, last], concurrency_id="pipeline")
        t2i_run.click(lambda: 0, None, selected)

        def on_select(evt: gr.SelectData):
            return evt.index if isinstance(evt.index, int) else 0

        t2i_gallery.select(on_select, None, selected)

        def pick(images, index, target):
            if not images:
                raise gr.Error("Generate an image first.")
            image = for_display(images[min(int(index or 0), len(images) - 1)])
            return image, gr.Tabs(selected=target)

        to_inpaint.click(lambda im, i: pick(im, i, "inpaint"), [last, selected], [inp_editor, tabs])
        to_mix.click(lambda im, i: pick(im, i, "mix"), [last, selected], [mix_base, tabs])
        to_outpaint.click(lambda im, i: pick(im, i, "outpaint"), [last, selected], [out_image, tabs])

        inp_run.click(studio.inpaint, [inp_editor, inp_prompt, inp_preset, inp_seed, inp_steps], [inp_gallery, scratch],
                      concurrency_id="pipeline")

        ref_inputs = [ref_patch, *ref_box, ref_prompt, ref_base, ref_seed, ref_steps]
        ref_run.click(studio.reference_edit, ref_inputs, [ref_gallery, scratch], concurrency_id="pipeline")
        gr.on([c.change for c in (ref_patch, ref_base, *ref_box)], studio.preview_reference, [ref_patch, *ref_box, ref_base],
              ref_preview, show_progress="hidden", trigger_mode="always_last")

        mix_run.click(studio.style_mix, [mix_base, mix_style, mix_preset, mix_seed, mix_steps], [mix_gallery, scratch],
                      concurrency_id="pipeline")

        out_run.click(studio.outpaint, [out_image, *out_box, out_prompt, out_seed, out_steps], [out_gallery, scratch],
                      concurrency_id="pipeline")
        gr.on([c.change for c in (out_image, *out_box)], studio.preview_outpaint, [out_image, *out_box], out_preview,
              show_progress="hidden", trigger_mode="always_last")

    demo.queue(default_concurrency_limit=1)
    demo.studio = studio  # the handlers, for tests and scripting
    return demo


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="m6-fashion studio", description="Start the M6-Fashion studio (a local web page).")
    parser.add_argument("--model", default=None,
                        help="pipeline folder, Hub id or shipped name (default: m6-fashion-hr, 192x256; m6-fashion-64: 64x64)")
    parser.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860)")
    args = parser.parse_args(argv)
    pipe = None
    if args.model:
        from .pipelines import M6FashionPipeline

        pipe = M6FashionPipeline.from_pretrained(args.model)
    build_app(pipe).launch(server_name="127.0.0.1", server_port=args.port)


if __name__ == "__main__":
    main()
