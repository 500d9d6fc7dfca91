"""Image pre- and post-processing shared by training, the pipeline and export.

Product photos are portrait (e.g. 60x80) on a white background; every model here works on
square images, so images are padded to a square on white (never cropped: a crop would cut off
collars or soles) and then resized. The PIL / numpy steps (modes, arrays, padding, masks) live in
`m6_fashion_core.image`, shared with the ONNX runtime; this module turns their results into tensors with
diffusers' `VaeImageProcessor` (pixel / 255 * 2 - 1 and round((x / 2 + 0.5) * 255) are bit-identical to
pixel / 127.5 - 1 and round((x + 1) * 127.5) in float32 for every uint8 pixel and every float32 in [-1, 1]
near a rounding boundary).
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor
from m6_fashion_core import image as core_image
from m6_fashion_core.image import (  # noqa: F401
    ACCEPTED_MODES,
    SIXTEEN_BIT_MODES,
    fit_onto,
    from_sixteen_bit as _from_sixteen_bit,
    make_grid,
    mask_array as _mask_array,
    pad_to_square,
    pad_to_square_mask,
    to_rgb,
)

PipelineImageInput = Union[PIL.Image.Image, np.ndarray, torch.Tensor]

# this module also takes batches of arrays and tensors in [-1, 1], so its array errors name them
ARRAY_SHAPES = "(H, W), (H, W, C) or (B, H, W, C) with C in 1/3/4"
FLOAT_ARRAY_HINT = "pass uint8 for 0-255 images, or a tensor in [-1, 1]"
IMAGE_INPUTS = "a PIL image, a numpy array, a tensor or a list of them"
MASK_INPUTS = "a PIL image, numpy array or tensor"

# images arrive already padded and resized by `m6_fashion_core.image.square_image`: no resizing here
_VAE_IMAGE_PROCESSOR = VaeImageProcessor(do_resize=False, do_normalize=True)


def array_to_pil(array: np.ndarray, name: str = "image") -> PIL.Image.Image:
    """An image array -> PIL image: (H, W) or (H, W, C) with C in 1/3/4; uint8 (or integers in [0, 255]), bool, or
    floats in [0, 1] (diffusers' convention). Anything else raises naming `name` (see `m6_fashion_core.image.array_to_pil`)."""
    return core_image.array_to_pil(array, name, ARRAY_SHAPES, FLOAT_ARRAY_HINT)


def preprocess_pil(image: PIL.Image.Image, size, name: str = "image") -> torch.Tensor:
    """PIL image (any accepted mode, any size) -> float tensor (3, size, size) in [-1, 1] (`size`: an int side or
    `(height, width)`)."""
    return _VAE_IMAGE_PROCESSOR.preprocess(core_image.square_image(image, size, name))[0]


def _preprocess_tensor(images: torch.Tensor, size, name: str) -> torch.Tensor:
    """Float tensor (3, H, W) / (B, 3, H, W) in [-1, 1] -> (B, 3, size, size) (or `(B, 3, height, width)` for a
    `(height, width)` size), resized bicubic when needed."""
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
    hw = core_image.size_hw(size)
    if tuple(t.shape[-2:]) != hw:
        t = torch.nn.functional.interpolate(t, size=hw, mode="bicubic", align_corners=False)
    return t.clamp(-1, 1)


def preprocess(images: Union[PipelineImageInput, Sequence[PipelineImageInput]], size, name: str = "image") -> torch.Tensor:
    """Images -> float tensor (B, 3, size, size) in [-1, 1]; `size` is an int side or `(height, width)` (a
    non-square model's canvas: PIL images and arrays are padded on white to that aspect ratio, then resized).

    Accepts a PIL image, a list of PIL images, a numpy array (H, W), (H, W, C) or (B, H, W, C) (uint8, or floats in
    [0, 1]; see `array_to_pil`), or a float tensor (3, H, W) / (B, 3, H, W) already in [-1, 1] (resized if needed).
    Anything else raises `TypeError` / `ValueError` naming `name`.
    """
    if isinstance(images, torch.Tensor):
        return _preprocess_tensor(images, size, name)
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
        raise TypeError(f"{name} must be {IMAGE_INPUTS}; got {type(images).__name__}")
    images = [array_to_pil(im, name) if isinstance(im, np.ndarray) else im for im in images]
    if len(images) == 0:
        raise ValueError(f"{name}: got an empty list of images; pass at least one image")
    for im in images:
        if not isinstance(im, PIL.Image.Image):
            raise TypeError(f"{name} must be {IMAGE_INPUTS}; got a list holding {type(im).__name__}")
    pixels = _VAE_IMAGE_PROCESSOR.preprocess([core_image.square_image(im, size, name) for im in images])
    # VaeImageProcessor returns a channels-last view; the encoder's convolutions round differently on it
    # (a near-tied code flipped in tests), so the layout is made the usual contiguous NCHW one
    return pixels.contiguous()


def preprocess_mask(mask: PipelineImageInput, size, name: str = "mask_image") -> torch.Tensor:
    """Mask image -> float tensor (1, size, size) in {0, 1} (`(1, height, width)` for a `(height, width)` size);
    white (>= 0.5) marks the region to regenerate.

    A tensor is read as an array (see `m6_fashion_core.image.mask_array`) and resized nearest-neighbour without
    padding; PIL images and arrays are padded to a square with black (keep) first.
    """
    if isinstance(mask, torch.Tensor):
        arr = _mask_array(mask.detach().cpu().float().numpy(), name)
        m = torch.from_numpy(arr)[None, None]
        m = torch.nn.functional.interpolate(m, size=core_image.size_hw(size), mode="nearest")[0]
        return (m >= 0.5).float()
    return torch.from_numpy(core_image.preprocess_mask(mask, size, name, MASK_INPUTS))


def postprocess(images: torch.Tensor, output_type: str = "pil"):
    """Float tensor (B, 3, H, W) in [-1, 1] -> list of PIL images, uint8 numpy (B, H, W, 3) or the tensor.

    pixel = round((x / 2 + 0.5) * 255), as `VaeImageProcessor.numpy_to_pil`.
    """
    images = images.detach().float().clamp(-1, 1)
    if output_type == "pt":
        return images
    if output_type == "np":
        return (_VAE_IMAGE_PROCESSOR.postprocess(images, "np") * 255).round().astype(np.uint8)
    if output_type == "pil":
        return _VAE_IMAGE_PROCESSOR.postprocess(images, "pil")
    raise ValueError(f"output_type {output_type!r} is not supported; use 'pil', 'np' or 'pt'")
