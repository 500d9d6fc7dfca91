"""Image pre- and post-processing shared by training, the pipeline and export.

Product photos are portrait (e.g. 60x80) on a white background; every model here works on
square images, so images are padded to a square on white (never cropped: a crop would cut off
collars or soles) and then resized.
"""

from __future__ import annotations

from typing import Iterable, List, Sequence, Union

import numpy as np
import PIL.Image
import torch

PipelineImageInput = Union[PIL.Image.Image, np.ndarray, torch.Tensor]

ACCEPTED_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr", "RGBX", "I;16", "I;16L", "I;16B", "I")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")  # 16-bit greyscale (PNG); "I" is scaled only when it holds values > 255


def _from_sixteen_bit(image: PIL.Image.Image) -> PIL.Image.Image:
    """A 16-bit greyscale image -> "L", scaled 65535 -> 255 (PIL's own conversion clips everything above 255 to white)."""
    arr = np.asarray(image).astype(np.int64)
    if image.mode == "I" and (arr.size == 0 or arr.max() <= 255):
        return PIL.Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return PIL.Image.fromarray((np.clip(arr, 0, 65535) // 257).astype(np.uint8))


def array_to_pil(array: np.ndarray, name: str = "image") -> PIL.Image.Image:
    """An image array -> PIL image: (H, W) or (H, W, C) with C in 1/3/4; uint8 (or integers in [0, 255]), bool, or
    floats in [0, 1] (diffusers' convention). Anything else raises naming `name` (a float array in [0, 255] or
    [-1, 1] would otherwise turn silently into a black or garbled image)."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"{name} arrays must have shape (H, W), (H, W, C) or (B, H, W, C) with C in 1/3/4; got {np.shape(array)}")
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
            raise ValueError(
                f"{name}: float arrays must hold values in [0, 1]; got [{arr.min():g}, {arr.max():g}] "
                "(pass uint8 for 0-255 images, or a tensor in [-1, 1])"
            )
        return PIL.Image.fromarray(np.round(arr * 255).astype(np.uint8))
    raise TypeError(f"{name}: arrays must be uint8, integer, bool or float; got dtype {arr.dtype}")


def pad_to_square(image: PIL.Image.Image, fill=(255, 255, 255)) -> PIL.Image.Image:
    """Pads a PIL image to a square canvas, centred, on `fill` (white by default)."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = PIL.Image.new(image.mode, (side, side), fill if image.mode == "RGB" else 255)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def to_rgb(image: PIL.Image.Image, name: str = "image") -> PIL.Image.Image:
    """Converts any accepted PIL mode to RGB, compositing transparency onto white (16-bit greyscale scaled to 8 bits)."""
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(f"{name} must be a PIL image; got {type(image).__name__}")
    if image.mode not in ACCEPTED_MODES:
        raise ValueError(f"{name} mode {image.mode!r} is not supported; accepted modes: {', '.join(ACCEPTED_MODES)}")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"{name} has no pixels (size {image.width}x{image.height})")
    if image.mode in SIXTEEN_BIT_MODES:
        return _from_sixteen_bit(image).convert("RGB")
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        background = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def fit_onto(image: PIL.Image.Image, width: int, height: int, fill=(255, 255, 255)) -> PIL.Image.Image:
    """An RGB `width` x `height` image: `image` scaled to fit (aspect kept, bicubic), centred on `fill`."""
    image = to_rgb(image)
    scale = min(width / image.width, height / image.height)
    size = (max(1, min(width, round(image.width * scale))), max(1, min(height, round(image.height * scale))))
    sheet = PIL.Image.new("RGB", (width, height), fill)
    sheet.paste(image.resize(size, PIL.Image.BICUBIC), ((width - size[0]) // 2, (height - size[1]) // 2))
    return sheet


def preprocess_pil(image: PIL.Image.Image, size: int, name: str = "image") -> torch.Tensor:
    """PIL image (any accepted mode, any size) -> float tensor (3, size, size) in [-1, 1]."""
    image = pad_to_square(to_rgb(image, name)).resize((size, size), PIL.Image.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


def preprocess(images: Union[PipelineImageInput, Sequence[PipelineImageInput]], size: int, name: str = "image") -> torch.Tensor:
    """Images -> float tensor (B, 3, size, size) in [-1, 1].

    Accepts a PIL image, a list of PIL images, a numpy array (H, W), (H, W, C) or (B, H, W, C) (uint8, or floats in
    [0, 1]; see `array_to_pil`), or a float tensor (3, H, W) / (B, 3, H, W) already in [-1, 1] (resized if needed).
    Anything else raises `TypeError` / `ValueError` naming `name`.
    """
    if isinstance(images, torch.Tensor):
        t = images.unsqueeze(0) if images.ndim == 3 else images
        if t.ndim != 4 or t.shape[1] != 3:
            raise ValueError(f"{name} tensors must have shape (3, H, W) or (B, 3, H, W); got {tuple(images.shape)}")
        if t.numel() == 0:
            raise ValueError(f"{name} tensor has no pixels (shape {tuple(images.shape)})")
        if not t.is_floating_point():
            raise TypeError(f"{name} tensors must be float in [-1, 1]; got {t.dtype} (convert with t.float() / 127.5 - 1)")
        t = t.float()
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} tensor holds NaN or infinite values")
        lo, hi = t.min().item(), t.max().item()
        if lo < -1.001 or hi > 1.001:
            raise ValueError(f"{name} tensors must hold values in [-1, 1]; got [{lo:g}, {hi:g}]")
        if t.shape[-2:] != (size, size):
            t = torch.nn.functional.interpolate(t, size=(size, size), mode="bicubic", align_corners=False)
        return t.clamp(-1, 1)
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            images = [array_to_pil(a, name) for a in images]
            if not images:
                raise ValueError(f"{name} is an empty batch of arrays; pass at least one image")
        else:
            images = [array_to_pil(images, name)]
    if isinstance(images, PIL.Image.Image):
        images = [images]
    if isinstance(images, (str, bytes, dict)) or not hasattr(images, "__iter__"):
        raise TypeError(f"{name} must be a PIL image, a numpy array, a tensor or a list of them; got {type(images).__name__}")
    images = [array_to_pil(im, name) if isinstance(im, np.ndarray) else im for im in images]
    if len(images) == 0:
        raise ValueError(f"{name}: got an empty list of images; pass at least one image")
    for im in images:
        if not isinstance(im, PIL.Image.Image):
            raise TypeError(f"{name} must be a PIL image, a numpy array, a tensor or a list of them; got a list holding {type(im).__name__}")
    return torch.stack([preprocess_pil(im, size, name) for im in images])


def _mask_array(arr: np.ndarray, name: str) -> np.ndarray:
    """A mask array -> float32 (H, W) in [0, 1]: (H, W), (H, W, C), (1, H, W) or (1, H, W, C); bool, integers in
    [0, 255] or floats in [0, 1] / [0, 255]; anything else raises naming `name`."""
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


def preprocess_mask(mask: PipelineImageInput, size: int, name: str = "mask_image") -> torch.Tensor:
    """Mask image -> float tensor (1, size, size) in {0, 1}; white (>= 0.5) marks the region to regenerate."""
    if isinstance(mask, torch.Tensor):
        arr = _mask_array(mask.detach().cpu().float().numpy(), name)
        m = torch.from_numpy(arr)[None, None]
        m = torch.nn.functional.interpolate(m, size=(size, size), mode="nearest")[0]
        return (m >= 0.5).float()
    if isinstance(mask, PIL.Image.Image) and mask.mode == "F":
        mask = np.asarray(mask)
    if isinstance(mask, np.ndarray):
        mask = PIL.Image.fromarray((_mask_array(mask, name) * 255).round().astype(np.uint8))
    if not isinstance(mask, PIL.Image.Image):
        raise TypeError(f"{name} must be a PIL image, numpy array or tensor; got {type(mask).__name__}")
    # padding is not part of the garment: pad with black (keep), never force it into the mask
    arr = np.asarray(pad_to_square_mask(mask, size, name), dtype=np.float32) / 255.0
    return torch.from_numpy((arr >= 0.5).astype(np.float32))[None]


def pad_to_square_mask(mask: PIL.Image.Image, size: int, name: str = "mask_image") -> PIL.Image.Image:
    """Pads a mask to square with black (keep) and resizes it with nearest-neighbour sampling."""
    if mask.width < 1 or mask.height < 1:
        raise ValueError(f"{name} has no pixels (size {mask.width}x{mask.height})")
    if mask.mode in SIXTEEN_BIT_MODES:
        m = _from_sixteen_bit(mask)
    else:
        try:
            m = mask.convert("L")
        except ValueError as e:
            raise ValueError(f"{name} mode {mask.mode!r} cannot be read as a mask ({e}); use L, 1, RGB or RGBA") from None
    w, h = m.size
    side = max(w, h)
    canvas = PIL.Image.new("L", (side, side), 0)
    canvas.paste(m, ((side - w) // 2, (side - h) // 2))
    return canvas.resize((size, size), PIL.Image.NEAREST)


def postprocess(images: torch.Tensor, output_type: str = "pil"):
    """Float tensor (B, 3, H, W) in [-1, 1] -> list of PIL images, uint8 numpy (B, H, W, 3) or the tensor."""
    images = images.detach().float().clamp(-1, 1)
    if output_type == "pt":
        return images
    arr = ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if output_type == "np":
        return arr
    if output_type == "pil":
        return [PIL.Image.fromarray(a) for a in arr]
    raise ValueError(f"output_type {output_type!r} is not supported; use 'pil', 'np' or 'pt'")


def make_grid(images: Iterable[PIL.Image.Image], cols: int, pad: int = 2) -> PIL.Image.Image:
    """Tiles PIL images into one grid image (white gutters)."""
    images: List[PIL.Image.Image] = list(images)
    if not images:
        raise ValueError("make_grid needs at least one image")
    w, h = images[0].size
    rows = (len(images) + cols - 1) // cols
    grid = PIL.Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid.paste(im.convert("RGB").resize((w, h)), (pad + c * (w + pad), pad + r * (h + pad)))
    return grid
