"""Builds the input tensors of :class:`~m6_fashion.models.transformer_m6fashion.M6FashionTransformer`.

No model code: the training collator, the SMART pipeline and the torch-free runtime all use the same
layout, built in numpy by :mod:`m6_fashion_core.layout`; the functions here take and return torch tensors::

    [PAD]*p  [patch 1][SEP][patch 2]...[patch P]  [EOV]  [text, padded to T]  [EOT]  [target: N tokens]
    left pad  condition segment (type 0)           (0)    text segment (type 1)  (1)    type 2

* ``T = max_text_length`` and ``N = grid_height * grid_width`` (``grid_size ** 2`` for a square
  grid) are fixed, so the text segment always has
  ``T + 1`` positions and the target always sits in the last ``N`` positions. Only the condition
  segment varies in length; it is left-padded to the longest one in the batch.
* Image positions (condition patches and target) carry ``img_token_id`` in ``input_ids``, their
  codes in ``image_codes`` and their flat grid index ``row * grid_width + col`` in ``position_ids``.
* Other positions carry 0 in ``image_codes`` and their 1-D index, counted from the first
  non-padding position of the sample, in ``position_ids`` (so outputs do not depend on how much a
  sample was padded in a batch).
* ``attention_mask`` is 0 on left padding and on text padding, 1 elsewhere.

A condition patch is a pair ``(codes (n, M) long in [0, K), positions (n,) long in [0, N))``;
:func:`crop_patch` cuts one out of a token grid, :func:`box_to_positions` lists a box's positions.

The ``config`` argument only needs the attributes ``grid_size`` (and optionally ``grid_height`` /
``grid_width``, which default to it), ``num_groups``, ``codebook_size``,
``max_text_length``, ``max_condition_tokens``, ``pad_token_id``, ``sep_token_id``,
``eov_token_id``, ``eot_token_id`` and ``img_token_id`` (an :class:`M6FashionConfig` has them).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from m6_fashion_core import layout as _core
from m6_fashion_core.layout import (  # noqa: F401  (Box, GridSpec: type names of this module)
    Box,
    GridSpec,
    check_box,
    condition_segment_length,
    grid_shape,
    split_prefix_and_target,
)

__all__ = [
    "Patch",
    "box_to_positions",
    "check_box",
    "crop_patch",
    "condition_segment_length",
    "build_model_inputs",
    "grid_shape",
    "split_prefix_and_target",
]

Patch = Tuple[torch.Tensor, torch.Tensor]


def _to_numpy(value: Any) -> Any:
    """Tensors (on any device) -> numpy arrays, inside lists and tuples too; other values unchanged."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        # numpy has no bfloat16: such a tensor goes through float32 (the layout then rejects or truncates it)
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_numpy(v) for v in value)
    return value


def box_to_positions(box: Sequence[int], grid_size: GridSpec) -> torch.Tensor:
    """Flat grid indices (raster order) of the cells inside ``box = (top, left, height, width)``.

    ``grid_size``: an int side, a ``(rows, cols)`` pair or a config (see :func:`grid_shape`).
    Returns a ``(height * width,)`` long tensor of ``row * cols + col``. Raises ``ValueError``
    for a box outside the grid (see :func:`check_box`).
    """
    return torch.from_numpy(_core.box_to_positions(box, grid_size))


def crop_patch(codes: torch.Tensor, box: Sequence[int], grid_size: GridSpec) -> Patch:
    """Cuts a condition patch ``(codes (n, M) long, positions (n,) long)`` out of one image's token grid.

    ``codes`` is ``(N, M)`` or ``(rows, cols, M)`` with ``N = rows * cols``, ``box`` is ``(top, left,
    height, width)`` in grid units (``n = height * width``) and ``grid_size`` is read by :func:`grid_shape`.
    The patch codes stay on the device of ``codes``; the positions are a CPU tensor. Shapes and boxes
    are checked as in :func:`m6_fashion_core.layout.crop_patch`.
    """
    codes = torch.as_tensor(codes)
    n, m = _core.check_grid_codes_shape(codes.shape, grid_size)
    positions = box_to_positions(box, grid_size)
    return codes.reshape(n, m)[positions].long(), positions


def build_model_inputs(
    config,
    text_ids: Union[torch.Tensor, Sequence[Sequence[int]], None],
    target_codes: Optional[torch.Tensor] = None,
    conditions: Optional[Sequence[Optional[Sequence[Patch]]]] = None,
    text_attention_mask: Optional[torch.Tensor] = None,
) -> Dict[str, torch.Tensor]:
    """Builds the model inputs for a batch (see :func:`m6_fashion_core.layout.build_model_inputs`).

    Args:
        config: an :class:`M6FashionConfig` (or any object with the attributes listed in the module doc).
        text_ids: ``(B, Lt)`` long tensor (padding = ``pad_token_id`` or ``text_attention_mask`` 0), or
            a list of ``B`` id lists of any length ``<= max_text_length``; ``None`` = no text for anyone.
            A sample without text gets an all-padding text segment.
        target_codes: ``(B, N, M)`` or ``(B, grid_height, grid_width, M)`` codes in ``[0, K]`` (``K`` = MASK);
            ``None`` = fully masked targets.
        conditions: ``None`` or a list of ``B`` entries, each ``None``/empty or a list of condition
            patches ``(codes (n, M), positions (n,))``.
        text_attention_mask: optional ``(B, Lt)`` 1/0 mask for a tensor ``text_ids``.

    Returns:
        dict with ``input_ids (B, L)``, ``image_codes (B, L, M)``, ``position_ids (B, L)``,
        ``token_type_ids (B, L)`` and ``attention_mask (B, L)``, all long CPU tensors, with
        ``L = max condition-segment length + 1 + max_text_length + 1 + N``.
    """
    if isinstance(text_ids, torch.Tensor):
        text_ids, text_attention_mask = _to_numpy(text_ids), _to_numpy(text_attention_mask)
    elif text_ids is not None:  # id rows; a 2-D array here is read row by row, padding included
        text_ids = [_to_numpy(row) for row in text_ids]
    if target_codes is not None:
        target_codes = _to_numpy(target_codes)
    if conditions is not None:
        conditions = [_to_numpy(c) for c in conditions]
    inputs = _core.build_model_inputs(config, text_ids, target_codes, conditions, text_attention_mask)
    return {key: torch.from_numpy(value) for key, value in inputs.items()}
