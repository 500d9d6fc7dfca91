"""Loading the fashion Parquet data with `datasets` and turning images into fixed-size uint8 arrays."""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import PIL.Image

from m6_fashion_core.image import square_image

from ..image_processing import pad_to_square, to_rgb

IMAGE_COLUMNS = ("image",)


def resolve_data_files(data: str) -> Dict[str, str]:
    """Maps a data argument to `{"train": ..., "test": ...}` Parquet files.

    `data` may be a folder holding `train.parquet` (and optionally `test.parquet`) or a single Parquet file
    (used as the train split).
    """
    if os.path.isdir(data):
        files = {}
        for split in ("train", "test"):
            path = os.path.join(data, f"{split}.parquet")
            if os.path.exists(path):
                files[split] = path
        if "train" not in files:
            raise ValueError(f"data folder {data!r} has no train.parquet; expected train.parquet (and optionally test.parquet)")
        return files
    if os.path.isfile(data) and data.endswith(".parquet"):
        return {"train": data}
    raise ValueError(f"data path {data!r} is neither a folder with train.parquet nor a .parquet file")


def load_parquet_splits(data: str, required_columns: Sequence[str] = ("image",)):
    """Loads a `datasets.DatasetDict` from Parquet and checks it has `required_columns`."""
    import datasets

    ds = datasets.load_dataset("parquet", data_files=resolve_data_files(data))
    for split, d in ds.items():
        missing = [c for c in required_columns if c not in d.column_names]
        if missing:
            raise ValueError(
                f"the {split} split of {data!r} lacks column(s) {missing}; it has {d.column_names}, "
                f"and these are required: {list(required_columns)}"
            )
    return ds


def image_to_uint8(image: PIL.Image.Image, size) -> np.ndarray:
    """PIL image -> uint8 array (3, size, size): RGB, padded to square on white, bicubic resize. `size` may be
    `(height, width)`: padded on white to that aspect ratio instead (`m6_fashion_core.image.square_image`, what the
    pipeline does with an input image), so a 3:4 photo into a 3:4 size is only resized."""
    if isinstance(size, (tuple, list)):
        image = square_image(image, size)
    else:
        image = pad_to_square(to_rgb(image)).resize((size, size), PIL.Image.BICUBIC)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


def images_to_array(dataset, size, num_proc: Optional[int] = None, limit: Optional[int] = None) -> np.ndarray:
    """Decodes and resizes every image of a `datasets.Dataset` -> uint8 array (N, 3, size, size), or
    (N, 3, height, width) for a `(height, width)` size (see `image_to_uint8`).

    Uses `datasets.map(batched=True)` so the result is cached by `datasets` between runs.
    """
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))

    def _convert(batch: Dict[str, List]) -> Dict[str, List]:
        return {"pixels": [image_to_uint8(im, size) for im in batch["image"]]}

    mapped = dataset.map(
        _convert, batched=True, batch_size=256, num_proc=num_proc,
        remove_columns=dataset.column_names,
        desc=f"decoding images at {size[0]}x{size[1]}px" if isinstance(size, (tuple, list)) else f"decoding images at {size}px",
    )
    mapped = mapped.with_format("numpy")
    return np.asarray(mapped["pixels"], dtype=np.uint8)
