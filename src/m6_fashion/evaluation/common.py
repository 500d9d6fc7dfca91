"""What `m6-fashion evaluate` does in both of its modes (64 px: :mod:`.evaluate`; high resolution: :mod:`.evaluate_hr`).

Argument checks, pipeline loading, the reference set's Inception features (cached on disk), the caption rows of the
text-to-image section, the result-file header, partial-result checkpoints, logging and progress bars.

Logging: progress and intermediate figures go to the ``diffusers.m6_fashion.evaluation`` logger, a child of
diffusers' library logger (``diffusers.utils.logging.set_verbosity_info()`` shows them,
``set_verbosity_error()`` silences them); ``m6-fashion evaluate`` sets it to INFO unless ``--quiet``. Progress bars
(tqdm, on stderr) are shown exactly when INFO messages are.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from diffusers.utils import logging as diffusers_logging

from .attribute_classifier import HEADS, attributes_from_row
from .metrics import INCEPTION_SHA1, feature_stats, inception_features, majority_rate

logger = diffusers_logging.get_logger("diffusers.m6_fashion.evaluation")

#: ``--transformer_dtype`` choices: the stage-2 transformer's compute dtype (tokenizer and decoders stay float32).
TRANSFORMER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def set_quiet(quiet: bool) -> None:
    """INFO messages and progress bars on (``quiet=False``, the CLI default) or off (warnings only)."""
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def progress_bar(total: int, desc: str, disable: bool = False):
    """A tqdm bar (stderr) over ``total`` items, shown when the evaluation logger shows INFO messages (and not ``disable``)."""
    return diffusers_logging.tqdm(total=total, desc=desc, leave=False, disable=disable or not logger.isEnabledFor(logging.INFO))


# ----------------------------------------------------------------------------------------------
# arguments and the pipeline


def check_arguments(sections: Sequence[str], accepted: Sequence[str], num_samples: int, transformer_dtype: str,
                    section_error: str = "unknown section {section!r}") -> None:
    """Raises ``ValueError`` naming the accepted values for an unknown section, ``num_samples < 2`` (FID/KID need
    two images) or an unknown transformer dtype. ``section_error`` is the message head, formatted with ``section``."""
    for s in sections:
        if s not in accepted:
            raise ValueError(f"{section_error.format(section=s)}; accepted: {', '.join(accepted)}")
    check_count("num_samples", num_samples)
    if transformer_dtype not in TRANSFORMER_DTYPES:
        raise ValueError(f"transformer_dtype must be one of {', '.join(TRANSFORMER_DTYPES)}; got {transformer_dtype!r}")


def check_count(name: str, value: int) -> None:
    """An image count that feeds FID/KID: at least 2."""
    if value < 2:
        raise ValueError(f"{name} must be >= 2 (FID/KID need two images); got {value}")


def load_pipeline(model: Optional[str], pipe=None, transformer_dtype: str = "float32"):
    """``pipe`` as given, else ``M6FashionPipeline.from_pretrained(model)`` (None: the shipped model) with the
    transformer in ``transformer_dtype`` and everything else in float32; its progress bar is turned off."""
    from ..pipelines import M6FashionPipeline

    if pipe is None:
        dtype = {"transformer": TRANSFORMER_DTYPES[transformer_dtype], "default": torch.float32}
        pipe = M6FashionPipeline.from_pretrained(model, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def describe_sampling(pipe, temperature: Optional[float] = None) -> str:
    """The scheduler's sampling schedule in words (``temperature`` replacing its first-pass temperature when given)."""
    from m6_fashion_core.sampling import describe_config

    return describe_config(pipe.scheduler.config, None if temperature is None else float(temperature))


def text_guidance(guidance_scale: Optional[float], prompts: Sequence[str]) -> float:
    """The guidance scale the pipeline uses for a text-to-image call with ``prompts`` (``None``: its task default)."""
    from m6_fashion_core import validation

    return float(validation.default_guidance_scale(guidance_scale, list(prompts), None, None))


def sampling_settings(pipe, steps: int, guidance_scale: Optional[float], batch_size: int, seed: int,
                      guidance_min_p: Optional[float] = None) -> Dict:
    """The sampler settings every result file records (scheduler defaults read from ``pipe``). ``guidance_scale``
    None = the pipeline's task default (``guidance_default_text_to_image`` for captions, 1 without text); ``guidance_min_p``
    None = the pipeline's default."""
    from m6_fashion_core import validation

    return {
        "steps": steps,
        "scheduler_default_temperature": float(pipe.scheduler.config.temperature),
        "scheduler_default_sampling": describe_sampling(pipe),
        "mask_schedule": pipe.scheduler.config.mask_schedule,
        "transformer_dtype": str(pipe.transformer.dtype).replace("torch.", ""),
        "guidance_scale": guidance_scale,
        "guidance_default_text_to_image": validation.DEFAULT_TEXT_GUIDANCE_SCALE,
        "guidance_min_p": validation.DEFAULT_GUIDANCE_MIN_P if guidance_min_p is None else guidance_min_p,
        "batch_size": batch_size,
        "seed": seed,
    }


# ----------------------------------------------------------------------------------------------
# the reference set


def cached_real_features(extractor, data: Dict, split: str, cache_dir, tag: str) -> torch.Tensor:
    """Inception features of ``data["images"]``, cached on disk when ``cache_dir`` is set (keyed by the row ids)."""
    images = data["images"]
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"inception-{split}-{tag}-{images.shape[-1]}px-n{images.shape[0]}.pt"
        if path.is_file():
            cached = torch.load(path, weights_only=True)
            if cached.get("sha1") == INCEPTION_SHA1 and torch.equal(cached["ids"], data["ids"]):
                return cached["features"]
    t0 = time.time()
    feats = inception_features(extractor, images)
    logger.info(f"  Inception features of {images.shape[0]} real {split} images: {time.time() - t0:.0f} s")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"features": feats, "ids": data["ids"].clone(), "sha1": INCEPTION_SHA1}, tmp)
        tmp.replace(path)
    return feats


@dataclass
class Reference:
    """The real images generated sets are scored against: Inception features ``(n, 2048)`` and their statistics
    (:func:`~m6_fashion.evaluation.metrics.feature_stats`, computed once for every :func:`fid_kid` call)."""

    features: torch.Tensor
    stats: Optional[Dict[str, torch.Tensor]] = None

    def __post_init__(self):
        if self.stats is None:
            self.stats = feature_stats(self.features)

    def head(self, n: int) -> Tuple[torch.Tensor, Optional[Dict]]:
        """Features of the first ``n`` rows, with the statistics when they are the whole set (else None)."""
        return self.features[:n], (self.stats if n == self.features.shape[0] else None)


def floor_rows(total: int, n: int, seed: int) -> np.ndarray:
    """Sorted seeded choice of ``n`` of ``total`` rows for the real-vs-real reference floor (generator ``seed + 1``)."""
    return np.sort(np.random.default_rng(seed + 1).choice(total, size=n, replace=False))


# ----------------------------------------------------------------------------------------------
# captions


def prompt_rows(data: Dict, num: int, seed: int) -> np.ndarray:
    """Seeded choice of ``num`` rows (sorted) whose caption is not empty."""
    candidates = np.array([i for i, t in enumerate(data["text"]) if isinstance(t, str) and t.strip()])
    if num > len(candidates):
        raise ValueError(f"asked for {num} captions but the split has {len(candidates)} rows with a caption")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=num, replace=False))


def prompt_set(data: Dict, num: int, seed: int, hits: Callable) -> Tuple[np.ndarray, List[str], List[Dict], Dict]:
    """The caption rows of a text-to-image evaluation: `(rows, prompts, attributes, summary)`, the summary
    holding the rows' ids, the classifier's accuracy on their real photos (`hits(images, attributes)`, the
    ceiling of the hit rates) and the most frequent value of each attribute (chance)."""
    rows = prompt_rows(data, num, seed)
    prompts = [data["text"][i] for i in rows]
    attributes = [attributes_from_row({h: data[h][i] for h in HEADS}) for i in rows]
    summary = {
        "num": num,
        "row_ids": [int(data["ids"][i]) for i in rows],
        "examples": prompts[:5],
        "classifier_accuracy_real": hits(data["images"][torch.as_tensor(rows)], attributes),
        "chance_majority": {h: majority_rate([a[h] for a in attributes]) for h in HEADS},
    }
    return rows, prompts, attributes, summary


def hit_rate_line(rates: Dict[str, float], prefix: str = "hit") -> str:
    """``"hit articleType 0.750  hit baseColour ..."``: a log line's hit rates, one per head."""
    return "  ".join(f"{prefix} {h} {rates[h]:.3f}" for h in HEADS)


# ----------------------------------------------------------------------------------------------
# result files


def environment() -> Dict:
    """Software and CPU a result was measured with."""
    from ..cpu import cpu_model

    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu": cpu_model(),
        "python": platform.python_version(),
    }


def json_safe(obj):
    """``obj`` with every non-finite float replaced by None (JSON has no NaN/inf), recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def result_header(model_label: str, split: str, settings: Dict, descriptions: Dict, **environment_extra) -> Dict:
    """The first keys of a result dict: model, split, UTC date, settings, environment, metric descriptions."""
    return {
        "model": model_label,
        "split": split,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": settings,
        "environment": {**environment(), **environment_extra},
        "metric_descriptions": descriptions,
    }


class Checkpoint:
    """Hands the partial results (with ``seconds_total`` so far, JSON-safe) to ``on_section`` after each section."""

    def __init__(self, results: Dict, on_section: Optional[Callable[[Dict], None]], t_start: float):
        self.results, self.on_section, self.t_start = results, on_section, t_start

    def __call__(self) -> None:
        if self.on_section is not None:
            self.results["seconds_total"] = time.time() - self.t_start
            self.on_section(json_safe(self.results))

    def finish(self) -> Dict:
        """The final, JSON-safe result dict with ``seconds_total``."""
        self.results["seconds_total"] = time.time() - self.t_start
        return json_safe(self.results)


def format_number(x, nd: int = 3) -> str:
    """``x`` with ``nd`` decimals; ``"n/a"`` for None, NaN or inf (how result files store undefined figures)."""
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{nd}f}"
