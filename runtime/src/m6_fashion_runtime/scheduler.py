"""The SMART mask-predict sampler in numpy (same semantics as ``m6_fashion``'s ``SMARTScheduler``).

Pass i (i = 1..T) predicts every editable position; masked positions take a sampled (or, in
deterministic mode, argmax) token. Every editable position gets a confidence: the mean over groups of
the log-probability of the token it now holds. After passes 1..T-1 a fraction r_i of the editable
positions is re-masked:

    smart  : r_i = beta + (T-1-i)/(T-2) * (alpha - beta)     (alpha = 0.8 -> beta = 0.2)
    cosine : r_i = cos(pi/2 * i/T)

Kept positions are drawn in proportion to confidence without replacement (Gumbel-top-k); in
deterministic mode the lowest-confidence positions are re-masked (stable order on ties). Pass T fills
every remaining mask. Non-editable positions never change.

Deterministic mode reproduces the PyTorch scheduler's tokens given the same logits; sampling mode uses
numpy's random generator, so it matches the PyTorch scheduler in distribution, not draw for draw.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

MASK_SCHEDULES = ("smart", "cosine")
MAX_INFERENCE_STEPS = 1000  # as m6_fashion's scheduler: more passes only burn time
MAX_TEMPERATURE = 100.0


def check_temperature(value, name: str = "temperature") -> float:
    """``value`` as a float if it is a finite number in (0, MAX_TEMPERATURE]; raises ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value) or not (
        0 < value <= MAX_TEMPERATURE
    ):
        raise ValueError(
            f"{name} must be a finite number in (0, {MAX_TEMPERATURE:g}]; got {value!r} (use deterministic mode for argmax decoding)"
        )
    return float(value)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


class SMARTSampler:
    """Numpy SMART sampler; construct from the bundle's ``scheduler`` section with :meth:`from_config`."""

    def __init__(
        self,
        mask_token_id: int,
        mask_schedule: str = "smart",
        alpha: float = 0.8,
        beta: float = 0.2,
        temperature: float = 1.0,
        temperature_end: Optional[float] = None,
        deterministic: bool = False,
    ):
        if mask_schedule not in MASK_SCHEDULES:
            raise ValueError(f"unknown mask_schedule {mask_schedule!r}; accepted: {', '.join(MASK_SCHEDULES)}")
        if not 0.0 <= beta <= alpha <= 1.0:
            raise ValueError(f"need 0 <= beta <= alpha <= 1; got alpha={alpha}, beta={beta}")
        check_temperature(temperature, "temperature")
        if temperature_end is not None:
            check_temperature(temperature_end, "temperature_end")
        self.mask_token_id = int(mask_token_id)
        self.mask_schedule = mask_schedule
        self.alpha, self.beta = float(alpha), float(beta)
        self.temperature = float(temperature)
        self.temperature_end = None if temperature_end is None else float(temperature_end)
        self.deterministic = bool(deterministic)
        self.num_inference_steps: Optional[int] = None

    @classmethod
    def from_config(cls, config: dict, **overrides) -> "SMARTSampler":
        keys = ("mask_token_id", "mask_schedule", "alpha", "beta", "temperature", "temperature_end", "deterministic")
        kwargs = {k: config[k] for k in keys if k in config}
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)

    def set_timesteps(self, num_inference_steps: int) -> np.ndarray:
        if isinstance(num_inference_steps, np.integer):
            num_inference_steps = int(num_inference_steps)
        if not isinstance(num_inference_steps, int) or isinstance(num_inference_steps, bool) or not (
            1 <= num_inference_steps <= MAX_INFERENCE_STEPS
        ):
            raise ValueError(f"num_inference_steps must be an integer in [1, {MAX_INFERENCE_STEPS}]; got {num_inference_steps!r}")
        self.num_inference_steps = num_inference_steps
        return np.arange(num_inference_steps)

    def remask_ratio(self, step: int) -> float:
        T = self.num_inference_steps
        if T is None:
            raise RuntimeError("call set_timesteps before step")
        i = step + 1
        if i >= T:
            return 0.0
        if self.mask_schedule == "cosine":
            return math.cos(math.pi / 2 * i / T)
        if T == 2:
            return self.alpha
        return self.beta + (T - 1 - i) / (T - 2) * (self.alpha - self.beta)

    def temperature_at(self, step: int) -> float:
        t0, t1 = self.temperature, self.temperature_end
        if t1 is None or self.num_inference_steps == 1:
            return t0
        return t0 + (t1 - t0) * step / (self.num_inference_steps - 1)

    def step(self, logits: np.ndarray, step: int, sample: np.ndarray, editable: Optional[np.ndarray] = None,
             rng: Optional[np.random.Generator] = None, normalized: bool = False) -> np.ndarray:
        """One pass: ``logits (B, N, M, K)``, ``sample (B, N, M)`` (masked = ``mask_token_id``) -> next tokens.

        ``normalized``: ``logits`` already are log-probabilities (log-softmax over K, as the split target graph
        returns them), so they are not normalised again. New tokens are drawn at the masked positions only.
        """
        if logits.ndim != 4 or sample.shape != logits.shape[:3]:
            raise ValueError(f"logits must be (B, N, M, K) and sample (B, N, M); got {logits.shape} and {sample.shape}")
        B, N, M, K = logits.shape
        if editable is None:
            editable = np.ones((B, N), dtype=bool)
        masked = (sample == self.mask_token_id).any(-1) & editable
        logits = logits.astype(np.float32, copy=False)
        log_probs = logits if normalized else log_softmax(logits)
        tokens = sample.astype(np.int64, copy=True)
        rows = log_probs[masked]  # (R, M, K): only the masked positions take a new token
        if self.deterministic:  # the argmax of the logits themselves when given (as the PyTorch scheduler takes it)
            tokens[masked] = (rows if normalized else logits[masked]).argmax(-1)
        elif rows.size:
            if rng is None:
                rng = np.random.default_rng()
            t = np.float32(self.temperature_at(step))
            probs = np.exp(rows if t == 1 else log_softmax(rows / t)).reshape(-1, K)
            cdf = np.cumsum(probs, axis=-1)
            u = rng.random((cdf.shape[0], 1), dtype=np.float32) * cdf[:, -1:]
            tokens[masked] = np.minimum((cdf < u).sum(-1), K - 1).reshape(-1, M)
        picked = np.take_along_axis(log_probs, np.minimum(tokens, K - 1)[..., None], axis=-1)[..., 0]
        conf_log = picked.mean(-1, dtype=np.float32)  # (B, N)

        ratio = self.remask_ratio(step)
        if ratio > 0:
            n_edit = editable.sum(-1)
            # float32 product, as the PyTorch scheduler computes it
            n_remask = np.floor(n_edit.astype(np.float32) * np.float32(ratio)).astype(np.int64)
            scores = conf_log
            if not self.deterministic:
                u = rng.random(conf_log.shape, dtype=np.float32)
                u = np.clip(u, np.float32(1e-20), np.float32(1 - 1e-7))
                scores = conf_log + (-np.log(-np.log(u)))
            scores = np.where(editable, scores, np.float32(np.inf))
            order = np.argsort(scores, axis=-1, kind="stable")
            rank = np.empty_like(order)
            np.put_along_axis(rank, order, np.broadcast_to(np.arange(N), (B, N)), axis=-1)
            remask = editable & (rank < n_remask[:, None])
            tokens = np.where(remask[..., None], self.mask_token_id, tokens).astype(np.int64)
        return tokens
