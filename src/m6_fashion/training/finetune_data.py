"""Fine-tuning data: ``--data`` read into a ``datasets.Dataset`` of ``image`` + ``text`` (plus attribute columns)
and every row checked before anything else happens.

Accepted layouts: a flat image folder with ``metadata.jsonl`` / ``metadata.csv`` (read here, so each problem is
reported with its metadata line), the other imagefolder layouts ``datasets`` reads (a ``train/`` split folder,
``metadata.parquet``), a Parquet file or folder, a ``save_to_disk`` folder and a Hub dataset id. All problems are
collected into one :class:`DataValidationError` (or, with ``drop_invalid``, the bad rows are dropped).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..image_processing import ACCEPTED_MODES
from .pretokenize import ATTRIBUTE_COLUMNS

logger = logging.getLogger("m6_fashion.finetune")

__all__ = ["DataValidationError", "load_finetune_data", "split_holdout", "IMAGE_EXTENSIONS", "METADATA_FILES"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
MAX_LISTED = 20  # problems listed per kind in the report


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
    # A flat folder with metadata.jsonl / metadata.csv is read here, not by datasets' imagefolder, because for
    # this use imagefolder is wrong (datasets 4.x, measured): a malformed JSON line fails with a pyarrow error
    # naming no line ("JSON parse error: Column(/text) changed from string to object in row 1"), and a row whose
    # image file does not exist is dropped silently while an unlisted image joins with no caption. Here every
    # row is kept with its metadata line, so each problem is reported and --drop_invalid can skip exactly those.
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
