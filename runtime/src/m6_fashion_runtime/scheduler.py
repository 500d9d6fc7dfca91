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

The schedules, limits and argument checks are ``m6_fashion_core.sampling``'s, shared with the PyTorch
scheduler; this module adds the numpy ``step``. Deterministic mode reproduces the PyTorch scheduler's
tokens given the same logits; sampling mode uses numpy's random generator, so it matches the PyTorch
scheduler in distribution, not draw for draw.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from m6_fashion_core import sampling as _smart
from m6_fashion_core.sampling import (
    MASK_SCHEDULES,
    MAX_INFERENCE_STEPS,
    MAX_TEMPERATURE,
    SMART_CONFIG_KEYS,
    SMARTConfig,
    check_temperature,
)

__all__ = [
    "MASK_SCHEDULES", "MAX_INFERENCE_STEPS", "MAX_TEMPERATURE", "SMART_CONFIG_KEYS", "SMARTConfig", "SMARTSampler",
    "check_temperature", "log_softmax",
]


def log_softmax(x: np.ndarray) -> np.ndarray:
    """log p = x - logsumexp(x) over the last axis, in float32 (the shift by the max keeps exp from overflowing)."""
    x = x.astype(np.float32, copy=False)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


class SMARTSampler(SMARTConfig):
    """Numpy SMART sampler; construct from the bundle's ``scheduler`` section with :meth:`from_config`.

    Parameters are the fields of ``SMARTConfig`` (the keys of ``SMARTScheduler``'s config), checked on
    construction; ``mask_token_id`` is the image MASK code (= K, the codebook size).
    """

    def __post_init__(self):
        super().__post_init__()
        self.num_inference_steps: Optional[int] = None

    @classmethod
    def from_config(cls, config: dict, **overrides) -> "SMARTSampler":
        """A sampler from a scheduler config (other keys are ignored); ``overrides`` that are not None replace its values."""
        kwargs = {k: config[k] for k in SMART_CONFIG_KEYS if k in config}
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)

    def set_timesteps(self, num_inference_steps: int) -> np.ndarray:
        """Sets T; returns the pass indices ``0..T-1``."""
        steps = _smart.timesteps(num_inference_steps)
        self.num_inference_steps = len(steps)
        return steps

    def remask_ratio(self, step: int) -> float:
        """Fraction of editable positions re-masked after pass ``step`` (0-indexed); 0 after the last pass."""
        return _smart.remask_ratio(step, self.num_inference_steps, self.mask_schedule, self.alpha, self.beta)

    def temperature_at(self, step: int) -> float:
        """Sampling temperature of pass ``step``: ``temperature``, moving linearly to ``temperature_end`` if set."""
        return _smart.temperature_at(step, self.num_inference_steps, self.temperature, self.temperature_end)

    def confidence_noise_at(self, step: int) -> float:
        """Scale of the Gumbel noise on the log-confidence after pass ``step`` (``confidence_noise`` -> ``confidence_noise_end``)."""
        return _smart.confidence_noise_at(step, self.num_inference_steps, self.confidence_noise, self.confidence_noise_end)

    def step(self, logits: np.ndarray, step: int, sample: np.ndarray, editable: Optional[np.ndarray] = None,
             rng: Optional[np.random.Generator] = None, normalized: bool = False) -> np.ndarray:
        """One pass: ``logits (B, N, M, K)``, ``sample (B, N, M)`` (masked = ``mask_token_id``) -> next tokens.

        ``normalized``: ``logits`` already are log-probabilities (log-softmax over K, as the split target graph
        returns them), so they are not normalised again. New tokens are drawn at the masked positions only.
        """
        _smart.check_step_shapes(logits.shape, sample.shape, "logits")
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
            n_remask = _smart.num_remasked(editable.sum(-1), ratio)  # (B,)
            scores = conf_log
            if not self.deterministic:
                u = rng.random(conf_log.shape, dtype=np.float32)
                u = np.clip(u, np.float32(_smart.GUMBEL_UNIFORM_MIN), np.float32(_smart.GUMBEL_UNIFORM_MAX))
                scores = conf_log + np.float32(self.confidence_noise_at(step)) * (-np.log(-np.log(u)))
            scores = np.where(editable, scores, np.float32(np.inf))
            order = np.argsort(scores, axis=-1, kind="stable")
            rank = np.empty_like(order)
            np.put_along_axis(rank, order, np.broadcast_to(np.arange(N), (B, N)), axis=-1)
            remask = editable & (rank < n_remask[:, None])
            tokens = np.where(remask[..., None], self.mask_token_id, tokens).astype(np.int64)
        return tokens
