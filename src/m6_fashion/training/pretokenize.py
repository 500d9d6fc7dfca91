"""Pre-tokenises a Parquet image dataset with the stage-1 PQ tokenizer, once.

Stage-2 epochs then read small integer token grids instead of running the image encoder. The result
is a Parquet file (read back with ``datasets.load_dataset("parquet", ...)``) with the columns

* ``codes``: ``Array3D(shape=(rows, cols, M))`` of ``uint8`` (``K <= 256``) or ``uint16``: the images are
  brought to the tokenizer's ``sample_shape`` ``(sample_height, sample_width)`` and encoded to its
  ``grid_shape`` grid. A square tokenizer (``sample_size`` only) pads each photo to a white square and
  resizes it (:func:`m6_fashion.image_processing.preprocess`); a non-square one (e.g. 256 x 192 px -> 16 x 12
  tokens) pads the photo on white to the ``sample_height x sample_width`` aspect ratio and resizes it (the same
  function with a ``(height, width)`` size: the same pixels as the stage-1 trainer and the pipeline),
* the caption (``text``) and the attribute columns that exist (``id``, ``gender``, ...),

and a JSON side file (same name, ``.json``) recording the tokenizer geometry (``grid_height``,
``grid_width``, ``sample_height``, ``sample_width``, ``num_groups``, ``codebook_size``, and for older readers
``grid_size`` / ``sample_size``, the longest sides). Side files written before the ``grid_height`` ...
keys existed still load (readers take the grid from the codes' shape). :func:`pretokenize` caches the file under
a name derived from the data files and the tokenizer weights, so a second call returns at once.

Command line::

    python -m m6_fashion.training.pretokenize --data ../shared/data/fashion-product-images \
        --pq_tokenizer path/to/pq_tokenizer --split test --output_dir pretokenized/
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..image_processing import preprocess

__all__ = [
    "REQUIRED_COLUMNS",
    "ATTRIBUTE_COLUMNS",
    "check_columns",
    "pretokenize_dataset",
    "pretokenize",
    "load_pretokenized",
    "read_pretokenized_info",
    "default_cache_dir",
]

REQUIRED_COLUMNS = ("image", "text")
ATTRIBUTE_COLUMNS = ("id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "year", "usage")
CODES_COLUMN = "codes"


def default_cache_dir() -> str:
    """``$HF_HOME/m6_fashion/pretokenized`` (``~/.cache/huggingface/...`` by default)."""
    home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    return os.path.join(home, "m6_fashion", "pretokenized")


def check_columns(column_names: Sequence[str], source: str, required: Sequence[str] = REQUIRED_COLUMNS) -> None:
    """Raises ``ValueError`` listing the missing columns, what the data has and what is expected."""
    missing = [c for c in required if c not in column_names]
    if missing:
        raise ValueError(
            f"{source} lacks the column(s) {missing}; it has {list(column_names)}. Expected columns: "
            f"{list(required)} (required) and optionally {list(ATTRIBUTE_COLUMNS)}"
        )


def _resolve_files(data: str, split: str) -> str:
    if os.path.isdir(data):
        path = os.path.join(data, f"{split}.parquet")
        if not os.path.isfile(path):
            found = sorted(f for f in os.listdir(data) if f.endswith(".parquet"))
            raise FileNotFoundError(f"no {split}.parquet in {data!r} (found: {found or 'no Parquet files'})")
        return path
    if os.path.isfile(data) and data.endswith(".parquet"):
        return data
    raise FileNotFoundError(f"{data!r} is neither a folder with {split}.parquet nor a .parquet file")


def _sample_shape(tokenizer):
    """``(height, width)`` of the tokenizer's training images (``sample_shape``; the ``sample_size`` square for
    tokenizers without it)."""
    shape = getattr(tokenizer, "sample_shape", None)
    if shape is None:
        s = int(tokenizer.config.sample_size)
        return s, s
    return int(shape[0]), int(shape[1])


def _tokenizer_geometry(tokenizer) -> Dict[str, int]:
    cfg = tokenizer.config
    groups = getattr(tokenizer, "num_token_groups", None) or cfg.num_groups
    height, width = _sample_shape(tokenizer)
    factor = int(cfg.sample_size) // int(tokenizer.grid_size)
    return {
        "grid_size": int(tokenizer.grid_size),
        "num_groups": int(groups),
        "codebook_size": int(cfg.codebook_size),
        "sample_size": int(cfg.sample_size),
        "grid_height": height // factor,
        "grid_width": width // factor,
        "sample_height": height,
        "sample_width": width,
    }


_LEGACY_GEOMETRY_KEYS = ("grid_size", "num_groups", "codebook_size", "sample_size")


def _load_tokenizer(tokenizer):
    if isinstance(tokenizer, (str, os.PathLike)):
        from ..models.pq_tokenizer import PQTokenizer

        if not os.path.isdir(tokenizer):
            raise FileNotFoundError(f"PQ tokenizer folder {str(tokenizer)!r} does not exist")
        tokenizer = PQTokenizer.from_pretrained(tokenizer)
    for attr in ("encode", "config", "grid_size"):
        if not hasattr(tokenizer, attr):
            raise TypeError(f"tokenizer must be a PQTokenizer (or a folder saved from one); it lacks {attr!r}")
    return tokenizer.eval()


def _tokenizer_hash(tokenizer) -> str:
    geo = _tokenizer_geometry(tokenizer)
    # square tokenizers hash the four keys they always did (their cached files keep their names); the sample shape
    # joins the hash only when it is not the square, as it is part of the config but not of the weights
    keys = _LEGACY_GEOMETRY_KEYS
    if geo["sample_height"] != geo["sample_width"]:
        keys = keys + ("sample_height", "sample_width")
    h = hashlib.sha256(json.dumps({k: geo[k] for k in keys}, sort_keys=True).encode())
    for name, t in sorted(tokenizer.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def pretokenize_dataset(
    dataset,
    tokenizer,
    batch_size: int = 64,
    device: Union[str, torch.device, None] = None,
    attribute_columns: Optional[Sequence[str]] = None,
    fingerprint: Optional[str] = None,
    desc: str = "pre-tokenising images",
):
    """Encodes the ``image`` column of a ``datasets.Dataset`` into token grids.

    Args:
        dataset: a ``datasets.Dataset`` with ``image`` (PIL) and ``text`` columns.
        tokenizer: a ``PQTokenizer`` (or a folder saved from one).
        batch_size: images per encoder batch.
        device: where to run the encoder (default: the tokenizer's device).
        attribute_columns: columns to keep besides ``text`` (default: those of
            :data:`ATTRIBUTE_COLUMNS` that exist).
        fingerprint: ``datasets`` fingerprint of the result (skips hashing the encoder).

    Returns:
        a ``datasets.Dataset`` with ``codes`` (``Array3D`` uint8/uint16 ``(rows, cols, M)``, the tokenizer's
        ``grid_shape``), ``text`` and the attributes.
    """
    import datasets

    tokenizer = _load_tokenizer(tokenizer)
    check_columns(dataset.column_names, "the dataset")
    if attribute_columns is None:
        attribute_columns = [c for c in ATTRIBUTE_COLUMNS if c in dataset.column_names]
    else:
        check_columns(dataset.column_names, "the dataset", list(REQUIRED_COLUMNS) + list(attribute_columns))
    geo = _tokenizer_geometry(tokenizer)
    dtype = "uint8" if geo["codebook_size"] <= 256 else "uint16"
    np_dtype = np.uint8 if dtype == "uint8" else np.uint16
    if device is not None:
        tokenizer = tokenizer.to(device)
    dev = next(tokenizer.parameters()).device

    keep = ["text", *attribute_columns]
    drop = [c for c in dataset.column_names if c not in keep]
    features = datasets.Features({c: dataset.features[c] for c in keep})
    rows, cols = geo["grid_height"], geo["grid_width"]
    features[CODES_COLUMN] = datasets.Array3D(shape=(rows, cols, geo["num_groups"]), dtype=dtype)
    size = (geo["sample_height"], geo["sample_width"])  # a square: padded to a white square and resized, as always

    def encode(batch: Dict[str, List]) -> Dict[str, List]:
        pixels = preprocess(batch["image"], size).to(dev)
        with torch.no_grad():
            codes = tokenizer.encode(pixels).cpu().numpy()
        if codes.shape[1:] != (rows, cols, geo["num_groups"]):
            raise RuntimeError(f"the tokenizer returned {codes.shape[1:]} grids, expected {(rows, cols, geo['num_groups'])}")
        if codes.min() < 0 or codes.max() >= geo["codebook_size"]:
            raise RuntimeError(f"the tokenizer returned codes outside [0, {geo['codebook_size']})")
        return {CODES_COLUMN: list(codes.astype(np_dtype))}

    return dataset.map(
        encode,
        batched=True,
        batch_size=batch_size,
        remove_columns=drop,
        features=features,
        new_fingerprint=fingerprint,
        desc=desc,
    )


def pretokenize(
    data: str,
    tokenizer,
    split: str = "train",
    output_dir: Optional[str] = None,
    batch_size: int = 64,
    device: Union[str, torch.device, None] = None,
    max_samples: Optional[int] = None,
    overwrite: bool = False,
) -> str:
    """Pre-tokenises one split of a Parquet dataset and caches it; returns the Parquet path.

    Args:
        data: a folder with ``{split}.parquet`` or a ``.parquet`` file.
        tokenizer: a ``PQTokenizer`` or a folder saved from one.
        split: ``"train"`` or ``"test"`` (the file name in ``data``).
        output_dir: cache folder (default :func:`default_cache_dir`).
        max_samples: keep only the first ``max_samples`` rows.
        overwrite: re-tokenise even when the cache file exists.
    """
    import datasets

    path = _resolve_files(data, split)
    import pyarrow.parquet as pq

    check_columns(pq.read_schema(path).names, f"the Parquet file {path!r}")
    tokenizer = _load_tokenizer(tokenizer)
    stat = os.stat(path)
    key = hashlib.sha256(
        json.dumps(
            {
                "file": os.path.basename(path),
                "size": stat.st_size,
                "mtime": int(stat.st_mtime),
                "max_samples": max_samples,
                "tokenizer": _tokenizer_hash(tokenizer),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    output_dir = output_dir or default_cache_dir()
    os.makedirs(output_dir, exist_ok=True)
    out = os.path.join(output_dir, f"{split}-{key}.parquet")
    if os.path.isfile(out) and os.path.isfile(out[: -len(".parquet")] + ".json") and not overwrite:
        return out
    ds = datasets.load_dataset("parquet", data_files={split: path}, split=split)
    if max_samples is not None:
        ds = ds.select(range(min(max_samples, len(ds))))
    tokenized = pretokenize_dataset(
        ds, tokenizer, batch_size=batch_size, device=device, fingerprint=key, desc=f"pre-tokenising {split}"
    )
    tmp = f"{out}.tmp-{os.getpid()}"
    tokenized.to_parquet(tmp)
    info = {**_tokenizer_geometry(tokenizer), "num_rows": len(tokenized), "source": os.path.basename(path), "split": split}
    with open(out[: -len(".parquet")] + ".json", "w") as f:
        json.dump(info, f, indent=2)
    os.replace(tmp, out)
    return out


def read_pretokenized_info(path: str) -> Optional[Dict[str, int]]:
    """The JSON side file of a pre-tokenised Parquet file, or ``None`` if it has none.

    Files written before non-square grids lack ``grid_height`` / ``grid_width`` / ``sample_height`` /
    ``sample_width``; they are returned as written (the grid is the shape of the ``codes``)."""
    side = path[: -len(".parquet")] + ".json" if path.endswith(".parquet") else path + ".json"
    if not os.path.isfile(side):
        return None
    with open(side) as f:
        return json.load(f)


def load_pretokenized(path: str, codebook_size: Optional[int] = None):
    """Loads a pre-tokenised Parquet file as a ``datasets.Dataset`` (numpy format for ``codes``).

    Checks the ``codes`` and ``text`` columns and, when known (side file or ``codebook_size``),
    that every code lies in ``[0, K)``. Raises ``ValueError`` with what is missing otherwise.
    """
    import datasets

    if not os.path.isfile(path):
        raise FileNotFoundError(f"pre-tokenised file {path!r} does not exist")
    ds = datasets.load_dataset("parquet", data_files={"data": path}, split="data")
    check_columns(ds.column_names, f"the pre-tokenised file {path!r}", (CODES_COLUMN, "text"))
    info = read_pretokenized_info(path) or {}
    k = codebook_size or info.get("codebook_size")
    if k is not None and len(ds):
        sample = np.asarray(ds.with_format("numpy")[: min(len(ds), 256)][CODES_COLUMN])
        if sample.ndim != 4:
            raise ValueError(f"codes in {path!r} must be token grids (h, w, M) (h != w allowed); got per-row shape {sample.shape[1:]}")
        if sample.max() >= k:
            raise ValueError(f"codes in {path!r} reach {int(sample.max())}, outside the codebook [0, {k})")
    if len(ds) and "grid_height" in info and "grid_width" in info:
        shape = np.asarray(ds.with_format("numpy")[0][CODES_COLUMN]).shape
        if shape[:2] != (info["grid_height"], info["grid_width"]):
            raise ValueError(
                f"codes in {path!r} are {shape[0]}x{shape[1]} grids but its side file records "
                f"grid_height x grid_width = {info['grid_height']}x{info['grid_width']}"
            )
    return ds


@dataclass
class PretokenizeArguments:
    """`python -m m6_fashion.training.pretokenize` options (parsed by transformers' `HfArgumentParser`)."""

    data: str = field(metadata={"help": "folder with {split}.parquet, or a .parquet file"})
    pq_tokenizer: str = field(metadata={"help": "folder saved with PQTokenizer.save_pretrained"})
    split: str = field(default="train", metadata={"help": "split to pre-tokenise (train, validation, test)"})
    output_dir: Optional[str] = field(default=None, metadata={"help": f"cache folder (default {default_cache_dir()})"})
    batch_size: int = field(default=64, metadata={"help": "images per encoder batch"})
    device: Optional[str] = field(default=None, metadata={"help": "torch device for the encoder (default: where the tokenizer loads, the CPU)"})
    max_samples: Optional[int] = field(default=None, metadata={"help": "only the first N rows"})
    overwrite: bool = field(default=False, metadata={"help": "re-tokenise even when the cache exists"})


def main(argv=None) -> None:
    from transformers import HfArgumentParser

    from ..errors import parse_arguments

    parser = HfArgumentParser(PretokenizeArguments, description="Pre-tokenise a Parquet split with a stage-1 PQ tokenizer.")
    (a,) = parse_arguments(parser, argv)
    out = pretokenize(a.data, a.pq_tokenizer, a.split, a.output_dir, a.batch_size, a.device, a.max_samples, a.overwrite)
    print(out)


if __name__ == "__main__":
    main()
