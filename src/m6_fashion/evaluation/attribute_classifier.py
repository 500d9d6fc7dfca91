"""A small attribute classifier (articleType, baseColour, gender) used as the relevance metric.

No CLIP weights are available offline, so text-image relevance is measured as an **attribute hit rate**:
the classifier predicts the article type, base colour and gender of a generated image, and the prediction
is compared with the attributes of the prompt (taken from the dataset row the prompt came from, or parsed
from a free-text caption with :func:`parse_attributes`). The classifier is trained on the train split of
fashion-product-images (``python -m m6_fashion.evaluation.train_classifier``) and its accuracy on the real
test images is stored next to its weights in ``eval_results.json``.

Input: 64x64 RGB images in [-1, 1], as produced by ``m6_fashion.image_processing.preprocess(images, 64)``
(padded to a square on white, never cropped).

A classifier made with ``colour_input="luma"`` sees only the lightness of the image (Rec. 601 luma) and has no
baseColour head: it judges article type and gender without colour as a cue. The shipped one
(``pretrained/article-classifier-luma``, :func:`load_luma_classifier`) is trained with the garment's lightness
randomised as well, so that a red pair of jeans is still jeans to it; the RGB classifier files most of them as
trousers or track pants (see its README).
"""

from __future__ import annotations

import importlib.resources
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import Tensor, nn

from ..image_processing import preprocess
from .metrics import HEADS, attribute_hit_rate  # noqa: F401  (the hit rate is importable from here too)
_HEAD_CONFIG_KEYS = {"articleType": "article_type_labels", "baseColour": "base_colour_labels", "gender": "gender_labels"}
COLOUR_INPUTS = ("rgb", "luma")
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # Rec. 601

DEFAULT_DATA_DIR = os.path.join("..", "shared", "data", "fashion-product-images")
DEFAULT_CACHE_DIR = os.path.join(".cache", "m6-fashion")


@dataclass
class AttributeClassifierOutput(BaseOutput):
    """``logits``: head name -> (B, num_labels) logits; ``features``: (B, C) pooled penultimate features."""

    logits: Dict[str, Tensor]
    features: Tensor


def slice_split(data: dict, idx) -> dict:
    """The rows `idx` of a decoded split (`load_split` and its high-resolution twin): every tensor and list with
    one entry per row is indexed; other fields (fingerprints, sizes) are kept."""
    n = len(data["ids"])
    idx = np.asarray(idx, dtype=np.int64)
    rows = torch.as_tensor(idx, dtype=torch.long)
    out = dict(data)
    for key, value in data.items():
        if isinstance(value, Tensor) and value.ndim and value.shape[0] == n:
            out[key] = value[rows]
        elif isinstance(value, list) and len(value) == n:
            out[key] = [value[i] for i in idx.tolist()]
    return out


def split_source(split: str, data_dir, hint: str = "pass --data_dir") -> Tuple[Path, int]:
    """``(data_dir/<split>.parquet, its size in bytes)``; the size is the fingerprint that keys the decoded cache.

    Raises ``ValueError`` for a split other than train/test, ``FileNotFoundError`` (ending in ``hint``) for a
    missing file.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    source = Path(data_dir) / f"{split}.parquet"
    if not source.is_file():
        raise FileNotFoundError(f"{split} split not found at {str(source)!r}; {hint}")
    return source, source.stat().st_size


def load_cache(cache_file: Optional[Path], fingerprint: int) -> Optional[dict]:
    """The decoded data saved by :func:`save_cache`, or None when there is none or it was made from another file."""
    if cache_file is None or not cache_file.is_file():
        return None
    cached = torch.load(cache_file, weights_only=True)
    return cached if cached.get("source_bytes") == fingerprint else None


def save_cache(data: dict, cache_file) -> None:
    """Writes a decoded-data cache atomically (a temporary file, then a rename), so a killed run leaves no
    half-written cache behind."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp")
    torch.save(data, tmp)
    tmp.replace(cache_file)

def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class AttributeClassifier(ModelMixin, ConfigMixin):
    """Small CNN with three classification heads over a shared trunk.

    Trunk: a stride-2 stem, then one stage per entry of ``block_out_channels`` (the first at stride 1, the
    others at stride 2), each stage two 3x3 conv + BN + ReLU layers except the last, which has one; global
    average pooling; dropout; one linear head per attribute. Label vocabularies live in the config, so
    ``save_pretrained`` / ``from_pretrained`` round-trip the label names.

    ``colour_input="luma"``: the model takes the same (B, 3, H, W) RGB input but its stem reads only the luma
    channel; it then has no baseColour head (``base_colour_labels`` must be empty) and ``head_names`` is
    ``("articleType", "gender")``.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        article_type_labels: Sequence[str] = (),
        base_colour_labels: Sequence[str] = (),
        gender_labels: Sequence[str] = (),
        sample_size: int = 64,
        block_out_channels: Sequence[int] = (32, 64, 128, 256),
        dropout: float = 0.1,
        colour_input: str = "rgb",
    ):
        super().__init__()
        if colour_input not in COLOUR_INPUTS:
            raise ValueError(f"colour_input must be one of {COLOUR_INPUTS}; got {colour_input!r}")
        if colour_input == "luma" and len(base_colour_labels):
            raise ValueError("a colour_input='luma' classifier cannot judge colour: leave base_colour_labels empty")
        for key, labels in (
            ("article_type_labels", article_type_labels),
            ("base_colour_labels", base_colour_labels),
            ("gender_labels", gender_labels),
        ):
            if colour_input == "luma" and key == "base_colour_labels":
                continue
            if len(labels) < 2:
                raise ValueError(f"{key} needs at least 2 label names; got {len(labels)}")
            if len(set(labels)) != len(labels):
                raise ValueError(f"{key} contains duplicate label names")
        if len(block_out_channels) < 2:
            raise ValueError("block_out_channels needs at least 2 stages")
        if sample_size < 16 or sample_size % (2 ** len(block_out_channels)) != 0:
            raise ValueError(f"sample_size must be >= 16 and divisible by {2 ** len(block_out_channels)}; got {sample_size}")
        chans = list(block_out_channels)
        layers: List[nn.Module] = [_conv_bn_relu(1 if colour_input == "luma" else 3, chans[0], 2)]
        c_prev = chans[0]
        for i, c in enumerate(chans):
            layers.append(_conv_bn_relu(c_prev, c, 1 if i == 0 else 2))
            if i < len(chans) - 1:
                layers.append(_conv_bn_relu(c, c, 1))
            c_prev = c
        self.trunk = nn.Sequential(*layers)
        self.head_dropout = nn.Dropout(dropout)
        sizes = {"articleType": len(article_type_labels), "baseColour": len(base_colour_labels), "gender": len(gender_labels)}
        self.heads = nn.ModuleDict({h: nn.Linear(c_prev, sizes[h]) for h in HEADS if sizes[h]})

    # -- label helpers -----------------------------------------------------------------------------

    @property
    def head_names(self) -> Tuple[str, ...]:
        """The attributes this classifier predicts, in ``HEADS`` order (no baseColour for a luma classifier)."""
        return tuple(self.heads.keys())

    def labels(self, head: str) -> List[str]:
        if head not in _HEAD_CONFIG_KEYS:
            raise ValueError(f"unknown head {head!r}; heads are {HEADS}")
        if head not in self.heads:
            raise ValueError(f"this classifier has no {head} head (colour_input={self.config.colour_input!r}); "
                             f"its heads are {self.head_names}")
        return list(getattr(self.config, _HEAD_CONFIG_KEYS[head]))

    @property
    def label_to_index(self) -> Dict[str, Dict[str, int]]:
        return {h: {name: i for i, name in enumerate(self.labels(h))} for h in self.head_names}

    # -- forward / predict -------------------------------------------------------------------------

    def forward(self, pixel_values: Tensor, return_dict: bool = True):
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must have shape (B, 3, H, W); got {tuple(pixel_values.shape)}")
        size = self.config.sample_size
        if pixel_values.shape[-2:] != (size, size):
            raise ValueError(
                f"pixel_values must be {size}x{size}; got {tuple(pixel_values.shape[-2:])} "
                f"(use m6_fashion.image_processing.preprocess(images, {size}))"
            )
        x = pixel_values.to(self.dtype)
        if self.config.colour_input == "luma":
            x = to_luma(x)
        h = self.trunk(x)
        features = h.mean(dim=(2, 3))
        z = self.head_dropout(features)
        logits = {name: head(z) for name, head in self.heads.items()}
        if not return_dict:
            return logits, features
        return AttributeClassifierOutput(logits=logits, features=features)

    def _to_pixels(self, images) -> Tensor:
        size = self.config.sample_size
        if isinstance(images, Tensor) and images.dtype == torch.uint8:
            if images.ndim == 3:
                images = images[None]
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"uint8 image tensors must have shape (B, 3, H, W); got {tuple(images.shape)}")
            images = images.float().div(127.5).sub(1.0)
        if isinstance(images, Tensor) and torch.is_floating_point(images):
            if images.numel() and (images.min() < -1.001 or images.max() > 1.001):
                raise ValueError("float image tensors must lie in [-1, 1]")
            if images.ndim == 4 and images.shape[-2:] != (size, size) and images.shape[1] == 3:
                h, w = images.shape[-2:]
                if h != w:  # padded on white to a square first, as the training photos were (not stretched)
                    side = max(h, w)
                    top, left = (side - h) // 2, (side - w) // 2
                    images = F.pad(images.float(), (left, side - w - left, top, side - h - top), value=1.0)
                return F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)
        return preprocess(images, size)

    @torch.no_grad()
    def predict_proba(self, images, batch_size: int = 256) -> Dict[str, Tensor]:
        """Images (anything ``preprocess`` accepts, or uint8 tensors) -> head -> (B, num_labels) probabilities."""
        pixels = self._to_pixels(images)
        was_training = self.training
        self.eval()
        out: Dict[str, List[Tensor]] = {h: [] for h in self.head_names}
        try:
            for i in range(0, pixels.shape[0], batch_size):
                logits = self(pixels[i : i + batch_size].to(self.device)).logits
                for h in self.head_names:
                    out[h].append(logits[h].float().softmax(-1).cpu())
        finally:
            self.train(was_training)
        return {h: torch.cat(v) for h, v in out.items()}

    @torch.no_grad()
    def predict(self, images, batch_size: int = 256) -> List[Dict[str, str]]:
        """Images -> one dict per image mapping each head to its predicted label name."""
        probs = self.predict_proba(images, batch_size=batch_size)
        names = {h: self.labels(h) for h in self.head_names}
        idx = {h: probs[h].argmax(-1).tolist() for h in self.head_names}
        n = len(idx[self.head_names[0]])
        return [{h: names[h][idx[h][i]] for h in self.head_names} for i in range(n)]


def to_luma(pixels: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) Rec. 601 luma, in the same value range."""
    w = pixels.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    return (pixels * w).sum(1, keepdim=True)


def default_classifier_path() -> Path:
    """Where the shipped classifier lives: ``$M6_FASHION_CLASSIFIER_PATH``, else inside the installed package
    (``m6_fashion/pretrained/attribute-classifier``, 2.5 MB)."""
    env = os.environ.get("M6_FASHION_CLASSIFIER_PATH")
    if env:
        return Path(env)
    return Path(str(importlib.resources.files("m6_fashion") / "pretrained" / "attribute-classifier"))


def load_default_classifier(path: Optional[Union[str, os.PathLike]] = None) -> AttributeClassifier:
    """Loads the trained attribute classifier (eval mode)."""
    path = Path(path) if path is not None else default_classifier_path()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no attribute classifier at {str(path)!r}; train one with "
            "`python -m m6_fashion.evaluation.train_classifier --output_dir DIR` and pass DIR"
        )
    return AttributeClassifier.from_pretrained(str(path)).eval()


def luma_classifier_path() -> Path:
    """Where the shipped colour-blind article judge lives (``m6_fashion/pretrained/article-classifier-luma``)."""
    return Path(str(importlib.resources.files("m6_fashion") / "pretrained" / "article-classifier-luma"))


def load_luma_classifier(path: Optional[Union[str, os.PathLike]] = None) -> AttributeClassifier:
    """Loads the colour-blind article/gender classifier (``colour_input="luma"``, eval mode)."""
    path = Path(path) if path is not None else luma_classifier_path()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no luma classifier at {str(path)!r}; train one with `python -m m6_fashion.evaluation.train_classifier "
            "--colour_input luma --output_dir DIR` and pass DIR"
        )
    model = AttributeClassifier.from_pretrained(str(path), torch_dtype=torch.float32).eval()  # stored in float16
    if model.config.colour_input != "luma":
        raise ValueError(f"the classifier at {str(path)!r} reads colour (colour_input={model.config.colour_input!r}); expected 'luma'")
    return model


# ------------------------------------------------------------------------------------------------
# attributes of prompts


def attributes_from_row(row: Mapping[str, object]) -> Dict[str, Optional[str]]:
    """The prompt attributes of a dataset row (``articleType``, ``baseColour``, ``gender``); missing -> None."""
    return {h: clean_attribute(row.get(h)) for h in HEADS}


def clean_attribute(value) -> Optional[str]:
    """An attribute cell as a label: None for a missing value (None, NaN or the dataset's ``"NA"``), else ``str``."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "NA":
        return None
    return str(value)


_GENDER_WORDS = {
    "men": "Men", "mens": "Men", "man": "Men",
    "women": "Women", "womens": "Women", "woman": "Women",
    "boys": "Boys", "boy": "Boys", "girls": "Girls", "girl": "Girls",
    "unisex": "Unisex",
}


def _norm_tokens(text: str) -> List[str]:
    text = text.lower().replace("'s", "s").replace("-", "")
    tokens = re.findall(r"[a-z0-9]+", text)
    out = []
    for t in tokens:  # crude singularisation so "T-shirt" matches "Tshirts", "Shoe" matches "Shoes"
        if len(t) > 3 and t.endswith("es") and t[:-2].endswith(("sh", "ch", "ss", "x")):
            t = t[:-2]
        elif len(t) > 3 and t.endswith("s") and not t.endswith("ss"):
            t = t[:-1]
        out.append(t)
    return out


def _find_phrase(tokens: List[str], phrase: List[str]) -> int:
    n = len(phrase)
    for i in range(len(tokens) - n + 1):
        if tokens[i : i + n] == phrase:
            return i
    return -1


def _match_vocab(tokens: List[str], vocab: Sequence[str]) -> Optional[str]:
    """Vocabulary entry found in ``tokens``: the longest phrase, earliest position on ties."""
    best: Optional[Tuple[int, int, str]] = None
    for label in vocab:
        if label == "NA":
            continue
        phrase = _norm_tokens(label)
        if not phrase:
            continue
        pos = _find_phrase(tokens, phrase)
        if pos < 0:
            continue
        key = (-len(phrase), pos, label)
        if best is None or key < best:
            best = key
    return None if best is None else best[2]


def parse_attributes(
    caption: str,
    article_types: Sequence[str],
    base_colours: Sequence[str],
    genders: Sequence[str] = ("Men", "Women", "Boys", "Girls", "Unisex"),
) -> Dict[str, Optional[str]]:
    """Best-effort attributes from a free-text caption; heads the caption does not name are None.

    Matching is by whole words against the label vocabularies (case-insensitive, with naive plural
    folding), e.g. "Puma Men Grey Solid Round Neck T-Shirt" -> Tshirts / Grey / Men. Captions often do
    not name the exact article type (e.g. "Shoe" for "Casual Shoes"), so for prompts taken from the
    dataset prefer :func:`attributes_from_row`.
    """
    if not isinstance(caption, str):
        raise ValueError(f"caption must be a string; got {type(caption).__name__}")
    tokens = _norm_tokens(caption)
    gender = None
    for t in tokens:
        g = _GENDER_WORDS.get(t) or _GENDER_WORDS.get(t + "s")
        if g is not None and g in genders:
            gender = g
            break
    return {
        "articleType": _match_vocab(tokens, article_types),
        "baseColour": _match_vocab(tokens, base_colours),
        "gender": gender,
    }


# ------------------------------------------------------------------------------------------------
# cached 64x64 images of a split


def load_split_cache(
    split: str,
    data_dir: Union[str, os.PathLike] = DEFAULT_DATA_DIR,
    cache_dir: Optional[Union[str, os.PathLike]] = DEFAULT_CACHE_DIR,
    size: int = 64,
    limit: Optional[int] = None,
    verbose: bool = False,
) -> Dict[str, object]:
    """Decoded, preprocessed images of a split as one uint8 tensor (cached on disk after the first call).

    Returns ``{"images": uint8 (N, 3, size, size), "ids": int64 (N,), "text": [...], "articleType": [...],
    "baseColour": [...], "gender": [...]}``. ``images.float() / 127.5 - 1`` equals
    ``preprocess(row_image, size)`` exactly. ``limit`` takes the first rows only (never cached);
    ``cache_dir=None`` disables the disk cache.
    """
    import datasets
    from tqdm.auto import tqdm

    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be positive; got {limit}")
    source, fingerprint = split_source(split, data_dir)
    cache_file = Path(cache_dir) / f"fashion-product-images-{split}-{size}px.pt" if cache_dir is not None and limit is None else None
    cached = load_cache(cache_file, fingerprint)
    if cached is not None:
        return cached
    ds = datasets.load_dataset("parquet", data_files={split: str(source)}, split=split)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    chunks: List[Tensor] = []
    cols: Dict[str, list] = {"ids": [], "text": [], **{h: [] for h in HEADS}}
    bar = tqdm(total=len(ds), desc=f"decoding {split} images", unit="img", disable=not verbose)
    for batch in ds.iter(batch_size=1000):
        pixels = preprocess(batch["image"], size)
        chunks.append(pixels.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8))
        cols["ids"].extend(batch["id"])
        cols["text"].extend(batch["text"])
        for h in HEADS:
            cols[h].extend(batch[h])
        bar.update(len(batch["id"]))
    bar.close()
    data: Dict[str, object] = {
        "images": torch.cat(chunks),
        "ids": torch.tensor(cols["ids"], dtype=torch.long),
        "text": cols["text"],
        **{h: cols[h] for h in HEADS},
        "source_bytes": fingerprint,
        "size": size,
    }
    if cache_file is not None:
        save_cache(data, cache_file)
    return data


@torch.no_grad()
def evaluate_accuracy(
    model: AttributeClassifier,
    images: Tensor,
    labels: Mapping[str, Sequence[str]],
    batch_size: int = 512,
) -> Dict[str, Dict[str, float]]:
    """Top-1 accuracy per head of the model on uint8/float images, with the majority-class rate of ``labels`` as chance.

    Labels the model has never seen (not in its vocabulary) count as errors.
    """
    from collections import Counter

    preds = model.predict(images, batch_size=batch_size)
    result: Dict[str, Dict[str, float]] = {}
    for h in model.head_names:
        truth = list(labels[h])
        if len(truth) != len(preds):
            raise ValueError(f"{len(truth)} {h} labels for {len(preds)} images")
        correct = sum(p[h] == t for p, t in zip(preds, truth))
        majority_label, majority_count = Counter(truth).most_common(1)[0]
        result[h] = {
            "accuracy": correct / len(truth),
            "chance_majority": majority_count / len(truth),
            "majority_label": majority_label,
            "num_classes_seen": len(set(truth)),
            "n": len(truth),
        }
    return result
