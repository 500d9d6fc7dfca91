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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

MASK_SCHEDULES = ("smart", "cosine")


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


MAX_INFERENCE_STEPS = 1000  # SMART uses T=10; more than 1000 passes only burns time (a bound, not a tuning)
MAX_TEMPERATURE = 100.0


def check_temperature(value, name: str = "temperature") -> float:
    """Returns ``value`` as a float if it is a finite number in (0, MAX_TEMPERATURE]; raises otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not (
        0 < value <= MAX_TEMPERATURE
    ):
        raise ValueError(
            f"{name} must be a finite number in (0, {MAX_TEMPERATURE:g}]; got {value!r} "
            "(use deterministic=True for argmax decoding)"
        )
    return float(value)


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

    Parameters:
        mask_token_id (`int`, defaults to 256): the mask code (= K, the codebook size).
        mask_schedule (`str`, defaults to `"smart"`): `"smart"` (linear alpha -> beta) or `"cosine"`.
        alpha (`float`, defaults to 0.8): re-mask ratio after the first pass.
        beta (`float`, defaults to 0.2): re-mask ratio after pass T-1.
        temperature (`float`, defaults to 1.0): sampling temperature of the first pass.
        temperature_end (`float`, *optional*): if set, the temperature moves linearly to this value at pass T.
        deterministic (`bool`, defaults to `False`): argmax tokens and lowest-confidence re-masking.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        mask_token_id: int = 256,
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
        if isinstance(mask_token_id, bool) or not isinstance(mask_token_id, int) or mask_token_id < 1:
            raise ValueError(f"mask_token_id must be an integer >= 1 (the codebook size K); got {mask_token_id!r}")
        self.num_inference_steps: Optional[int] = None
        self.timesteps: Optional[torch.Tensor] = None
        self._temperature: Optional[float] = None

    def set_timesteps(
        self, num_inference_steps: int, device: Union[str, torch.device, None] = None, temperature: Optional[float] = None
    ) -> None:
        """Sets T; `timesteps` are the pass indices 0..T-1.

        `temperature`, if given, replaces the configured first-pass temperature until the next call (it is
        validated like the config's; the config itself is never changed).
        """
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or not (
            1 <= num_inference_steps <= MAX_INFERENCE_STEPS
        ):
            raise ValueError(
                f"num_inference_steps must be an integer in [1, {MAX_INFERENCE_STEPS}]; got {num_inference_steps!r}"
            )
        self._temperature = None if temperature is None else check_temperature(temperature, "temperature")
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.arange(num_inference_steps, device=device)

    def remask_ratio(self, step: int) -> float:
        """Fraction of editable positions re-masked after pass `step` (0-indexed); 0 after the last pass."""
        T = self.num_inference_steps
        if T is None:
            raise RuntimeError("call set_timesteps before step")
        i = step + 1
        if i >= T:
            return 0.0
        if self.config.mask_schedule == "cosine":
            return math.cos(math.pi / 2 * i / T)
        if T == 2:
            return self.config.alpha
        return self.config.beta + (T - 1 - i) / (T - 2) * (self.config.alpha - self.config.beta)

    def temperature_at(self, step: int) -> float:
        t0 = self.config.temperature if self._temperature is None else self._temperature
        t1 = self.config.temperature_end
        if t1 is None or self.num_inference_steps == 1:
            return t0
        return t0 + (t1 - t0) * step / (self.num_inference_steps - 1)

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
        if model_output.ndim != 4 or sample.shape != model_output.shape[:3]:
            raise ValueError(f"model_output must be (B, N, M, K) and sample (B, N, M); got {tuple(model_output.shape)} and {tuple(sample.shape)}")
        step = int(timestep)
        B, N, M, K = model_output.shape
        if editable is None:
            editable = torch.ones(B, N, dtype=torch.bool, device=sample.device)
        masked = (sample == self.config.mask_token_id).any(-1) & editable  # (B, N)
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
            n_edit = editable.sum(-1)  # (B,)
            n_remask = torch.floor(n_edit.float() * ratio).long()
            scores = conf_log
            if not self.config.deterministic:
                u = torch.rand(conf_log.shape, generator=generator, device=generator.device if generator is not None else conf_log.device)
                scores = conf_log + (-torch.log(-torch.log(u.to(conf_log.device).clamp(1e-20, 1 - 1e-7))))
            scores = torch.where(editable, scores, torch.full_like(scores, float("inf")))
            # stable ascending rank; the n_remask lowest-scoring editable positions are re-masked
            order = torch.argsort(scores, dim=-1, stable=True)
            rank = torch.empty_like(order)
            rank.scatter_(1, order, torch.arange(N, device=order.device).expand(B, N).contiguous())
            remask = editable & (rank < n_remask[:, None])
            tokens = torch.where(remask[..., None], torch.full_like(tokens, self.config.mask_token_id), tokens)
        if not return_dict:
            return (tokens, pred_original, confidence)
        return SMARTSchedulerOutput(prev_sample=tokens, pred_original_sample=pred_original, confidence=confidence)
