"""Builds the input tensors of :class:`~m6_fashion.models.transformer_m6fashion.M6FashionTransformer`.

Pure torch, no model code: the training collator, the SMART pipeline and (mirrored in numpy) the
torch-free runtime all use the same layout::

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

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

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
Box = Tuple[int, int, int, int]
GridSpec = Union[int, Sequence[int]]


def grid_shape(grid) -> Tuple[int, int]:
    """``(rows, cols)`` of a token grid given as an int side (square), a ``(rows, cols)`` pair, or a config.

    A config (any object with ``grid_size``) gives ``(grid_height, grid_width)``, each defaulting to
    ``grid_size``. Raises ``ValueError`` unless both sides are positive integers.
    """
    if hasattr(grid, "grid_size"):
        side = grid.grid_size
        rows, cols = getattr(grid, "grid_height", None) or side, getattr(grid, "grid_width", None) or side
    elif isinstance(grid, (tuple, list)):
        if len(grid) != 2:
            raise ValueError(f"a grid must be an int side or a (rows, cols) pair; got {grid!r}")
        rows, cols = grid
    else:
        rows = cols = grid
    try:
        ok = all(not isinstance(v, bool) and int(v) == v and int(v) >= 1 for v in (rows, cols))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"a grid must be an int side or a (rows, cols) pair of positive integers; got {grid!r}")
    return int(rows), int(cols)


def check_box(box: Sequence[int], grid_size: GridSpec) -> Box:
    """Validates ``box = (top, left, height, width)`` in grid units and returns it as ints.

    ``grid_size`` is the grid: an int side (square), a ``(rows, cols)`` pair or a config (see
    :func:`grid_shape`). Raises ``ValueError`` unless ``0 <= top``, ``0 <= left``, ``height >= 1``,
    ``width >= 1``, ``top + height <= rows`` and ``left + width <= cols``.
    """
    rows, cols = grid_shape(grid_size)
    try:
        top, left, height, width = (int(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"a box must be 4 integers (top, left, height, width) in grid units; got {box!r}") from None
    if (
        top < 0
        or left < 0
        or height < 1
        or width < 1
        or top + height > rows
        or left + width > cols
    ):
        raise ValueError(
            f"box (top, left, height, width) = {(top, left, height, width)} does not fit the {rows}x{cols} "
            f"token grid (rows x cols); accepted: top >= 0, left >= 0, height >= 1, width >= 1, "
            f"top + height <= {rows}, left + width <= {cols}"
        )
    return top, left, height, width


def box_to_positions(box: Sequence[int], grid_size: GridSpec) -> torch.Tensor:
    """Flat grid indices (raster order) of the cells inside ``box = (top, left, height, width)``.

    ``grid_size``: an int side, a ``(rows, cols)`` pair or a config (see :func:`grid_shape`).
    Returns a ``(height * width,)`` long tensor of ``row * cols + col``. Raises ``ValueError``
    for a box outside the grid (see :func:`check_box`).
    """
    top, left, height, width = check_box(box, grid_size)
    _, n_cols = grid_shape(grid_size)
    rows = torch.arange(top, top + height)
    cols = torch.arange(left, left + width)
    return (rows[:, None] * n_cols + cols[None, :]).reshape(-1)


def crop_patch(codes: torch.Tensor, box: Sequence[int], grid_size: GridSpec) -> Patch:
    """Cuts a condition patch out of a token grid.

    Args:
        codes: ``(N, M)`` or ``(rows, cols, M)`` codes of one image (``N = rows * cols``).
        box: ``(top, left, height, width)`` in grid units.
        grid_size: an int side, a ``(rows, cols)`` pair or a config (see :func:`grid_shape`).

    Returns:
        ``(codes (n, M), positions (n,))`` with ``n = height * width``.
    """
    rows, cols = grid_shape(grid_size)
    codes = torch.as_tensor(codes)
    if codes.ndim == 3:
        if codes.shape[0] != rows or codes.shape[1] != cols:
            raise ValueError(f"expected a ({rows}, {cols}, M) token grid ({rows}x{cols}); got {tuple(codes.shape)}")
        codes = codes.reshape(rows * cols, codes.shape[-1])
    elif codes.ndim != 2 or codes.shape[0] != rows * cols:
        raise ValueError(f"expected codes of shape (N={rows * cols}, M) or ({rows}, {cols}, M); got {tuple(codes.shape)}")
    positions = box_to_positions(box, grid_size)
    return codes[positions].long(), positions


def condition_segment_length(patches: Optional[Sequence[Patch]]) -> int:
    """Length of a condition segment without EOV: patch tokens plus one SEP between patches."""
    if not patches:
        return 0
    return sum(int(p[1].numel()) for p in patches) + len(patches) - 1


def _check_patches(patches: Sequence[Patch], config, sample: int) -> List[Patch]:
    rows, cols = grid_shape(config)
    n, m, k = rows * cols, config.num_groups, config.codebook_size
    checked = []
    for j, patch in enumerate(patches):
        if not isinstance(patch, (tuple, list)) or len(patch) != 2:
            raise ValueError(f"condition patch {j} of sample {sample} must be a pair (codes (n, M), positions (n,))")
        codes, positions = torch.as_tensor(patch[0]).long(), torch.as_tensor(patch[1]).long().reshape(-1)
        if codes.ndim != 2 or codes.shape[1] != m or codes.shape[0] != positions.numel() or codes.shape[0] == 0:
            raise ValueError(
                f"condition patch {j} of sample {sample}: codes must have shape (n, M={m}) with n = len(positions) >= 1; "
                f"got codes {tuple(codes.shape)} and {positions.numel()} positions"
            )
        if codes.min() < 0 or codes.max() >= k:
            raise ValueError(
                f"condition patch {j} of sample {sample}: codes must lie in [0, {k}) (no MASK in conditions); "
                f"got values in [{int(codes.min())}, {int(codes.max())}]"
            )
        if positions.min() < 0 or positions.max() >= n:
            raise ValueError(
                f"condition patch {j} of sample {sample}: positions must be grid indices in [0, {n}) "
                f"for a {rows}x{cols} grid; got values in [{int(positions.min())}, {int(positions.max())}]"
            )
        checked.append((codes, positions))
    length = condition_segment_length(checked)
    if length > config.max_condition_tokens:
        raise ValueError(
            f"the condition patches of sample {sample} need {length} positions (tokens + SEPs) but "
            f"max_condition_tokens is {config.max_condition_tokens}; use fewer or smaller patches"
        )
    return checked


def _text_rows(text_ids, text_attention_mask, config, batch: Optional[int]) -> List[torch.Tensor]:
    """Normalises the text argument to a list of 1-D long tensors of real tokens (no padding)."""
    t = config.max_text_length
    if text_ids is None:
        if batch is None:
            raise ValueError("pass text_ids or target_codes so that the batch size is known")
        return [torch.zeros(0, dtype=torch.long) for _ in range(batch)]
    if isinstance(text_ids, torch.Tensor):
        if text_ids.ndim != 2:
            raise ValueError(f"text_ids must have shape (batch, text_len); got {tuple(text_ids.shape)}")
        if text_attention_mask is None:
            text_attention_mask = text_ids != config.pad_token_id
        elif tuple(text_attention_mask.shape) != tuple(text_ids.shape):
            raise ValueError(
                f"text_attention_mask must have the shape of text_ids {tuple(text_ids.shape)}; got {tuple(text_attention_mask.shape)}"
            )
        rows = [ids[mask.bool()].long() for ids, mask in zip(text_ids, text_attention_mask)]
    else:
        rows = [torch.as_tensor(list(r), dtype=torch.long) for r in text_ids]
    for i, r in enumerate(rows):
        if r.numel() > t:
            raise ValueError(
                f"text of sample {i} has {r.numel()} tokens but max_text_length is {t}; truncate it "
                f"(e.g. tokenizer(..., truncation=True, max_length={t}))"
            )
    if batch is not None and len(rows) != batch:
        raise ValueError(f"text_ids has {len(rows)} rows but target_codes has {batch}")
    return rows


def build_model_inputs(
    config,
    text_ids: Union[torch.Tensor, Sequence[Sequence[int]], None],
    target_codes: Optional[torch.Tensor] = None,
    conditions: Optional[Sequence[Optional[Sequence[Patch]]]] = None,
    text_attention_mask: Optional[torch.Tensor] = None,
) -> Dict[str, torch.Tensor]:
    """Builds the model inputs for a batch.

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
        ``token_type_ids (B, L)`` and ``attention_mask (B, L)``, all long, with
        ``L = max condition-segment length + 1 + max_text_length + 1 + N``.
    """
    gh, gw = grid_shape(config)
    m, k = config.num_groups, config.codebook_size
    n, t = gh * gw, config.max_text_length
    batch = None
    if target_codes is not None:
        target_codes = torch.as_tensor(target_codes)
        if target_codes.dtype.is_floating_point:
            raise TypeError("target_codes must be an integer tensor")
        if target_codes.ndim == 4:
            if tuple(target_codes.shape[1:3]) != (gh, gw):
                raise ValueError(f"target_codes must be a {gh}x{gw} token grid (B, {gh}, {gw}, M); got {tuple(target_codes.shape)}")
            target_codes = target_codes.reshape(target_codes.shape[0], n, target_codes.shape[-1])
        if target_codes.ndim != 3 or target_codes.shape[1] != n or target_codes.shape[2] != m:
            raise ValueError(
                f"target_codes must have shape (B, N={n}, M={m}) or (B, {gh}, {gw}, {m}); got {tuple(target_codes.shape)}"
            )
        if target_codes.numel() and (target_codes.min() < 0 or target_codes.max() > k):
            raise ValueError(
                f"target codes must lie in [0, {k}) or equal {k} (MASK); got values in "
                f"[{int(target_codes.min())}, {int(target_codes.max())}]"
            )
        batch = target_codes.shape[0]
    texts = _text_rows(text_ids, text_attention_mask, config, batch)
    batch = len(texts)
    if target_codes is None:
        target_codes = torch.full((batch, n, m), k, dtype=torch.long)
    if conditions is None:
        conditions = [None] * batch
    if len(conditions) != batch:
        raise ValueError(f"conditions must have one entry per sample ({batch}); got {len(conditions)}")
    patches = [_check_patches(c, config, i) if c else [] for i, c in enumerate(conditions)]
    cond_len = [condition_segment_length(p) for p in patches]
    lc = max(cond_len) if cond_len else 0
    length = lc + 1 + t + 1 + n

    input_ids = torch.full((batch, length), config.pad_token_id, dtype=torch.long)
    image_codes = torch.zeros(batch, length, m, dtype=torch.long)
    position_ids = torch.zeros(batch, length, dtype=torch.long)
    token_type_ids = torch.zeros(batch, length, dtype=torch.long)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)

    text_start = lc + 1  # sequence index of the first text position (same for all samples)
    for i in range(batch):
        start = lc - cond_len[i]  # first real position of sample i
        cursor = start
        for j, (codes, positions) in enumerate(patches[i]):
            if j > 0:
                input_ids[i, cursor] = config.sep_token_id
                position_ids[i, cursor] = cursor - start
                cursor += 1
            size = positions.numel()
            input_ids[i, cursor : cursor + size] = config.img_token_id
            image_codes[i, cursor : cursor + size] = codes
            position_ids[i, cursor : cursor + size] = positions
            cursor += size
        # EOV
        input_ids[i, lc] = config.eov_token_id
        position_ids[i, lc] = lc - start
        attention_mask[i, start : lc + 1] = 1
        # text (+ padding) and EOT
        row = texts[i]
        input_ids[i, text_start : text_start + row.numel()] = row
        attention_mask[i, text_start : text_start + row.numel()] = 1
        position_ids[i, text_start : text_start + t + 1] = torch.arange(t + 1) + (text_start - start)
        input_ids[i, text_start + t] = config.eot_token_id
        attention_mask[i, text_start + t] = 1
    token_type_ids[:, text_start : text_start + t + 1] = 1
    # target
    input_ids[:, length - n :] = config.img_token_id
    image_codes[:, length - n :] = target_codes.long()
    position_ids[:, length - n :] = torch.arange(n)
    token_type_ids[:, length - n :] = 2
    attention_mask[:, length - n :] = 1
    return {
        "input_ids": input_ids,
        "image_codes": image_codes,
        "position_ids": position_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
    }


def split_prefix_and_target(inputs: Dict[str, torch.Tensor], num_image_tokens: int):
    """Splits built inputs into the prefix (for ``encode_prefix``) and the target chunk.

    Returns ``(prefix, target)`` dicts. ``target["attention_mask"]`` is the FULL mask
    ``(B, Lp + N)``, as a forward pass with the prefix cache expects.
    """
    n = num_image_tokens
    prefix = {k: v[:, :-n] for k, v in inputs.items()}
    target = {k: v[:, -n:] for k, v in inputs.items() if k != "attention_mask"}
    target["attention_mask"] = inputs["attention_mask"]
    return prefix, target
