"""SMART: the self-correcting non-autoregressive mask-predict sampler of M6-Fashion (section 3.3).

Sampling runs T model passes over the target token grid. Pass i (i = 1..T) predicts every editable
position; masked positions take a sampled (or argmax) token. Every editable position then gets a
confidence: the probability, under this pass's prediction, of the token it now holds (so tokens fixed in
earlier passes are re-scored and can be corrected). After passes 1..T-1 a fraction r_i of the editable
positions is re-masked:

    smart  : r_i = beta + (T-1-i)/(T-2) * (alpha - beta)   (falls linearly from alpha=0.8 to beta=0.2)
    cosine : r_i = cos(pi/2 * i/T)                         (MaskGIT's schedule, for comparison)

The positions kept are drawn multinomially in proportion to confidence, without replacement (the
Gumbel-top-k trick); in deterministic mode tokens are argmax and the lowest-confidence positions are
re-masked. Pass T fills every remaining mask. Positions that are not editable (kept regions of an
inpainting, a given patch) never change.

The schedules, limits and argument checks are ``m6_fashion_core.sampling``'s, shared with the torch-free
runtime's numpy ``SMARTSampler``; this module adds the torch ``step``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from m6_fashion_core import sampling as _smart
from m6_fashion_core.sampling import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_CONFIDENCE_NOISE,
    DEFAULT_TEMPERATURE,
    MASK_SCHEDULES,
    MAX_INFERENCE_STEPS,
    MAX_TEMPERATURE,
    check_temperature,
)

__all__ = [
    "DEFAULT_ALPHA", "DEFAULT_BETA", "DEFAULT_TEMPERATURE", "MASK_SCHEDULES", "MAX_INFERENCE_STEPS", "MAX_TEMPERATURE",
    "SMARTScheduler", "SMARTSchedulerOutput", "check_temperature",
]


def _sample_categorical(probs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.LongTensor:
    """One draw per row of `probs` `(R, K)` (rows sum to 1), by inverse-CDF sampling.

    Same distribution as `torch.multinomial(probs, 1)` but one uniform number per row instead of K
    exponential draws, which made sampling about a tenth of a CPU step. Returns `(R,)` indices.
    """
    if generator is not None and generator.device != probs.device:
        probs = probs.to(generator.device)
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_max(probs.shape[-1] - 1).squeeze(-1)


@dataclass
class SMARTSchedulerOutput(BaseOutput):
    """
    Args:
        prev_sample (`torch.LongTensor` of shape `(B, N, M)`): tokens for the next pass; re-masked positions hold
            the mask code `K`.
        pred_original_sample (`torch.LongTensor` of shape `(B, N, M)`): this pass's full prediction (no masks).
        confidence (`torch.FloatTensor` of shape `(B, N)`): confidence of each position's token.
    """

    prev_sample: torch.LongTensor = None
    pred_original_sample: torch.LongTensor = None
    confidence: torch.FloatTensor = None


class SMARTScheduler(SchedulerMixin, ConfigMixin):
    r"""Mask-predict scheduler with the SMART re-masking schedule.

    Parameters are the fields of `m6_fashion_core.sampling.SMARTConfig`, which documents and checks them:
    `mask_token_id` (the mask code K; defaults to 256, the shipped codebook size), `mask_schedule` (`"smart"`
    or `"cosine"`), `alpha` and `beta` (the re-mask ratios after the first pass and pass T-1, 0.8 and 0.2),
    `temperature` (of the first pass), `temperature_end` (optional, reached at pass T), `deterministic`
    (argmax tokens, lowest-confidence re-masking), `confidence_noise` (scale of the Gumbel noise that draws the
    kept positions by confidence; 1.0 by default) and `confidence_noise_end` (optional, reached at pass T). They
    are saved as the scheduler's config.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        mask_token_id: int = 256,
        mask_schedule: str = "smart",
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
        temperature: float = DEFAULT_TEMPERATURE,
        temperature_end: Optional[float] = None,
        deterministic: bool = False,
        confidence_noise: float = DEFAULT_CONFIDENCE_NOISE,
        confidence_noise_end: Optional[float] = None,
    ):
        checked = _smart.SMARTConfig(**{k: self.config[k] for k in _smart.SMART_CONFIG_KEYS})
        # numpy numbers are accepted as Python ones; the saved config holds the Python value (JSON has no np.float32)
        numpy_keys = [k for k in _smart.SMART_CONFIG_KEYS if isinstance(self.config[k], np.generic)]
        if numpy_keys:
            self.register_to_config(**{k: getattr(checked, k) for k in numpy_keys})
        self.num_inference_steps: Optional[int] = None
        self.timesteps: Optional[torch.Tensor] = None
        self._temperature: Optional[float] = None

    @property
    def mask_token_id(self) -> int:
        """The image MASK code (= K, the codebook size); the name the runtime's `SMARTSampler` uses too."""
        return self.config.mask_token_id

    def set_timesteps(
        self, num_inference_steps: int, device: Union[str, torch.device, None] = None, temperature: Optional[float] = None
    ) -> None:
        """Sets T; `timesteps` are the pass indices 0..T-1.

        `temperature`, if given, replaces the configured first-pass temperature until the next call (it is
        validated like the config's; the config itself is never changed).
        """
        steps = _smart.timesteps(num_inference_steps)
        self._temperature = None if temperature is None else check_temperature(temperature, "temperature")
        self.num_inference_steps = len(steps)
        self.timesteps = torch.as_tensor(steps, device=device)

    def remask_ratio(self, step: int) -> float:
        """Fraction of editable positions re-masked after pass `step` (0-indexed); 0 after the last pass."""
        c = self.config
        return _smart.remask_ratio(step, self.num_inference_steps, c.mask_schedule, c.alpha, c.beta)

    def temperature_at(self, step: int) -> float:
        """Sampling temperature of pass `step`: the first-pass temperature, moving linearly to `temperature_end`."""
        t0 = self.config.temperature if self._temperature is None else self._temperature
        return _smart.temperature_at(step, self.num_inference_steps, t0, self.config.temperature_end)

    def confidence_noise_at(self, step: int) -> float:
        """Scale of the Gumbel noise on the log-confidence after pass `step` (`confidence_noise` -> `confidence_noise_end`)."""
        c = self.config
        return _smart.confidence_noise_at(step, self.num_inference_steps, c.confidence_noise, c.confidence_noise_end)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[int, torch.Tensor],
        sample: torch.LongTensor,
        editable: Optional[torch.BoolTensor] = None,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
    ):
        """One SMART pass.

        Args:
            model_output: logits `(B, N, M, K)` for every target position.
            timestep: pass index in `[0, T)`.
            sample: current tokens `(B, N, M)`; masked positions hold `mask_token_id` in every group.
            editable: `(B, N)` bool, positions the sampler may change (default: all).
            generator: `torch.Generator` for sampling (on the logits' device or CPU).
        """
        _smart.check_step_shapes(model_output.shape, sample.shape, "model_output")
        step = int(timestep)
        B, N, M, K = model_output.shape
        if editable is None:
            editable = torch.ones(B, N, dtype=torch.bool, device=sample.device)
        masked = (sample == self.mask_token_id).any(-1) & editable  # (B, N)
        logits = model_output.float()
        if self.config.deterministic:
            candidates = logits.argmax(-1)
        else:
            t = self.temperature_at(step)
            probs = torch.softmax(logits / t, dim=-1).reshape(-1, K)
            candidates = _sample_categorical(probs, generator).to(sample.device).reshape(B, N, M)
        tokens = torch.where(masked[..., None], candidates, sample)
        pred_original = tokens.clone()
        log_probs = torch.log_softmax(logits, dim=-1)
        conf_log = log_probs.gather(-1, tokens.clamp_max(K - 1)[..., None]).squeeze(-1).mean(-1)  # (B, N) mean log p over groups
        confidence = conf_log.exp()

        ratio = self.remask_ratio(step)
        if ratio > 0:
            # floor(n_editable * ratio) in float32 on the device, as `m6_fashion_core.sampling.num_remasked` (no host sync)
            n_remask = torch.floor(editable.sum(-1).float() * ratio).long()  # (B,)
            scores = conf_log
            if not self.config.deterministic:
                u = torch.rand(conf_log.shape, generator=generator, device=generator.device if generator is not None else conf_log.device)
                u = u.to(conf_log.device).clamp(_smart.GUMBEL_UNIFORM_MIN, _smart.GUMBEL_UNIFORM_MAX)
                scores = conf_log + self.confidence_noise_at(step) * (-torch.log(-torch.log(u)))
            scores = torch.where(editable, scores, torch.full_like(scores, float("inf")))
            # stable ascending rank; the n_remask lowest-scoring editable positions are re-masked
            order = torch.argsort(scores, dim=-1, stable=True)
            rank = torch.empty_like(order)
            rank.scatter_(1, order, torch.arange(N, device=order.device).expand(B, N).contiguous())
            remask = editable & (rank < n_remask[:, None])
            tokens = torch.where(remask[..., None], torch.full_like(tokens, self.mask_token_id), tokens)
        if not return_dict:
            return (tokens, pred_original, confidence)
        return SMARTSchedulerOutput(prev_sample=tokens, pred_original_sample=pred_original, confidence=confidence)
