"""The rules every generation call obeys, and the invariants the parts of a model share.

`M6FashionPipeline.check_inputs` (torch) and `M6FashionRuntime.__call__` (ONNX Runtime) both call these
functions before any image is encoded or any token generated, so both front ends accept exactly the same
arguments and refuse the others with the same message, naming the argument and the accepted values. What
differs between the front ends is passed in: the image types they read (`image_types`, described by `kinds`),
the output types they return (`output_types`), and their canvas (an `m6_fashion_core.canvas.OutputCanvas`).

No argument is silently ignored: one that would change nothing in its combination (guidance without a prompt
or reference patches, `refine_ratio` without style mixing, `blend_pixels=False` without pixels to paste back,
`context_dropout_steps` outside text-guided inpainting, an `image_box` that leaves nothing to generate) is
refused.

`component_mismatches` lists what does not fit between the transformer, the image tokenizer, the scheduler
and the text tokenizer (grid, codebook, image MASK code, PQ groups, text vocabulary); the pipeline checks it
when it is assembled, the runtime when it loads a bundle.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .sampling import check_num_inference_steps, check_temperature

# share of the SMART passes that, by default, hide the kept tokens in text-guided inpainting: 8 of 10 passes
# draw the asked colour in 70% of the `bench_words_and_masks.py inpainting` cases, against 2% with no pass
CONTEXT_DROPOUT_SHARE = 0.8
MAX_IMAGES_PER_CALL = 64  # prompts x num_images_per_prompt; bounds memory (one batch of 64 needs ~2 GB on CPU)
MAX_GUIDANCE_SCALE = 50.0
# text-to-image (prompt text, no image, no reference patches) guides by default: with the min-p filter below it is
# as close to real photos as no guidance and more faithful (`m6-fashion evaluate`, 798 test captions: FID 152.6
# against 152.5, hit rates higher; `bench_words_and_masks.py counterfactual`: unseen colour x article pairs right
# about 4x as often, 0.54 of the classifier's ceiling on two seeds). A stricter filter (0.2) gives FID 149.2 but
# 0.47; without the filter, guidance 8 cost FID (166.3).
DEFAULT_TEXT_GUIDANCE_SCALE = 12.0
DEFAULT_GUIDANCE_MIN_P = 0.1  # with guidance: tokens below 0.1 x the conditional pass's most likely one are excluded
DEFAULT_REFINE_RATIO = 0.25  # share of the cells around a style-mixing seam that SMART re-samples
TOKENS = "tokens"  # the output type that skips decoding


class ListItemTypeError(TypeError, ValueError):
    """An item of a list argument has the wrong type (`prompt=["a", 1]`).

    Both a `TypeError` (the item's type) and a `ValueError` (the list's content), so `except TypeError` and
    `except ValueError` both catch it.
    """


# ---------------------------------------------------------------------------------------------- small helpers
def as_int(value):
    """numpy integers as Python ints (so `np.int64(10)` steps are accepted); anything else unchanged for the checks."""
    return int(value) if isinstance(value, np.integer) else value


def as_list(x) -> list:
    """`x` as a list: a list or tuple's items, anything else (one image, one mask) as a one-item list."""
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _is_real(value) -> bool:
    """A Python or numpy real number, not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_whole(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _listed(values: Sequence[str]) -> str:
    """`['pil', 'np', 'tokens']` -> `"'pil', 'np' or 'tokens'"`."""
    quoted = [repr(v) for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def prompt_texts(prompt) -> List[str]:
    """The prompt strings of a call: `[prompt]`, the list itself, or `[]` without a prompt."""
    return [prompt] if isinstance(prompt, str) else list(prompt or [])


def has_text(prompt) -> bool:
    """Some prompt holds more than blanks."""
    return any(t.strip() for t in prompt_texts(prompt))


# ---------------------------------------------------------------------------------------------- prompts and numbers
def check_prompt(prompt) -> None:
    """`None`, a string, or a non-empty list (or tuple) of strings."""
    if prompt is not None and not isinstance(prompt, (str, list, tuple)):
        raise TypeError(f"prompt must be a string or a list of strings; got {type(prompt).__name__}")
    if isinstance(prompt, (list, tuple)):
        if len(prompt) == 0:
            raise ValueError("prompt is an empty list; pass at least one prompt (use '' for no text)")
        for i, p in enumerate(prompt):
            if not isinstance(p, str):
                raise ListItemTypeError(f"every prompt in the list must be a string; prompt[{i}] is a {type(p).__name__}")


def check_num_images(prompt, image, num_images_per_prompt) -> int:
    """`num_images_per_prompt` >= 1 with at most `MAX_IMAGES_PER_CALL` images in all.

    The call makes `P x num_images_per_prompt` images, P = the number of prompts, else of images, else 1.
    """
    n = as_int(num_images_per_prompt)
    if not _is_whole(n) or n < 1:
        raise ValueError(f"num_images_per_prompt must be an integer >= 1; got {num_images_per_prompt!r}")
    n_prompts = len(prompt) if isinstance(prompt, (list, tuple)) else len(image) if isinstance(image, (list, tuple)) else 1
    if n_prompts * n > MAX_IMAGES_PER_CALL:
        raise ValueError(
            f"{n_prompts} prompt(s) x num_images_per_prompt={n} = {n_prompts * n} "
            f"images; at most {MAX_IMAGES_PER_CALL} per call (call again for more)"
        )
    return int(n)


def check_guidance_scale(guidance_scale, prompt, reference_images) -> float:
    """A finite number in [1, MAX_GUIDANCE_SCALE]; above 1 only with prompt text or reference patches to steer towards.

    Guidance mixes the conditional and unconditional logits, `l_u + s * (l_c - l_u)`; without text and patches
    both branches see the same input and the mix equals `l_c`.
    """
    if not _is_real(guidance_scale) or not math.isfinite(guidance_scale) or not 1.0 <= guidance_scale <= MAX_GUIDANCE_SCALE:
        raise ValueError(
            f"guidance_scale must be a finite number in [1, {MAX_GUIDANCE_SCALE:g}] (1.0 = no guidance); got {guidance_scale!r}"
        )
    if guidance_scale > 1.0 and reference_images is None and not has_text(prompt):
        raise ValueError(
            f"guidance_scale={guidance_scale:g} steers the image towards the prompt or the reference patches, and this call "
            "has neither (no prompt text, no reference_images), so it would change nothing; pass a prompt or "
            "reference_images, or leave guidance_scale at 1.0"
        )
    return float(guidance_scale)


def default_guidance_scale(guidance_scale, prompt, image, reference_images):
    """`guidance_scale` as given, or for `None` the default of the call's task: `DEFAULT_TEXT_GUIDANCE_SCALE` for
    text-to-image (prompt text, no `image`, no `reference_images`), 1.0 (no guidance) for every other task."""
    if guidance_scale is not None:
        return guidance_scale
    check_prompt(prompt)
    text_to_image = image is None and reference_images is None and has_text(prompt)
    return DEFAULT_TEXT_GUIDANCE_SCALE if text_to_image else 1.0


def check_guidance_min_p(guidance_min_p, guidance_scale) -> float:
    """A number in [0, 1); any value but `DEFAULT_GUIDANCE_MIN_P` only with guidance (`guidance_scale` > 1).

    With guidance, a token whose probability under the prompt-conditioned pass is below `guidance_min_p` times that
    of the pass's most likely token is excluded after the guidance mix (a min-p filter on the conditional): guidance
    then re-ranks only tokens the prompt makes plausible instead of amplifying rare ones. 0 turns the filter off.
    """
    if not _is_real(guidance_min_p) or not math.isfinite(guidance_min_p) or not 0.0 <= guidance_min_p < 1.0:
        raise ValueError(f"guidance_min_p must be a number in [0, 1) (0 = no filter); got {guidance_min_p!r}")
    if guidance_min_p != DEFAULT_GUIDANCE_MIN_P and not (_is_real(guidance_scale) and guidance_scale > 1.0):
        raise ValueError(
            f"guidance_min_p={guidance_min_p!r} filters the tokens of classifier-free guidance, which runs only with "
            f"guidance_scale > 1, and this call has guidance_scale={guidance_scale!r}, so it would change nothing; raise "
            "guidance_scale or drop guidance_min_p"
        )
    return float(guidance_min_p)


def check_negative_prompt(negative_prompt, prompt, image, guidance_scale) -> None:
    """`None`, or a string / non-empty list of strings (one for all prompts, or one per prompt) that the guidance
    pass reads instead of no text; only with `guidance_scale` > 1, the pass that reads it.

    Guidance then mixes `l_n + s * (l_c - l_n)`: it steers away from what the negative prompt says, towards what the
    prompt adds to it (e.g. the prompt "Men Red Jeans" with the negative prompt "Men Jeans" puts the weight on
    "Red").
    """
    if negative_prompt is None:
        return
    if not isinstance(negative_prompt, (str, list, tuple)):
        raise TypeError(f"negative_prompt must be a string or a list of strings; got {type(negative_prompt).__name__}")
    if isinstance(negative_prompt, (list, tuple)):
        if len(negative_prompt) == 0:
            raise ValueError("negative_prompt is an empty list; pass one string, or one per prompt")
        for i, p in enumerate(negative_prompt):
            if not isinstance(p, str):
                raise ListItemTypeError(f"every negative prompt in the list must be a string; negative_prompt[{i}] is a {type(p).__name__}")
    if not (_is_real(guidance_scale) and guidance_scale > 1.0):
        raise ValueError(
            f"negative_prompt is read by the classifier-free guidance pass, which runs only with guidance_scale > 1, and this "
            f"call has guidance_scale={guidance_scale!r}, so it would change nothing; raise guidance_scale (e.g. 3) or drop negative_prompt"
        )
    n_prompts = len(prompt) if isinstance(prompt, (list, tuple)) else len(image) if isinstance(image, (list, tuple)) else 1
    if isinstance(negative_prompt, (list, tuple)) and len(negative_prompt) not in (1, n_prompts):
        raise ValueError(
            f"negative_prompt has {len(negative_prompt)} entries but the call has {n_prompts} prompt(s); give one, or one per prompt"
        )


def check_negative_guidance_scale(negative_guidance_scale, negative_prompt) -> Optional[float]:
    """`None` (the default: the negative prompt, if any, replaces the guidance pass's empty text), or a finite
    number in (0, MAX_GUIDANCE_SCALE]; a number only with a `negative_prompt` for it to contrast.

    With a number `s_n` the guidance pass keeps reading no text and a third pass reads the negative prompt:
    `l_u + s * (l_c - l_u) + s_n * (l_c - l_n)`. Guidance keeps its full pull towards the prompt and pushes
    `s_n` more on what the prompt adds to the negative prompt (the colour, for the prompt "Men Orange Jeans"
    with the negative prompt "Men Jeans"). It costs a third transformer pass per step.
    """
    if negative_guidance_scale is None:
        return None
    if not _is_real(negative_guidance_scale) or not math.isfinite(negative_guidance_scale) or not 0.0 < negative_guidance_scale <= MAX_GUIDANCE_SCALE:
        raise ValueError(
            f"negative_guidance_scale must be None or a finite number in (0, {MAX_GUIDANCE_SCALE:g}]; got {negative_guidance_scale!r}"
        )
    if negative_prompt is None:
        raise ValueError(
            f"negative_guidance_scale={negative_guidance_scale!r} weighs a pass on the negative prompt, and this call has no "
            "negative_prompt, so it would change nothing; give a negative_prompt (e.g. the prompt without its colour) or "
            "drop negative_guidance_scale"
        )
    return float(negative_guidance_scale)


def batch_negative_prompts(negative_prompt, prompts: List[str], num_images_per_prompt: int) -> Optional[List[str]]:
    """The negative prompt of each generated image (aligned with `batch_prompts`), or None without one."""
    if negative_prompt is None:
        return None
    texts = expand_per_prompt(prompt_texts(negative_prompt), len(prompts) // num_images_per_prompt, "negative_prompt")
    return [t for t in texts for _ in range(num_images_per_prompt)]


def check_refine_ratio(refine_ratio, style_image) -> float:
    """A number in [0, 1]; any value but `DEFAULT_REFINE_RATIO` only with `style_image` (style mixing)."""
    if not _is_real(refine_ratio) or not 0.0 <= refine_ratio <= 1.0:
        raise ValueError(f"refine_ratio must be a number in [0, 1]; got {refine_ratio!r}")
    if style_image is None and refine_ratio != DEFAULT_REFINE_RATIO:
        raise ValueError(
            f"refine_ratio={refine_ratio!r} only acts in style mixing (image + style_image + mask_image: the share of the "
            "cells around the seam that are re-sampled); this call mixes no styles, so drop refine_ratio"
        )
    return float(refine_ratio)


def check_sampling_arguments(
    prompt, image, style_image, reference_images, num_inference_steps, num_images_per_prompt, guidance_scale,
    temperature, refine_ratio,
) -> Tuple[int, int, float, Optional[float], float]:
    """The prompt and the numbers of a call, checked in this order; returns them as plain Python numbers:
    `(num_inference_steps, num_images_per_prompt, guidance_scale, temperature, refine_ratio)`."""
    check_prompt(prompt)
    steps = check_num_inference_steps(as_int(num_inference_steps))
    n = check_num_images(prompt, image, num_images_per_prompt)
    scale = check_guidance_scale(guidance_scale, prompt, reference_images)
    temperature = None if temperature is None else check_temperature(temperature, "temperature")
    return steps, n, scale, temperature, check_refine_ratio(refine_ratio, style_image)


# ---------------------------------------------------------------------------------------------- outputs
def check_output_type(output_type, output_types: Sequence[str]) -> None:
    """`output_type` is one of the front end's `output_types` (`TOKENS` skips decoding)."""
    if not isinstance(output_type, str) or output_type not in output_types:
        raise ValueError(f"output_type must be {_listed(output_types)}; got {output_type!r}")


def check_blend_pixels(blend_pixels, image, output_type, output_types: Sequence[str]) -> None:
    """True or False; False only with an image to edit and decoded pixels (it keeps them outside the edited region)."""
    if not isinstance(blend_pixels, (bool, np.bool_)):
        raise TypeError(f"blend_pixels must be True or False; got {blend_pixels!r}")
    if not blend_pixels and (image is None or output_type == TOKENS):
        decoded = _listed([t for t in output_types if t != TOKENS])
        raise ValueError(
            "blend_pixels=False keeps the decoded pixels outside the edited region instead of pasting the pixels of image "
            f"back; it needs an image to edit and decoded pixels (output_type {decoded}), and this call has "
            + ("no image" if image is None else f"output_type={TOKENS!r}") + ", so drop blend_pixels"
        )


# ---------------------------------------------------------------------------------------------- context dropout
def is_text_guided_inpainting(prompt, image, mask_image, style_image) -> bool:
    """An image, a mask and some prompt text, no style image: the calls `context_dropout_steps` acts in."""
    return image is not None and mask_image is not None and style_image is None and has_text(prompt)


def context_dropout_steps(value, num_inference_steps: int, prompt, image, mask_image, style_image) -> int:
    """`context_dropout_steps` checked and resolved: the first passes that show the kept tokens as MASK.

    `None`: `round(CONTEXT_DROPOUT_SHARE * T)` in text-guided inpainting (8 of T=10), 0 elsewhere. Otherwise a
    whole number in [0, T]; a non-zero value outside text-guided inpainting is refused.
    """
    text_guided = is_text_guided_inpainting(prompt, image, mask_image, style_image)
    if value is None:
        return round(CONTEXT_DROPOUT_SHARE * num_inference_steps) if text_guided else 0
    if not _is_whole(value) or not 0 <= value <= num_inference_steps:
        raise ValueError(
            f"context_dropout_steps must be None (automatic) or a whole number in [0, num_inference_steps="
            f"{num_inference_steps!r}] (the first SMART passes that hide the kept tokens from the model); got {value!r}"
        )
    if value and not text_guided:
        raise ValueError(
            f"context_dropout_steps={value!r} only acts in text-guided inpainting (image + mask_image + a "
            "prompt, no style_image): it hides the kept tokens around the masked region from the model for the first "
            "passes so the region follows the text; this call is not one, so drop context_dropout_steps"
        )
    return int(value)


# ---------------------------------------------------------------------------------------------- images and boxes
def image_size(im) -> Optional[Tuple[int, int]]:
    """`(width, height)` of a PIL image, an `(H, W, ...)` numpy array or a channels-first `(..., H, W)` tensor;
    None for anything else."""
    if isinstance(getattr(im, "size", None), tuple):  # PIL's (width, height); numpy's size is an int, torch's a method
        return im.size
    ndim, shape = getattr(im, "ndim", 0), getattr(im, "shape", ())
    if ndim < 2:
        return None
    if isinstance(im, np.ndarray):
        return (shape[1], shape[0])
    return (shape[-1], shape[-2])


def check_mask_sizes(image, mask_image) -> None:
    """Each mask has the size of the image it edits (one image or mask stands for all of them)."""
    images, masks = as_list(image), as_list(mask_image)
    if len(images) == 1:
        images = images * len(masks)
    if len(masks) == 1:
        masks = masks * len(images)
    for im, m in zip(images, masks):
        isz, msz = image_size(im), image_size(m)
        if isz is not None and msz is not None and isz != msz:
            raise ValueError(f"mask_image size {msz} does not match image size {isz}; give a mask of the same size as the image")


def check_masks_select_pixels(selected) -> None:
    """Every preprocessed mask selects at least one pixel: `selected` `(B,)` holds each mask's largest value
    (0 or 1 after thresholding)."""
    if not np.all(np.asarray(selected)):
        raise ValueError(
            "mask_image selects no pixel (all black after thresholding at 0.5): white (>= 128, or >= 0.5 "
            "for float masks) marks the region to regenerate"
        )


def check_images(image, mask_image, style_image, image_box, reference_images, image_types: tuple, kinds: str) -> None:
    """The images of a call say one task and are images.

    `image_types`: the types the front end reads (`kinds` names them in errors). Refused: a mask or an
    `image_box` without an image, style mixing without image and mask, `image_box` with a mask, an image with
    nothing that says what to edit, an empty image list, a mask of another size than its image.
    """
    if mask_image is not None and image is None:
        raise ValueError("mask_image needs an image to edit: pass image=...")
    if style_image is not None and (image is None or mask_image is None):
        raise ValueError("style mixing needs image (the base garment), style_image and mask_image (region taken from style_image)")
    if image_box is not None and image is None:
        raise ValueError("image_box (outpainting) needs an image to place in the box, and this call has none: image_box needs image=...")
    if image_box is not None and mask_image is not None:
        raise ValueError("pass either image_box (outpainting) or mask_image (inpainting), not both")
    for name, value in (("image", image), ("mask_image", mask_image), ("style_image", style_image)):
        for i, item in enumerate(value if isinstance(value, (list, tuple)) else [value]):
            if value is not None and not isinstance(item, image_types):
                where = f"{name}[{i}]" if isinstance(value, (list, tuple)) else name
                raise TypeError(f"{where} must be {kinds} (or a list of them); got {type(item).__name__}")
    if image is not None and mask_image is None and image_box is None and reference_images is None:
        raise ValueError(
            "an image alone says nothing to edit: add mask_image (inpainting), image_box (outpainting), "
            "style_image + mask_image (style mixing) or reference_images (local editing)"
        )
    if isinstance(image, (list, tuple)) and len(image) == 0:
        raise ValueError("image is an empty list; pass at least one image")
    if image is not None and mask_image is not None:
        check_mask_sizes(image, mask_image)


def check_boxes(canvas, image_box, reference_images, max_condition_tokens: int, image_types: tuple, kinds: str) -> None:
    """Boxes fit the output `canvas` and the reference patches fit the model's condition segment.

    `image_box` must leave at least one token cell of the output to generate. Reference patches: a non-empty
    list of `(image, box)` pairs; their cells, plus one separator between two patches, at most
    `max_condition_tokens`.
    """
    if image_box is not None and canvas.box_to_cells(image_box, "image_box") == canvas.box_to_cells((0, 0, canvas.width, canvas.height)):
        raise ValueError(
            f"image_box {tuple(image_box)!r} covers the whole {canvas.width}x{canvas.height} (width x height) output once "
            f"widened to whole {canvas.cell}-px token cells, so outpainting would generate nothing; leave at least one "
            "token cell of the output outside the box (or use mask_image to regenerate part of the image)"
        )
    if reference_images is None:
        return
    if not isinstance(reference_images, (list, tuple)) or len(reference_images) == 0:
        raise ValueError("reference_images must be a non-empty list of (image, box) pairs")
    cells = 0
    for i, ref in enumerate(reference_images):
        if not isinstance(ref, (list, tuple)) or len(ref) != 2:
            raise ValueError(f"reference_images[{i}] must be a pair (image, box) with box = (left, top, right, bottom) in pixels")
        if not isinstance(ref[0], image_types):
            raise TypeError(f"reference_images[{i}][0] must be {kinds}; got {type(ref[0]).__name__}")
        _, _, h, w = canvas.box_to_cells(ref[1], f"reference_images[{i}] box")
        cells += h * w + (1 if i else 0)
    if cells > max_condition_tokens:
        raise ValueError(
            f"the {len(reference_images)} reference patch(es) cover {cells} token cells (one separator between "
            f"two patches counts); the model takes at most {max_condition_tokens}: use fewer or smaller boxes"
        )


# ---------------------------------------------------------------------------------------------- batches
def batch_prompts(prompt, image, num_images_per_prompt: int) -> List[str]:
    """The prompt of each generated image: every prompt `num_images_per_prompt` times in a row.

    Without a prompt, `""` once per input image (or once).
    """
    if prompt is None:
        prompts = [""] * max(1, len(image) if isinstance(image, (list, tuple)) else 1)
    else:
        prompts = prompt_texts(prompt)
    return [p for p in prompts for _ in range(num_images_per_prompt)]


def expand_per_prompt(items: list, batch: int, name: str) -> list:
    """One item for every prompt: a single item repeated `batch` times, or exactly `batch` items."""
    if len(items) == 1:
        return items * batch
    if len(items) != batch:
        raise ValueError(f"{name} has {len(items)} entries but there are {batch} prompts; give one, or one per prompt")
    return items


# ---------------------------------------------------------------------------------------------- style mixing
def seam_cells(
    region: np.ndarray, grid_size, refine_ratio: float, draw: Callable[[Tuple[int, int, int]], np.ndarray]
) -> np.ndarray:
    """The cells SMART re-samples after style mixing: `(B, N)` bool from the mixed `region` `(B, N)` bool.

    The seam is every cell whose 3x3 neighbourhood (inside the grid) holds cells both in and out of the region
    (`grown & ~shrunk`, the region dilated and eroded by one cell). With `refine_ratio > 0`, each cell in or next
    to the region (`grown`) joins with probability `refine_ratio`: `draw((B, rows, cols))` returns uniforms in
    [0, 1) (the front end's generator: numpy float64, or torch float32), and a cell joins where `u < refine_ratio`,
    compared in the uniforms' precision. `draw` is not called when `refine_ratio` is 0. `grid_size` is an int side
    (square grid) or `(rows, cols)`.
    """
    rows, cols = (int(grid_size[0]), int(grid_size[1])) if isinstance(grid_size, (tuple, list)) else (int(grid_size),) * 2
    b = region.shape[0]
    r = np.asarray(region, dtype=bool).reshape(b, rows, cols)
    outside = np.pad(r, ((0, 0), (1, 1), (1, 1)), constant_values=False)  # padding never grows the region ...
    inside = np.pad(r, ((0, 0), (1, 1), (1, 1)), constant_values=True)  # ... nor erodes it at the grid edge
    windows = [(dy, dx) for dy in range(3) for dx in range(3)]
    grown = np.logical_or.reduce([outside[:, dy : dy + rows, dx : dx + cols] for dy, dx in windows])
    shrunk = np.logical_and.reduce([inside[:, dy : dy + rows, dx : dx + cols] for dy, dx in windows])
    seam = grown & ~shrunk
    if refine_ratio > 0:
        seam |= (draw((b, rows, cols)) < float(refine_ratio)) & grown
    return seam.reshape(b, -1)


# ---------------------------------------------------------------------------------------------- invariants
def component_mismatches(
    *,
    grid_size: int,
    codebook_size: int,
    num_groups: int,
    vocab_size: int,
    mask_code: Optional[int] = None,
    sample_size: Optional[int] = None,
    num_image_tokens: Optional[int] = None,
    tokenizer_grid_size: Optional[int] = None,
    grid_shape: Optional[Tuple[int, int]] = None,
    tokenizer_grid_shape: Optional[Tuple[int, int]] = None,
    tokenizer_codebook_size: Optional[int] = None,
    tokenizer_num_groups: Optional[int] = None,
    text_vocab_size: Optional[int] = None,
    special_token_ids: Optional[Dict[str, int]] = None,
) -> List[str]:
    """What does not fit between the parts of a model; each entry names both values. Empty when all fit.

    The transformer's `grid_size`, `codebook_size` K, `num_groups` M and `vocab_size` are the reference:

    * `mask_code` (the scheduler's `mask_token_id`) is the image MASK code, K: codes of each PQ group are
      `0..K-1` and K marks a masked cell. The transformer config's own `mask_token_id` is the id of the text
      token `[MASK]`, a different number.
    * `sample_size` (the longest side in pixels the image encoder reads) is a multiple of `grid_size` (the
      longest grid side); `num_image_tokens` is `rows * cols` of `grid_shape` (`grid_size ** 2` when not given:
      a square grid).
    * the image tokenizer's grid (`tokenizer_grid_size`, and `tokenizer_grid_shape` against `grid_shape`),
      codebook size and codes per token equal the transformer's.
    * the text tokenizer's `text_vocab_size` ids and the `special_token_ids` fit the word embeddings
      (`[0, vocab_size)`).

    Values left `None` are not checked (a part the caller does not have).
    """
    problems = []
    if mask_code is not None and mask_code != codebook_size:
        problems.append(
            f"scheduler.mask_token_id {mask_code} is not the image MASK code: the scheduler's mask_token_id={mask_code} "
            f"must equal the transformer's codebook_size={codebook_size} (the code after the {codebook_size} codes of each "
            "PQ group; the transformer config's mask_token_id is the text [MASK] token, another id)"
        )
    if grid_size < 1:
        problems.append(f"grid_size {grid_size} must be a positive integer")
    elif sample_size is not None and sample_size % grid_size:
        problems.append(f"sample_size {sample_size} is not a multiple of grid_size {grid_size}")
    rows, cols = (grid_size, grid_size) if grid_shape is None else (int(grid_shape[0]), int(grid_shape[1]))
    if grid_shape is not None and max(rows, cols) != grid_size:
        problems.append(f"grid_size {grid_size} is not the longest side of the {rows}x{cols} grid")
    if num_image_tokens is not None and num_image_tokens != rows * cols:
        problems.append(f"num_image_tokens {num_image_tokens} != {rows * cols} (a {rows}x{cols} grid)")
    if tokenizer_codebook_size is not None and tokenizer_codebook_size != codebook_size:
        problems.append(f"image tokenizer codebook_size={tokenizer_codebook_size} but transformer codebook_size={codebook_size}")
    if tokenizer_num_groups is not None and tokenizer_num_groups != num_groups:
        problems.append(f"image tokenizer gives {tokenizer_num_groups} codes per token but transformer num_groups={num_groups}")
    if tokenizer_grid_size is not None and tokenizer_grid_size != grid_size:
        problems.append(f"image tokenizer grid {tokenizer_grid_size}x{tokenizer_grid_size} but transformer grid_size={grid_size}")
    elif tokenizer_grid_shape is not None and tuple(int(v) for v in tokenizer_grid_shape) != (rows, cols):
        th, tw = tokenizer_grid_shape
        problems.append(f"image tokenizer grid {th}x{tw} (rows x cols) but transformer grid {rows}x{cols}")
    if text_vocab_size is not None and text_vocab_size > vocab_size:
        problems.append(f"the text tokenizer has {text_vocab_size} tokens but the transformer's vocab_size={vocab_size}")
    for name, value in (special_token_ids or {}).items():
        if not 0 <= value < vocab_size:
            problems.append(f"special token {name}={value} is outside the text vocabulary [0, vocab_size={vocab_size})")
    return problems
