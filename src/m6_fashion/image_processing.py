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

ACCEPTED_MODES = ("RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "I")


def pad_to_square(image: PIL.Image.Image, fill=(255, 255, 255)) -> PIL.Image.Image:
    """Pads a PIL image to a square canvas, centred, on `fill` (white by default)."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = PIL.Image.new(image.mode, (side, side), fill if image.mode == "RGB" else 255)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """Converts any accepted PIL mode to RGB, compositing transparency onto white."""
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}")
    if image.mode not in ACCEPTED_MODES:
        raise ValueError(f"image mode {image.mode!r} is not supported; accepted modes: {', '.join(ACCEPTED_MODES)}")
    if image.mode in ("RGBA", "LA", "P"):
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


def preprocess_pil(image: PIL.Image.Image, size: int) -> torch.Tensor:
    """PIL image (any accepted mode, any size) -> float tensor (3, size, size) in [-1, 1]."""
    image = pad_to_square(to_rgb(image)).resize((size, size), PIL.Image.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


def preprocess(images: Union[PipelineImageInput, Sequence[PipelineImageInput]], size: int) -> torch.Tensor:
    """Images -> float tensor (B, 3, size, size) in [-1, 1].

    Accepts a PIL image, a list of PIL images, a uint8 numpy array (H, W, 3) or (B, H, W, 3), or a
    float tensor (3, H, W) / (B, 3, H, W) already in [-1, 1] (resized if needed).
    """
    if isinstance(images, torch.Tensor):
        t = images.unsqueeze(0) if images.ndim == 3 else images
        if t.ndim != 4 or t.shape[1] != 3:
            raise ValueError(f"image tensors must have shape (3, H, W) or (B, 3, H, W); got {tuple(images.shape)}")
        t = t.float()
        if t.shape[-2:] != (size, size):
            t = torch.nn.functional.interpolate(t, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
        return t
    if isinstance(images, np.ndarray):
        arr = images[None] if images.ndim == 3 else images
        if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
            raise ValueError(f"image arrays must have shape (H, W, C) or (B, H, W, C) with C in 1/3/4; got {images.shape}")
        images = [PIL.Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a) for a in arr.astype(np.uint8)]
    if isinstance(images, PIL.Image.Image):
        images = [images]
    images = list(images)
    if len(images) == 0:
        raise ValueError("got an empty list of images; pass at least one image")
    return torch.stack([preprocess_pil(im, size) for im in images])


def preprocess_mask(mask: PipelineImageInput, size: int) -> torch.Tensor:
    """Mask image -> float tensor (1, size, size) in {0, 1}; white (>= 0.5) marks the region to regenerate."""
    if isinstance(mask, torch.Tensor):
        m = mask.float()
        while m.ndim < 4:
            m = m.unsqueeze(0)
        m = torch.nn.functional.interpolate(m[:, :1], size=(size, size), mode="nearest")[0]
        return (m >= 0.5).float()
    if isinstance(mask, np.ndarray):
        arr = mask.astype(np.float32)
        if arr.max() > 1.0:
            arr = arr / 255.0
        mask = PIL.Image.fromarray((arr.squeeze() * 255).astype(np.uint8))
    if not isinstance(mask, PIL.Image.Image):
        raise TypeError(f"mask_image must be a PIL image, numpy array or tensor; got {type(mask).__name__}")
    # padding is not part of the garment: pad with black (keep), never force it into the mask
    arr = np.asarray(pad_to_square_mask(mask, size), dtype=np.float32) / 255.0
    return torch.from_numpy((arr >= 0.5).astype(np.float32))[None]


def pad_to_square_mask(mask: PIL.Image.Image, size: int) -> PIL.Image.Image:
    """Pads a mask to square with black (keep) and resizes it with nearest-neighbour sampling."""
    m = mask.convert("L")
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
