"""Image and mask preparation with PIL and numpy, shared by the PyTorch pipeline and the ONNX runtime.

Product photos are portrait (e.g. 60x80) on a white background; every model here works on square images, so
images are padded to a square on white (never cropped: a crop would cut off collars or soles), resized bicubic
and scaled to [-1, 1]. Masks are padded with black (keep), resized nearest-neighbour and thresholded at 0.5
(white = regenerate).

Arrays follow diffusers' conventions: uint8 in [0, 255] or floats in [0, 1], channels last. The numpy
`preprocess` / `postprocess` here are the runtime's; the pipeline converts the same PIL images to tensors.
"""

from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple, Union

import numpy as np
import PIL.Image

ACCEPTED_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr", "RGBX", "I;16", "I;16L", "I;16B", "I")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")  # 16-bit greyscale (PNG); "I" is scaled only when it holds values > 255
ImageInput = Union[PIL.Image.Image, np.ndarray]

# what `array_to_pil` names in its errors; a front end that also takes batches or tensors passes its own wording
ARRAY_SHAPES = "(H, W), (H, W, 3) or (H, W, 4)"
FLOAT_ARRAY_HINT = "pass uint8 for 0-255 images"
MASK_INPUTS = "a PIL image or a numpy array"
WHITE = (255, 255, 255)


def from_sixteen_bit(image: PIL.Image.Image) -> PIL.Image.Image:
    """A 16-bit greyscale image -> "L", scaled 65535 -> 255 (PIL's own conversion clips everything above 255 to white).
    Mode "I" holding only values in [0, 255] is taken as 8-bit."""
    arr = np.asarray(image).astype(np.int64)
    if image.mode == "I" and (arr.size == 0 or arr.max() <= 255):
        return PIL.Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return PIL.Image.fromarray((np.clip(arr, 0, 65535) // 257).astype(np.uint8))


def array_to_pil(
    array: np.ndarray, name: str = "image", shapes: str = ARRAY_SHAPES, float_hint: str = FLOAT_ARRAY_HINT
) -> PIL.Image.Image:
    """An image array -> PIL image: (H, W) or (H, W, C) with C in 1/3/4; uint8 (or integers in [0, 255]), bool, or
    floats in [0, 1] (diffusers' convention: pixel = round(255 * value)).

    Anything else raises naming `name` (a float array in [0, 255] or [-1, 1] would otherwise turn silently into a
    black or garbled image); `shapes` and `float_hint` word the accepted shapes and the fix for float arrays.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"{name} arrays must have shape {shapes}; got {np.shape(array)}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} has no pixels (array of shape {np.shape(array)})")
    if arr.dtype == np.uint8:
        return PIL.Image.fromarray(arr)
    if arr.dtype == np.bool_:
        return PIL.Image.fromarray(arr.astype(np.uint8) * 255)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError(f"{name}: integer arrays must hold values in [0, 255]; got [{arr.min()}, {arr.max()}] ({arr.dtype})")
        return PIL.Image.fromarray(arr.astype(np.uint8))
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: the array holds NaN or infinite values")
        if arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"{name}: float arrays must hold values in [0, 1]; got [{arr.min():g}, {arr.max():g}] ({float_hint})")
        return PIL.Image.fromarray(np.round(arr * 255).astype(np.uint8))
    raise TypeError(f"{name}: arrays must be uint8, integer, bool or float; got dtype {arr.dtype}")


def as_pil(image: ImageInput, name: str = "image") -> PIL.Image.Image:
    """A PIL image as is, or an image array through `array_to_pil`; anything else raises `TypeError` naming `name`."""
    if isinstance(image, PIL.Image.Image):
        return image
    if isinstance(image, np.ndarray):
        return array_to_pil(image, name)
    raise TypeError(f"{name} must be a PIL image or a numpy array; got {type(image).__name__}")


def to_rgb(image: PIL.Image.Image, name: str = "image") -> PIL.Image.Image:
    """Any mode of `ACCEPTED_MODES` -> RGB, compositing transparency onto white (16-bit greyscale scaled to 8 bits)."""
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(f"{name} must be a PIL image; got {type(image).__name__}")
    if image.mode not in ACCEPTED_MODES:
        raise ValueError(f"{name} mode {image.mode!r} is not supported; accepted modes: {', '.join(ACCEPTED_MODES)}")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"{name} has no pixels (size {image.width}x{image.height})")
    if image.mode in SIXTEEN_BIT_MODES:
        return from_sixteen_bit(image).convert("RGB")
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        background = PIL.Image.new("RGBA", rgba.size, WHITE + (255,))
        return PIL.Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def pad_to_square(image: PIL.Image.Image, fill=WHITE) -> PIL.Image.Image:
    """Pads a PIL image to a `max(W, H)` square, centred, on `fill` (white; 255 for a single-band image)."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = PIL.Image.new(image.mode, (side, side), fill if image.mode == "RGB" else 255)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def size_hw(size) -> Tuple[int, int]:
    """`(height, width)` of a size given as an int side (square) or a `(height, width)` pair."""
    if isinstance(size, (tuple, list)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


def pad_to_aspect(image: PIL.Image.Image, height: int, width: int, fill=WHITE) -> PIL.Image.Image:
    """Pads a PIL image, centred on `fill`, to the aspect ratio of `width` x `height` (never crops); a square target
    is `pad_to_square`. The padded side is `round(H * width / height)` (or `round(W * height / width)`)."""
    if height == width:
        return pad_to_square(image, fill)
    new_w, new_h = aspect_padded_size(image.width, image.height, height, width)
    if (new_w, new_h) == image.size:
        return image
    canvas = PIL.Image.new(image.mode, (new_w, new_h), fill if image.mode == "RGB" else 255)
    canvas.paste(image, ((new_w - image.width) // 2, (new_h - image.height) // 2))
    return canvas


def aspect_padded_size(w: int, h: int, height: int, width: int) -> Tuple[int, int]:
    """`(W, H)` of a `w` x `h` image padded to the aspect ratio of `width` x `height`: the narrow side grows to
    `round(h * width / height)` (or `round(w * height / width)`); the other side is kept."""
    if w * height < h * width:  # too narrow: pad the width
        return max(w, round(h * width / height)), h
    return w, max(h, round(w * height / width))


def fit_onto(image: PIL.Image.Image, width: int, height: int, fill=WHITE) -> PIL.Image.Image:
    """An RGB `width` x `height` image: `image` scaled to fit (aspect kept, bicubic), centred on `fill`.

    scale = min(width / W, height / H); the scaled sides are rounded and kept in [1, width] / [1, height].
    """
    image = to_rgb(image)
    scale = min(width / image.width, height / image.height)
    size = (max(1, min(width, round(image.width * scale))), max(1, min(height, round(image.height * scale))))
    sheet = PIL.Image.new("RGB", (width, height), fill)
    sheet.paste(image.resize(size, PIL.Image.BICUBIC), ((width - size[0]) // 2, (height - size[1]) // 2))
    return sheet


def square_image(image: PIL.Image.Image, size, name: str = "image") -> PIL.Image.Image:
    """Any accepted PIL image -> RGB `size` x `size`: composited onto white, padded to a white square, resized bicubic.
    `size` may also be `(height, width)` (a non-square model's canvas): padded to that aspect ratio instead."""
    h, w = size_hw(size)
    return pad_to_aspect(to_rgb(image, name), h, w).resize((w, h), PIL.Image.BICUBIC)


def preprocess(images: Union[ImageInput, Sequence[ImageInput]], size, name: str = "image") -> np.ndarray:
    """Images (a PIL image, an image array or a list of them) -> float32 `(B, 3, size, size)` in [-1, 1],
    value = pixel / 127.5 - 1. `size` is an int side or `(height, width)` (see `square_image`)."""
    if isinstance(images, (PIL.Image.Image, np.ndarray)):
        images = [images]
    if isinstance(images, (str, bytes, dict)) or not hasattr(images, "__iter__"):
        raise TypeError(f"{name} must be a PIL image, a numpy array or a list of them; got {type(images).__name__}")
    images = list(images)
    if not images:
        raise ValueError(f"{name}: got an empty list of images; pass at least one image")
    out = []
    for im in images:
        arr = np.asarray(square_image(as_pil(im, name), size, name), dtype=np.uint8).astype(np.float32).transpose(2, 0, 1)
        out.append(arr / np.float32(127.5) - np.float32(1.0))
    return np.stack(out).astype(np.float32)


def sheet_pixels(sheets: Sequence[PIL.Image.Image]) -> np.ndarray:
    """RGB PIL images of one size -> float32 `(B, 3, H, W)` in [-1, 1] at their own size (no padding, no resizing),
    value = pixel / 127.5 - 1."""
    arrays = np.stack([np.asarray(sh.convert("RGB"), dtype=np.uint8) for sh in sheets]).astype(np.float32)
    return np.ascontiguousarray(arrays.transpose(0, 3, 1, 2)) / np.float32(127.5) - np.float32(1.0)


# outpainting: how many token cells beyond the placed image the encoder's copy repeats the image's border pixels
OUTPAINTING_EDGE_CELLS = 1


def extend_edges(sheet: PIL.Image.Image, box: Tuple[int, int, int, int], margin: int) -> PIL.Image.Image:
    """A copy of `sheet` whose pixels up to `margin` px outside the pixel box `box = (left, top, right, bottom)`
    repeat the box's nearest border pixel (corners its corner pixel); pixels inside the box and farther out stay."""
    left, top, right, bottom = box
    a = np.asarray(sheet.convert("RGB")).copy()
    height, width = a.shape[:2]
    x0, y0, x1, y1 = max(0, left - margin), max(0, top - margin), min(width, right + margin), min(height, bottom + margin)
    a[y0:y1, x0:x1] = np.pad(a[top:bottom, left:right], ((top - y0, y1 - bottom), (left - x0, x1 - right), (0, 0)), mode="edge")
    return PIL.Image.fromarray(a)


def outpainting_sheets(
    images: Sequence[PIL.Image.Image], width: int, height: int, cells: Tuple[int, int, int, int], cell: int,
    token_size: Tuple[int, int], edge_cells: int = OUTPAINTING_EDGE_CELLS,
) -> Tuple[np.ndarray, np.ndarray]:
    """Each image fitted (aspect kept, centred on white) into the grid box `cells = (top, left, h, w)` (cells of
    `cell` pixels) of a white `width` x `height` sheet.

    Returns `(pixels (B, 3, height, width), encoder pixels (B, 3, token_size[1], token_size[0]))`, both float32 in
    [-1, 1]. The encoder's copy is the sheet with the box's border pixels repeated `edge_cells` cells outward
    (`extend_edges`), resized bicubic to `token_size = (width, height)`: the encoder reads every pixel near a cell, so
    on plain white the kept cells at the border would be encoded as a garment that ends there (the generated cells
    then stay white); with the border continued they are encoded as content that goes on. Only the kept cells'
    tokens are used, so the repeated pixels themselves never reach the output.
    """
    top, left, h, w = cells
    box = (left * cell, top * cell, (left + w) * cell, (top + h) * cell)
    sheets = []
    for im in images:
        sheet = PIL.Image.new("RGB", (width, height), WHITE)
        sheet.paste(fit_onto(im, w * cell, h * cell), (left * cell, top * cell))
        sheets.append(sheet)
    small = [extend_edges(sh, box, edge_cells * cell).resize(tuple(token_size), PIL.Image.BICUBIC) for sh in sheets]
    return sheet_pixels(sheets), sheet_pixels(small)


def mask_array(arr: np.ndarray, name: str) -> np.ndarray:
    """A mask array -> float32 (H, W) in [0, 1].

    Accepted: (H, W), (H, W, C), (1, H, W) or (1, H, W, C), channels first or last (C in 1/3/4: the first channel
    of a channels-first array, the luminance 0.299 R + 0.587 G + 0.114 B of an RGB(A) one, as PIL's convert("L"));
    bool, integers in [0, 255] or floats in [0, 1] / [0, 255] (divided by 255 when the maximum is above 1).
    Anything else raises naming `name`.
    """
    a = np.asarray(arr)
    if a.dtype == np.bool_:
        a = a.astype(np.float32)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise TypeError(f"{name}: arrays must be bool, integer or float; got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = a[0]  # channels first (a tensor's layout): the first channel
    elif a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    elif a.ndim == 3 and a.shape[-1] in (3, 4):  # an RGB(A) picture of a mask: its luminance, as PIL's convert("L")
        a = a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be one mask of shape (H, W), (H, W, C) or (1, H, W); got {np.shape(arr)}")
    if a.size == 0:
        raise ValueError(f"{name} has no pixels (shape {np.shape(arr)})")
    a = a.astype(np.float32)
    if a.min() < 0 or a.max() > 255:
        raise ValueError(f"{name} values must lie in [0, 1] (float) or [0, 255]; got [{a.min():g}, {a.max():g}]")
    return a / 255.0 if a.max() > 1.0 else a


def pad_to_square_mask(mask: PIL.Image.Image, size, name: str = "mask_image") -> PIL.Image.Image:
    """A PIL mask -> "L" `size` x `size`: padded to a square with black (keep) and resized nearest-neighbour.
    Padding is not part of the garment, so it never enters the mask. `size` may be `(height, width)`: padded to
    that aspect ratio instead."""
    if mask.width < 1 or mask.height < 1:
        raise ValueError(f"{name} has no pixels (size {mask.width}x{mask.height})")
    if mask.mode in SIXTEEN_BIT_MODES:
        m = from_sixteen_bit(mask)
    else:
        try:
            m = mask.convert("L")
        except ValueError as e:
            raise ValueError(f"{name} mode {mask.mode!r} cannot be read as a mask ({e}); use L, 1, RGB or RGBA") from None
    th, tw = size_hw(size)
    w, h = m.size
    if th == tw:
        side = max(w, h)
        canvas = PIL.Image.new("L", (side, side), 0)
        canvas.paste(m, ((side - w) // 2, (side - h) // 2))
    else:
        cw, ch = aspect_padded_size(w, h, th, tw)
        canvas = PIL.Image.new("L", (cw, ch), 0)
        canvas.paste(m, ((cw - w) // 2, (ch - h) // 2))
    return canvas.resize((tw, th), PIL.Image.NEAREST)


def preprocess_mask(mask: ImageInput, size, name: str = "mask_image", accepted: str = MASK_INPUTS) -> np.ndarray:
    """A mask (PIL image or array, see `mask_array`) -> float32 `(1, size, size)` in {0, 1}; white (>= 0.5) marks
    the region to regenerate (`(1, height, width)` for a `(height, width)` size). Anything else raises
    `TypeError` naming `name` and `accepted`."""
    if isinstance(mask, PIL.Image.Image) and mask.mode == "F":
        mask = np.asarray(mask)
    if isinstance(mask, np.ndarray):
        mask = PIL.Image.fromarray((mask_array(mask, name) * 255).round().astype(np.uint8))
    if not isinstance(mask, PIL.Image.Image):
        raise TypeError(f"{name} must be {accepted}; got {type(mask).__name__}")
    arr = np.asarray(pad_to_square_mask(mask, size, name), dtype=np.float32) / 255.0
    return (arr >= 0.5).astype(np.float32)[None]


def cell_mask(pixel_mask: np.ndarray, grid) -> np.ndarray:
    """Pixel mask `(B, 1, H, W)` -> `(B, rows * cols)` bool: a token cell is editable if any of its
    `cell` x `cell` pixels is masked (> 0.5). `grid` is an int side (square) or `(rows, cols)`; `H = rows * cell`
    and `W = cols * cell`."""
    rows, cols = (int(grid[0]), int(grid[1])) if isinstance(grid, (tuple, list)) else (int(grid), int(grid))
    b, _, h, w = pixel_mask.shape
    c = h // rows
    if c * rows != h or c * cols != w:
        raise ValueError(f"mask of {h}x{w} pixels does not split into the {rows}x{cols} token grid's square cells")
    return (pixel_mask.reshape(b, rows, c, cols, c).max(axis=(2, 4)) > 0.5).reshape(b, -1)


def postprocess(pixels: np.ndarray) -> List[PIL.Image.Image]:
    """Float `(B, 3, H, W)` in [-1, 1] -> list of RGB PIL images, pixel = round((value + 1) * 127.5)."""
    arr = np.clip(pixels.astype(np.float32), -1, 1)
    arr = np.round((arr + 1) * np.float32(127.5)).astype(np.uint8).transpose(0, 2, 3, 1)
    return [PIL.Image.fromarray(a) for a in arr]


def make_grid(images: Iterable[PIL.Image.Image], cols: int, pad: int = 2) -> PIL.Image.Image:
    """Tiles PIL images into one RGB grid, `cols` wide, with `pad`-pixel white gutters; every tile takes the size
    of the first image and the last row may be partial.

    diffusers' `make_image_grid` has no gutters and needs exactly rows x cols images, so the sample sheets of
    training and evaluation (e.g. 10 images in 4 columns) use this one.
    """
    images: List[PIL.Image.Image] = list(images)
    if not images:
        raise ValueError("make_grid needs at least one image")
    w, h = images[0].size
    rows = (len(images) + cols - 1) // cols
    grid = PIL.Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), WHITE)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid.paste(im.convert("RGB").resize((w, h)), (pad + c * (w + pad), pad + r * (h + pad)))
    return grid
