"""The transformer's sequence layout in numpy (mirror of ``m6_fashion.models.sequence_layout``)::

    [PAD]*p  [patch 1][SEP][patch 2]...[patch P]  [EOV]  [text, padded to T]  [EOT]  [target: N tokens]
    left pad  condition segment (type 0)           (0)    text segment (type 1)  (1)    type 2

* ``T = max_text_length`` and ``N = grid_size ** 2`` are fixed; only the condition segment varies in
  length and is left-padded to the longest one in the batch.
* Image positions carry ``img`` in ``input_ids``, their codes in ``image_codes`` and their flat grid
  index ``row * grid_size + col`` in ``position_ids``; other positions carry code 0 and their 1-D
  index counted from the first non-padding position of the sample.
* ``attention_mask`` is 0 on left padding and text padding, 1 elsewhere.

A condition patch is a pair ``(codes (n, M) int in [0, K), positions (n,) int in [0, N))``.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .bundle import Geometry

Patch = Tuple[np.ndarray, np.ndarray]


def box_to_positions(box: Sequence[int], grid_size: int) -> np.ndarray:
    """Flat grid indices (raster order) of the cells of ``box = (top, left, height, width)`` in grid units."""
    top, left, height, width = (int(v) for v in box)
    if top < 0 or left < 0 or height < 1 or width < 1 or top + height > grid_size or left + width > grid_size:
        raise ValueError(f"box (top, left, height, width) = {(top, left, height, width)} does not fit the {grid_size}x{grid_size} token grid")
    rows = np.arange(top, top + height)
    cols = np.arange(left, left + width)
    return (rows[:, None] * grid_size + cols[None, :]).reshape(-1).astype(np.int64)


def condition_segment_length(patches: Optional[Sequence[Patch]]) -> int:
    """Patch tokens plus one SEP between patches (EOV excluded)."""
    if not patches:
        return 0
    return sum(int(np.asarray(p[1]).size) for p in patches) + len(patches) - 1


def _check_patches(patches, geo: Geometry, sample: int) -> List[Patch]:
    out = []
    for j, patch in enumerate(patches):
        codes = np.asarray(patch[0], dtype=np.int64)
        positions = np.asarray(patch[1], dtype=np.int64).reshape(-1)
        if codes.ndim != 2 or codes.shape[1] != geo.num_groups or codes.shape[0] != positions.size or positions.size == 0:
            raise ValueError(f"condition patch {j} of sample {sample}: codes must have shape (n, {geo.num_groups}) with n = len(positions) >= 1")
        if codes.min() < 0 or codes.max() >= geo.codebook_size:
            raise ValueError(f"condition patch {j} of sample {sample}: codes must lie in [0, {geo.codebook_size})")
        if positions.min() < 0 or positions.max() >= geo.num_image_tokens:
            raise ValueError(f"condition patch {j} of sample {sample}: positions must lie in [0, {geo.num_image_tokens})")
        out.append((codes, positions))
    if condition_segment_length(out) > geo.max_condition_tokens:
        raise ValueError(
            f"the condition patches of sample {sample} need {condition_segment_length(out)} positions but "
            f"max_condition_tokens is {geo.max_condition_tokens}"
        )
    return out


def build_model_inputs(
    geo: Geometry,
    special: Dict[str, int],
    text_ids: Sequence[Sequence[int]],
    target_codes: Optional[np.ndarray] = None,
    conditions: Optional[Sequence[Optional[Sequence[Patch]]]] = None,
) -> Dict[str, np.ndarray]:
    """Builds ``input_ids, image_codes, position_ids, token_type_ids, attention_mask`` (int64) for a batch.

    ``text_ids``: ``B`` id lists (no padding, each ``<= max_text_length``); ``target_codes``: ``(B, N, M)``
    in ``[0, K]`` (``K`` = MASK) or ``None`` for fully masked targets; ``conditions``: ``None`` or ``B``
    entries of condition patches.
    """
    g, m, k, n, t = geo.grid_size, geo.num_groups, geo.codebook_size, geo.num_image_tokens, geo.max_text_length
    texts = [np.asarray(list(r), dtype=np.int64) for r in text_ids]
    b = len(texts)
    for i, r in enumerate(texts):
        if r.size > t:
            raise ValueError(f"text of sample {i} has {r.size} tokens but max_text_length is {t}; truncate it")
    if target_codes is None:
        target_codes = np.full((b, n, m), k, dtype=np.int64)
    target_codes = np.asarray(target_codes)
    if target_codes.ndim == 4:
        target_codes = target_codes.reshape(target_codes.shape[0], -1, target_codes.shape[-1])
    if target_codes.shape != (b, n, m):
        raise ValueError(f"target_codes must have shape ({b}, {n}, {m}); got {target_codes.shape}")
    if target_codes.size and (target_codes.min() < 0 or target_codes.max() > k):
        raise ValueError(f"target codes must lie in [0, {k}] ({k} = MASK)")
    if conditions is None:
        conditions = [None] * b
    if len(conditions) != b:
        raise ValueError(f"conditions must have one entry per sample ({b}); got {len(conditions)}")
    patches = [_check_patches(c, geo, i) if c else [] for i, c in enumerate(conditions)]
    cond_len = [condition_segment_length(p) for p in patches]
    lc = max(cond_len) if cond_len else 0
    length = lc + 1 + t + 1 + n

    input_ids = np.full((b, length), special["pad"], dtype=np.int64)
    image_codes = np.zeros((b, length, m), dtype=np.int64)
    position_ids = np.zeros((b, length), dtype=np.int64)
    token_type_ids = np.zeros((b, length), dtype=np.int64)
    attention_mask = np.zeros((b, length), dtype=np.int64)
    text_start = lc + 1
    for i in range(b):
        start = lc - cond_len[i]
        cursor = start
        for j, (codes, positions) in enumerate(patches[i]):
            if j > 0:
                input_ids[i, cursor] = special["sep"]
                position_ids[i, cursor] = cursor - start
                cursor += 1
            size = positions.size
            input_ids[i, cursor : cursor + size] = special["img"]
            image_codes[i, cursor : cursor + size] = codes
            position_ids[i, cursor : cursor + size] = positions
            cursor += size
        input_ids[i, lc] = special["eov"]
        position_ids[i, lc] = lc - start
        attention_mask[i, start : lc + 1] = 1
        row = texts[i]
        input_ids[i, text_start : text_start + row.size] = row
        attention_mask[i, text_start : text_start + row.size] = 1
        position_ids[i, text_start : text_start + t + 1] = np.arange(t + 1) + (text_start - start)
        input_ids[i, text_start + t] = special["eot"]
        attention_mask[i, text_start + t] = 1
    token_type_ids[:, text_start : text_start + t + 1] = 1
    input_ids[:, length - n :] = special["img"]
    image_codes[:, length - n :] = target_codes
    position_ids[:, length - n :] = np.arange(n)
    token_type_ids[:, length - n :] = 2
    attention_mask[:, length - n :] = 1
    return {
        "input_ids": input_ids,
        "image_codes": image_codes,
        "position_ids": position_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
    }
