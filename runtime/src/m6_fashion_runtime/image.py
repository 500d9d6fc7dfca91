"""Image pre- and post-processing with PIL and numpy (same as ``m6_fashion.image_processing``).

Images are padded to a square on white (never cropped), resized bicubic and scaled to [-1, 1]; masks
are padded with black (keep), resized nearest-neighbour and thresholded at 0.5 (white = regenerate).
"""

from __future__ import annotations

from typing import List, Sequence, Union

import numpy as np
from PIL import Image

ACCEPTED_MODES = ("RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "I")
ImageInput = Union[Image.Image, np.ndarray]


def _as_pil(image: ImageInput, what: str = "image") -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
            raise ValueError(f"{what} arrays must have shape (H, W), (H, W, 3) or (H, W, 4); got {image.shape}")
        return Image.fromarray(arr.astype(np.uint8))
    raise TypeError(f"{what} must be a PIL image or a uint8 numpy array; got {type(image).__name__}")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any accepted PIL mode -> RGB, compositing transparency onto white."""
    if image.mode not in ACCEPTED_MODES:
        raise ValueError(f"image mode {image.mode!r} is not supported; accepted modes: {', '.join(ACCEPTED_MODES)}")
    if image.mode in ("RGBA", "LA", "P"):
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


def preprocess(images: Union[ImageInput, Sequence[ImageInput]], size: int) -> np.ndarray:
    """Images -> float32 array (B, 3, size, size) in [-1, 1]."""
    if isinstance(images, (Image.Image, np.ndarray)):
        images = [images]
    images = list(images)
    if not images:
        raise ValueError("got an empty list of images; pass at least one image")
    out = []
    for im in images:
        im = pad_to_square(to_rgb(_as_pil(im))).resize((size, size), Image.BICUBIC)
        arr = np.asarray(im, dtype=np.uint8).astype(np.float32).transpose(2, 0, 1)
        out.append(arr / np.float32(127.5) - np.float32(1.0))
    return np.stack(out).astype(np.float32)


def preprocess_mask(mask: ImageInput, size: int) -> np.ndarray:
    """Mask -> float32 (1, size, size) in {0, 1}; white (>= 0.5) marks the region to regenerate."""
    if isinstance(mask, np.ndarray):
        arr = mask.astype(np.float32)
        if arr.max() > 1.0:
            arr = arr / 255.0
        mask = Image.fromarray((arr.squeeze() * 255).astype(np.uint8))
    mask = _as_pil(mask, "mask").convert("L")
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
