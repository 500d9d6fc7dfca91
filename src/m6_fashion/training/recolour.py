"""Colour re-balancing for fine-tuning: real photos whose garment is recoloured, with the caption's colour word
changed to match, so that an article type is seen in many colours instead of the few it has in the catalogue.

The shipped model learned colour and article type together: for a pair that never occurs in the train split
("Men Yellow Sweatshirt") it keeps one attribute and drops the other (``benchmarks/bench_words_and_masks.py
counterfactual``). Re-balancing teaches each article type more colours. By default, to keep that benchmark a
test of *unseen* combinations, a photo is only ever recoloured to a colour that its article type already has in
the train split (at least ``min_pair_rows`` rows): no colour x article pair with zero train rows is created.
With ``--min_pair_rows 0 --held_out_pairs FILE`` photos take any colour, creating many unseen pairs, except the
held-out ones (the benchmark's), which stay unseen: a test of combining colour and article, not of recall.

How one photo is recoloured (all in CIELAB, numpy only):

1. *garment mask*: the photo's non-white pixels within ``SEED_DELTA_E`` of the reference colour of its
   ``baseColour`` give the garment's own colour (their median); the mask is every non-white pixel within
   ``MASK_DELTA_E`` of that, restricted to its large connected parts (hair next to a black shirt is a small
   separate part); photos whose mask covers less than ``MIN_MASK_SHARE`` of the non-white pixels are skipped;
2. *new colour*: the garment colour of a real photo of the target colour class (``garment_colours``), so
   targets vary as the catalogue's do;
3. *recolour*: new = target + (pixel - garment colour) x (1, ``CHROMA_DETAIL``, ``CHROMA_DETAIL``), so
   shading and folds stay; blended through a slightly blurred mask.

Command line (writes a Parquet file that ``m6-fashion finetune --data`` reads)::

    python -m m6_fashion.training.recolour --out runs/recolour/train.parquet \\
        --num_recoloured 6000 --num_replay 6000 --seed 0

Replay rows are unchanged random train photos of every category, so the fine-tuned model keeps drawing
everything else. Extra columns (``source_id``, ``source_colour``, ``target_colour``, ``recoloured``) say
where each row came from.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
from PIL import Image, ImageFilter

logger = logging.getLogger("m6_fashion.recolour")

# sRGB reference of each colour name (the classes recoloured from or to); a photo's own garment colour is
# measured around it, so it only has to be the right neighbourhood
REFERENCE_RGB: Dict[str, tuple] = {
    "Black": (20, 20, 20), "White": (245, 245, 245), "Grey": (128, 128, 128), "Charcoal": (54, 60, 66),
    "Red": (200, 30, 40), "Maroon": (115, 20, 35), "Pink": (240, 140, 180), "Orange": (245, 130, 40),
    "Yellow": (245, 215, 50), "Green": (40, 150, 60), "Olive": (110, 110, 40), "Blue": (40, 90, 200),
    "Navy Blue": (30, 35, 80), "Purple": (110, 50, 150), "Brown": (115, 70, 40), "Beige": (215, 195, 155),
    "Silver": (192, 192, 192), "Gold": (212, 175, 55), "Cream": (240, 230, 200),
}
# colours a garment can be recoloured from: not white-ish (indistinguishable from the white background) and
# not skin-like (the mask would take faces and arms)
SOURCE_COLOURS = ("Black", "Grey", "Charcoal", "Red", "Maroon", "Orange", "Yellow", "Green", "Olive", "Blue",
                  "Navy Blue", "Purple")
TARGET_COLOURS = tuple(c for c in REFERENCE_RGB if c != "Charcoal")
CATEGORIES = ("Apparel", "Footwear")
WHITE_LEVEL = 235  # a pixel is background when every channel is >= this
SEED_DELTA_E = 35.0
MASK_DELTA_E = 25.0
MIN_MASK_SHARE = 0.25
MIN_PART_SHARE = 0.2  # connected parts smaller than this share of the largest are left alone
CHROMA_DETAIL = 0.3

_M = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
_WHITE = np.array([0.95047, 1.0, 1.08883])


def srgb_to_lab(rgb) -> np.ndarray:
    """sRGB (..., 3) in 0-255 -> CIELAB (D65), float64."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = c @ _M.T / _WHITE
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_srgb(lab) -> np.ndarray:
    """CIELAB (..., 3) -> sRGB uint8 (..., 3), out-of-gamut values clipped."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = np.where(f**3 > 216 / 24389, f**3, (116 * f - 16) / (24389 / 27)) * _WHITE
    c = np.clip(xyz @ np.linalg.inv(_M).T, 0.0, 1.0)
    c = np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)
    return np.clip(np.round(c * 255), 0, 255).astype(np.uint8)


def _large_parts(mask: np.ndarray, min_share: float) -> np.ndarray:
    """Keeps the 4-connected parts of a bool (H, W) mask with at least ``min_share`` of the largest one's pixels."""
    h, w = mask.shape
    labels = np.where(mask, np.arange(1, h * w + 1).reshape(h, w), 0)
    while True:  # every pixel takes the largest label among itself and its masked neighbours
        p = np.pad(labels, 1)
        new = np.maximum.reduce([labels, p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]]) * mask
        if np.array_equal(new, labels):
            break
        labels = new
    ids, counts = np.unique(labels[mask], return_counts=True)
    if not len(ids):
        return mask
    return np.isin(labels, ids[counts >= min_share * counts.max()])


def garment_mask(image: np.ndarray, colour: str):
    """(H, W, 3) uint8 photo of a ``colour`` garment -> (lab (H, W, 3), garment colour (3,), mask (H, W)), or None.

    None when the photo has too little of that colour to be recoloured safely (see the module docstring)."""
    if colour not in REFERENCE_RGB:
        raise ValueError(f"no reference colour for {colour!r}; known: {', '.join(REFERENCE_RGB)}")
    lab = srgb_to_lab(image)
    non_white = image.min(-1) < WHITE_LEVEL
    seed = non_white & (np.linalg.norm(lab - srgb_to_lab(REFERENCE_RGB[colour]), axis=-1) < SEED_DELTA_E)
    if seed.sum() < 0.05 * max(non_white.sum(), 1):
        return None
    own = np.median(lab[seed], axis=0)
    mask = _large_parts(non_white & (np.linalg.norm(lab - own, axis=-1) < MASK_DELTA_E), MIN_PART_SHARE)
    if mask.sum() < MIN_MASK_SHARE * non_white.sum():
        return None
    return lab, own, mask


def recolour(image: np.ndarray, colour: str, target_lab: Sequence[float]) -> Optional[np.ndarray]:
    """Recolours the ``colour`` garment of an (H, W, 3) uint8 photo to the CIELAB colour ``target_lab``.

    Returns the new (H, W, 3) uint8 photo, or None when no garment mask was found."""
    found = garment_mask(image, colour)
    if found is None:
        return None
    lab, own, mask = found
    new = lab_to_srgb(np.asarray(target_lab) + (lab - own) * np.array([1.0, CHROMA_DETAIL, CHROMA_DETAIL]))
    alpha = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.BoxBlur(0.7))
    alpha = np.asarray(alpha, dtype=np.float64)[..., None] / 255.0
    return np.round(alpha * new + (1 - alpha) * image).astype(np.uint8)


def garment_colours(images: Sequence[np.ndarray], colour: str) -> np.ndarray:
    """(N, 3) CIELAB garment colours of the photos of one colour class (photos without a mask left out)."""
    found = [garment_mask(x, colour) for x in images]
    return np.array([f[1] for f in found if f is not None]).reshape(-1, 3)


def replace_colour(caption: str, old: str, new: str, vocabulary: Sequence[str] = tuple(REFERENCE_RGB)) -> Optional[str]:
    """The caption with its one colour name ``old`` replaced by ``new``; None when ``old`` is not in it exactly
    once, or when it names another colour of ``vocabulary`` too (the new caption would contradict the picture)."""
    def spans(name):
        return [m.span() for m in re.finditer(rf"\b{re.escape(name)}\b", caption, flags=re.IGNORECASE)]

    own = spans(old)
    if len(own) != 1:
        return None
    (start, end), = own
    for other in vocabulary:  # another colour outside the old name's own words ("Blue" inside "Navy Blue" is fine)
        if other != old and any(not (start <= s and e <= end) for s, e in spans(other)):
            return None
    return caption[:start] + new + caption[end:]


def _decode(cell) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB"))


def _encode(image: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def held_out_pairs(path) -> set:
    """(colour, article) pairs never to create: a JSON list of ``[colour, article]``, or a result file of
    ``bench_words_and_masks.py counterfactual`` (its ``pairs``)."""
    data = json.loads(Path(path).read_text())
    items = data["pairs"] if isinstance(data, dict) else data
    pairs = {(p["colour"], p["article"]) if isinstance(p, dict) else tuple(p) for p in items}
    if not pairs or not all(len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs):
        raise ValueError(f"{path}: expected [colour, article] pairs or a counterfactual result with 'pairs'")
    return pairs


def build(train_parquet: str, out: str, num_recoloured: int, num_replay: int, seed: int = 0,
          min_pair_rows: int = 3, palette_photos: int = 200, held_out: Optional[set] = None,
          new_pair_share: float = 0.0) -> Dict:
    """Writes the fine-tuning Parquet file (``image`` + ``text`` and provenance columns); returns a summary.

    ``min_pair_rows=0`` (only with ``held_out``) lets a photo take any colour, creating colour x article pairs the
    train split does not have, except the ``held_out`` ones (the benchmark's), which stay unseen; a photo whose
    article type has such colours left takes one of them with probability ``new_pair_share`` (most photos are of
    frequent types that already come in most colours)."""
    if min_pair_rows < 1 and not held_out:
        raise ValueError("min_pair_rows=0 creates unseen colour x article pairs; give held_out pairs to keep the benchmark's unseen")
    held_out = held_out or set()
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(train_parquet).to_pandas()
    rng = np.random.default_rng(seed)
    pairs = Counter(zip(table.baseColour, table.articleType))
    palette = {}
    for c in TARGET_COLOURS:
        rows = table[(table.baseColour == c) & table.masterCategory.isin(CATEGORIES)]
        pick = rng.choice(len(rows), min(palette_photos, len(rows)), replace=False)
        palette[c] = garment_colours([_decode(rows.image.iloc[i]) for i in pick], c)
    sources = table[table.baseColour.isin(SOURCE_COLOURS) & table.masterCategory.isin(CATEGORIES)]
    sources = sources.iloc[rng.permutation(len(sources))]
    out_rows, skipped = [], Counter()
    for _, r in sources.iterrows():
        if len(out_rows) >= num_recoloured:
            break
        targets = [c for c in TARGET_COLOURS if c != r.baseColour and len(palette[c])
                   and pairs[(c, r.articleType)] >= min_pair_rows and (c, r.articleType) not in held_out]
        if not targets:
            skipped["article has no other colour"] += 1
            continue
        new = [c for c in targets if pairs[(c, r.articleType)] == 0]
        if new and rng.random() < new_pair_share:
            targets = new
        target = targets[rng.integers(len(targets))]
        text = replace_colour(r.text, r.baseColour, target)
        if text is None:
            skipped["caption names no colour or two"] += 1
            continue
        image = recolour(_decode(r.image), r.baseColour, palette[target][rng.integers(len(palette[target]))])
        if image is None:
            skipped["no garment mask"] += 1
            continue
        out_rows.append({"image": _encode(image), "text": text, "source_id": int(r.id), "source_colour": r.baseColour,
                         "target_colour": target, "articleType": r.articleType, "recoloured": True})
    replay = table.iloc[rng.choice(len(table), min(num_replay, len(table)), replace=False)]
    for _, r in replay.iterrows():
        out_rows.append({"image": {"bytes": r.image["bytes"], "path": None}, "text": r.text, "source_id": int(r.id),
                         "source_colour": r.baseColour, "target_colour": r.baseColour, "articleType": r.articleType,
                         "recoloured": False})
    order = rng.permutation(len(out_rows))
    out_rows = [out_rows[i] for i in order]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(out_rows), out)
    recoloured = [r for r in out_rows if r["recoloured"]]
    summary = {"rows": len(out_rows), "recoloured": len(recoloured), "replay": len(out_rows) - len(recoloured),
               "skipped": dict(skipped), "target_colours": dict(Counter(r["target_colour"] for r in recoloured)),
               "palette_photos": {c: len(v) for c, v in palette.items()}, "min_pair_rows": min_pair_rows, "seed": seed,
               "new_pair_share": new_pair_share,
               "new_pairs": sum(pairs[(r["target_colour"], r["articleType"])] == 0 for r in recoloured),
               "distinct_new_pairs": len({(r["target_colour"], r["articleType"]) for r in recoloured
                                          if pairs[(r["target_colour"], r["articleType"])] == 0}),
               "held_out_pairs": len(held_out),
               "held_out_created": sum((r["target_colour"], r["articleType"]) in held_out for r in recoloured)}
    Path(out).with_suffix(".json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default="../shared/data/fashion-product-images/train.parquet",
                        help="train split Parquet (image, text, id, masterCategory, articleType, baseColour)")
    parser.add_argument("--out", required=True, help="Parquet file to write (a .json summary is written beside it)")
    parser.add_argument("--num_recoloured", type=int, default=6000)
    parser.add_argument("--num_replay", type=int, default=6000)
    parser.add_argument("--min_pair_rows", type=int, default=3,
                        help="recolour only to colours the article type has at least this many train rows of")
    parser.add_argument("--held_out_pairs", default=None,
                        help="JSON of colour x article pairs never to create (a list of [colour, article], or the result file of "
                             "`bench_words_and_masks.py counterfactual`); with it --min_pair_rows 0 creates every other unseen pair")
    parser.add_argument("--new_pair_share", type=float, default=0.5,
                        help="with --min_pair_rows 0: how often a photo whose article type has unseen colours left takes one of them")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0.0 <= args.new_pair_share <= 1.0:
        parser.error(f"--new_pair_share must be in [0, 1]; got {args.new_pair_share}")
    if args.min_pair_rows < 0 or (args.min_pair_rows == 0 and not args.held_out_pairs):
        parser.error("--min_pair_rows must be >= 1 (a recoloured photo must not create a colour x article pair that has no "
                     "train row), or 0 together with --held_out_pairs (the pairs that must stay unseen)")
    held_out = held_out_pairs(args.held_out_pairs) if args.held_out_pairs else None
    summary = build(args.train, args.out, args.num_recoloured, args.num_replay, args.seed, args.min_pair_rows, held_out=held_out,
                    new_pair_share=args.new_pair_share if held_out else 0.0)
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
