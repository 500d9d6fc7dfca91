"""Image pre- and post-processing with PIL and numpy (same as ``m6_fashion.image_processing``).

Images are padded to a square on white (never cropped), resized bicubic and scaled to [-1, 1]; masks
are padded with black (keep), resized nearest-neighbour and thresholded at 0.5 (white = regenerate).
"""

from __future__ import annotations

from typing import List, Sequence, Union

import numpy as np
from PIL import Image

ACCEPTED_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr", "RGBX", "I;16", "I;16L", "I;16B", "I")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")  # 16-bit greyscale (PNG); "I" is scaled only when it holds values > 255
ImageInput = Union[Image.Image, np.ndarray]


def _from_sixteen_bit(image: Image.Image) -> Image.Image:
    """A 16-bit greyscale image -> "L", scaled 65535 -> 255 (PIL's own conversion clips everything above 255 to white)."""
    arr = np.asarray(image).astype(np.int64)
    if image.mode == "I" and (arr.size == 0 or arr.max() <= 255):
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return Image.fromarray((np.clip(arr, 0, 65535) // 257).astype(np.uint8))


def array_to_pil(array: np.ndarray, name: str = "image") -> Image.Image:
    """An image array -> PIL image: (H, W) or (H, W, C) with C in 1/3/4; uint8 (or integers in [0, 255]), bool, or
    floats in [0, 1]. Anything else raises naming ``name`` (as ``m6_fashion.image_processing.array_to_pil``)."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"{name} arrays must have shape (H, W), (H, W, 3) or (H, W, 4); got {np.shape(array)}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} has no pixels (array of shape {np.shape(array)})")
    if arr.dtype == np.uint8:
        return Image.fromarray(arr)
    if arr.dtype == np.bool_:
        return Image.fromarray(arr.astype(np.uint8) * 255)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError(f"{name}: integer arrays must hold values in [0, 255]; got [{arr.min()}, {arr.max()}] ({arr.dtype})")
        return Image.fromarray(arr.astype(np.uint8))
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: the array holds NaN or infinite values")
        if arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"{name}: float arrays must hold values in [0, 1]; got [{arr.min():g}, {arr.max():g}] (pass uint8 for 0-255 images)")
        return Image.fromarray(np.round(arr * 255).astype(np.uint8))
    raise TypeError(f"{name}: arrays must be uint8, integer, bool or float; got dtype {arr.dtype}")


def _as_pil(image: ImageInput, what: str = "image") -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        return array_to_pil(image, what)
    raise TypeError(f"{what} must be a PIL image or a numpy array; got {type(image).__name__}")


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """Any accepted PIL mode -> RGB, compositing transparency onto white (16-bit greyscale scaled to 8 bits)."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"{name} must be a PIL image; got {type(image).__name__}")
    if image.mode not in ACCEPTED_MODES:
        raise ValueError(f"{name} mode {image.mode!r} is not supported; accepted modes: {', '.join(ACCEPTED_MODES)}")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"{name} has no pixels (size {image.width}x{image.height})")
    if image.mode in SIXTEEN_BIT_MODES:
        return _from_sixteen_bit(image).convert("RGB")
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def pad_to_square(image: Image.Image, fill=(255, 255, 255)) -> Image.Image:
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), fill if image.mode == "RGB" else 255)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def fit_onto(image: Image.Image, width: int, height: int, fill=(255, 255, 255)) -> Image.Image:
    """An RGB `width` x `height` image: `image` scaled to fit (aspect kept, bicubic), centred on `fill`."""
    image = to_rgb(image)
    scale = min(width / image.width, height / image.height)
    size = (max(1, min(width, round(image.width * scale))), max(1, min(height, round(image.height * scale))))
    sheet = Image.new("RGB", (width, height), fill)
    sheet.paste(image.resize(size, Image.BICUBIC), ((width - size[0]) // 2, (height - size[1]) // 2))
    return sheet


def preprocess(images: Union[ImageInput, Sequence[ImageInput]], size: int, name: str = "image") -> np.ndarray:
    """Images -> float32 array (B, 3, size, size) in [-1, 1]."""
    if isinstance(images, (Image.Image, np.ndarray)):
        images = [images]
    if isinstance(images, (str, bytes, dict)) or not hasattr(images, "__iter__"):
        raise TypeError(f"{name} must be a PIL image, a numpy array or a list of them; got {type(images).__name__}")
    images = list(images)
    if not images:
        raise ValueError(f"{name}: got an empty list of images; pass at least one image")
    out = []
    for im in images:
        im = pad_to_square(to_rgb(_as_pil(im, name), name)).resize((size, size), Image.BICUBIC)
        arr = np.asarray(im, dtype=np.uint8).astype(np.float32).transpose(2, 0, 1)
        out.append(arr / np.float32(127.5) - np.float32(1.0))
    return np.stack(out).astype(np.float32)


def _mask_array(arr: np.ndarray, name: str) -> np.ndarray:
    """A mask array -> float32 (H, W) in [0, 1] (as ``m6_fashion.image_processing._mask_array``)."""
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


def preprocess_mask(mask: ImageInput, size: int, name: str = "mask_image") -> np.ndarray:
    """Mask -> float32 (1, size, size) in {0, 1}; white (>= 0.5) marks the region to regenerate."""
    if isinstance(mask, Image.Image) and mask.mode == "F":
        mask = np.asarray(mask)
    if isinstance(mask, np.ndarray):
        mask = Image.fromarray((_mask_array(mask, name) * 255).round().astype(np.uint8))
    if not isinstance(mask, Image.Image):
        raise TypeError(f"{name} must be a PIL image or a numpy array; got {type(mask).__name__}")
    if mask.width < 1 or mask.height < 1:
        raise ValueError(f"{name} has no pixels (size {mask.width}x{mask.height})")
    if mask.mode in SIXTEEN_BIT_MODES:
        mask = _from_sixteen_bit(mask)
    else:
        try:
            mask = mask.convert("L")
        except ValueError as e:
            raise ValueError(f"{name} mode {mask.mode!r} cannot be read as a mask ({e}); use L, 1, RGB or RGBA") from None
    w, h = mask.size
    side = max(w, h)
    canvas = Image.new("L", (side, side), 0)
    canvas.paste(mask, ((side - w) // 2, (side - h) // 2))
    arr = np.asarray(canvas.resize((size, size), Image.NEAREST), dtype=np.float32) / 255.0
    return (arr >= 0.5).astype(np.float32)[None]


def cell_mask(pixel_mask: np.ndarray, grid_size: int) -> np.ndarray:
    """(B, 1, S, S) pixel mask -> (B, N) bool: a token cell is editable if any of its pixels is masked."""
    b, _, s, _ = pixel_mask.shape
    c = s // grid_size
    if c * grid_size != s:
        raise ValueError(f"mask side {s} is not a multiple of the grid size {grid_size}")
    return (pixel_mask.reshape(b, grid_size, c, grid_size, c).max(axis=(2, 4)) > 0.5).reshape(b, -1)


def postprocess(pixels: np.ndarray) -> List[Image.Image]:
    """Float (B, 3, H, W) in [-1, 1] -> list of RGB PIL images."""
    arr = np.clip(pixels.astype(np.float32), -1, 1)
    arr = np.round((arr + 1) * np.float32(127.5)).astype(np.uint8).transpose(0, 2, 3, 1)
    return [Image.fromarray(a) for a in arr]
