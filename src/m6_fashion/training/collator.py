"""Training data collator of the stage-2 transformer (the paper's multi-task masking recipe).

For every example the collator draws, independently:

* a **mask strategy** (default probabilities): random ratio 0.70 (a MaskGIT cosine-schedule ratio
  of the target tokens, at least one), all 0.10, inside a random box 0.10 (inpainting), outside a
  random box 0.10 (outpainting / keeping a region);
* a **condition type**: visual+text 0.20, text 0.55, visual 0.20, none 0.05. Visual conditions
  are 1..``max_condition_patches`` random crops of the target's own token grid, placed at their
  grid positions; "none" and "visual" leave the text segment empty.

Masked target positions get the MASK code ``K`` in all groups and are the only labelled positions
(``labels`` is -100 elsewhere); condition and text positions are never masked. With
``objective="causal"`` nothing is masked and every target position is labelled (next-token
prediction for the autoregressive baseline).

Reproducibility: when examples carry an ``index`` (their row in the dataset, as
:class:`TokenGridDataset` provides), every example's draws come from its own ``torch.Generator``
seeded from ``(seed, epoch, index)``. A batch is then a pure function of which rows it holds and
of the epoch, so a run resumed from a checkpoint (Trainer skips the batches already seen, without
collating them) sees exactly the batches of an uninterrupted run, on any number of processes.
The training script calls :meth:`M6FashionCollator.set_epoch` at every epoch start. Examples
without ``index`` draw from the collator's own generator seeded with ``seed`` (reproducible for a
fresh run, not across a resume).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from ..models.sequence_layout import build_model_inputs, condition_segment_length, grid_shape

__all__ = ["MASK_STRATEGIES", "CONDITION_TYPES", "M6FashionCollator", "TokenGridDataset", "example_seed"]

MASK_STRATEGIES = ("random", "all", "inside_box", "outside_box")
CONDITION_TYPES = ("visual_text", "text", "visual", "none")
DEFAULT_MASK_PROBS = {"random": 0.70, "all": 0.10, "inside_box": 0.10, "outside_box": 0.10}
DEFAULT_CONDITION_PROBS = {"visual_text": 0.20, "text": 0.55, "visual": 0.20, "none": 0.05}

_M64 = (1 << 64) - 1


def example_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed mixing ``(seed, epoch, index)`` (splitmix64 finaliser)."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + (int(epoch) + 1) * 0xBF58476D1CE4E5B9 + (int(index) + 1) * 0x94D049BB133111EB) & _M64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M64
    x ^= x >> 31
    return x & ((1 << 63) - 1)


def _normalise_probs(probs: Mapping[str, float], names: Sequence[str], what: str) -> torch.Tensor:
    unknown = [k for k in probs if k not in names]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; accepted: {list(names)}")
    p = torch.tensor([float(probs.get(n, 0.0)) for n in names], dtype=torch.float64)
    if (p < 0).any() or not torch.isfinite(p).all() or p.sum() <= 0:
        raise ValueError(f"{what} probabilities must be non-negative and sum to a positive number; got {dict(probs)}")
    if abs(float(p.sum()) - 1.0) > 1e-6:
        raise ValueError(f"{what} probabilities must sum to 1; got {dict(probs)} (sum {float(p.sum()):.6f})")
    return p


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _choice(g: torch.Generator, probs: torch.Tensor) -> int:
    return int(torch.multinomial(probs, 1, generator=g))


class M6FashionCollator:
    """Turns examples ``{"codes", "text" | "text_ids", ["index"]}`` into model inputs and labels.

    Args:
        config: the :class:`M6FashionConfig` (grid size, groups, codebook size, text length, token ids,
            ``max_condition_tokens``; ``attention="causal"`` selects the causal objective by default).
        text_tokenizer: tokenizes ``text`` captions (not needed if examples carry ``text_ids``).
        seed: base seed of all draws.
        mask_probs: probabilities of :data:`MASK_STRATEGIES` (must sum to 1).
        condition_probs: probabilities of :data:`CONDITION_TYPES` (must sum to 1).
        max_condition_patches: maximum number of crops in a visual condition (drawn uniformly in 1..max).
        patch_size_range: ``(min, max)`` side of a condition crop, as fractions of the grid side (for a
            non-square ``grid_height x grid_width`` grid: the crop height as a fraction of ``grid_height``
            and its width as a fraction of ``grid_width``).
        mask_box_size_range: ``(min, max)`` side of a mask box, as fractions of the grid side (per
            dimension, like ``patch_size_range``).
        mask_ratio_schedule: ``"cosine"`` (ratio ``cos(pi/2 * u)``, MaskGIT) or ``"uniform"`` (``u``).
        objective: ``"masked"`` or ``"causal"`` (default: from ``config.attention``).
        return_metadata: also return ``mask_strategy (B,)``, ``condition_type (B,)`` (indices into the
            name tuples) and ``target_mask (B, N)``; not accepted by the model, for analysis only.

    Returns (``__call__``): dict with ``input_ids``, ``image_codes``, ``position_ids``,
    ``token_type_ids``, ``attention_mask`` (see :func:`build_model_inputs`) and ``labels (B, N, M)``,
    ``N = grid_height * grid_width``. Example ``codes`` are ``(grid_height, grid_width, M)`` or ``(N, M)``.
    """

    def __init__(
        self,
        config,
        text_tokenizer=None,
        seed: int = 0,
        mask_probs: Optional[Mapping[str, float]] = None,
        condition_probs: Optional[Mapping[str, float]] = None,
        max_condition_patches: int = 2,
        patch_size_range=(0.125, 0.5),
        mask_box_size_range=(0.25, 0.75),
        mask_ratio_schedule: str = "cosine",
        objective: Optional[str] = None,
        return_metadata: bool = False,
    ):
        self.config = config
        self.text_tokenizer = text_tokenizer
        self.seed = int(seed)
        self.epoch = 0
        self.mask_probs = _normalise_probs(mask_probs or DEFAULT_MASK_PROBS, MASK_STRATEGIES, "mask strategy")
        self.condition_probs = _normalise_probs(
            condition_probs or DEFAULT_CONDITION_PROBS, CONDITION_TYPES, "condition type"
        )
        gh, gw = self.grid_height, self.grid_width = grid_shape(config)
        if max_condition_patches < 1:
            raise ValueError(f"max_condition_patches must be >= 1; got {max_condition_patches}")
        self.max_condition_patches = int(max_condition_patches)
        # (min, max) crop/box sides in tokens: *_min/*_max along the rows, *_min_w/*_max_w along the columns
        self.patch_min, self.patch_max = self._side_range(patch_size_range, "patch_size_range", gh, gh)
        self.patch_min_w, self.patch_max_w = self._side_range(patch_size_range, "patch_size_range", gw, gw)
        self.box_min, self.box_max = self._side_range(mask_box_size_range, "mask_box_size_range", gh, gh)
        self.box_min_w, self.box_max_w = self._side_range(mask_box_size_range, "mask_box_size_range", gw, gw)
        if mask_ratio_schedule not in ("cosine", "uniform"):
            raise ValueError(f"mask_ratio_schedule must be 'cosine' or 'uniform'; got {mask_ratio_schedule!r}")
        self.mask_ratio_schedule = mask_ratio_schedule
        self.objective = objective or ("causal" if getattr(config, "attention", "bidirectional") == "causal" else "masked")
        if self.objective not in ("masked", "causal"):
            raise ValueError(f"objective must be 'masked' or 'causal'; got {self.objective!r}")
        visual_p = float(self.condition_probs[0] + self.condition_probs[2])
        if visual_p > 0 and self.patch_min * self.patch_min_w > config.max_condition_tokens:
            raise ValueError(
                f"the smallest condition crop ({self.patch_min}x{self.patch_min_w} tokens) does not fit in "
                f"max_condition_tokens={config.max_condition_tokens}; lower patch_size_range or set the visual "
                "condition probabilities to 0"
            )
        self.return_metadata = return_metadata
        self.generator = torch.Generator().manual_seed(self.seed)

    @staticmethod
    def _side_range(rng, name: str, grid: int, cap: int):
        lo, hi = (float(v) for v in rng)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"{name} must be fractions 0 < min <= max <= 1 of the grid side; got {rng}")
        return max(1, min(cap, round(lo * grid))), max(1, min(cap, round(hi * grid)))

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch mixed into the per-example seeds (the training script calls it each epoch)."""
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ per-example draws
    def _random_box(self, g: torch.Generator, lo: int, hi: int, rows: int, lo_w: int, hi_w: int, cols: int):
        """``(top, left, height, width)``: height in ``[lo, hi]``, width in ``[lo_w, hi_w]``, inside ``rows x cols``."""
        h, w = _randint(g, lo, hi), _randint(g, lo_w, hi_w)
        return _randint(g, 0, rows - h), _randint(g, 0, cols - w), h, w

    def _draw_mask(self, g: torch.Generator, strategy: int) -> torch.Tensor:
        """``(N,)`` bool, True = masked, in raster order of the ``grid_height x grid_width`` grid."""
        rows, cols = self.grid_height, self.grid_width
        n = rows * cols
        name = MASK_STRATEGIES[strategy]
        mask = torch.zeros(rows, cols, dtype=torch.bool)
        if name == "random":
            u = float(torch.rand((), generator=g))
            ratio = math.cos(math.pi / 2 * u) if self.mask_ratio_schedule == "cosine" else u
            count = min(n, max(1, math.ceil(ratio * n)))
            mask.view(-1)[torch.randperm(n, generator=g)[:count]] = True
        elif name == "all":
            mask[:] = True
        elif name == "inside_box":
            top, left, h, w = self._random_box(
                g, self.box_min, self.box_max, rows, self.box_min_w, self.box_max_w, cols
            )
            mask[top : top + h, left : left + w] = True
        else:  # outside_box: the box is kept, at least one row or column of the grid is masked
            hi, hi_w = min(self.box_max, rows - 1), min(self.box_max_w, cols - 1)
            if hi < 1 or hi_w < 1:
                mask[:] = True
            else:
                top, left, h, w = self._random_box(
                    g, min(self.box_min, hi), hi, rows, min(self.box_min_w, hi_w), hi_w, cols
                )
                mask[:] = True
                mask[top : top + h, left : left + w] = False
        return mask.view(-1)

    def _draw_patches(self, g: torch.Generator, codes: torch.Tensor) -> List:
        grid_rows, grid_cols = self.grid_height, self.grid_width
        count = _randint(g, 1, self.max_condition_patches)
        patches, budget = [], self.config.max_condition_tokens
        for _ in range(count):
            top, left, h, w = self._random_box(
                g, self.patch_min, self.patch_max, grid_rows, self.patch_min_w, self.patch_max_w, grid_cols
            )
            rows = torch.arange(top, top + h)
            cols = torch.arange(left, left + w)
            positions = (rows[:, None] * grid_cols + cols[None, :]).reshape(-1)
            trial = patches + [(codes[positions], positions)]
            if condition_segment_length(trial) <= budget:
                patches = trial
        return patches

    # ------------------------------------------------------------------ batch
    def _codes(self, example: Mapping[str, Any]) -> torch.Tensor:
        cfg = self.config
        if "codes" not in example:
            raise KeyError(f"every example needs a 'codes' entry (token grid); got keys {sorted(example)}")
        codes = torch.as_tensor(np.asarray(example["codes"])).long()
        rows, cols = self.grid_height, self.grid_width
        n, m = rows * cols, cfg.num_groups
        if codes.ndim == 3:
            if tuple(codes.shape[:2]) != (rows, cols):
                raise ValueError(
                    f"token grid is {codes.shape[0]}x{codes.shape[1]} but the model expects {rows}x{cols} (rows x cols)"
                )
            codes = codes.reshape(n, codes.shape[-1])
        if codes.ndim != 2 or codes.shape != (n, m):
            raise ValueError(f"codes must have shape ({rows}, {cols}, {m}) or ({n}, {m}); got {tuple(codes.shape)}")
        if codes.min() < 0 or codes.max() >= cfg.codebook_size:
            raise ValueError(f"codes must lie in [0, {cfg.codebook_size}); got values in [{int(codes.min())}, {int(codes.max())}]")
        return codes

    def _text_ids(self, examples: Sequence[Mapping[str, Any]]) -> List[List[int]]:
        t = self.config.max_text_length
        out: List[Optional[List[int]]] = [None] * len(examples)
        pending = []
        for i, ex in enumerate(examples):
            if "text_ids" in ex and ex["text_ids"] is not None:
                out[i] = [int(v) for v in ex["text_ids"]][:t]
            elif "text" in ex:
                pending.append(i)
            else:
                raise KeyError("every example needs a 'text' (caption) or 'text_ids' entry")
        if pending:
            if self.text_tokenizer is None:
                raise ValueError("examples carry 'text' captions: pass text_tokenizer to the collator")
            texts = [examples[i]["text"] or "" for i in pending]
            enc = self.text_tokenizer(texts, add_special_tokens=False, truncation=True, max_length=t)["input_ids"]
            for i, ids in zip(pending, enc):
                out[i] = list(ids)
        return out  # type: ignore[return-value]

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> Dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("got an empty batch")
        cfg = self.config
        k = cfg.codebook_size
        texts = self._text_ids(examples)
        targets, labels, conditions, text_rows = [], [], [], []
        strategies, cond_types, masks = [], [], []
        for ex, text in zip(examples, texts):
            codes = self._codes(ex)
            if "index" in ex and ex["index"] is not None:
                epoch = int(ex["epoch"]) if ex.get("epoch") is not None else self.epoch
                g = torch.Generator().manual_seed(example_seed(self.seed, epoch, int(ex["index"])))
            else:
                g = self.generator
            strategy = _choice(g, self.mask_probs)
            ctype = _choice(g, self.condition_probs)
            name = CONDITION_TYPES[ctype]
            patches = self._draw_patches(g, codes) if name in ("visual_text", "visual") else []
            text_rows.append(text if name in ("visual_text", "text") else [])
            conditions.append(patches)
            if self.objective == "masked":
                mask = self._draw_mask(g, strategy)
                target = codes.masked_fill(mask[:, None], k)
                label = codes.masked_fill(~mask[:, None], -100)
            else:
                mask = torch.ones(codes.shape[0], dtype=torch.bool)
                target, label = codes, codes.clone()
            targets.append(target)
            labels.append(label)
            strategies.append(strategy)
            cond_types.append(ctype)
            masks.append(mask)
        batch = build_model_inputs(cfg, text_rows, torch.stack(targets), conditions)
        batch["labels"] = torch.stack(labels)
        if self.return_metadata:
            batch["mask_strategy"] = torch.tensor(strategies)
            batch["condition_type"] = torch.tensor(cond_types)
            batch["target_mask"] = torch.stack(masks)
        return batch


class TokenGridDataset(torch.utils.data.Dataset):
    """Map-style dataset over a pre-tokenised ``datasets.Dataset`` yielding collator examples.

    Each item is ``{"codes": uint8/uint16 array (h, w, M), "text": str, "index": i}``; ``index``
    lets :class:`M6FashionCollator` derive the example's random draws from ``(seed, epoch, index)``.
    """

    def __init__(self, dataset, codes_column: str = "codes", text_column: str = "text"):
        missing = [c for c in (codes_column, text_column) if c not in dataset.column_names]
        if missing:
            raise ValueError(f"the dataset lacks column(s) {missing}; it has {dataset.column_names}")
        self.dataset = dataset.select_columns([codes_column, text_column]).with_format("numpy")
        self.codes_column, self.text_column = codes_column, text_column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        row = self.dataset[int(i)]
        text = row[self.text_column]
        return {"codes": row[self.codes_column], "text": "" if text is None else str(text), "index": int(i)}
