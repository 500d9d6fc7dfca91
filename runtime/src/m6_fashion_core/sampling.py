"""The pure parts of SMART sampling: limits, argument checks, schedules and counts.

SMART (M6-Fashion, section 3.3) runs T model passes over the target token grid. Pass i (i = 1..T) predicts
every editable position; after passes 1..T-1 a fraction r_i of the editable positions is re-masked:

    smart  : r_i = beta + (T-1-i)/(T-2) * (alpha - beta)   (falls linearly from alpha=0.8 to beta=0.2)
    cosine : r_i = cos(pi/2 * i/T)                         (MaskGIT's schedule, for comparison)

and r_T = 0 (the last pass fills every remaining mask). The sampling temperature of pass i (0-indexed
step s = i - 1) moves linearly from ``temperature`` to ``temperature_end`` when the latter is set:

    t_s = t_0 + (t_end - t_0) * s / (T - 1)

Which positions keep their tokens is drawn in proportion to confidence (Gumbel-top-k on the log-confidence);
the Gumbel noise is scaled by ``confidence_noise`` (MaskGIT's "choice temperature"), moving linearly to
``confidence_noise_end`` in the same way when that is set. A larger scale early lets less confident
tokens (garment shape, pose) settle first, which varies the layout between seeds; 0 keeps the most confident.

These functions hold no tensors. ``m6_fashion``'s ``SMARTScheduler`` (torch) and ``m6_fashion_runtime``'s
``SMARTSampler`` (numpy) both call them, so the two samplers share every schedule, limit and message;
only their ``step`` (the sampling itself) is written once per array library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np

MASK_SCHEDULES = ("smart", "cosine")
MAX_INFERENCE_STEPS = 1000  # SMART uses T=10; more than 1000 passes only burns time (a bound, not a tuning)
MAX_TEMPERATURE = 100.0

DEFAULT_ALPHA = 0.8  # re-mask ratio after the first pass (paper, section 3.3)
DEFAULT_BETA = 0.2  # re-mask ratio after pass T-1
DEFAULT_TEMPERATURE = 1.0
DEFAULT_CONFIDENCE_NOISE = 1.0  # plain Gumbel-top-k: kept positions drawn in proportion to confidence

# Gumbel-top-k noise g = -log(-log(u)) takes float32 uniforms u clamped to [1e-20, 1 - 1e-7]: u = 0 or 1 would
# make g infinite; clamped, g stays in about [-3.83, 15.94].
GUMBEL_UNIFORM_MIN = 1e-20
GUMBEL_UNIFORM_MAX = 1 - 1e-7


def _is_real(value) -> bool:
    """A Python or numpy real number, not a bool (``True`` is an ``int`` in Python)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_temperature(value, name: str = "temperature") -> float:
    """Returns ``value`` as a float if it is a finite number in (0, MAX_TEMPERATURE]; raises ``ValueError`` naming ``name``."""
    if not _is_real(value) or not math.isfinite(value) or not (0 < value <= MAX_TEMPERATURE):
        raise ValueError(
            f"{name} must be a finite number in (0, {MAX_TEMPERATURE:g}]; got {value!r} "
            "(use deterministic=True for argmax decoding)"
        )
    return float(value)


def check_confidence_noise(value, name: str = "confidence_noise") -> float:
    """Returns ``value`` as a float if it is a finite number in [0, MAX_TEMPERATURE]; raises ``ValueError`` naming ``name``."""
    if not _is_real(value) or not math.isfinite(value) or not (0 <= value <= MAX_TEMPERATURE):
        raise ValueError(
            f"{name} must be a finite number in [0, {MAX_TEMPERATURE:g}] (the scale of the Gumbel noise on the "
            f"confidence; 0 keeps the most confident positions); got {value!r}"
        )
    return float(value)


def check_num_inference_steps(value) -> int:
    """Returns the number of passes T as an int if it is a whole number in [1, MAX_INFERENCE_STEPS]; raises otherwise."""
    if not _is_int(value) or not (1 <= value <= MAX_INFERENCE_STEPS):
        raise ValueError(f"num_inference_steps must be an integer in [1, {MAX_INFERENCE_STEPS}]; got {value!r}")
    return int(value)


def check_mask_token_id(value) -> int:
    """Returns the MASK code as an int if it is a whole number >= 1 (it equals the codebook size K); raises otherwise."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"mask_token_id must be an integer >= 1 (the codebook size K); got {value!r}")
    return int(value)


@dataclass(eq=False)
class SMARTConfig:
    """A checked scheduler config: the keys of a saved ``scheduler_config.json`` (and of a runtime bundle's
    ``scheduler`` section), with plain Python values.

    Parameters:
        mask_token_id (`int`): the image MASK code (= K, the codebook size).
        mask_schedule (`str`, defaults to `"smart"`): `"smart"` (linear alpha -> beta) or `"cosine"`.
        alpha (`float`, defaults to 0.8): re-mask ratio after the first pass.
        beta (`float`, defaults to 0.2): re-mask ratio after pass T-1.
        temperature (`float`, defaults to 1.0): sampling temperature of the first pass.
        temperature_end (`float`, *optional*): if set, the temperature moves linearly to this value at pass T.
        confidence_noise (`float`, defaults to 1.0): scale of the Gumbel noise added to the log-confidence when
            choosing the kept positions after the first pass (0 = keep the most confident).
        confidence_noise_end (`float`, *optional*): if set, that scale moves linearly to this value at pass T.
        deterministic (`bool`, defaults to `False`): argmax tokens and lowest-confidence re-masking.

    Raises ``ValueError`` naming the first bad key: an unknown ``mask_schedule``, ratios outside
    ``0 <= beta <= alpha <= 1``, a temperature outside (0, MAX_TEMPERATURE], a ``mask_token_id`` < 1.
    """

    mask_token_id: int
    mask_schedule: str = "smart"
    alpha: float = DEFAULT_ALPHA
    beta: float = DEFAULT_BETA
    temperature: float = DEFAULT_TEMPERATURE
    temperature_end: Optional[float] = None
    deterministic: bool = False
    confidence_noise: float = DEFAULT_CONFIDENCE_NOISE
    confidence_noise_end: Optional[float] = None

    def __post_init__(self):
        if self.mask_schedule not in MASK_SCHEDULES:
            raise ValueError(f"unknown mask_schedule {self.mask_schedule!r}; accepted: {', '.join(MASK_SCHEDULES)}")
        if not 0.0 <= self.beta <= self.alpha <= 1.0:
            raise ValueError(f"need 0 <= beta <= alpha <= 1; got alpha={self.alpha}, beta={self.beta}")
        self.temperature = check_temperature(self.temperature, "temperature")
        if self.temperature_end is not None:
            self.temperature_end = check_temperature(self.temperature_end, "temperature_end")
        self.confidence_noise = check_confidence_noise(self.confidence_noise, "confidence_noise")
        if self.confidence_noise_end is not None:
            self.confidence_noise_end = check_confidence_noise(self.confidence_noise_end, "confidence_noise_end")
        self.mask_token_id = check_mask_token_id(self.mask_token_id)
        self.alpha, self.beta = float(self.alpha), float(self.beta)
        self.deterministic = bool(self.deterministic)


# The keys of a scheduler config (``scheduler_config.json`` of a saved pipeline, the ``scheduler`` section of a
# runtime bundle): the fields of ``SMARTConfig``, in the order of the schedulers' parameters.
SMART_CONFIG_KEYS = tuple(f.name for f in fields(SMARTConfig))


def timesteps(num_inference_steps) -> np.ndarray:
    """The pass indices ``0..T-1`` `(T,)` int64, after checking T (see ``check_num_inference_steps``)."""
    return np.arange(check_num_inference_steps(num_inference_steps))


def remask_ratio(
    step: int, num_inference_steps: Optional[int], mask_schedule: str = "smart", alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
) -> float:
    """Fraction r_i of the editable positions re-masked after pass ``step`` (0-indexed, i = step + 1); 0 after the last.

    smart: r_i = beta + (T-1-i)/(T-2) * (alpha - beta), so r_1 = alpha and r_{T-1} = beta (T = 2 has one
    re-masking pass, at alpha); cosine: r_i = cos(pi/2 * i/T). ``num_inference_steps`` None means the
    sampler's timesteps were never set.
    """
    T = num_inference_steps
    if T is None:
        raise RuntimeError("call set_timesteps before step")
    i = step + 1
    if i >= T:
        return 0.0
    if mask_schedule == "cosine":
        return math.cos(math.pi / 2 * i / T)
    if T == 2:
        return alpha
    return beta + (T - 1 - i) / (T - 2) * (alpha - beta)


def temperature_at(step: int, num_inference_steps: Optional[int], temperature: float,
                   temperature_end: Optional[float] = None) -> float:
    """Sampling temperature of pass ``step``: t_0 + (t_end - t_0) * step / (T - 1), or t_0 without ``temperature_end``."""
    t0, t1 = temperature, temperature_end
    if t1 is None or num_inference_steps == 1:
        return t0
    return t0 + (t1 - t0) * step / (num_inference_steps - 1)


def confidence_noise_at(step: int, num_inference_steps: Optional[int], confidence_noise: float,
                        confidence_noise_end: Optional[float] = None) -> float:
    """Scale of the Gumbel noise on the log-confidence after pass ``step``: the same line as ``temperature_at``,
    from ``confidence_noise`` to ``confidence_noise_end`` (constant without it)."""
    return temperature_at(step, num_inference_steps, confidence_noise, confidence_noise_end)


# the keys of a scheduler config that set how tokens are drawn (as opposed to how many are re-masked)
SCHEDULE_KEYS = ("temperature", "temperature_end", "confidence_noise", "confidence_noise_end")


def describe(temperature: float, temperature_end: Optional[float] = None, confidence_noise: Optional[float] = None,
             confidence_noise_end: Optional[float] = None) -> str:
    """The sampling schedule in words, as result files and tables label it: ``"temperature 0.7"``,
    ``"temperature 1.5 -> 0.6, confidence noise 8 -> 1"`` (the noise only when it is not the plain 1)."""
    def line(name, a, b):
        return f"{name} {a:g}" + ("" if b is None or b == a else f" -> {b:g}")

    text = line("temperature", temperature, temperature_end)
    noise = DEFAULT_CONFIDENCE_NOISE if confidence_noise is None else confidence_noise
    if noise != DEFAULT_CONFIDENCE_NOISE or confidence_noise_end not in (None, noise):
        text += ", " + line("confidence noise", noise, confidence_noise_end)
    return text


def describe_config(config, temperature: Optional[float] = None) -> str:
    """``describe`` of a scheduler config (any mapping with ``get``: a saved ``scheduler_config.json``, a scheduler's
    ``config``, a result file's ``sampling``); ``temperature``, when given, replaces its first-pass temperature."""
    values = {k: config.get(k) for k in SCHEDULE_KEYS}
    if temperature is not None:
        values["temperature"] = temperature
    return describe(**values)


def num_remasked(num_editable, ratio: float) -> np.ndarray:
    """How many of the editable positions are re-masked: floor(n_editable * ratio), per row; int64, shape of ``num_editable``.

    The product is taken in float32, as torch computes a float32 tensor times a Python float: float64 would
    differ near whole numbers (T = 6, r_1 = 0.65, 180 editable: 117 in float64, 116 in float32). The
    ``num_editable - num_remasked`` positions with the highest scores keep their tokens.
    """
    n = np.asarray(num_editable).astype(np.float32)
    return np.floor(n * np.float32(ratio)).astype(np.int64)


def check_step_shapes(logits_shape, sample_shape, logits_name: str = "logits") -> None:
    """Checks that the scores are `(B, N, M, K)` and the tokens `(B, N, M)` (a step's inputs); raises ``ValueError``."""
    logits_shape, sample_shape = tuple(logits_shape), tuple(sample_shape)
    if len(logits_shape) != 4 or sample_shape != logits_shape[:3]:
        raise ValueError(f"{logits_name} must be (B, N, M, K) and sample (B, N, M); got {logits_shape} and {sample_shape}")
