"""M6-Fashion studio: a Gradio web app for generating and editing garments.

    m6-fashion studio [--model DIR] [--port N]      # serves on http://127.0.0.1:7860

Tabs follow the paper's workflow: text-to-image, inpainting / text-guided local editing with a painted
mask, local editing with a reference patch placed by a box, style mixing of two garments, outpainting.
Every tab runs `M6FashionPipeline` and reports the SMART passes as progress; bad input (no mask painted,
a box outside the canvas, an unreadable upload, an empty prompt) is shown as a message in the page.

`build_app(pipe)` returns the `gr.Blocks` (the shipped model is loaded when `pipe` is None); `Studio`
holds the event handlers, which can also be called directly.
"""

from __future__ import annotations

import argparse
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

from .image_processing import pad_to_square, to_rgb

logger = logging.getLogger(__name__)

DISPLAY_SIZE = 256  # results and editing canvases are shown at this size (the model works on 64x64)
MAX_STEPS = 30
MAX_IMAGES = 8
EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "studio_examples")

MASK_PRESETS = ("painted", "upper half", "lower half", "left half", "right half", "centre")
BOX_PRESETS = {  # fractions of the canvas: (left, top, right, bottom)
    "centre": (0.25, 0.25, 0.75, 0.75),
    "upper half": (0, 0, 1, 0.5),
    "lower half": (0, 0.5, 1, 1),
    "left half": (0, 0, 0.5, 1),
    "right half": (0.5, 0, 1, 1),
    "chest": (0.25, 0.125, 0.75, 0.5),
}


def preset_box(name: str, size: int) -> Tuple[int, int, int, int]:
    """One of `BOX_PRESETS` as a pixel box on the `size` canvas."""
    if name not in BOX_PRESETS:
        raise gr.Error(f"Unknown box preset {name!r}; choose one of: {', '.join(BOX_PRESETS)}.")
    return tuple(int(round(f * size)) for f in BOX_PRESETS[name])


# ---------------------------------------------------------------------------------------------- image helpers
def guard_uploads(component):
    """Makes an image component report an upload PIL cannot read as a clear message in the page (instead of a
    generic error). Wraps the instance's `preprocess`: subclassing Gradio components would make Gradio write
    type stubs next to this module."""
    preprocess = component.preprocess

    def safe_preprocess(payload):
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as e:  # noqa: BLE001 - any decoding failure is the upload's fault
            raise gr.Error(f"Cannot read the uploaded file as an image ({type(e).__name__}). Upload a PNG, JPEG or WebP picture.") from None

    component.preprocess = safe_preprocess
    return component


def _image_input(**kwargs):
    return guard_uploads(gr.Image(type="pil", sources=("upload", "clipboard"), **kwargs))


def load_image(value: Any, what: str = "image") -> Optional[PIL.Image.Image]:
    """A PIL image (RGB) from a PIL image, uint8 array or file path; None stays None; unreadable -> gr.Error."""
    if value is None:
        return None
    try:
        if isinstance(value, PIL.Image.Image):
            im = value
        elif isinstance(value, np.ndarray):
            im = PIL.Image.fromarray(value.astype(np.uint8))
        elif isinstance(value, (str, os.PathLike)):
            im = PIL.Image.open(value)
            im.load()
        else:
            raise TypeError(type(value).__name__)
        return to_rgb(im)
    except Exception as e:  # noqa: BLE001 - reported to the user
        raise gr.Error(f"Cannot read the {what} as an image ({type(e).__name__}: {e}). Upload a PNG, JPEG or WebP picture.") from None


def to_canvas(image: PIL.Image.Image, size: int) -> PIL.Image.Image:
    """Pads an image to a square on white (as the model does) and resizes it to `size`."""
    return pad_to_square(to_rgb(image)).resize((size, size), PIL.Image.BICUBIC)


def for_display(image: PIL.Image.Image, size: int = DISPLAY_SIZE) -> PIL.Image.Image:
    """Upscales a model output (64 px) for the page."""
    return to_rgb(image).resize((size, size), PIL.Image.BICUBIC)


def preset_mask(name: str, size: int) -> PIL.Image.Image:
    """A mask (L, white = change) for one of `MASK_PRESETS` other than 'painted'."""
    boxes = {
        "upper half": (0, 0, size, size // 2),
        "lower half": (0, size // 2, size, size),
        "left half": (0, 0, size // 2, size),
        "right half": (size // 2, 0, size, size),
        "centre": (size // 4, size // 4, size - size // 4, size - size // 4),
    }
    if name not in boxes:
        raise gr.Error(f"Unknown mask preset {name!r}; choose one of: {', '.join(MASK_PRESETS)}.")
    mask = PIL.Image.new("L", (size, size), 0)
    mask.paste(255, boxes[name])
    return mask


def painted_mask(editor_value: Optional[Dict[str, Any]], size: int) -> Optional[PIL.Image.Image]:
    """The painted strokes of an image-editor value as a `size` px mask (white = painted), or None if nothing is painted.

    The strokes are padded to a square like the image, then reduced so that a cell is masked when any of its
    pixels was painted (thin strokes are not lost).
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
        a = np.asarray(to_rgb(load_image_rgba(background)), dtype=np.int16)
        b = np.asarray(to_rgb(load_image_rgba(composite)), dtype=np.int16)
        if a.shape != b.shape:
            return None
        painted = np.abs(a - b).max(-1) > 8
    if not painted.any():
        return None
    h, w = painted.shape
    side = max(h, w)
    square = np.zeros((side, side), dtype=bool)
    square[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = painted
    coverage = PIL.Image.fromarray(square.astype(np.uint8) * 255).resize((size, size), PIL.Image.BOX)
    return PIL.Image.fromarray(((np.asarray(coverage) > 0) * 255).astype(np.uint8))


def load_image_rgba(value: Any) -> PIL.Image.Image:
    if isinstance(value, (str, os.PathLike)):
        value = PIL.Image.open(value)
    elif isinstance(value, np.ndarray):
        value = PIL.Image.fromarray(value.astype(np.uint8))
    return value.convert("RGBA")


def parse_box(left, top, right, bottom, size: int) -> Tuple[int, int, int, int]:
    """Four numbers from the page -> a pixel box on the `size` canvas; anything else -> gr.Error."""
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
    if not (0 <= l < r <= size and 0 <= t < b <= size):
        raise gr.Error(
            f"The box ({l}, {t}, {r}, {b}) is outside the {size}x{size} canvas or empty: "
            f"use 0 <= left < right <= {size} and 0 <= top < bottom <= {size}."
        )
    return l, t, r, b


def box_preview(image: Optional[PIL.Image.Image], box: Sequence[int], size: int, patch: Optional[PIL.Image.Image] = None,
                display: int = DISPLAY_SIZE) -> PIL.Image.Image:
    """Where a box lies on the canvas: `image` (or white) with `patch` pasted into the box and the box outlined."""
    canvas = to_canvas(image, display) if image is not None else PIL.Image.new("RGB", (display, display), "white")
    scale = display / size
    l, t, r, b = (int(round(v * scale)) for v in box)
    if patch is not None:
        canvas.paste(to_rgb(patch).resize((r - l, b - t), PIL.Image.BICUBIC), (l, t))
    PIL.ImageDraw.Draw(canvas).rectangle((l, t, r - 1, b - 1), outline=(230, 30, 60), width=3)
    return canvas


# ---------------------------------------------------------------------------------------------- handlers
class Studio:
    """Event handlers of the studio around one pipeline (calls are serialised: the pipeline is not thread safe)."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.size = int(pipe.sample_size)
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

    def _mask(self, editor_value, preset: str, what: str) -> PIL.Image.Image:
        if preset and preset != "painted":
            return preset_mask(preset, self.size)
        mask = painted_mask(editor_value, self.size)
        if mask is None:
            raise gr.Error(f"No mask painted: paint over the {what} with the brush, or pick a preset region instead of 'painted'.")
        return mask

    def _editor_image(self, editor_value, what: str) -> PIL.Image.Image:
        background = (editor_value or {}).get("background") if isinstance(editor_value, dict) else editor_value
        image = load_image(background, what)
        if image is None:
            raise gr.Error(f"No {what}: upload an image first (or send one from the Text to image tab).")
        return to_canvas(image, self.size)

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
                    num_inference_steps=steps, num_images_per_prompt=num_images,
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
        """Text-to-image: returns (gallery items, the 64 px images)."""
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
        box = parse_box(left, top, right, bottom, self.size)
        kwargs: Dict[str, Any] = {"reference_images": [(patch, box)]}
        base = load_image(base, "base garment")
        if base is not None:
            mask = PIL.Image.new("L", (self.size, self.size), 0)
            mask.paste(255, box)
            kwargs.update(image=to_canvas(base, self.size), mask_image=mask)
        images = self._run(progress, steps, seed, prompt=self._prompt(prompt, required=False), **kwargs)
        return self._gallery(images, seed), images

    def style_mix(self, base_editor, style, mask_preset, seed, steps, progress=gr.Progress()):
        """Style mixing: the masked region comes from `style`, the rest from the base, the seam is refined."""
        base = self._editor_image(base_editor, "base garment")
        style = load_image(style, "style garment")
        if style is None:
            raise gr.Error("Upload the second garment (the one that supplies the masked region) first.")
        mask = self._mask(base_editor, mask_preset, "region to take from the second garment")
        images = self._run(progress, steps, seed, image=base, style_image=to_canvas(style, self.size), mask_image=mask)
        return self._gallery(images, seed), images

    def outpaint(self, image, left, top, right, bottom, prompt, seed, steps, progress=gr.Progress()):
        """Outpainting: the image is placed in the box, everything around it is generated."""
        image = load_image(image, "image to extend")
        if image is None:
            raise gr.Error("No image to extend: upload an image first (or send one from the Text to image tab).")
        box = parse_box(left, top, right, bottom, self.size)
        if box == (0, 0, self.size, self.size):
            raise gr.Error("The box covers the whole canvas, so there is nothing around it to generate; make it smaller.")
        images = self._run(progress, steps, seed, prompt=self._prompt(prompt, required=False), image=image, image_box=box)
        return self._gallery(images, seed), images

    def preview(self, image, left, top, right, bottom, patch=None):
        """Box helper: the canvas with the box outlined (and the patch in it); None while the box is invalid
        (the run button then explains what is wrong)."""
        try:
            box = parse_box(left, top, right, bottom, self.size)
            return box_preview(load_image(image), box, self.size, patch=load_image(patch))
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


def _result_gallery(**kwargs):
    """A results gallery laid out as a grid (a single result is not stretched to the full width)."""
    import inspect

    params = inspect.signature(gr.Gallery.__init__).parameters
    extra = {k: v for k, v in {"fit_columns": False, "preview": False}.items() if k in params}
    return gr.Gallery(**kwargs, **extra)


def _box_inputs(size: int, default: str, prefix: str):
    with gr.Row():
        boxes = [gr.Number(value=v, precision=0, label=f"{n} (px)", elem_id=f"{prefix}-{n}")
                 for n, v in zip(("left", "top", "right", "bottom"), preset_box(default, size))]
    preset = gr.Dropdown(list(BOX_PRESETS), value=default, label="Box preset (fills the four numbers)", elem_id=f"{prefix}-preset")
    preset.input(lambda p: list(preset_box(p, size)), preset, boxes)
    return boxes


def _editor(label: str, elem_id: str):
    return guard_uploads(gr.ImageEditor(
        label=label, type="pil", image_mode="RGBA", sources=("upload", "clipboard"), transforms=(), layers=False,
        canvas_size=(DISPLAY_SIZE, DISPLAY_SIZE), fixed_canvas=True, elem_id=elem_id,
        brush=gr.Brush(default_size=24, colors=["#ff2a6d"], color_mode="fixed"), eraser=gr.Eraser(default_size=24),
    ))


def build_app(pipe=None) -> "gr.Blocks":
    """The studio page around `pipe` (the shipped default model when None)."""
    if pipe is None:
        from .pipelines import M6FashionPipeline

        pipe = M6FashionPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    studio = Studio(pipe)
    size = studio.size
    examples = load_examples()
    if os.path.isdir(EXAMPLES_DIR) and hasattr(gr, "set_static_paths"):
        gr.set_static_paths(paths=[EXAMPLES_DIR])
    missing = object()

    def ex(name, optional: bool = False):
        """Path of a bundled example image; `missing` (row dropped) when absent, None for an intentionally empty input."""
        if name is None and optional:
            return None
        path = os.path.join(EXAMPLES_DIR, f"{name}.png")
        return path if os.path.isfile(path) else missing

    def example_rows(rows):
        return [r for r in rows if all(v is not missing for v in r)]

    with gr.Blocks(title="M6-Fashion studio") as demo:
        gr.Markdown(
            "# M6-Fashion studio\n"
            f"Generate and edit garments with M6-Fashion (KDD'22). The model works on a {size}x{size} canvas; "
            f"results are upscaled to {DISPLAY_SIZE} px for display. Boxes are pixels on the {size}x{size} canvas "
            "as (left, top, right, bottom). Each SMART step re-predicts the least confident tokens."
        )
        last = gr.State([])  # 64 px images of the latest text-to-image result
        selected = gr.State(0)
        scratch = gr.State([])  # 64 px images of the latest edit

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
                        t2i_gallery = _result_gallery(label="Results", columns=4, height="auto", object_fit="contain", elem_id="t2i-gallery")
                        with gr.Row():
                            to_inpaint = gr.Button("Edit selected in inpainting", size="sm", elem_id="t2i-to-inpaint")
                            to_mix = gr.Button("Use selected as style-mixing base", size="sm", elem_id="t2i-to-mix")
                            to_outpaint = gr.Button("Use selected for outpainting", size="sm", elem_id="t2i-to-outpaint")

            # ---------------------------------------------------------------- inpainting
            with gr.Tab("Inpainting", id="inpaint"):
                with gr.Row():
                    with gr.Column(scale=1):
                        inp_editor = _editor("Image: paint the region to regenerate", "inpaint-editor")
                        inp_prompt = gr.Textbox(label="Description of the new region (optional: text-guided editing)",
                                                placeholder="Men Red Casual Shirt", elem_id="inpaint-prompt")
                        inp_preset = gr.Radio(list(MASK_PRESETS), value="painted", label="Region", elem_id="inpaint-preset")
                        inp_seed, inp_steps = _seed_steps("inpaint")
                        inp_run = gr.Button("Inpaint", variant="primary", elem_id="inpaint-run")
                    with gr.Column(scale=1):
                        inp_gallery = _result_gallery(label="Edited", columns=2, height="auto", object_fit="contain", elem_id="inpaint-gallery")
                rows = example_rows([[ex("red_tshirt"), "Basics Men Navy Blue T-shirt", "lower half"],
                                     [ex("navy_top"), "Women Pink Top", "upper half"]])
                if rows:
                    gr.Examples(rows, inputs=[inp_editor, inp_prompt, inp_preset], label="Test-split examples")

            # ---------------------------------------------------------------- reference patch
            with gr.Tab("Reference patch", id="reference"):
                with gr.Row():
                    with gr.Column(scale=1):
                        ref_patch = _image_input(label="Reference patch", elem_id="ref-patch")
                        ref_box = _box_inputs(size, "chest", prefix="ref-box")
                        ref_prompt = gr.Textbox(label="Description (optional)", elem_id="ref-prompt")
                        ref_base = _image_input(label="Garment to edit (optional: only the box changes)", elem_id="ref-base")
                        ref_seed, ref_steps = _seed_steps("ref")
                        ref_run = gr.Button("Edit with the patch", variant="primary", elem_id="ref-run")
                    with gr.Column(scale=1):
                        ref_preview = gr.Image(label="Where the patch goes", interactive=False, elem_id="ref-preview")
                        ref_gallery = _result_gallery(label="Edited", columns=2, height="auto", object_fit="contain", elem_id="ref-gallery")
                rows = example_rows([[ex("checked_patch"), 16, 24, 48, 48, "Lee Men Checks Brown Shirt", ex(None, optional=True)],
                                     [ex("stripe_patch"), 20, 24, 44, 48, "Men Striped T-shirt", ex("red_tshirt")]])
                if rows:
                    gr.Examples(rows, inputs=[ref_patch, *ref_box, ref_prompt, ref_base], label="Test-split examples")

            # ---------------------------------------------------------------- style mixing
            with gr.Tab("Style mixing", id="mix"):
                with gr.Row():
                    with gr.Column(scale=1):
                        mix_base = _editor("Base garment: paint the region to take from the second garment", "mix-base")
                        mix_style = _image_input(label="Second garment", elem_id="mix-style")
                        mix_preset = gr.Radio(list(MASK_PRESETS), value="lower half", label="Region taken from the second garment")
                        mix_seed, mix_steps = _seed_steps("mix")
                        mix_run = gr.Button("Mix", variant="primary", elem_id="mix-run")
                    with gr.Column(scale=1):
                        mix_gallery = _result_gallery(label="Mixed", columns=2, height="auto", object_fit="contain", elem_id="mix-gallery")
                rows = example_rows([[ex("red_tshirt"), ex("striped_polo"), "lower half"],
                                     [ex("pink_tshirt"), ex("navy_top"), "left half"]])
                if rows:
                    gr.Examples(rows, inputs=[mix_base, mix_style, mix_preset], label="Test-split examples")

            # ---------------------------------------------------------------- outpainting
            with gr.Tab("Outpainting", id="outpaint"):
                with gr.Row():
                    with gr.Column(scale=1):
                        out_image = _image_input(label="Image to extend", elem_id="out-image")
                        out_box = _box_inputs(size, "centre", prefix="out-box")
                        out_prompt = gr.Textbox(label="Description (optional)", elem_id="out-prompt")
                        out_seed, out_steps = _seed_steps("out")
                        out_run = gr.Button("Outpaint", variant="primary", elem_id="out-run")
                    with gr.Column(scale=1):
                        out_preview = gr.Image(label="Where the image goes (the rest is generated)", interactive=False, elem_id="out-preview")
                        out_gallery = _result_gallery(label="Extended", columns=2, height="auto", object_fit="contain", elem_id="out-gallery")
                rows = example_rows([[ex("shoes"), 16, 16, 48, 48, "Puma Men Graffiti FX Shoes"],
                                     [ex("capri"), 0, 16, 32, 64, "Women Black Capri"]])
                if rows:
                    gr.Examples(rows, inputs=[out_image, *out_box, out_prompt], label="Test-split examples")

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
        gr.on([c.change for c in (ref_patch, ref_base, *ref_box)],
              lambda p, l, t, r, b, base: studio.preview(base, l, t, r, b, patch=p), [ref_patch, *ref_box, ref_base],
              ref_preview, show_progress="hidden", trigger_mode="always_last")

        mix_run.click(studio.style_mix, [mix_base, mix_style, mix_preset, mix_seed, mix_steps], [mix_gallery, scratch],
                      concurrency_id="pipeline")

        out_run.click(studio.outpaint, [out_image, *out_box, out_prompt, out_seed, out_steps], [out_gallery, scratch],
                      concurrency_id="pipeline")
        gr.on([c.change for c in (out_image, *out_box)], lambda im, l, t, r, b: studio.preview(None, l, t, r, b, patch=im),
              [out_image, *out_box], out_preview,
              show_progress="hidden", trigger_mode="always_last")

    demo.queue(default_concurrency_limit=1)
    demo.studio = studio  # the handlers, for tests and scripting
    return demo


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="m6-fashion studio", description="Start the M6-Fashion studio (a local web page).")
    parser.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the shipped model)")
    parser.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860)")
    args = parser.parse_args(argv)
    pipe = None
    if args.model:
        from .pipelines import M6FashionPipeline

        pipe = M6FashionPipeline.from_pretrained(args.model)
    build_app(pipe).launch(server_name="127.0.0.1", server_port=args.port)


if __name__ == "__main__":
    main()
