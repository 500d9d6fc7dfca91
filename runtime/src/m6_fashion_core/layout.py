"""The input layout of the M6-Fashion transformer, in numpy.

The training collator, the PyTorch pipeline (through ``m6_fashion.models.sequence_layout``) and the
torch-free runtime all build the same sequence::

    [PAD]*p  [patch 1][SEP][patch 2]...[patch P]  [EOV]  [text, padded to T]  [EOT]  [target: N tokens]
    left pad  condition segment (type 0)           (0)    text segment (type 1)  (1)    type 2

* ``T = max_text_length`` and ``N = grid_height * grid_width`` (``grid_size ** 2`` for a square
  grid) are fixed, so the text segment always has ``T + 1`` positions and the target always sits in
  the last ``N`` positions. Only the condition segment varies in length; it is left-padded to the
  longest one in the batch.
* Image positions (condition patches and target) carry ``img`` in ``input_ids``, their codes in
  ``image_codes`` and their flat grid index ``row * grid_width + col`` in ``position_ids``.
* Other positions carry 0 in ``image_codes`` and their 1-D index, counted from the first
  non-padding position of the sample, in ``position_ids`` (so outputs do not depend on how much a
  sample was padded in a batch).
* ``attention_mask`` is 0 on left padding and on text padding, 1 elsewhere.

A condition patch is a pair ``(codes (n, M) int in [0, K), positions (n,) int in [0, N))``;
:func:`crop_patch` cuts one out of a token grid, :func:`box_to_positions` lists a box's positions.

The ``config`` argument only needs the attributes ``grid_size`` (and optionally ``grid_height`` /
``grid_width``, which default to it), ``num_groups``, ``codebook_size``, ``max_text_length`` and
``max_condition_tokens``. The special token ids come from a ``special`` mapping (a bundle's
``special_token_ids``, keyed ``"pad"``, ``"sep"``, ``"eov"``, ``"eot"``, ``"img"``) or, without one,
from the attributes ``pad_token_id``, ``sep_token_id``, ``eov_token_id``, ``eot_token_id`` and
``img_token_id``. An ``M6FashionConfig`` has all of them; the runtime's bundle ``Geometry`` has the
geometry and comes with the bundle's ``special_token_ids``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    # grid geometry
    "Patch", "grid_shape", "check_box", "box_to_positions", "check_grid_codes_shape", "crop_patch",
    # validation and the layout itself
    "SPECIAL_TOKENS", "special_token_ids", "condition_segment_length", "check_condition_patches",
    "build_model_inputs", "split_prefix_and_target",
]

Patch = Tuple[np.ndarray, np.ndarray]
Box = Tuple[int, int, int, int]
GridSpec = Union[int, Sequence[int], Any]

# Special tokens the layout writes, by their key in a bundle's ``special_token_ids``.
SPECIAL_TOKENS = ("pad", "sep", "eov", "eot", "img")
LAYOUT_KEYS = ("input_ids", "image_codes", "position_ids", "token_type_ids", "attention_mask")


# ------------------------------------------------------------------------------------------- grid geometry
def grid_shape(grid: GridSpec) -> Tuple[int, int]:
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
    if top < 0 or left < 0 or height < 1 or width < 1 or top + height > rows or left + width > cols:
        raise ValueError(
            f"box (top, left, height, width) = {(top, left, height, width)} does not fit the {rows}x{cols} "
            f"token grid (rows x cols); accepted: top >= 0, left >= 0, height >= 1, width >= 1, "
            f"top + height <= {rows}, left + width <= {cols}"
        )
    return top, left, height, width


def box_to_positions(box: Sequence[int], grid_size: GridSpec) -> np.ndarray:
    """Flat grid indices (raster order) of the cells inside ``box = (top, left, height, width)``.

    ``grid_size``: an int side, a ``(rows, cols)`` pair or a config (see :func:`grid_shape`).
    Returns a ``(height * width,)`` int64 array of ``row * cols + col``. Raises ``ValueError``
    for a box outside the grid (see :func:`check_box`).
    """
    top, left, height, width = check_box(box, grid_size)
    _, n_cols = grid_shape(grid_size)
    rows = np.arange(top, top + height, dtype=np.int64)
    cols = np.arange(left, left + width, dtype=np.int64)
    return (rows[:, None] * n_cols + cols[None, :]).reshape(-1)


def check_grid_codes_shape(shape: Sequence[int], grid_size: GridSpec) -> Tuple[int, int]:
    """Checks that ``shape`` is the shape of one image's codes, ``(N, M)`` or ``(rows, cols, M)``.

    Returns ``(N, M)`` with ``N = rows * cols``; raises ``ValueError`` naming both accepted shapes.
    """
    rows, cols = grid_shape(grid_size)
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        if shape[0] != rows or shape[1] != cols:
            raise ValueError(f"expected a ({rows}, {cols}, M) token grid ({rows}x{cols}); got {shape}")
    elif len(shape) != 2 or shape[0] != rows * cols:
        raise ValueError(f"expected codes of shape (N={rows * cols}, M) or ({rows}, {cols}, M); got {shape}")
    return rows * cols, shape[-1]


def crop_patch(codes: np.ndarray, box: Sequence[int], grid_size: GridSpec) -> Patch:
    """Cuts a condition patch out of a token grid.

    Args:
        codes: ``(N, M)`` or ``(rows, cols, M)`` codes of one image (``N = rows * cols``).
        box: ``(top, left, height, width)`` in grid units.
        grid_size: an int side, a ``(rows, cols)`` pair or a config (see :func:`grid_shape`).

    Returns:
        ``(codes (n, M) int64, positions (n,) int64)`` with ``n = height * width``.
    """
    codes = np.asarray(codes)
    n, m = check_grid_codes_shape(codes.shape, grid_size)
    positions = box_to_positions(box, grid_size)
    return codes.reshape(n, m)[positions].astype(np.int64), positions


# ------------------------------------------------------------------------------------------- validation
def condition_segment_length(patches: Optional[Sequence[Any]]) -> int:
    """Length of a condition segment without EOV: patch tokens plus one SEP between patches.

    Works on numpy and torch patches alike (only the shape of each ``positions`` is read).
    """
    if not patches:
        return 0
    return sum(math.prod(np.shape(p[1])) for p in patches) + len(patches) - 1


def check_condition_patches(patches: Sequence[Any], config, sample: int) -> List[Patch]:
    """Validates the condition patches of sample ``sample`` and returns them as int64 arrays.

    Each patch must be a pair ``(codes (n, M), positions (n,))`` with ``n >= 1``, codes in
    ``[0, K)`` (no MASK) and positions in ``[0, N)``; together they must fit ``max_condition_tokens``.
    """
    rows, cols = grid_shape(config)
    n, m, k = rows * cols, config.num_groups, config.codebook_size
    checked = []
    for j, patch in enumerate(patches):
        if not isinstance(patch, (tuple, list)) or len(patch) != 2:
            raise ValueError(f"condition patch {j} of sample {sample} must be a pair (codes (n, M), positions (n,))")
        codes = np.asarray(patch[0]).astype(np.int64)
        positions = np.asarray(patch[1]).astype(np.int64).reshape(-1)
        if codes.ndim != 2 or codes.shape[1] != m or codes.shape[0] != positions.size or codes.shape[0] == 0:
            raise ValueError(
                f"condition patch {j} of sample {sample}: codes must have shape (n, M={m}) with n = len(positions) >= 1; "
                f"got codes {tuple(codes.shape)} and {positions.size} positions"
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


def _check_target_codes(target_codes, config) -> np.ndarray:
    """``(B, N, M)`` or ``(B, rows, cols, M)`` integer codes in ``[0, K]`` -> ``(B, N, M)`` int64."""
    gh, gw = grid_shape(config)
    n, m, k = gh * gw, config.num_groups, config.codebook_size
    target_codes = np.asarray(target_codes)
    if target_codes.dtype.kind == "f":
        raise TypeError("target_codes must be an integer tensor")
    if target_codes.ndim == 4:
        if tuple(target_codes.shape[1:3]) != (gh, gw):
            raise ValueError(f"target_codes must be a {gh}x{gw} token grid (B, {gh}, {gw}, M); got {tuple(target_codes.shape)}")
        target_codes = target_codes.reshape(target_codes.shape[0], n, target_codes.shape[-1])
    if target_codes.ndim != 3 or target_codes.shape[1] != n or target_codes.shape[2] != m:
        raise ValueError(
            f"target_codes must have shape (B, N={n}, M={m}) or (B, {gh}, {gw}, {m}); got {tuple(target_codes.shape)}"
        )
    if target_codes.size and (target_codes.min() < 0 or target_codes.max() > k):
        raise ValueError(
            f"target codes must lie in [0, {k}) or equal {k} (MASK); got values in "
            f"[{int(target_codes.min())}, {int(target_codes.max())}]"
        )
    return target_codes.astype(np.int64)


def _text_rows(text_ids, text_attention_mask, config, batch: Optional[int], pad: int) -> List[np.ndarray]:
    """Normalises the text argument to a list of 1-D int64 arrays of real tokens (no padding).

    A 2-D array is a padded batch (padding = ``text_attention_mask`` 0, or ``pad`` where no mask is
    given); anything else is read as ``B`` unpadded id rows.
    """
    t = config.max_text_length
    if text_ids is None:
        if batch is None:
            raise ValueError("pass text_ids or target_codes so that the batch size is known")
        return [np.zeros(0, dtype=np.int64) for _ in range(batch)]
    if isinstance(text_ids, np.ndarray):
        if text_ids.ndim != 2:
            raise ValueError(f"text_ids must have shape (batch, text_len); got {tuple(text_ids.shape)}")
        if text_attention_mask is None:
            text_attention_mask = text_ids != pad
        text_attention_mask = np.asarray(text_attention_mask)
        if tuple(text_attention_mask.shape) != tuple(text_ids.shape):
            raise ValueError(
                f"text_attention_mask must have the shape of text_ids {tuple(text_ids.shape)}; got {tuple(text_attention_mask.shape)}"
            )
        rows = [ids[mask.astype(bool)].astype(np.int64) for ids, mask in zip(text_ids, text_attention_mask)]
    else:
        rows = [np.asarray(list(r), dtype=np.int64) for r in text_ids]
    for i, r in enumerate(rows):
        if r.size > t:
            raise ValueError(
                f"text of sample {i} has {r.size} tokens but max_text_length is {t}; truncate it "
                f"(e.g. tokenizer(..., truncation=True, max_length={t}))"
            )
    if batch is not None and len(rows) != batch:
        raise ValueError(f"text_ids has {len(rows)} rows but target_codes has {batch}")
    return rows


def special_token_ids(config, special: Optional[Mapping[str, int]] = None) -> Dict[str, int]:
    """The ids of :data:`SPECIAL_TOKENS`, from ``special`` (keyed ``"pad"``, ...) or ``config.<key>_token_id``."""
    if special is not None:
        return {key: int(special[key]) for key in SPECIAL_TOKENS}
    return {key: int(getattr(config, f"{key}_token_id")) for key in SPECIAL_TOKENS}


# ------------------------------------------------------------------------------------------- layout
def _write_condition_segments(out: Dict[str, np.ndarray], patches: List[List[Patch]], starts: np.ndarray,
                              special: Dict[str, int]) -> None:
    """Writes each sample's ``[patch 1][SEP]...[patch P]`` from its first real position ``starts[i]``."""
    input_ids, image_codes, position_ids = out["input_ids"], out["image_codes"], out["position_ids"]
    for i, sample_patches in enumerate(patches):
        start = int(starts[i])
        cursor = start
        for j, (codes, positions) in enumerate(sample_patches):
            if j > 0:
                input_ids[i, cursor] = special["sep"]
                position_ids[i, cursor] = cursor - start
                cursor += 1
            size = positions.size
            input_ids[i, cursor : cursor + size] = special["img"]
            image_codes[i, cursor : cursor + size] = codes
            position_ids[i, cursor : cursor + size] = positions
            cursor += size


def _write_text_segments(out: Dict[str, np.ndarray], texts: List[np.ndarray], starts: np.ndarray,
                         text_start: int, t: int, eot: int) -> None:
    """Writes ``[text, padded to T][EOT]`` at ``text_start`` (the same index for every sample)."""
    lengths = np.array([r.size for r in texts], dtype=np.int64)
    # (B, T) True where a sample has a real text token; boolean assignment fills it row by row, in the
    # order of the concatenated rows
    real = np.arange(t)[None, :] < lengths[:, None]
    flat = np.concatenate(texts) if texts else np.zeros(0, dtype=np.int64)
    out["input_ids"][:, text_start : text_start + t][real] = flat
    out["attention_mask"][:, text_start : text_start + t][real] = 1
    out["position_ids"][:, text_start : text_start + t + 1] = np.arange(t + 1)[None, :] + (text_start - starts)[:, None]
    out["input_ids"][:, text_start + t] = eot
    out["attention_mask"][:, text_start + t] = 1
    out["token_type_ids"][:, text_start : text_start + t + 1] = 1


def build_model_inputs(
    config,
    text_ids: Union[np.ndarray, Sequence[Sequence[int]], None],
    target_codes: Optional[np.ndarray] = None,
    conditions: Optional[Sequence[Optional[Sequence[Patch]]]] = None,
    text_attention_mask: Optional[np.ndarray] = None,
    special: Optional[Mapping[str, int]] = None,
) -> Dict[str, np.ndarray]:
    """Builds the model inputs for a batch.

    Args:
        config: any object with the attributes listed in the module doc (``M6FashionConfig``, ``Geometry``).
        text_ids: ``(B, Lt)`` integer array (padding = ``pad`` or ``text_attention_mask`` 0), or a list of
            ``B`` id lists of any length ``<= max_text_length``; ``None`` = no text for anyone. A sample
            without text gets an all-padding text segment.
        target_codes: ``(B, N, M)`` or ``(B, grid_height, grid_width, M)`` codes in ``[0, K]`` (``K`` = MASK);
            ``None`` = fully masked targets.
        conditions: ``None`` or a list of ``B`` entries, each ``None``/empty or a list of condition
            patches ``(codes (n, M), positions (n,))``.
        text_attention_mask: optional ``(B, Lt)`` 1/0 mask for an array ``text_ids``.
        special: optional ``{"pad", "sep", "eov", "eot", "img"}`` token ids (a bundle's
            ``special_token_ids``); default: the config's ``<key>_token_id`` attributes.

    Returns:
        dict with ``input_ids (B, L)``, ``image_codes (B, L, M)``, ``position_ids (B, L)``,
        ``token_type_ids (B, L)`` and ``attention_mask (B, L)``, all int64, with
        ``L = max condition-segment length + 1 + max_text_length + 1 + N``.
    """
    gh, gw = grid_shape(config)
    m, k = config.num_groups, config.codebook_size
    n, t = gh * gw, config.max_text_length
    special = special_token_ids(config, special)
    batch = None
    if target_codes is not None:
        target_codes = _check_target_codes(target_codes, config)
        batch = target_codes.shape[0]
    texts = _text_rows(text_ids, text_attention_mask, config, batch, special["pad"])
    batch = len(texts)
    if target_codes is None:
        target_codes = np.full((batch, n, m), k, dtype=np.int64)
    if conditions is None:
        conditions = [None] * batch
    if len(conditions) != batch:
        raise ValueError(f"conditions must have one entry per sample ({batch}); got {len(conditions)}")
    patches = [check_condition_patches(c, config, i) if c else [] for i, c in enumerate(conditions)]
    cond_len = np.array([condition_segment_length(p) for p in patches], dtype=np.int64)
    lc = int(cond_len.max()) if batch else 0
    length = lc + 1 + t + 1 + n
    starts = lc - cond_len  # first real (non-padding) position of each sample

    out = {key: np.zeros((batch, length), dtype=np.int64) for key in LAYOUT_KEYS}
    out["input_ids"][:] = special["pad"]
    out["image_codes"] = np.zeros((batch, length, m), dtype=np.int64)
    _write_condition_segments(out, patches, starts, special)
    out["input_ids"][:, lc] = special["eov"]
    out["position_ids"][:, lc] = lc - starts
    out["attention_mask"][:, : lc + 1] = np.arange(lc + 1)[None, :] >= starts[:, None]
    _write_text_segments(out, texts, starts, lc + 1, t, special["eot"])
    out["input_ids"][:, length - n :] = special["img"]
    out["image_codes"][:, length - n :] = target_codes
    out["position_ids"][:, length - n :] = np.arange(n)
    out["token_type_ids"][:, length - n :] = 2
    out["attention_mask"][:, length - n :] = 1
    return out


def split_prefix_and_target(inputs: Dict[str, Any], num_image_tokens: int):
    """Splits built inputs (numpy arrays or torch tensors) into the prefix and the target chunk.

    Returns ``(prefix, target)`` dicts: the prefix is every ``(B, L - N, ...)`` slice (for
    ``encode_prefix``), the target every ``(B, N, ...)`` slice except ``target["attention_mask"]``,
    which is the FULL mask ``(B, Lp + N)``, as a forward pass with the prefix cache expects.
    """
    n = num_image_tokens
    prefix = {k: v[:, :-n] for k, v in inputs.items()}
    target = {k: v[:, -n:] for k, v in inputs.items() if k != "attention_mask"}
    target["attention_mask"] = inputs["attention_mask"]
    return prefix, target
