"""Image pre- and post-processing with PIL and numpy (see ``m6_fashion_core.image``, shared with the pipeline).

Images are padded to a square on white (never cropped), resized bicubic and scaled to [-1, 1]; masks
are padded with black (keep), resized nearest-neighbour and thresholded at 0.5 (white = regenerate).
"""

from m6_fashion_core.image import (  # noqa: F401
    ACCEPTED_MODES,
    SIXTEEN_BIT_MODES,
    ImageInput,
    array_to_pil,
    as_pil as _as_pil,
    cell_mask,
    fit_onto,
    from_sixteen_bit as _from_sixteen_bit,
    mask_array as _mask_array,
    pad_to_square,
    postprocess,
    preprocess,
    preprocess_mask,
    to_rgb,
)

__all__ = [
    "ACCEPTED_MODES", "SIXTEEN_BIT_MODES", "ImageInput", "array_to_pil", "cell_mask", "fit_onto", "pad_to_square",
    "postprocess", "preprocess", "preprocess_mask", "to_rgb",
]
