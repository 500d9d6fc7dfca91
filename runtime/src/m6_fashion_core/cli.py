"""Arguments and checks of the image commands, shared by ``m6-fashion`` and ``m6-fashion-runtime``.

Both command lines take the same sampling, size and output options (``--prompt --seed --steps --num-images
--guidance-scale --temperature --height --width --out --overwrite``) and the same task inputs (``--image``,
``--mask``, ``--box``, ...); their definitions and checks live here so that a limit and its message exist once.

Only ``argparse`` and the standard library are imported: parsing, ``--help`` and argument errors answer before
numpy, PIL, torch or onnxruntime is loaded. Errors are reported two ways, as the command lines do:

* argparse usage errors (an unknown option, ``--steps 0``): one line ``error: MESSAGE (see 'PROG --help')``
  on stderr, exit status 2 (:class:`OneLineErrorParser`);
* checks of the values (``--steps 5000``, an empty ``--box``, an existing ``--out``): ``SystemExit("error:
  MESSAGE")``, printed on stderr with exit status 1, raised before any model is loaded, so nothing is lost
  or wasted.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Type, TypeVar

# The libraries' limits, repeated here because `sampling` and `validation` import numpy and parsing must import
# nothing heavy (test_core_cli.py checks that they agree).
MAX_STEPS = 1000  # SMART passes: sampling.MAX_INFERENCE_STEPS
MAX_NUM_IMAGES = 64  # images per call: validation.MAX_IMAGES_PER_CALL
MAX_GUIDANCE_SCALE = 50.0  # validation.MAX_GUIDANCE_SCALE
MAX_TEMPERATURE = 100.0  # sampling.MAX_TEMPERATURE
MAX_SIDE = 4096  # --height, --width (and the torch CLI's --size): pixels per side

BOX_METAVAR = ("LEFT", "TOP", "RIGHT", "BOTTOM")
PROMPT_HELP = "caption, e.g. 'Women Pink Handbag' (default: none)"

T = TypeVar("T")

__all__ = [
    "MAX_STEPS",
    "MAX_NUM_IMAGES",
    "MAX_GUIDANCE_SCALE",
    "MAX_TEMPERATURE",
    "MAX_SIDE",
    "OneLineErrorParser",
    "positive_int",
    "add_sampling_arguments",
    "add_size_arguments",
    "add_output_arguments",
    "add_box_argument",
    "add_inpaint_arguments",
    "add_mix_arguments",
    "output_paths",
    "check_out_name",
    "check_out_folder",
    "check_steps",
    "check_num_images",
    "check_sides",
    "check_guidance_min_p",
    "check_guidance_scale",
    "guidance_kwargs",
    "check_negative_prompt",
    "check_temperature",
    "boxes_of",
    "check_boxes",
    "check_mask_size",
    "empty_mask_error",
    "open_input",
    "errors_exit",
]


# ---------------------------------------------------------------------------------------------- parsing
class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: MESSAGE (see 'PROG --help')`` on stderr, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def positive_int(text: str) -> int:
    """argparse ``type`` of counts and sizes: an integer >= 1 (``--steps 0`` is a usage error, exit status 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def add_sampling_arguments(p: argparse.ArgumentParser, *, seed_help: str, steps_help: str, temperature_help: str,
                           with_prompt: bool = True) -> None:
    """``--prompt --seed --steps --num-images --guidance-scale --negative-prompt --negative-guidance-scale --guidance-min-p
    --temperature``, in this order (as ``--help`` lists them)."""
    if with_prompt:
        p.add_argument("--prompt", default=None, help=PROMPT_HELP)
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--steps", type=positive_int, default=10, help=steps_help)
    p.add_argument("--num-images", type=positive_int, default=1, help="images to write (out.png, out-1.png, ...)")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="classifier-free guidance (1.0 = off; default: 12 for text-to-image, 1 for the other tasks)")
    p.add_argument("--negative-prompt", default=None,
                   help="text the guidance pass reads instead of none (needs guidance); e.g. the prompt without "
                        "its colour puts the weight on the colour")
    p.add_argument("--negative-guidance-scale", type=float, default=None,
                   help="keep the guidance pass on no text and push this much more on what the prompt adds to "
                        "--negative-prompt, in a third pass (e.g. 4; default: the negative prompt replaces no text)")
    p.add_argument("--guidance-min-p", type=float, default=None,
                   help="with guidance, exclude tokens below this share of the prompt pass's most likely one "
                        "(default 0.1; 0 = off)")
    p.add_argument("--temperature", type=float, default=None, help=temperature_help)


def add_size_arguments(p: argparse.ArgumentParser, *, height_help: str, width_help: str) -> None:
    """``--height --width``: the output size in pixels (None: the model's default size)."""
    p.add_argument("--height", type=positive_int, default=None, help=height_help)
    p.add_argument("--width", type=positive_int, default=None, help=width_help)


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    """``--out --overwrite``: where the PNGs go (see :func:`output_paths`) and whether existing files may be replaced."""
    p.add_argument("--out", required=True, help="output PNG path (with --num-images N: out.png, out-1.png, ...)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (refused otherwise)")


def add_box_argument(p: argparse.ArgumentParser, help: str, repeated: bool = False) -> None:
    """``--box LEFT TOP RIGHT BOTTOM`` (pixels on the output), required; ``repeated``: once per ``--reference``,
    parsed as a list of boxes."""
    extra = {"action": "append"} if repeated else {}
    p.add_argument("--box", type=int, nargs=4, required=True, metavar=BOX_METAVAR, help=help, **extra)


def add_inpaint_arguments(p: argparse.ArgumentParser) -> None:
    """``inpaint``'s inputs: the image and a mask of its size (white = regenerate)."""
    p.add_argument("--image", required=True, help="image to edit")
    p.add_argument("--mask", required=True, help="mask image, same size as --image; white = regenerate")


def add_mix_arguments(p: argparse.ArgumentParser, *, style_help: str, mask_help: str) -> None:
    """``mix``'s inputs: the base garment, the garment whose masked region is taken, and the mask."""
    p.add_argument("--image", required=True, help="base garment")
    p.add_argument("--style-image", required=True, help=style_help)
    p.add_argument("--mask", required=True, help=mask_help)


# ---------------------------------------------------------------------------------------------- output paths
def output_paths(out: str, n: int) -> List[str]:
    """The ``n`` files written for ``--out``: ``out.png, out-1.png, ..., out-{n-1}.png`` (``.png`` added when
    ``out`` has no extension)."""
    root, ext = os.path.splitext(out)
    ext = ext or ".png"
    return [f"{root}{ext}" if i == 0 else f"{root}-{i}{ext}" for i in range(n)]


def check_out_name(out: str) -> None:
    """``--out`` names a PNG file (not a folder, no other extension)."""
    if not out or out.endswith(("/", os.sep)) or os.path.isdir(out):
        raise SystemExit(f"error: --out {out!r} is not a file path; give a path ending in .png")
    if os.path.splitext(out)[1].lower() not in ("", ".png"):
        raise SystemExit(f"error: --out {out!r}: the output is a PNG; give a path ending in .png")


def check_out_folder(out: str, num_images: int, overwrite: bool) -> None:
    """``--out``'s folder can be made and written, and its ``num_images`` files do not exist unless ``overwrite``."""
    existing = os.path.dirname(os.path.abspath(out))
    while not os.path.isdir(existing):  # the nearest folder that exists: the missing ones below it are made
        if os.path.exists(existing):
            raise SystemExit(f"error: --out {out!r}: {existing!r} is a file, not a folder")
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK):
        raise SystemExit(f"error: --out {out!r}: cannot write into {existing!r} (permission denied)")
    taken = [p for p in output_paths(out, num_images) if os.path.exists(p)]
    if taken and not overwrite:
        raise SystemExit(f"error: {', '.join(taken)} already exist(s); pass --overwrite to replace, or choose another --out")


# ---------------------------------------------------------------------------------------------- numbers
def check_steps(steps: int) -> None:
    """``--steps`` at most ``MAX_STEPS`` (1000) SMART passes."""
    if steps > MAX_STEPS:
        raise SystemExit(f"error: --steps {steps} is too many; at most {MAX_STEPS}")


def check_num_images(num_images: int) -> None:
    """``--num-images`` at most ``MAX_NUM_IMAGES`` (64) per call."""
    if num_images > MAX_NUM_IMAGES:
        raise SystemExit(f"error: --num-images {num_images} is too many; at most {MAX_NUM_IMAGES} per call")


def check_sides(args: argparse.Namespace, flags: Sequence[str] = ("height", "width")) -> None:
    """Each of ``flags`` (pixel sizes, None = default) at most ``MAX_SIDE`` (4096) pixels."""
    for flag in flags:
        value = getattr(args, flag, None)
        if value is not None and value > MAX_SIDE:
            raise SystemExit(f"error: --{flag} {value} is too large; at most {MAX_SIDE} pixels")


def check_negative_prompt(args) -> None:
    """``--negative-prompt`` not with ``--guidance-scale`` <= 1 (the guidance pass reads it; without the flag the
    task's default decides, and the pipeline refuses a task that does not guide); ``--negative-guidance-scale``
    finite in (0, ``MAX_GUIDANCE_SCALE``] and only with ``--negative-prompt``."""
    if getattr(args, "negative_prompt", None) is not None and args.guidance_scale is not None and not args.guidance_scale > 1.0:
        raise SystemExit(
            f"error: --negative-prompt is read by the guidance pass, which runs only with --guidance-scale > 1 (got "
            f"{args.guidance_scale:g}); add e.g. --guidance-scale 3, or drop --negative-prompt"
        )
    scale_n = getattr(args, "negative_guidance_scale", None)
    if scale_n is not None:
        if not (math.isfinite(scale_n) and 0.0 < scale_n <= MAX_GUIDANCE_SCALE):
            raise SystemExit(f"error: --negative-guidance-scale must be a finite number in (0, {MAX_GUIDANCE_SCALE:g}]; got {scale_n}")
        if getattr(args, "negative_prompt", None) is None:
            raise SystemExit("error: --negative-guidance-scale weighs a pass on --negative-prompt; add --negative-prompt "
                             "(e.g. the prompt without its colour) or drop --negative-guidance-scale")


def check_guidance_scale(guidance_scale: Optional[float]) -> None:
    """``--guidance-scale`` finite in [1, ``MAX_GUIDANCE_SCALE``] (1.0 = no guidance), or None (the task's default)."""
    if guidance_scale is not None and not (math.isfinite(guidance_scale) and 1.0 <= guidance_scale <= MAX_GUIDANCE_SCALE):
        raise SystemExit(f"error: --guidance-scale must be a finite number in [1, {MAX_GUIDANCE_SCALE:g}] (1.0 = off); got {guidance_scale}")


def check_guidance_min_p(guidance_min_p: Optional[float]) -> None:
    """``--guidance-min-p`` in [0, 1), or None (the default, 0.1)."""
    if guidance_min_p is not None and not 0.0 <= guidance_min_p < 1.0:  # NaN fails too
        raise SystemExit(f"error: --guidance-min-p must be a number in [0, 1) (0 = off); got {guidance_min_p}")


def guidance_kwargs(guidance_scale: Optional[float], guidance_min_p: Optional[float] = None,
                    negative_prompt: Optional[str] = None, negative_guidance_scale: Optional[float] = None) -> dict:
    """The guidance arguments of a pipeline or runtime call; ``guidance_min_p`` and ``negative_guidance_scale`` None
    are left out (the pipeline's defaults), ``guidance_scale`` None resolves to the task's default there."""
    kw = {"guidance_scale": guidance_scale, "negative_prompt": negative_prompt}
    if guidance_min_p is not None:
        kw["guidance_min_p"] = guidance_min_p
    if negative_guidance_scale is not None:
        kw["negative_guidance_scale"] = negative_guidance_scale
    return kw


def check_temperature(temperature: Optional[float]) -> None:
    """``--temperature`` None (the scheduler's) or finite in (0, ``MAX_TEMPERATURE``]."""
    if temperature is not None and not (math.isfinite(temperature) and 0 < temperature <= MAX_TEMPERATURE):
        raise SystemExit(f"error: --temperature must be a finite number in (0, {MAX_TEMPERATURE:g}]; got {temperature}")


# ---------------------------------------------------------------------------------------------- boxes and masks
def boxes_of(args: argparse.Namespace) -> List[List[int]]:
    """The ``--box`` values of a command as a list of boxes: none, one (``outpaint``) or one per ``--reference``
    (``edit``, parsed with ``action="append"``)."""
    box = getattr(args, "box", None)
    if not box:
        return []
    return box if isinstance(box[0], list) else [box]


def check_boxes(args: argparse.Namespace) -> None:
    """Every ``--box`` is a non-empty pixel box: ``0 <= LEFT < RIGHT`` and ``0 <= TOP < BOTTOM``."""
    for left, top, right, bottom in boxes_of(args):
        if not (0 <= left < right and 0 <= top < bottom):
            raise SystemExit(f"error: --box {left} {top} {right} {bottom} is empty or negative; give LEFT TOP RIGHT BOTTOM "
                             "with 0 <= LEFT < RIGHT and 0 <= TOP < BOTTOM (pixels on the output)")


def check_mask_size(mask_size: Tuple[int, int], image_size: Optional[Tuple[int, int]], what: str = "--mask") -> None:
    """The mask (``(width, height)``, as PIL's ``size``) has the size of ``--image`` (None: no image to compare)."""
    if image_size is not None and tuple(mask_size) != tuple(image_size):
        raise SystemExit(f"error: {what} is {mask_size[0]}x{mask_size[1]} but --image is {image_size[0]}x{image_size[1]}; "
                         "give a mask of the same size as the image")


def empty_mask_error(what: str = "--mask") -> SystemExit:
    """The error of a mask with no white pixel (nothing to regenerate)."""
    return SystemExit(f"error: {what} selects no pixel (all black after thresholding at 0.5): white marks the region to regenerate")


# ---------------------------------------------------------------------------------------------- files and errors
def open_input(path: str, what: str, read: Callable[[str], T]) -> T:
    """``read(path)`` for the input file of option ``what`` (e.g. ``--image``), after checking that it is a file;
    any error of ``read`` (an unreadable or truncated image) becomes one ``error:`` line naming the option."""
    if os.path.isdir(path):
        raise SystemExit(f"error: {what} {path!r} is a folder, not an image file")
    if not os.path.isfile(path):
        raise SystemExit(f"error: {what} {path!r} does not exist")
    try:
        return read(path)
    except Exception as e:  # noqa: BLE001 - reported to the user
        raise SystemExit(f"error: cannot read {what} {path!r}: {e}")


@contextlib.contextmanager
def errors_exit(*errors: Type[BaseException]) -> Iterator[None]:
    """Turns the given exceptions (default ``ValueError, TypeError``: a bad value found by the library) into one
    ``error: MESSAGE`` line and exit status 1 instead of a traceback."""
    caught = errors or (ValueError, TypeError)
    try:
        yield
    except caught as e:
        raise SystemExit(f"error: {e}")
