"""The transformer's sequence layout (see :mod:`m6_fashion_core.layout`)::

    [PAD]*p  [patch 1][SEP][patch 2]...[patch P]  [EOV]  [text, padded to T]  [EOT]  [target: N tokens]
    left pad  condition segment (type 0)           (0)    text segment (type 1)  (1)    type 2

A condition patch is a pair ``(codes (n, M) int in [0, K), positions (n,) int in [0, N))``.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
from m6_fashion_core import layout as _core
from m6_fashion_core.layout import (
    Patch,
    box_to_positions,
    check_box,
    check_condition_patches,
    condition_segment_length,
    crop_patch,
    grid_shape,
    split_prefix_and_target,
)

from .bundle import Geometry

__all__ = [
    "Patch", "box_to_positions", "build_model_inputs", "check_box", "check_condition_patches",
    "condition_segment_length", "crop_patch", "grid_shape", "split_prefix_and_target",
]


def build_model_inputs(
    geo: Geometry,
    special: Dict[str, int],
    text_ids: Sequence[Sequence[int]],
    target_codes: Optional[np.ndarray] = None,
    conditions: Optional[Sequence[Optional[Sequence[Patch]]]] = None,
) -> Dict[str, np.ndarray]:
    """Builds ``input_ids, image_codes, position_ids, token_type_ids, attention_mask`` (int64) for a batch.

    ``special``: the bundle's ``special_token_ids``; ``text_ids``: ``B`` id lists (no padding, each
    ``<= max_text_length``); ``target_codes``: ``(B, N, M)`` or ``(B, g, g, M)`` in ``[0, K]`` (``K`` =
    MASK) or ``None`` for fully masked targets; ``conditions``: ``None`` or ``B`` entries of condition
    patches. See :func:`m6_fashion_core.layout.build_model_inputs`.
    """
    if isinstance(text_ids, np.ndarray):  # id rows without padding: a 2-D array is read row by row
        text_ids = list(text_ids)
    return _core.build_model_inputs(geo, text_ids, target_codes, conditions, special=special)
