"""`m6-fashion evaluate --height H --width W`: the pipeline at catalogue resolution against the real photos.

    m6-fashion evaluate --height 256 --width 192 --data_dir ../shared/data/fashion-product-images-hr \
        --num_samples 798 --transformer_dtype bfloat16 --out results.json
    m6-fashion evaluate --height 256 --width 192 --fast --out results.json      # a handful of images (CI)

Data: the fashion-product-images-hr split (``--data_dir``; default ``../shared/data/fashion-product-images-hr``).
Every real photo is padded on white to the ``width:height`` aspect ratio (centred, never cropped) and resized
(PIL bicubic) to exactly ``width`` x ``height``. For 192x256 this resizes the 168x224 photos up (their
reference is itself an upscale) and pads the few photos that are not 3:4 (one 192x192 photo in the test
split; 7 in both splits) above and below, or at the sides, as the model's canvas pads them.

Two rows, from the same captions and seeds (batch ``j`` uses ``torch.Generator().manual_seed(seed + j)``, as
in the 64-px mode), so the SMART tokens are the same and only the decoding differs:

(a) ``pipe(prompt, height=H, width=W)``: the high-resolution decoder (``decoder_hr``) paints its canvas and the
    output is the centred ``W x H`` crop;
(b) the baseline: ``pipe(prompt, height=h, width=w)`` on the 64-px canvas, where ``w x h`` is the same
    centred crop at 64 px (48x64 for 192x256), upscaled with PIL bicubic to ``W x H``.

Both calls return their tokens; the result file records on how many images they agree (they should on all:
``text_to_image.tokens_identical``). For each row: Inception-v3 FID and KID against the real photos (features
exactly as in the 64-px mode: TF1-bilinear resize to 299x299), the attribute hit rates of the attribute
classifier (which reads 64x64 squares: each image is padded to a square on white and resized to 64, PIL
bicubic, as the classifier's training photos were) and the sharpness (variance of the 3x3 Laplacian of the
grey image, 0-255 levels, mean over images) next to the real photos' figure.

``reconstruction``: the tokens of each real photo (padded to ``W:H``, then as the pipeline reads images:
padded to a square, resized to ``sample_size``) decoded by (a) ``decoder_hr`` and (b) the 64-px decoder +
bicubic upscale; PSNR/SSIM (per image, averaged) and rFID against the same real photos, on the uint8 images
a user receives, plus their sharpness.

Long runs are resumable: every finished batch (generated images and tokens, reconstructions) is saved under
``--cache_dir`` (``evaluate-hr/<hash of the settings>/``) and a rerun of the same command skips it; the folder
is removed when the run completes. ``--out`` holds the partial results after each finished part.

Every figure comes from :mod:`m6_fashion.evaluation.metrics` (FID/KID: ``fid_kid``, PSNR/SSIM:
``ReconstructionMetrics``, sharpness: ``sharpness``, hit rates: ``classifier_hit_rates``); progress goes to the
``diffusers.m6_fashion.evaluation`` logger and tqdm bars (see :mod:`m6_fashion.evaluation.common`).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import PIL.Image
import torch

from m6_fashion_core.cli import guidance_kwargs

from ..image_processing import preprocess, to_rgb
from .attribute_classifier import (
    DEFAULT_CACHE_DIR,
    HEADS,
    AttributeClassifier,
    load_cache,
    load_default_classifier,
    save_cache,
    slice_split,
    split_source,
)
from .common import (
    Checkpoint,
    Reference,
    cached_real_features,
    check_arguments,
    describe_sampling,
    floor_rows,
    format_number,
    hit_rate_line,
    load_pipeline,
    logger,
    progress_bar,
    prompt_set,
    result_header,
    sampling_settings,
    text_guidance,
)
from .metrics import (
    InceptionFeatureExtractor,
    ReconstructionMetrics,
    classifier_hit_rates,
    fid_kid,
    inception_features,
    sharpness,
    to_uint8,
)

HR_DATA_DIR = os.path.join("..", "shared", "data", "fashion-product-images-hr")
HR_SECTIONS = ("reconstruction", "text_to_image")
CHECKPOINT_VERSION = 1

METRIC_DESCRIPTIONS_HR = {
    "real_photos": "the split's photos padded on white to the width:height aspect ratio (centred, never cropped) and "
    "resized with PIL bicubic to exactly width x height",
    "hr": "(a) the pipeline at height x width: decoder_hr paints its canvas, the output is the centred crop",
    "baseline": "(b) the same pipeline (same captions, seeds, tokens) at its sample_size canvas, the same centred crop "
    "(e.g. 48x64), upscaled with PIL bicubic to width x height",
    "fid_inception": "FID (Inception-v3 pool_3, TF1-bilinear resize to 299x299, torchmetrics formula) vs the real photos",
    "kid_inception": "KID (Inception-v3 pool_3, torchmetrics, polynomial kernel, subsets of min(100, n)), mean and std over 100 subsets",
    "hit_rate": "fraction of images whose attribute-classifier prediction equals the attribute of the caption's dataset row; "
    "the classifier reads each image padded to a square on white and resized to its 64x64 input (PIL bicubic)",
    "classifier_accuracy_real": "the attribute classifier's accuracy on the real photos of the same rows, read the same way (ceiling)",
    "chance_majority": "frequency of the most common attribute value among the same rows",
    "sharpness": "variance of the 3x3 Laplacian of the grey image (0.299 R + 0.587 G + 0.114 B, levels 0..255), mean "
    "over images (sharpness_median: the median); the real photos set the target",
    "psnr": "PSNR in dB of the reconstruction vs the real photo, uint8 images, per image then averaged",
    "ssim": "SSIM (Gaussian window 11, sigma 1.5, on [0, 1]) of the reconstruction vs the real photo, per image then averaged",
    "rfid_inception": "FID of the reconstructions vs the same real photos",
    "tokens_identical": "images whose SMART tokens are identical in the two rows' pipeline calls (should be all)",
    "seconds_per_image": "wall-clock seconds of the pipeline calls (SMART passes + decoding; the baseline includes its "
    "bicubic upscale) divided by images, model loaded",
}

_f = format_number
_sharpness = sharpness


def _info(msg: str) -> None:
    logger.info(msg)


# ----------------------------------------------------------------------------------------------
# images


def pad_to_aspect(image: PIL.Image.Image, width: int, height: int, fill=(255, 255, 255)) -> PIL.Image.Image:
    """An RGB copy of ``image`` padded on ``fill`` (centred, never cropped) to the aspect ratio width:height."""
    image = to_rgb(image)
    w, h = image.size
    if w * height == h * width:
        return image
    if w * height < h * width:  # narrower than the target: pad the sides
        cw, ch = max(w, round(h * width / height)), h
    else:  # wider: pad above and below
        cw, ch = w, max(h, round(w * height / width))
    canvas = PIL.Image.new("RGB", (cw, ch), fill)
    canvas.paste(image, ((cw - w) // 2, (ch - h) // 2))
    return canvas


def real_photo(image: PIL.Image.Image, width: int, height: int) -> PIL.Image.Image:
    """A real photo as the reference: padded to width:height on white, resized (PIL bicubic) to width x height."""
    padded = pad_to_aspect(image, width, height)
    return padded if padded.size == (width, height) else padded.resize((width, height), PIL.Image.BICUBIC)


def _uint8_chw(images: Sequence[PIL.Image.Image]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])).permute(0, 3, 1, 2).contiguous()


def _pil(images: torch.Tensor) -> List[PIL.Image.Image]:
    return [PIL.Image.fromarray(a) for a in images.permute(0, 2, 3, 1).numpy()]


def upscale_bicubic(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """uint8 ``(B, 3, h, w)`` -> uint8 ``(B, 3, height, width)``, PIL bicubic (what a user resizing the PNG gets)."""
    return _uint8_chw([im.resize((width, height), PIL.Image.BICUBIC) for im in _pil(images)])


def classifier_view(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float ``(B, 3, size, size)`` in [-1, 1]: padded to a square on white and resized
    with PIL bicubic, exactly as the attribute classifier's training photos were (`preprocess`)."""
    return preprocess(_pil(images), size)


# ----------------------------------------------------------------------------------------------
# data


def load_hr_split(split: str, height: int, width: int, token_size, data_dir=HR_DATA_DIR, cache_dir=DEFAULT_CACHE_DIR,
                  limit: Optional[int] = None, rows: Optional[Sequence[int]] = None) -> Dict:
    """The split's photos as references and as tokenizer input.

    Returns ``{"images": uint8 (N, 3, height, width)`` (:func:`real_photo`), ``"token_images": uint8 (N, 3, s, s)``
    (the photo padded to width:height, then `preprocess(., s)`: what the pipeline's tokenizer reads; ``token_size``
    is the pipeline's `sample_size` ``s``, or its `sample_shape` ``(h, w)`` for a non-square model),
    ``"ids"``, ``"text"``, the attribute columns and ``"source_sizes"`` (``"WxH"`` of each stored photo)}.
    ``limit``: the first rows; ``rows``: these rows (neither is cached on disk).
    """
    import pyarrow.parquet as pq

    source, fingerprint = split_source(split, data_dir, "pass --data_dir (the fashion-product-images-hr folder)")
    cache_file = None
    if cache_dir is not None and limit is None and rows is None:
        tok = f"{token_size[0]}x{token_size[1]}" if isinstance(token_size, (tuple, list)) else str(token_size)
        cache_file = Path(cache_dir) / f"fashion-product-images-hr-{split}-{width}x{height}-tok{tok}.pt"
    cached = load_cache(cache_file, fingerprint)
    if cached is not None:
        return cached
    table = pq.read_table(source, columns=["image", "id", "text", *HEADS])
    if rows is not None:
        table = table.take(list(rows))
    elif limit is not None:
        table = table.slice(0, limit)
    refs, toks, sizes = [], [], []
    for cell in table.column("image").to_pylist():
        im = PIL.Image.open(io.BytesIO(cell["bytes"]))
        im.load()
        sizes.append(f"{im.size[0]}x{im.size[1]}")
        padded = pad_to_aspect(im, width, height)
        refs.append(padded if padded.size == (width, height) else padded.resize((width, height), PIL.Image.BICUBIC))
        toks.append(preprocess(padded, token_size)[0])
    data = {
        "images": _uint8_chw(refs),
        "token_images": torch.stack(toks).add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8),
        "ids": torch.tensor(table.column("id").to_pylist(), dtype=torch.long),
        "text": table.column("text").to_pylist(),
        **{h: table.column(h).to_pylist() for h in HEADS},
        "source_sizes": sizes,
        "source_bytes": fingerprint,
    }
    if cache_file is not None:
        save_cache(data, cache_file)
    return data


# ----------------------------------------------------------------------------------------------
# pipeline


def _display_path(path) -> str:
    """A path without this machine's prefix where possible: inside the package, or relative to the cwd."""
    p = Path(str(path)).resolve()
    package_parent = Path(str(importlib.resources.files("m6_fashion"))).resolve().parent  # the folder holding m6_fashion/
    for base in (package_parent, Path.cwd()):
        try:
            return str(p.relative_to(base))
        except ValueError:
            pass
    return str(path)


def ensure_decoder_hr(pipe, decoder_hr: Optional[str] = None) -> Tuple[object, str]:
    """``(pipeline with a decoder_hr, where it came from)``.

    ``decoder_hr`` (a StyleDecoder folder) replaces the pipeline's; otherwise a pipeline that has one keeps it, and
    one loaded without it (e.g. ``"m6-fashion-64"``) gets the ``decoder_hr/`` folder beside its other components.
    """
    from ..models.style_decoder import StyleDecoder
    from ..pipelines import M6FashionPipeline

    current = getattr(pipe, "decoder_hr", None)
    source = str(getattr(pipe.config, "_name_or_path", "") or "")
    if decoder_hr is None and current is not None:
        return pipe, (f"{_display_path(source)}/decoder_hr" if source else "decoder_hr") + " (part of the pipeline)"
    folder = Path(decoder_hr) if decoder_hr is not None else Path(source or ".") / "decoder_hr"
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"the high-resolution mode needs a decoder_hr; the pipeline has none and {_display_path(folder)!r} is not a "
            "StyleDecoder folder (pass --decoder_hr DIR)"
        )
    hr = StyleDecoder.from_pretrained(str(folder), use_safetensors=True).float().eval()
    components = {k: v for k, v in pipe.components.items() if k != "decoder_hr"}
    new = M6FashionPipeline(**components, decoder_hr=hr)
    new.set_progress_bar_config(disable=True)
    return new, _display_path(folder)


def baseline_size(pipe, height: int, width: int) -> Tuple[object, Tuple[int, int]]:
    """``(canvas of height x width, (h, w) of the same centred crop on the sample_size canvas)``.

    Raises ``ValueError`` when the size fits the ``sample_size`` canvas (nothing for decoder_hr to paint) or
    has no exact counterpart there (for 192x256 on the 256-px canvas: 48x64 on the 64-px one).
    """
    s = pipe.sample_size
    canvas = pipe.output_canvas(height, width)  # raises naming the accepted sizes
    if canvas.side == s:
        raise ValueError(f"{width}x{height} fits the {s}-px canvas; the high-resolution mode is for sizes painted by decoder_hr "
                         f"(run without --height/--width for the {s}-px evaluation)")
    if (height * s) % canvas.side or (width * s) % canvas.side:
        raise ValueError(f"{width}x{height} on the {canvas.side}-px canvas has no exact counterpart on the {s}-px canvas")
    lo = (height * s // canvas.side, width * s // canvas.side)
    pipe.output_canvas(*lo)  # the baseline crop must be a size the 64-px canvas makes
    return canvas, lo


class _BatchStore:
    """Finished batches on disk (one file each), so that an interrupted run resumes where it stopped."""

    def __init__(self, folder: Optional[Path], settings: Dict):
        self.folder = folder
        self.loaded = 0
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")

    def load(self, name: str) -> Optional[Dict]:
        if self.folder is None:
            return None
        path = self.folder / f"{name}.pt"
        if not path.is_file():
            return None
        try:
            out = torch.load(path, weights_only=True)
        except Exception:  # a truncated file from a killed run: redo that batch
            return None
        self.loaded += 1
        return out

    def save(self, name: str, record: Dict) -> None:
        if self.folder is None:
            return
        tmp = self.folder / f"{name}.tmp"
        torch.save(record, tmp)
        tmp.replace(self.folder / f"{name}.pt")

    def remove(self) -> None:
        if self.folder is not None and self.folder.is_dir():
            shutil.rmtree(self.folder, ignore_errors=True)
            try:
                self.folder.parent.rmdir()  # evaluate-hr/, once no other run's batches are left in it
            except OSError:
                pass


# ----------------------------------------------------------------------------------------------
# sections


@torch.no_grad()
def reconstruct(pipe, data: Dict, height: int, width: int, lo: Tuple[int, int], batch_size: int, store: _BatchStore) -> Dict:
    """uint8 reconstructions of ``data["token_images"]``: ``hr`` (decoder_hr, crop) and ``baseline`` (64 px crop, bicubic)."""
    canvas = pipe.output_canvas(height, width)
    canvas_lo = pipe.output_canvas(*lo)
    out = {"hr": [], "baseline": []}
    seconds = {"hr": 0.0, "baseline": 0.0}
    n = data["token_images"].shape[0]
    with progress_bar(n, "reconstruction") as bar:
        for j, i in enumerate(range(0, n, batch_size)):
            rec = store.load(f"rec-{j:04d}")
            if rec is None:
                x = data["token_images"][i : i + batch_size].float().div(127.5).sub(1.0)
                tokens = pipe.encode_images(x)
                t0 = time.perf_counter()
                hr = to_uint8(canvas.crop(pipe.decode_tokens(tokens, side=canvas.side).cpu()))
                t1 = time.perf_counter()
                small = to_uint8(canvas_lo.crop(pipe.decode_tokens(tokens).cpu()))
                up = upscale_bicubic(small, width, height)
                t2 = time.perf_counter()
                rec = {"hr": hr, "baseline": up, "seconds_hr": t1 - t0, "seconds_baseline": t2 - t1}
                store.save(f"rec-{j:04d}", rec)
            for k in out:
                out[k].append(rec[k])
                seconds[k] += rec[f"seconds_{k}"]
            bar.update(min(batch_size, n - i))
    return {k: torch.cat(v) for k, v in out.items()} | {"seconds": seconds}


@torch.no_grad()
def generate_pair(pipe, prompts: Sequence[str], height: int, width: int, lo: Tuple[int, int], steps: int,
                  temperature: Optional[float], batch_size: int, seed: int, guidance_scale: Optional[float], store: _BatchStore,
                  guidance_min_p: Optional[float] = None) -> Dict:
    """Both rows for every prompt: the pipeline at ``height x width`` and at the 64-px crop ``lo`` (upscaled).

    The two calls of a batch get generators seeded alike, so their tokens agree; ``tokens_identical`` counts it.
    """
    out = {"hr": [], "baseline": [], "native": []}
    seconds = {"hr": 0.0, "baseline": 0.0}
    identical = 0
    n = len(prompts)
    kwargs = dict(num_inference_steps=steps, temperature=temperature, output_type="pt",
                  **guidance_kwargs(guidance_scale, guidance_min_p))
    with progress_bar(n, "text-to-image") as bar:
        for j, i in enumerate(range(0, n, batch_size)):
            batch = list(prompts[i : i + batch_size])
            rec = store.load(f"t2i-{j:04d}")
            if rec is None:
                t0 = time.perf_counter()
                a = pipe(prompt=batch, height=height, width=width, generator=torch.Generator().manual_seed(seed + j), **kwargs)
                t1 = time.perf_counter()
                b = pipe(prompt=batch, height=lo[0], width=lo[1], generator=torch.Generator().manual_seed(seed + j), **kwargs)
                native = to_uint8(b.images)
                up = upscale_bicubic(native, width, height)
                t2 = time.perf_counter()
                same = (a.tokens.cpu() == b.tokens.cpu()).flatten(1).all(1)
                rec = {"hr": to_uint8(a.images), "baseline": up, "native": native, "tokens_identical": same,
                       "seconds_hr": t1 - t0, "seconds_baseline": t2 - t1}
                store.save(f"t2i-{j:04d}", rec)
            for k in out:
                out[k].append(rec[k])
            seconds["hr"] += rec["seconds_hr"]
            seconds["baseline"] += rec["seconds_baseline"]
            identical += int(rec["tokens_identical"].sum())
            bar.update(len(batch))
    return {k: torch.cat(v) for k, v in out.items()} | {"seconds": seconds, "tokens_identical": identical}


def _hits(classifier, images: torch.Tensor, attributes: List[Dict]) -> Dict[str, float]:
    """Hit rates of images of any size: the classifier reads each one padded to its square (:func:`classifier_view`)."""
    return classifier_hit_rates(classifier, classifier_view(images, classifier.config.sample_size), attributes)


def _size_counts(sizes: Sequence[str]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for s in sizes:
        counts[s] = counts.get(s, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _row(images: torch.Tensor, extractor, real_features, real_stats, seconds: float) -> Dict:
    """FID/KID against the reference, sharpness and s/image of one row of images (uint8 ``(N, 3, H, W)``)."""
    sharp = sharpness(images)
    feats = inception_features(extractor, images)
    return {
        "image_size": [int(images.shape[-2]), int(images.shape[-1])],
        **fid_kid(real_features, feats, real_stats=real_stats),
        "sharpness": sharp["sharpness"],
        "sharpness_median": sharp["sharpness_median"],
        "seconds_per_image": seconds / max(1, images.shape[0]),
    }


def _reconstruction_row(rec: torch.Tensor, real: torch.Tensor, extractor, real_features, real_stats,
                        seconds: float) -> Tuple[Dict, torch.Tensor]:
    """``(figures, per-image PSNR)`` of uint8 reconstructions ``rec`` against the real photos ``real`` (same shape)."""
    m = ReconstructionMetrics()
    for i in range(0, rec.shape[0], 64):
        m.update(rec[i : i + 64], real[i : i + 64])
    out = m.compute()
    row = _row(rec, extractor, real_features, real_stats, seconds)
    return {"image_size": row["image_size"], "psnr": out["psnr"], "ssim": out["ssim"], "rfid_inception": row["fid_inception"],
            "rkid_inception_mean": row["kid_inception_mean"], "sharpness": row["sharpness"],
            "sharpness_median": row["sharpness_median"], "seconds_per_image": row["seconds_per_image"]}, m.psnr_values


@dataclass
class _HRRun:
    """What the sections of one high-resolution evaluation share."""

    pipe: object
    classifier: AttributeClassifier
    extractor: InceptionFeatureExtractor
    data: Dict
    reference: Reference
    height: int
    width: int
    lo: Tuple[int, int]
    temperature: Optional[float]
    settings: Dict
    key_settings: Dict
    cache_dir: object
    results: Dict
    checkpoint: Checkpoint
    stores: List[_BatchStore] = field(default_factory=list)
    grids: Dict[str, List[torch.Tensor]] = field(default_factory=dict)

    def store_for(self, part: str, ids: torch.Tensor) -> _BatchStore:
        """The batch store of ``part``, keyed by the settings and the rows (removed when the run completes)."""
        if self.cache_dir is None:
            store = _BatchStore(None, {})
        else:
            ks = dict(self.key_settings, part=part, ids=hashlib.sha1(ids.numpy().tobytes()).hexdigest())
            digest = hashlib.sha1(json.dumps(ks, sort_keys=True).encode()).hexdigest()[:16]
            store = _BatchStore(Path(self.cache_dir) / "evaluate-hr" / f"{part}-{digest}", ks)
        self.stores.append(store)
        return store


def _run_reconstruction(run: _HRRun, num_reconstruction: Optional[int], batch_size: int) -> None:
    n_real = len(run.data["ids"])
    n_rec = n_real if num_reconstruction is None else min(num_reconstruction, n_real)
    _info(f"reconstruction at {run.width}x{run.height}: {n_rec} photos")
    sub = slice_split(run.data, np.arange(n_rec))
    store = run.store_for("reconstruction", sub["ids"])
    rec = reconstruct(run.pipe, sub, run.height, run.width, run.lo, batch_size, store)
    feats, stats = run.reference.head(n_rec)
    r: Dict = {"num_images": n_rec, "batches_resumed": store.loaded}
    psnr_values = {}
    for name in ("hr", "baseline"):
        r[name], psnr_values[name] = _reconstruction_row(rec[name], sub["images"], run.extractor, feats, stats,
                                                         rec["seconds"][name])
    r["hr_psnr_wins"] = int((psnr_values["hr"] > psnr_values["baseline"]).sum())
    r["real_sharpness"] = float(sharpness(sub["images"])["sharpness"])
    run.results["reconstruction"] = r
    _info(f"  decoder_hr: PSNR {r['hr']['psnr']:.2f} dB  SSIM {r['hr']['ssim']:.4f}  rFID {r['hr']['rfid_inception']:.2f}  "
          f"sharpness {r['hr']['sharpness']:.1f}")
    _info(f"  64 px + bicubic: PSNR {r['baseline']['psnr']:.2f} dB  SSIM {r['baseline']['ssim']:.4f}  "
          f"rFID {r['baseline']['rfid_inception']:.2f}  sharpness {r['baseline']['sharpness']:.1f}  (real {r['real_sharpness']:.1f})")
    run.grids["reconstruction"] = [sub["images"], rec["baseline"], rec["hr"]]
    run.checkpoint()


def _run_text_to_image(run: _HRRun, num_samples: int, seed: int, reference_floor: bool, data_dir, batch_size: int) -> None:
    st = run.settings
    rows, prompts, attributes, run.results["prompts"] = prompt_set(run.data, num_samples, seed,
                                                                   lambda im, at: _hits(run.classifier, im, at))
    acc = run.results["prompts"]["classifier_accuracy_real"]
    _info(f"{num_samples} captions; classifier accuracy on their real photos: " + ", ".join(f"{h} {acc[h]:.3f}" for h in HEADS))
    if reference_floor:
        run.results["references"] = _reference_floor(run.results["split"], num_samples, run.height, run.width, st["sample_size"],
                                                     seed, data_dir, run.extractor, run.reference.features, run.reference.stats)
    store = run.store_for("text_to_image", run.data["ids"][torch.as_tensor(rows)])
    gen = generate_pair(run.pipe, prompts, run.height, run.width, run.lo, st["steps"], run.temperature, batch_size,
                        seed, st["guidance_scale"], store, st["guidance_min_p"])
    t = {k: st[k] for k in ("steps", "temperature", "sampling", "mask_schedule")}
    t["guidance_scale"] = text_guidance(st["guidance_scale"], prompts)
    t["guidance_min_p"] = st["guidance_min_p"] if t["guidance_scale"] > 1.0 else None
    t.update(num_images=len(prompts), batch_size=batch_size, tokens_identical=gen["tokens_identical"], batches_resumed=store.loaded)
    for name in ("hr", "baseline"):
        t[name] = _row(gen[name], run.extractor, run.reference.features, run.reference.stats, gen["seconds"][name])
        t[name]["hit_rate"] = _hits(run.classifier, gen[name], attributes)
    t["baseline"]["native_size"] = [int(gen["native"].shape[-2]), int(gen["native"].shape[-1])]
    t["baseline"]["hit_rate_native"] = _hits(run.classifier, gen["native"], attributes)
    run.results["text_to_image"] = t
    if gen["tokens_identical"] != len(prompts):
        logger.warning(f"  the two calls gave different tokens on {len(prompts) - gen['tokens_identical']} of {len(prompts)} images")
    for name, label in (("hr", f"(a) {run.width}x{run.height} (decoder_hr)"), ("baseline", f"(b) {run.lo[1]}x{run.lo[0]} + bicubic")):
        r = t[name]
        _info(f"  {label}: FID {r['fid_inception']:.2f}  KID {r['kid_inception_mean']:.4f}  {hit_rate_line(r['hit_rate'])}"
              f"  sharpness {r['sharpness']:.1f}  {r['seconds_per_image']:.2f} s/image")
    run.grids["text_to_image"] = [gen["baseline"], gen["hr"]]
    run.checkpoint()


# ----------------------------------------------------------------------------------------------
# driver


def _real_summary(data: Dict) -> Dict:
    """Count and sharpness of the reference photos, overall and per stored photo size."""
    real_sharp = sharpness(data["images"])
    by_size = {}
    for size_name in _size_counts(data["source_sizes"]):
        idx = [i for i, z in enumerate(data["source_sizes"]) if z == size_name]
        v = real_sharp["sharpness_values"][idx]
        by_size[size_name] = {"num_images": len(idx), "sharpness": float(v.mean())}
    return {"num_images": int(data["images"].shape[0]), "sharpness": real_sharp["sharpness"],
            "sharpness_median": real_sharp["sharpness_median"], "sharpness_by_source_size": by_size}


def _settings_hr(pipe, data: Dict, canvas, lo, height, width, num_samples, num_reconstruction, steps, temperature,
                 guidance_scale, batch_size, seed, sections, data_dir, decoder_source, guidance_min_p=None) -> Dict:
    return {
        "num_samples": num_samples,
        "num_reconstruction": num_reconstruction,
        "num_reference_real": int(data["images"].shape[0]),
        "height": height,
        "width": width,
        "canvas": canvas.side,
        "baseline_native_size": list(lo),
        "sample_size": pipe.sample_size,
        "grid_shape": list(pipe.grid_shape),
        "sample_shape": list(pipe.sample_shape),
        "steps": steps,
        "temperature": float(pipe.scheduler.config.temperature if temperature is None else temperature),
        "sampling": describe_sampling(pipe, temperature),
        **sampling_settings(pipe, steps, guidance_scale, batch_size, seed, guidance_min_p),
        "sections": list(sections),
        "data": Path(str(data_dir)).name,
        "decoder_hr": decoder_source,
        "real_photo_sizes": _size_counts(data["source_sizes"]),
    }


def _key_settings(settings: Dict, model_label: str, split: str, data_dir, pipe) -> Dict:
    """What identifies a run's saved batches: the settings that change the images, the model and the data."""
    keys = ("height", "width", "steps", "temperature", "sampling", "transformer_dtype", "guidance_scale", "guidance_min_p", "batch_size", "seed", "decoder_hr")
    ks = {k: settings[k] for k in keys}
    ks.update(model=model_label, split=split, data=str(data_dir), version=CHECKPOINT_VERSION,
              name_or_path=_display_path(getattr(pipe.config, "_name_or_path", "") or "."))
    return ks


def evaluate_hr(
    model: Optional[str] = None,
    split: str = "test",
    height: int = 256,
    width: int = 192,
    num_samples: int = 200,
    num_reconstruction: Optional[int] = None,
    num_real: Optional[int] = None,
    steps: int = 10,
    temperature: Optional[float] = None,
    guidance_scale: Optional[float] = None,
    guidance_min_p: Optional[float] = None,
    batch_size: int = 16,
    seed: int = 0,
    sections: Sequence[str] = HR_SECTIONS,
    data_dir=HR_DATA_DIR,
    cache_dir=DEFAULT_CACHE_DIR,
    classifier_path: Optional[str] = None,
    reference_floor: bool = True,
    pipe=None,
    decoder_hr: Optional[str] = None,
    save_images: Optional[str] = None,
    on_section: Optional[Callable[[Dict], None]] = None,
    transformer_dtype: str = "float32",
    log: Optional[Callable[[str], None]] = None,
) -> Dict:
    """The high-resolution evaluation (see the module docstring); returns the result dict.

    ``log``: a callable that receives every progress message instead of the ``diffusers.m6_fashion.evaluation`` logger.
    """
    global _info
    from ..cpu import has_fast_bfloat16

    check_arguments(sections, HR_SECTIONS, num_samples, transformer_dtype,
                    section_error="section {section!r} is not part of the high-resolution mode")
    t_start = time.time()
    model_label = str(model) if model is not None else ("shipped default" if pipe is None else "pipeline object")
    pipe, decoder_source = ensure_decoder_hr(load_pipeline(model, pipe, transformer_dtype), decoder_hr)
    canvas, lo = baseline_size(pipe, height, width)
    classifier = load_default_classifier(classifier_path)
    extractor = InceptionFeatureExtractor()
    data = load_hr_split(split, height, width, _token_size(pipe), data_dir, cache_dir, limit=num_real)
    n_real = int(data["images"].shape[0])
    if n_real < 2:
        raise ValueError(f"the {split} split has {n_real} photos; need at least 2")
    previous_info, _info = _info, (log or _info)
    try:
        _info(f"{split} split (high resolution): {n_real} real photos at {width}x{height} ({_size_counts(data['source_sizes'])})")
        reference = Reference(cached_real_features(extractor, data, split, cache_dir, tag=f"hr-{width}x{height}"))
        settings = _settings_hr(pipe, data, canvas, lo, height, width, num_samples, num_reconstruction, steps, temperature,
                                guidance_scale, batch_size, seed, sections, data_dir, decoder_source, guidance_min_p)
        results = {"mode": "high_resolution",
                   **result_header(model_label, split, settings, METRIC_DESCRIPTIONS_HR, fast_bfloat16=has_fast_bfloat16()),
                   "real": _real_summary(data)}
        run = _HRRun(pipe, classifier, extractor, data, reference, height, width, lo, temperature, settings,
                     _key_settings(settings, model_label, split, data_dir, pipe), cache_dir, results,
                     Checkpoint(results, on_section, t_start))
        run.checkpoint()
        if "reconstruction" in sections:
            _run_reconstruction(run, num_reconstruction, batch_size)
        if "text_to_image" in sections:
            _run_text_to_image(run, num_samples, seed, reference_floor, data_dir, batch_size)
    finally:
        _info = previous_info
    if save_images:
        for name, cols in run.grids.items():
            _save_rows(cols, Path(save_images) / f"hr_{name}.png")
    final = run.checkpoint.finish()
    for store in run.stores:
        store.remove()
    return final


def _token_size(pipe):
    """What the pipeline's tokenizer reads: its `sample_size` square, or `sample_shape` for a non-square grid."""
    shape = tuple(pipe.sample_shape)
    return pipe.sample_size if shape[0] == shape[1] else shape


def _reference_floor(split, n, height, width, s, seed, data_dir, extractor, real_features, real_stats, *_unused) -> Dict:
    """FID/KID of ``n`` real photos of the other split (seeded choice, same preparation) against the reference."""
    import pyarrow.parquet as pq

    other = "train" if split == "test" else "test"
    source = Path(data_dir) / f"{other}.parquet"
    if not source.is_file():
        return {"note": f"{other} split not found; no reference floor"}
    total = pq.ParquetFile(source).metadata.num_rows
    n = min(n, total)
    data = load_hr_split(other, height, width, s, data_dir, None, rows=floor_rows(total, n, seed).tolist())
    feats = inception_features(extractor, data["images"])
    out = {"real_images_from": other, **fid_kid(real_features, feats, real_stats=real_stats),
           "sharpness": sharpness(data["images"])["sharpness"]}
    _info(f"reference floor: {n} real {other} photos vs the {split} reference: FID {out['fid_inception']:.2f}  "
          f"KID {out['kid_inception_mean']:.4f}")
    return out


def _save_rows(columns: Sequence[torch.Tensor], path: Path, limit: int = 8) -> None:
    """One row per image, one column per tensor (uint8 (N, 3, H, W), same size), white gutters."""
    from ..image_processing import make_grid

    n = min(limit, columns[0].shape[0])
    images = [im for i in range(n) for im in (_pil(c[i : i + 1])[0] for c in columns)]
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(images, cols=len(columns), pad=4).save(path)


# ----------------------------------------------------------------------------------------------
# printing


def format_summary_hr(results: Dict) -> str:
    """Human-readable summary of a high-resolution result dict."""
    st = results["settings"]
    h, w = st["height"], st["width"]
    lh, lw = st["baseline_native_size"]
    lines = [f"model: {results['model']}   split: {results['split']} (high resolution, {w}x{h})   date: {results['date']}",
             f"decoder_hr: {st['decoder_hr']}; real photos: {', '.join(f'{k}: {v}' for k, v in st['real_photo_sizes'].items())}, "
             f"padded to {w}:{h} on white and resized to {w}x{h}"]
    real = results.get("real")
    if real:
        lines.append(f"real photos ({real['num_images']}): sharpness {_f(real['sharpness'], 1)} (median {_f(real['sharpness_median'], 1)}; "
                     + ", ".join(f"{k}: {_f(v['sharpness'], 1)}" for k, v in real["sharpness_by_source_size"].items()) + ")")
    r = results.get("reconstruction")
    if r:
        sh, sw = st.get("sample_shape", [st["sample_size"]] * 2)
        shown = f"{sh}-px" if sh == sw else f"{sw}x{sh}"
        lines.append(f"reconstruction ({r['num_images']} photos, tokens of the {shown} input):")
        for name, label in (("hr", f"(a) decoder_hr {w}x{h}"), ("baseline", f"(b) {lw}x{lh} + bicubic")):
            x = r[name]
            lines.append(f"  {label}: PSNR {_f(x['psnr'], 2)} dB, SSIM {_f(x['ssim'], 4)}, rFID {_f(x['rfid_inception'], 2)}, "
                         f"sharpness {_f(x['sharpness'], 1)}, {1000 * x['seconds_per_image']:.0f} ms/image")
        lines.append(f"  decoder_hr has the higher PSNR on {r['hr_psnr_wins']} of {r['num_images']}; real sharpness {_f(r['real_sharpness'], 1)}")
    p = results.get("prompts")
    if p:
        lines.append(f"prompts: {p['num']} captions of the {results['split']} split")
        lines.append("  classifier accuracy on their real photos: " + ", ".join(f"{hd} {_f(p['classifier_accuracy_real'][hd])}" for hd in HEADS))
        lines.append("  chance (majority value): "
                     + ", ".join(f"{hd} {_f(p['chance_majority'][hd]['rate'])} ({p['chance_majority'][hd]['label']})" for hd in HEADS))
    ref = results.get("references")
    if ref and "fid_inception" in ref:
        lines.append(f"reference floor ({ref['num_fake']} real {ref['real_images_from']} photos): FID {_f(ref['fid_inception'], 2)}, "
                     f"KID {_f(ref['kid_inception_mean'], 4)}")
    t = results.get("text_to_image")
    if t:
        lines.append(f"text-to-image (T={t['steps']}, temperature {t['temperature']}, {t['num_images']} images, tokens identical "
                     f"in both rows: {t['tokens_identical']}/{t['num_images']}):")
        for name, label in (("hr", f"(a) {w}x{h} decoder_hr"), ("baseline", f"(b) {lw}x{lh} + bicubic")):
            x = t[name]
            lines.append(f"  {label}: FID {_f(x['fid_inception'], 2)}, KID {_f(x['kid_inception_mean'], 4)} +- {_f(x['kid_inception_std'], 4)}, "
                         f"sharpness {_f(x['sharpness'], 1)}, {x['seconds_per_image']:.2f} s/image")
            lines.append("    hit rate: " + ", ".join(f"{hd} {_f(x['hit_rate'][hd])}" for hd in HEADS))
    lines.append(f"total {results['seconds_total']:.0f} s")
    return "\n".join(lines)
