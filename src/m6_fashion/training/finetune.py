"""Fine-tunes an M6-Fashion pipeline on your own product catalogue (full fine-tuning or LoRA).

Command line (``m6-fashion finetune`` or ``python -m m6_fashion.training.finetune``)::

    m6-fashion finetune --data my_catalogue/ --output_dir my-m6-fashion \\
        [--model DIR_OR_HUB_ID] [--lora --lora_rank 8 --lora_alpha 16] [--save_adapter] [--ema] \\
        [--push_to_hub --hub_model_id user/my-m6-fashion] [any transformers.TrainingArguments option]

``--model`` defaults to the shipped pipeline (``m6-fashion-64``); it is only read, never written.

Data (``--data``), one of:

* an **image folder** following the ``datasets`` imagefolder convention: image files (any
  sub-folders) plus a ``metadata.jsonl`` (one JSON object per line) or ``metadata.csv`` at the top of
  the folder, with a ``file_name`` column (the image path relative to the folder) and a caption
  column ``text``, e.g. ``{"file_name": "shirt_01.jpg", "text": "Men Navy Blue Casual Shirt"}``;
* a **Parquet** file, or a folder of Parquet files (only ``train.parquet`` when there is one), with an
  image column ``image`` (``datasets`` Image feature, or ``{bytes, path}`` structs) and ``text``;
* a dataset saved with ``datasets.Dataset.save_to_disk`` (its ``train`` split for a ``DatasetDict``);
* the other layouts ``datasets.load_dataset("imagefolder", data_dir=...)`` reads, read by it: a ``train/``
  sub-folder (split layout), or a ``metadata.parquet`` of ``file_name`` + caption;
* a **Hub dataset id** (``owner/name``, not a local path), read by ``datasets.load_dataset(id, split="train")``
  (needs network access or the dataset in the local ``datasets`` cache).

Other column names: ``--caption_column`` / ``--image_column``. Every row is checked before anything
else happens (missing or empty captions, missing, unreadable or corrupt images, images under
``--min_image_size`` pixels (16), unsupported image modes, wrong column names, an empty folder); all
problems are reported together, with the file / line / row of each, and the command stops (exit
status 1) before loading the model. ``--drop_invalid`` drops the bad rows with a warning instead.

What it does:

1. holds out ``--eval_fraction`` (10 %, at most ``--max_eval_samples``) of the rows for evaluation
   (a fixed split drawn from ``--split_seed``);
2. pre-tokenises every image once with the pipeline's own image tokenizer (cached under
   ``--pretokenize_cache_dir``, default ``$HF_HOME/m6_fashion/pretokenized``);
3. fine-tunes the transformer with ``transformers.Trainer`` and the paper's masking recipe
   (:class:`~m6_fashion.training.collator.M6FashionCollator`): all weights, or with ``--lora`` low-rank
   adapters (``peft``) on the attention projections ``query``/``key``/``value``
   (``--lora_target_modules``); ``--ema`` keeps an exponential moving average of the trained weights
   (``--ema_decay``), used for evaluation, samples and the saved model;
4. at every evaluation (and once at the end) reports ``eval_masked_accuracy`` (argmax accuracy over masked tokens of the
   held-out rows, masks from ``--eval_seed``) and writes ``OUTPUT_DIR/samples/step-NNNNNN.png``, a grid
   generated from held-out captions (``--num_sample_prompts``, or your own ``--sample_prompts``), with a
   fixed seed so grids are comparable across steps; ``step-000000.png`` shows the model before
   fine-tuning;
5. writes a complete pipeline folder to ``OUTPUT_DIR`` (``model_index.json``, ``image_tokenizer``,
   ``decoder``, ``transformer``, ``tokenizer``, ``scheduler``; safetensors), loadable with
   ``M6FashionPipeline.from_pretrained(OUTPUT_DIR)``. LoRA adapters are merged into the weights, unless
   ``--save_adapter``: then ``OUTPUT_DIR/transformer`` holds the unchanged base weights and
   ``OUTPUT_DIR/transformer_lora`` the adapter, applied with::

       from m6_fashion import M6FashionPipeline
       from m6_fashion.training.finetune import load_lora_adapter
       pipe = load_lora_adapter(M6FashionPipeline.from_pretrained(OUTPUT_DIR), f"{OUTPUT_DIR}/transformer_lora")

   (which is ``PeftModel.from_pretrained(pipe.transformer, adapter_dir).merge_and_unload()``).
   ``--push_to_hub --hub_model_id user/name`` uploads that folder (without the checkpoints).

Fine-tuning on one kind of product only teaches the model to draw it for every prompt: mix in images
of what it should keep drawing (``examples/finetune_rare_article.py`` adds as many random images of
other types; measured figures and CPU times are in ``examples/README.md``: 100 steps of batch 16 take
about 11 CPU-seconds per step).

The text tokenizer is kept as it is: caption words that are not in its vocabulary become ``[UNK]``
(the command logs how many and which). Frequent new words (brand names, new article types) are
better rephrased with words the model knows, or the model trained again with a new tokenizer
(``m6-fashion train-transformer``). The stage-1 image tokenizer and decoder are not fine-tuned.

Training details: every ``TrainingArguments`` option passes through (``--max_steps``,
``--per_device_train_batch_size``, ``--gradient_accumulation_steps``, ``--learning_rate``,
``--eval_steps``, ``--save_steps``, ``--eval_on_start``, ...). Defaults differ from ``Trainer``'s where
a small fine-tune needs it: ``--learning_rate 1e-4`` (use about ``1e-3`` with ``--lora``),
``--eval_strategy steps --eval_steps 100 --save_steps 100 --logging_steps 10 --save_total_limit 2``.
``--resume_from_checkpoint latest`` continues the newest ``OUTPUT_DIR/checkpoint-*`` exactly as the
uninterrupted run would have gone on (the split, the masks, the data order, the optimizer, the RNG
and the EMA weights are all restored). ``--max_train_minutes`` stops (with a checkpoint) after a time
budget. The same command runs under ``torchrun --nproc_per_node N`` and ``accelerate launch``.

Python::

    from m6_fashion.training.finetune import main
    main(["--data", "my_catalogue", "--output_dir", "out", "--lora", "--max_steps", "200"])
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import re
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import transformers
from transformers import HfArgumentParser, Trainer, TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..errors import parse_dataclasses
from ..image_processing import ACCEPTED_MODES, make_grid
from .collator import M6FashionCollator, TokenGridDataset
from .pretokenize import ATTRIBUTE_COLUMNS, _tokenizer_hash, default_cache_dir, load_pretokenized, pretokenize_dataset
from .train_transformer import (
    CollatorEpochCallback,
    M6FashionTrainingArguments,
    TimeLimitCallback,
    compute_masked_accuracy,
    preprocess_logits_for_metrics,
)

logger = logging.getLogger("m6_fashion.finetune")

__all__ = [
    "FinetuneArguments",
    "FinetuneTrainingArguments",
    "DataValidationError",
    "load_finetune_data",
    "split_holdout",
    "EMACallback",
    "SampleGridCallback",
    "load_lora_adapter",
    "hub_files",
    "main",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
ADAPTER_DIR = "transformer_lora"
SAMPLES_DIR = "samples"
EMA_WEIGHTS = "ema.safetensors"
MAX_LISTED = 20  # problems listed per kind in the report


# ================================================================================================ arguments
@dataclass
class FinetuneArguments:
    """Fine-tuning options (besides ``TrainingArguments``)."""

    data: str = field(metadata={"help": "image folder with metadata.jsonl/metadata.csv, Parquet file/folder, or a saved datasets folder"})
    model: Optional[str] = field(default=None, metadata={"help": "pipeline folder or Hub id to start from (default: the shipped model)"})
    caption_column: str = field(default="text", metadata={"help": "caption column of the data"})
    image_column: str = field(default="image", metadata={"help": "image column (Parquet / saved datasets)"})
    min_image_size: int = field(default=16, metadata={"help": "reject images whose shorter side is below this (pixels)"})
    drop_invalid: bool = field(default=False, metadata={"help": "drop bad rows with a warning instead of stopping"})
    eval_fraction: float = field(default=0.1, metadata={"help": "fraction of the rows held out for evaluation (0 = none)"})
    max_eval_samples: Optional[int] = field(default=256, metadata={"help": "cap on the held-out rows"})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "use only this many training rows"})
    split_seed: int = field(default=0, metadata={"help": "seed of the train / held-out split"})
    eval_seed: int = field(default=1234, metadata={"help": "seed of the evaluation masks"})
    pretokenize_batch_size: int = 64
    pretokenize_cache_dir: Optional[str] = field(default=None, metadata={"help": "cache of pre-tokenised data (default: $HF_HOME/m6_fashion/pretokenized)"})
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters instead of all weights"})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank r"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (the update is scaled by alpha / r)"})
    lora_dropout: float = 0.0
    lora_target_modules: str = field(default="query,key,value", metadata={"help": "comma-separated module names to adapt"})
    save_adapter: bool = field(default=False, metadata={"help": "with --lora: save the adapter (transformer_lora/) instead of merging it"})
    ema: bool = field(default=False, metadata={"help": "keep an EMA of the trained weights (used for eval, samples and the result)"})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay (warmed up as min(decay, (1+step)/(10+step)))"})
    num_sample_prompts: int = field(default=4, metadata={"help": "held-out captions in each sample grid (0 = no grids)"})
    sample_prompts: Optional[List[str]] = field(default=None, metadata={"help": "captions of the sample grids (instead of held-out ones)"})
    sample_steps: int = field(default=10, metadata={"help": "SMART passes of the sample generations"})
    sample_seed: int = 0
    save_dtype: str = field(default="float32", metadata={"help": "dtype of the saved weights: float32 or float16"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "start anew in an --output_dir that holds another run "
                                                                "(its checkpoint-* folders are deleted first); refused otherwise"})


@dataclass
class FinetuneTrainingArguments(M6FashionTrainingArguments):
    """``TrainingArguments`` with defaults suited to a small fine-tune."""

    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate (about 1e-3 suits --lora)"})
    eval_strategy: str = field(default="steps", metadata={"help": "no, steps or epoch"})
    eval_steps: Optional[float] = field(default=100, metadata={"help": "evaluate (and write a sample grid) every N steps"})
    save_steps: float = field(default=100, metadata={"help": "checkpoint every N steps"})
    logging_steps: float = field(default=10, metadata={"help": "log every N steps"})
    save_total_limit: Optional[int] = field(default=2, metadata={"help": "checkpoints kept"})


# ================================================================================================ data
class DataValidationError(ValueError):
    """The fine-tuning data cannot be used; the message lists every problem and where it is."""


class _Report:
    def __init__(self, source: str):
        self.source = source
        self.problems: Dict[str, List[str]] = {}
        self.bad_rows: set = set()

    def add(self, kind: str, where: str, row: Optional[int] = None) -> None:
        self.problems.setdefault(kind, []).append(where)
        if row is not None:
            self.bad_rows.add(row)

    def __bool__(self) -> bool:
        return bool(self.problems)

    def text(self) -> str:
        n = sum(len(v) for v in self.problems.values())
        lines = [f"the data at {self.source!r} cannot be used for fine-tuning ({n} problem{'s' * (n != 1)}):"]
        for kind, where in self.problems.items():
            lines.append(f"  {kind} ({len(where)}):")
            for w in where[:MAX_LISTED]:
                lines.append(f"    - {w}")
            if len(where) > MAX_LISTED:
                lines.append(f"    ... and {len(where) - MAX_LISTED} more")
        return "\n".join(lines)


def _caption_ok(value) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _check_image(opener, where: str, row: int, report: _Report, min_size: int) -> None:
    import PIL.Image

    try:
        with opener() as f:
            im = PIL.Image.open(f)
            im.load()  # decodes the whole file: truncated / corrupt data fails here
            size, mode = im.size, im.mode
    except FileNotFoundError:
        report.add("image files that do not exist", where, row)
        return
    except Exception as e:  # noqa: BLE001 - every decoder error is reported, not raised
        report.add("unreadable or corrupt images", f"{where}: {type(e).__name__}: {e}", row)
        return
    if min(size) < min_size:
        report.add(f"images smaller than {min_size} px (--min_image_size)", f"{where}: {size[0]}x{size[1]} px", row)
    elif mode not in ACCEPTED_MODES:
        report.add("images in an unsupported mode", f"{where}: mode {mode!r} (accepted: {', '.join(ACCEPTED_MODES)})", row)


def _read_metadata(folder: str, report: _Report, caption_column: str) -> Tuple[Optional[str], List[Dict], List[int]]:
    """Rows of metadata.jsonl / metadata.csv and their line numbers (``None`` name if there is none)."""
    present = [m for m in METADATA_FILES if os.path.isfile(os.path.join(folder, m))]
    if not present:
        return None, [], []
    if len(present) > 1:
        raise DataValidationError(
            f"{folder!r} has both metadata.jsonl and metadata.csv; keep one of them (the captions must come from one file)"
        )
    name = present[0]
    path = os.path.join(folder, name)
    rows, lines = [], []
    if name.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    report.add("metadata lines that are not valid JSON", f"{name} line {i}: {e.msg}")
                    continue
                if not isinstance(obj, dict):
                    report.add("metadata lines that are not valid JSON", f"{name} line {i}: not a JSON object")
                    continue
                rows.append(obj)
                lines.append(i)
    else:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            for i, obj in enumerate(reader, 2):  # line 1 is the header
                rows.append({k: v for k, v in obj.items() if k is not None})
                lines.append(i)
    return name, rows, lines


def _list_images(folder: str) -> List[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                out.append(os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/"))
    return out


def _load_image_folder(folder: str, caption_column: str, min_size: int, report: _Report):
    import datasets

    images = _list_images(folder)
    name, rows, lines = _read_metadata(folder, report, caption_column)
    if name is None:
        parquet = [f for f in os.listdir(folder) if f.endswith(".parquet")]
        if not images and not parquet and not os.listdir(folder):
            raise DataValidationError(f"the data folder {folder!r} is empty: put the images there with a metadata.jsonl of captions")
        if not images:
            raise DataValidationError(
                f"the data folder {folder!r} has no images ({', '.join(IMAGE_EXTENSIONS)}), no metadata.jsonl/metadata.csv "
                "and no Parquet files"
            )
        raise DataValidationError(
            f"the data folder {folder!r} has {len(images)} images but no captions: add a metadata.jsonl with one line per "
            'image, e.g. {"file_name": "' + images[0] + '", "' + caption_column + '": "Men Navy Blue Casual Shirt"} '
            "(or a metadata.csv with the columns file_name," + caption_column + ")"
        )
    if not rows:
        raise DataValidationError(f"{os.path.join(folder, name)!r} lists no images (it is empty)" + (
            "" if not report else "\n" + report.text()))
    columns = sorted({k for r in rows for k in r})
    missing = [c for c in ("file_name", caption_column) if c not in columns]
    if missing:
        hint = ""
        if caption_column in missing:
            guesses = [c for c in columns if c.lower() in ("caption", "captions", "prompt", "description", "title", "name", "label", "text")]
            hint = (f"; if the captions are in {guesses[0]!r}, pass --caption_column {guesses[0]}" if guesses else "") + (
                f" or rename that column to {caption_column!r}")
        raise DataValidationError(
            f"wrong column names in {name}: the column(s) {missing} are missing; it has {columns}. The imagefolder "
            f"convention needs 'file_name' (image path relative to the folder) and the caption column {caption_column!r}{hint}"
        )
    paths, texts, keep_cols = [], [], [c for c in ATTRIBUTE_COLUMNS if c in columns]
    extra = {c: [] for c in keep_cols}
    listed = set()
    for j, (row, line) in enumerate(zip(rows, lines)):
        where = f"{name} line {line}"
        fname = row.get("file_name")
        if not isinstance(fname, str) or not fname.strip():
            report.add("metadata rows without a file_name", where, j)
            fname = ""
        else:
            fname = fname.strip().replace("\\", "/")
            listed.add(os.path.normpath(fname))
            where = f"{where} ({fname})"
        cap = row.get(caption_column)
        if not _caption_ok(cap):
            report.add(f"rows with a missing or empty caption ('{caption_column}')", where, j)
        full = os.path.join(folder, fname)
        if fname:
            if not os.path.isfile(full):
                report.add("image files that do not exist", where, j)
            else:
                _check_image(lambda full=full: open(full, "rb"), where, j, report, min_size)
        paths.append(full)
        texts.append(cap if isinstance(cap, str) else "")
        for c in keep_cols:
            v = row.get(c)
            extra[c].append(None if v is None else str(v))
    unlisted = [p for p in images if os.path.normpath(p) not in listed]
    if unlisted:
        logger.warning("%d image(s) in %s are not listed in %s and are ignored (e.g. %s)", len(unlisted), folder, name, unlisted[:3])
    ds = datasets.Dataset.from_dict({"image": paths, "text": texts, **extra})
    return ds.cast_column("image", datasets.Image()), f"{name} of {folder}"


def _load_tabular(path: str, image_column: str, caption_column: str):
    """A Parquet file / folder or a ``save_to_disk`` folder as a ``datasets.Dataset``."""
    import datasets

    if os.path.isdir(path) and (
        os.path.isfile(os.path.join(path, "dataset_info.json")) or os.path.isfile(os.path.join(path, "dataset_dict.json"))
    ):
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise DataValidationError(f"the saved DatasetDict {path!r} has no 'train' split (it has {list(ds)})")
            ds = ds["train"]
        return ds
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "train.parquet")):
            files = [os.path.join(path, "train.parquet")]
        else:
            files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".parquet"))
    else:
        files = [path]
    try:
        return datasets.load_dataset("parquet", data_files={"train": files}, split="train")
    except Exception as e:  # noqa: BLE001 - reported with the file names
        raise DataValidationError(f"cannot read the Parquet data {files}: {type(e).__name__}: {e}") from e


def _check_tabular(ds, source: str, image_column: str, caption_column: str, min_size: int, report: _Report):
    import datasets

    columns = list(ds.column_names)
    missing = [c for c in (image_column, caption_column) if c not in columns]
    if missing:
        guesses = {
            caption_column: [c for c in columns if c.lower() in ("caption", "captions", "prompt", "description", "title", "productdisplayname")],
            image_column: [c for c in columns if c.lower() in ("img", "images", "picture", "photo", "image_path", "file_name")],
        }
        hints = [f"--{'caption' if m == caption_column else 'image'}_column {guesses[m][0]}" for m in missing if guesses[m]]
        raise DataValidationError(
            f"wrong column names in {source}: the column(s) {missing} are missing; it has {columns}. Expected an image "
            f"column {image_column!r} and a caption column {caption_column!r}"
            + (f"; pass {' '.join(hints)}" if hints else "; pass --image_column / --caption_column to name them")
        )
    if len(ds) == 0:
        raise DataValidationError(f"{source} has no rows")
    feat = ds.features[image_column]
    if not isinstance(feat, datasets.Image):
        if isinstance(feat, dict) and "bytes" in feat:
            ds = ds.cast_column(image_column, datasets.Image())
        else:
            raise DataValidationError(
                f"the column {image_column!r} of {source} does not hold images (its type is {feat}); expected the datasets "
                "Image feature or {bytes, path} structs"
            )
    raw = ds.cast_column(image_column, datasets.Image(decode=False))
    captions = raw[caption_column]
    for i, cap in enumerate(captions):
        if not _caption_ok(cap):
            report.add(f"rows with a missing or empty caption ('{caption_column}')", f"row {i}", i)
    for i, cell in enumerate(raw[image_column]):
        where = f"row {i}"
        if cell is None or (cell.get("bytes") is None and not cell.get("path")):
            report.add("rows without an image", where, i)
            continue
        if cell.get("path"):
            where = f"row {i} ({cell['path']})"
        if cell.get("bytes") is not None:
            data = cell["bytes"]
            _check_image(lambda data=data: io.BytesIO(data), where, i, report, min_size)
        else:
            p = cell["path"]
            _check_image(lambda p=p: open(p, "rb"), where, i, report, min_size)
    if image_column != "image":
        if "image" in ds.column_names:
            ds = ds.remove_columns("image")
        ds = ds.rename_column(image_column, "image")
    if caption_column != "text":
        if "text" in ds.column_names:
            ds = ds.remove_columns("text")
        ds = ds.rename_column(caption_column, "text")
    return ds


HUB_ID = r"[A-Za-z0-9][\w.-]*/[\w.-]+"


def _imagefolder_layout(folder: str) -> bool:
    """Layouts of datasets' imagefolder that the flat folder check does not read: a ``train/`` split sub-folder, or
    captions in ``metadata.parquet`` (and no flat ``metadata.jsonl``/``metadata.csv``)."""
    if any(os.path.isfile(os.path.join(folder, m)) for m in METADATA_FILES):
        return False
    return os.path.isfile(os.path.join(folder, "metadata.parquet")) or os.path.isdir(os.path.join(folder, "train"))


def _load_with_datasets(source: str, hub: bool):
    """``datasets.load_dataset`` of an imagefolder layout (``source`` a folder) or of a Hub dataset id (its
    ``train`` split), as a ``datasets.Dataset``; a clear ``DataValidationError`` when it cannot be read."""
    import datasets

    try:
        if hub:
            ds = datasets.load_dataset(source, split="train")
        else:
            ds = datasets.load_dataset("imagefolder", data_dir=source, split="train")
    except Exception as e:  # noqa: BLE001 - datasets raises many types; all are reported with the source
        first = (str(e).strip().splitlines() or [""])[0][:300]
        where = f"the Hub dataset {source!r}" if hub else f"the image folder {source!r} (datasets' imagefolder)"
        hint = (" Without network access, download it first or pass a local folder / Parquet file" if hub
                else " Put the images in train/ with a metadata.jsonl/metadata.csv/metadata.parquet of file_name + caption")
        raise DataValidationError(f"cannot read {where}: {type(e).__name__}: {first}.{hint}") from None
    return ds


def _fingerprint(path: str, ds) -> str:
    """Hash of the data files (names, sizes, modification times) and of the rows kept (a Hub dataset: its id and
    the fingerprint ``datasets`` gives the rows)."""
    h = hashlib.sha256()
    targets = []
    if not os.path.exists(path):
        h.update(f"hub:{path}\n".encode())
    elif os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            targets += [os.path.join(root, f) for f in sorted(files)]
    else:
        targets = [path]
    for p in targets:
        st = os.stat(p)
        h.update(f"{os.path.relpath(p, path) if os.path.isdir(path) else os.path.basename(p)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    h.update(ds._fingerprint.encode())
    return h.hexdigest()[:16]


def load_finetune_data(
    path: str,
    caption_column: str = "text",
    image_column: str = "image",
    min_image_size: int = 16,
    drop_invalid: bool = False,
):
    """Loads and validates fine-tuning data; returns a ``datasets.Dataset`` with ``image`` and ``text`` columns
    (plus the attribute columns it has: ``articleType``, ``baseColour``, ``gender``, ...).

    Raises :class:`DataValidationError` listing every problem found (or, with ``drop_invalid``, drops
    the bad rows with a warning and raises only when no row is left).
    """
    if not isinstance(path, str) or not path:
        raise DataValidationError("pass --data: an image folder with metadata.jsonl, a Parquet file/folder, a saved dataset "
                                  "or a Hub dataset id")
    report = _Report(path)
    if not os.path.exists(path):
        if not re.fullmatch(HUB_ID, path):
            raise DataValidationError(f"the data path {path!r} does not exist (and is not a Hub dataset id of the form owner/name)")
        ds = _load_with_datasets(path, hub=True)
        ds = _check_tabular(ds, f"the Hub dataset {path!r}", image_column, caption_column, min_image_size, report)
    elif os.path.isdir(path) and _imagefolder_layout(path):
        ds = _load_with_datasets(path, hub=False)
        ds = _check_tabular(ds, f"the image folder {path!r}", image_column, caption_column, min_image_size, report)
    elif os.path.isdir(path) and (
        any(os.path.isfile(os.path.join(path, m)) for m in METADATA_FILES)
        or not any(f.endswith(".parquet") or f in ("dataset_info.json", "dataset_dict.json") for f in os.listdir(path))
    ):
        ds, source = _load_image_folder(path, caption_column, min_image_size, report)
    elif os.path.isfile(path) and not path.endswith(".parquet"):
        raise DataValidationError(
            f"{path!r} is a file but not a .parquet file; pass an image folder with metadata.jsonl, a Parquet file/folder "
            "or a folder saved with datasets' save_to_disk"
        )
    else:
        ds = _load_tabular(path, image_column, caption_column)
        ds = _check_tabular(ds, repr(path), image_column, caption_column, min_image_size, report)
    if report:
        if not drop_invalid:
            raise DataValidationError(report.text() + "\nFix these rows (or pass --drop_invalid to skip them).")
        logger.warning("%s\n--drop_invalid: dropping %d row(s)", report.text(), len(report.bad_rows))
        keep = [i for i in range(len(ds)) if i not in report.bad_rows]
        if not keep:
            raise DataValidationError(f"no usable row is left in {path!r} after dropping the invalid ones")
        ds = ds.select(keep)
    return ds


def split_holdout(n: int, eval_fraction: float, max_eval: Optional[int], seed: int) -> Tuple[List[int], List[int]]:
    """Deterministic ``(train_indices, eval_indices)`` of ``n`` rows."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"--eval_fraction must be in [0, 1); got {eval_fraction}")
    n_eval = 0 if eval_fraction == 0 else max(1, int(round(n * eval_fraction)))
    if max_eval is not None:
        n_eval = min(n_eval, max_eval)
    if n - n_eval < 1:
        raise DataValidationError(
            f"the data has {n} usable row(s): too few to hold out {n_eval} for evaluation and still train; add images "
            "or pass --eval_fraction 0 --eval_strategy no"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(perm[n_eval:].tolist()), sorted(perm[:n_eval].tolist())


def _unknown_word_report(tokenizer, captions: Sequence[str]) -> Tuple[float, List[Tuple[str, int]]]:
    """Fraction of caption tokens that are [UNK] and the most frequent unknown words."""
    unk = tokenizer.unk_token_id
    total = n_unk = 0
    words: Counter = Counter()
    enc = tokenizer(list(captions), add_special_tokens=False, return_offsets_mapping=True)
    for cap, ids, offsets in zip(captions, enc["input_ids"], enc["offset_mapping"]):
        total += len(ids)
        for i, (a, b) in zip(ids, offsets):
            if i == unk:
                n_unk += 1
                words[cap[a:b]] += 1
    return (n_unk / total if total else 0.0), words.most_common(10)


# ================================================================================================ callbacks
class EMACallback(TrainerCallback):
    """Exponential moving average of the trainable parameters, updated after every optimizer step.

    Saved with every checkpoint (``ema.safetensors``) and restored on resume, so a resumed run's EMA
    is the uninterrupted one's.
    """

    def __init__(self, model: torch.nn.Module, decay: float, resume_from: Optional[str] = None):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema_decay must be in (0, 1); got {decay}")
        self.decay = decay
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.shadow = {n: p.detach().clone().float() for n, p in self.params}
        self.resume_from = resume_from
        self.active = True

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = self.decay_at(step)
        for n, p in self.params:
            self.shadow[n].lerp_(p.detach().float(), 1.0 - d)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.resume_from:
            path = os.path.join(self.resume_from, EMA_WEIGHTS)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"--ema was given but the checkpoint {self.resume_from!r} has no {EMA_WEIGHTS} (was it trained without --ema?)"
                )
            from safetensors.torch import load_file

            saved = load_file(path)
            if saved.keys() != self.shadow.keys():
                raise ValueError(f"{path!r} does not match the trained parameters (different --lora settings?)")
            for n, t in saved.items():
                self.shadow[n].copy_(t)

    def on_step_end(self, args, state, control, **kwargs):
        self.update(state.global_step - 1)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from safetensors.torch import save_file

            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if os.path.isdir(folder):
                save_file({n: t.contiguous().cpu() for n, t in self.shadow.items()}, os.path.join(folder, EMA_WEIGHTS))

    @contextlib.contextmanager
    def swapped(self):
        """Temporarily puts the EMA weights into the model."""
        if not self.active:
            yield
            return
        backup = {n: p.detach().clone() for n, p in self.params}
        self.copy_to_model()
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params:
                    p.copy_(backup[n])

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for n, p in self.params:
            p.copy_(self.shadow[n].to(p.dtype))


class SampleGridCallback(TrainerCallback):
    """Generates ``prompts`` with the current weights at every evaluation (and before training) and
    writes ``OUTPUT_DIR/samples/step-NNNNNN.png`` (plus ``samples/prompts.txt``)."""

    def __init__(self, pipeline, transformer: torch.nn.Module, prompts: Sequence[str], output_dir: str,
                 num_inference_steps: int = 10, seed: int = 0):
        from ..pipelines import M6FashionPipeline

        self.pipe = M6FashionPipeline(
            image_tokenizer=pipeline.image_tokenizer, decoder=pipeline.decoder, transformer=transformer,
            tokenizer=pipeline.tokenizer, scheduler=pipeline.scheduler,
        )
        self.pipe.set_progress_bar_config(disable=True)
        self.transformer = transformer
        self.prompts = list(prompts)
        self.folder = os.path.join(output_dir, SAMPLES_DIR)
        self.steps, self.seed = num_inference_steps, seed
        self.written: List[str] = []

    @torch.no_grad()
    def write(self, step: int) -> str:
        device = next(self.transformer.parameters()).device
        self.pipe.image_tokenizer.to(device)
        self.pipe.decoder.to(device)
        was_training = self.transformer.training
        self.transformer.eval()
        try:
            g = torch.Generator(device=device).manual_seed(self.seed)
            images = self.pipe(self.prompts, num_inference_steps=self.steps, generator=g).images
        finally:
            self.transformer.train(was_training)
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, f"step-{step:06d}.png")
        make_grid(images, cols=min(len(images), 8)).save(path)
        with open(os.path.join(self.folder, "prompts.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(self.prompts) + "\n")
        self.written.append(path)
        logger.info("sample grid written to %s", path)
        return path

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and state.global_step == 0:
            self.write(0)

    def on_evaluate(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.write(state.global_step)


# ================================================================================================ model helpers
def load_lora_adapter(pipeline, adapter_dir: str, merge: bool = True):
    """Applies a LoRA adapter saved by ``finetune --lora --save_adapter`` to ``pipeline.transformer``.

    ``merge=True`` folds the adapter into the weights (plain ``M6FashionTransformer``, no ``peft`` at
    inference); ``merge=False`` keeps it as a removable adapter. The same as ``pipeline.load_lora_weights``
    (+ ``pipeline.fuse_lora()``). Returns the pipeline.
    """
    if not os.path.isfile(os.path.join(adapter_dir, "adapter_config.json")):
        raise FileNotFoundError(f"no LoRA adapter (adapter_config.json) in {adapter_dir!r}")
    pipeline.load_lora_weights(adapter_dir)
    if merge:
        pipeline.fuse_lora()
    return pipeline


def _portable_base_reference(adapter_dir: str, base: str) -> None:
    """peft records the base model's local folder (a path of this machine) in ``adapter_config.json``; the
    published adapter names the base as the user gave it (a shipped name, Hub id or folder) instead."""
    path = os.path.join(adapter_dir, "adapter_config.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    config["base_model_name_or_path"] = base
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)


def _apply_lora(transformer, args: FinetuneArguments):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("--lora needs peft: pip install 'm6-fashion[finetune]'") from e
    targets = [t.strip() for t in args.lora_target_modules.split(",") if t.strip()]
    if args.lora_rank < 1:
        raise ValueError(f"--lora_rank must be >= 1; got {args.lora_rank}")
    names = {n.rsplit(".", 1)[-1] for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    unknown = [t for t in targets if t not in names]
    if not targets or unknown:
        raise ValueError(f"--lora_target_modules {args.lora_target_modules!r}: {unknown or 'none given'} not among the "
                         f"transformer's linear layers {sorted(names)}")
    config = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                        target_modules=targets, bias="none")
    return get_peft_model(transformer, config)


def _sampling_module(model):
    """The module the pipeline should call: the LoRA-injected base model of a PeftModel, else the model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def hub_files(folder: str) -> List[str]:
    """Files of a fine-tuned pipeline folder that are uploaded to the Hub (no checkpoints, no logs)."""
    keep_top = {"model_index.json", "README.md", "finetune_args.json", "eval_results.json", "train_results.json", "all_results.json"}
    keep_dirs = ("image_tokenizer", "decoder", "transformer", "tokenizer", "scheduler", ADAPTER_DIR, SAMPLES_DIR)
    out = []
    for root, dirs, files in os.walk(folder):
        rel_root = os.path.relpath(root, folder)
        top = rel_root.split(os.sep)[0]
        if rel_root != "." and top not in keep_dirs:
            dirs[:] = []
            continue
        for f in files:
            rel = os.path.normpath(os.path.join(rel_root, f)).replace(os.sep, "/")
            if rel_root == "." and f not in keep_top:
                continue
            out.append(rel)
    return sorted(out)


def _push(folder: str, repo_id: str, training_args) -> str:
    from huggingface_hub import HfApi

    api = HfApi(token=training_args.hub_token)
    repo = api.create_repo(repo_id, private=bool(training_args.hub_private_repo), exist_ok=True)
    repo_id = getattr(repo, "repo_id", repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=folder, allow_patterns=hub_files(folder),
                      commit_message="m6-fashion finetune", revision=training_args.hub_revision)
    return repo_id


def _model_card(args: FinetuneArguments, base: str, n_train: int, n_eval: int, metrics: Dict,
                folder: Optional[str] = None) -> str:
    """README.md of a fine-tuned pipeline: this body in the shared template (`m6_fashion.hub.build_model_card`:
    Hub front matter, and with `folder` the weights paragraph computed from its safetensors files)."""
    import re

    from ..hub import build_model_card

    method = f"LoRA (rank {args.lora_rank}, alpha {args.lora_alpha:g}, on {args.lora_target_modules})" if args.lora else "full fine-tuning"
    if args.lora and args.save_adapter:
        method += "; adapter saved separately in transformer_lora/"
    acc = metrics.get("eval_masked_accuracy")
    lines = [
        "# M6-Fashion, fine-tuned", "",
        f"Fine-tuned from `{base}` on {n_train} images ({n_eval} held out) with `m6-fashion finetune`: {method}"
        + (", EMA of weights" if args.ema else "") + ".", "",
    ]
    if acc is not None:
        lines += [f"Held-out masked-token accuracy: {acc:.4f}.", ""]
    lines += ["```py", "from m6_fashion import M6FashionPipeline", "pipe = M6FashionPipeline.from_pretrained(\"<this folder or repo>\")"]
    if args.lora and args.save_adapter:
        lines += ["from m6_fashion.training.finetune import load_lora_adapter",
                  "pipe = load_lora_adapter(pipe, \"<this folder>/transformer_lora\")"]
    lines += ["image = pipe(\"Men Navy Blue Casual Shirt\").images[0]", "```", ""]
    # base_model only when the base is a Hub repo id (a local folder or the shipped model has none to link to)
    hub_base = base if re.fullmatch(r"[\w.-]+/[\w.-]+", base) and not os.path.exists(base) else None
    return str(build_model_card("\n".join(lines), folder=folder, files=hub_files(folder) if folder else None,
                                base_model=hub_base, tags=["fine-tuned"]))


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


# ================================================================================================ main
def _parse(argv):
    parser = HfArgumentParser((FinetuneArguments, FinetuneTrainingArguments))
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    return parse_dataclasses(parser, argv)


def _check_output_dir(output_dir: str, resuming: bool, overwrite: bool) -> None:
    """An --output_dir that already holds files is refused unless resuming from it or --overwrite_output_dir
    (which deletes its stale checkpoint-* folders first), so no earlier run is overwritten by accident."""
    if resuming or not os.path.isdir(output_dir) or not os.listdir(output_dir):
        return
    if not overwrite:
        shown = ", ".join(sorted(os.listdir(output_dir))[:5])
        raise SystemExit(f"error: --output_dir {output_dir!r} already holds files ({shown}, ...); pass "
                         "--resume_from_checkpoint latest to continue that run, --overwrite_output_dir to start anew "
                         "there, or choose another folder")
    import shutil

    for name in os.listdir(output_dir):
        if name.startswith("checkpoint-") and os.path.isdir(os.path.join(output_dir, name)):
            shutil.rmtree(os.path.join(output_dir, name))


def main(argv=None) -> dict:
    """Entry point; ``argv`` as for ``HfArgumentParser`` (a list of strings, or one ``.json`` file).

    Returns the final metrics. Bad data or arguments stop with ``SystemExit`` and a report.
    """
    ft_args, training_args = _parse(argv)
    try:
        return _run(ft_args, training_args)
    except DataValidationError as e:
        raise SystemExit(f"error: {e}") from None


def _run(ft_args: FinetuneArguments, training_args) -> dict:
    from ..default_model import DEFAULT_MODEL_NAME, default_model_path
    from ..pipelines import M6FashionPipeline

    training_args.remove_unused_columns = False
    training_args.label_names = ["labels"]
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False
    push, training_args.push_to_hub = training_args.push_to_hub, False  # the final pipeline is pushed, not checkpoints
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if training_args.process_index == 0 else logging.WARNING,
    )
    transformers.utils.logging.set_verbosity(logging.INFO if training_args.process_index == 0 else logging.WARNING)

    # ---- arguments that do not need the data or the model
    if not training_args.output_dir:
        raise SystemExit("error: pass --output_dir (where the fine-tuned pipeline is written)")
    model_path = ft_args.model or default_model_path()
    shipped = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained")
    for folder in filter(None, [model_path if os.path.isdir(model_path) else None, shipped]):
        if _inside(training_args.output_dir, folder):
            raise SystemExit(f"error: --output_dir {training_args.output_dir!r} is inside the model folder {folder!r}; "
                             "write the fine-tuned pipeline somewhere else (the base model is never modified)")
    if ft_args.save_adapter and not ft_args.lora:
        raise SystemExit("error: --save_adapter saves a LoRA adapter: add --lora")
    if ft_args.save_dtype not in ("float32", "float16"):
        raise SystemExit(f"error: --save_dtype must be float32 or float16; got {ft_args.save_dtype!r}")
    if push and not training_args.hub_model_id:
        raise SystemExit("error: --push_to_hub needs --hub_model_id (e.g. your-name/m6-fashion-my-catalogue)")
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "last", "latest"):
        resume = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        if resume is None:
            raise SystemExit(f"error: --resume_from_checkpoint {training_args.resume_from_checkpoint}: no checkpoint-* in "
                             f"{training_args.output_dir!r}")
    if resume and not os.path.isdir(resume):
        raise SystemExit(f"error: checkpoint folder {resume!r} does not exist")
    _check_output_dir(training_args.output_dir, resuming=bool(resume), overwrite=ft_args.overwrite_output_dir)

    # ---- data: validated before anything is loaded or written
    ds = load_finetune_data(ft_args.data, ft_args.caption_column, ft_args.image_column, ft_args.min_image_size, ft_args.drop_invalid)
    train_idx, eval_idx = split_holdout(len(ds), ft_args.eval_fraction, ft_args.max_eval_samples, ft_args.split_seed)
    if ft_args.max_train_samples is not None:
        train_idx = train_idx[: ft_args.max_train_samples]
    if not eval_idx and training_args.eval_strategy != "no":
        logger.warning("no held-out rows (--eval_fraction 0): evaluation and sample grids are off")
        training_args.eval_strategy = "no"
        training_args.eval_on_start = False
    logger.info("data: %d rows (%d for training, %d held out for evaluation)", len(ds), len(train_idx), len(eval_idx))

    # ---- the pipeline to fine-tune
    pipe = M6FashionPipeline.from_pretrained(model_path)
    transformer = pipe.transformer
    cfg = transformer.config
    tok_cfg = pipe.image_tokenizer.config
    unk_rate, unk_words = _unknown_word_report(pipe.tokenizer, ds.select_columns(["text"]).select(train_idx[:5000])["text"])
    if unk_rate > 0:
        logger.warning("%.1f%% of the caption tokens are not in the model's vocabulary and become [UNK] (most frequent: %s); "
                       "the text tokenizer is kept as it is", 100 * unk_rate, ", ".join(f"{w!r} x{c}" for w, c in unk_words))

    # ---- pre-tokenise (cached; the main process first so the others read the cache)
    cache_dir = ft_args.pretokenize_cache_dir or default_cache_dir()
    key = hashlib.sha256(f"{_fingerprint(ft_args.data, ds)}:{_tokenizer_hash(pipe.image_tokenizer)}".encode()).hexdigest()[:16]
    cache = os.path.join(cache_dir, f"finetune-{key}.parquet")
    with training_args.main_process_first(desc="pre-tokenising"):
        if not os.path.isfile(cache):
            tokenized = pretokenize_dataset(
                ds, pipe.image_tokenizer, batch_size=ft_args.pretokenize_batch_size, device=training_args.device,
                fingerprint=key, desc="pre-tokenising images",
            )
            if training_args.process_index == 0:
                os.makedirs(cache_dir, exist_ok=True)
                tmp = f"{cache}.tmp-{os.getpid()}"
                tokenized.to_parquet(tmp)
                os.replace(tmp, cache)
        pipe.image_tokenizer.to("cpu")
    tokens = load_pretokenized(cache, tok_cfg.codebook_size)
    first = np.asarray(tokens.with_format("numpy")[0]["codes"])
    if first.shape != (cfg.grid_height, cfg.grid_width, cfg.num_groups) or tok_cfg.codebook_size != cfg.codebook_size:
        raise ValueError(f"the pipeline's image tokenizer gives {first.shape} grids of K={tok_cfg.codebook_size} codes but the "
                         f"transformer expects ({cfg.grid_height}, {cfg.grid_width}, {cfg.num_groups}) and K={cfg.codebook_size}")
    train_raw = tokens.select(train_idx)
    eval_raw = tokens.select(eval_idx) if eval_idx else None

    # ---- model
    set_seed(training_args.seed)
    model = _apply_lora(transformer, ft_args) if ft_args.lora else transformer
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("trainable parameters: %.3fM of %.2fM (%s)", n_train / 1e6, sum(p.numel() for p in model.parameters()) / 1e6,
                "LoRA" if ft_args.lora else "full fine-tuning")

    train_collator = M6FashionCollator(cfg, text_tokenizer=pipe.tokenizer, seed=training_args.seed)
    eval_collator = M6FashionCollator(cfg, text_tokenizer=pipe.tokenizer, seed=ft_args.eval_seed)
    ema = EMACallback(model, ft_args.ema_decay, resume_from=resume) if ft_args.ema else None

    callbacks: List[TrainerCallback] = [CollatorEpochCallback(train_collator)]
    if ema is not None:
        callbacks.append(ema)
    if training_args.max_train_minutes:
        callbacks.append(TimeLimitCallback(training_args.max_train_minutes))
    sampler = None
    prompts = ft_args.sample_prompts or ([eval_raw[i]["text"] for i in range(min(ft_args.num_sample_prompts, len(eval_raw)))]
                                         if eval_raw is not None else [])
    if prompts and (eval_raw is not None or ft_args.sample_prompts):
        sampler = SampleGridCallback(pipe, _sampling_module(model), prompts, training_args.output_dir,
                                     ft_args.sample_steps, ft_args.sample_seed)
        callbacks.append(sampler)

    class _FinetuneTrainer(Trainer):
        def get_eval_dataloader(self, eval_dataset=None):
            # evaluation masks come from their own fixed seed, independent of the training epoch
            self.data_collator = eval_collator
            try:
                return super().get_eval_dataloader(eval_dataset)
            finally:
                self.data_collator = train_collator

        def evaluate(self, *args, **kwargs):
            with ema.swapped() if ema is not None else contextlib.nullcontext():
                return super().evaluate(*args, **kwargs)

    trainer = _FinetuneTrainer(
        model=model,
        args=training_args,
        train_dataset=TokenGridDataset(train_raw),
        eval_dataset=TokenGridDataset(eval_raw) if eval_raw is not None else None,
        data_collator=train_collator,
        processing_class=pipe.tokenizer,
        compute_metrics=compute_masked_accuracy if eval_raw is not None else None,
        preprocess_logits_for_metrics=preprocess_logits_for_metrics if eval_raw is not None else None,
        callbacks=callbacks,
    )

    train_result = trainer.train(resume_from_checkpoint=resume)
    results = dict(train_result.metrics)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    if ema is not None:
        ema.copy_to_model()  # the result is the EMA weights
        ema.active = False
    if eval_raw is not None:
        # Trainer already evaluates at the last step when an eval strategy is set; evaluate only if it did not
        done = [h for h in trainer.state.log_history if "eval_loss" in h and h.get("step") == trainer.state.global_step]
        if done:
            metrics = {k: v for k, v in done[-1].items() if k.startswith("eval_") or k == "epoch"}
        else:
            metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)

    # ---- the complete pipeline folder
    if trainer.is_world_process_zero():
        out = training_args.output_dir
        if ft_args.lora:
            if ft_args.save_adapter:
                model.save_pretrained(os.path.join(out, ADAPTER_DIR))
                _portable_base_reference(os.path.join(out, ADAPTER_DIR), ft_args.model or DEFAULT_MODEL_NAME)
                final = model.unload()  # the base weights, untouched
            else:
                final = model.merge_and_unload()
        else:
            final = model
        final.eval()
        result_pipe = M6FashionPipeline(
            image_tokenizer=pipe.image_tokenizer, decoder=pipe.decoder, transformer=final,
            tokenizer=pipe.tokenizer, scheduler=pipe.scheduler, decoder_hr=pipe.decoder_hr,  # decoders are not trained
        ).to("cpu")
        if ft_args.save_dtype == "float16":
            result_pipe.to(torch.float16)
        result_pipe.save_pretrained(out)
        with open(os.path.join(out, "finetune_args.json"), "w") as f:
            json.dump({**asdict(ft_args), "model": ft_args.model or f"{DEFAULT_MODEL_NAME} (shipped)",
                       "num_train_rows": len(train_idx), "num_eval_rows": len(eval_idx),
                       "global_step": trainer.state.global_step}, f, indent=2)
        with open(os.path.join(out, "README.md"), "w") as f:
            f.write(_model_card(ft_args, ft_args.model or DEFAULT_MODEL_NAME, len(train_idx), len(eval_idx), results, folder=out))
        logger.info("fine-tuned pipeline written to %s", out)
        if push:
            repo_id = _push(out, training_args.hub_model_id, training_args)
            logger.info("pushed to the Hub: %s", repo_id)
    if sampler is not None:
        results["sample_grids"] = list(sampler.written)
    return results


if __name__ == "__main__":
    main()
