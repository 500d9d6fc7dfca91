"""Does the pipeline do what the words and the mask say? Five benchmarks on real photos (issue 16).

Each sub-benchmark is one command and writes ``NAME.json`` + ``NAME.md`` (+ ``NAME.jpg``, a few examples) to
benchmarks/results (runs/benchmarks-fast with --fast, whose numbers mean nothing). All use the shipped default
model (``M6FashionPipeline.from_pretrained()``, 192x256 outputs) at its default settings unless an option says
otherwise, and the project's own metrics: the attribute classifier (``evaluation/attribute_classifier.py``; it
reads 64x64 squares, so every 192x256 image is padded to a square on white and downscaled with PIL bicubic,
``evaluate_hr.classifier_view``, as in ``m6-fashion evaluate --height 256 --width 192``) and the Inception-v3
features of ``evaluation/metrics.py``.

    python benchmarks/bench_words_and_masks.py counterfactual --threads 1   # counterfactual_prompts.*
    python benchmarks/bench_words_and_masks.py inpainting --threads 1       # text_guided_inpainting.*
    python benchmarks/bench_words_and_masks.py seam --threads 1             # mixing_seam.*
    python benchmarks/bench_words_and_masks.py diversity --threads 1        # sample_diversity.*
    python benchmarks/bench_words_and_masks.py outpainting --threads 1      # outpainting_wider.*
    python benchmarks/bench_words_and_masks.py inpainting --fast            # CI smoke run of one of them

counterfactual
    Colour x article pairs with zero rows in the train split. Candidates: colours and article types with at
    least ``--min-rows`` (50) train rows among the Apparel and Footwear products, that the classifier knows (a class
    of its vocabulary that it gets right on at least ``--min-class-accuracy`` (40%) of at least ``--min-test-photos``
    (5) real test photos of those categories; colours "NA" and "Multi" left out); among the pairs of these with no train row at all, the
    ones whose colour and article are most frequent (product of the two counts) are taken greedily, at most
    ``--per-class`` (4) pairs per colour and per article, until ``--num-pairs`` (32). Captions are built as
    the dataset's are, ``"{gender} {colour} {noun}"`` (e.g. "Men Red Jeans"): gender = the article's most
    frequent gender in train, noun = the article's usual last word(s) in its train captions (see
    ``article_nouns``). ``--samples`` (4) images per caption. Scored: colour hit, article hit and both right
    (classifier), next to the ceiling: the classifier's accuracy on the real test photos (64-px split, Apparel
    and Footwear) of that colour class and of that article class, and their product for "both" (the classes
    never occur together, so there is no real photo of the pair). Reference: the most frequent pairs of the
    same candidate classes (at most one per article, two per colour), scored the same way, with the
    classifier on the real test photos of exactly that pair.
    Article judges: the attribute classifier reads colour and uses it as a cue for the article (red jeans look
    like track pants to it), so every image is also judged by the colour-blind article classifier
    (``pretrained/article-classifier-luma``: lightness only, trained with the garment's lightness randomised);
    "both right (luma judge)" = colour right by the attribute classifier and article right by the luma judge, its
    ceiling the product of the two classifiers' accuracies on the real test photos of the two classes. Judge check:
    up to ``--judge-photos`` (12) real test photos (64-px split) of each pair's article, in a colour the recolour
    tool can move (``m6_fashion.training.recolour``), recoloured to the pair's colour: both judges' article
    accuracy before and after, and "both right" on them (the nearest thing to real photos of an unseen pair).
    Besides plain guidance (``--guidance-scales``), the pairs are generated with the caption without its colour as
    ``negative_prompt`` ("Men Jeans" for "Men Orange Jeans") at ``--negative-guidance-scales`` (3): the guidance then
    pushes on what the colour word adds; and at the default guidance with that negative prompt in a third pass
    (``negative_guidance_scale``, ``--contrast-scales``: 4), which adds that push to full guidance. The first
    ``--guidance-scales`` value is the shipped text-to-image default
    (12); guided rows use the pipeline's ``guidance_min_p`` (0.1) unless ``--guidance-min-p`` is given.
inpainting
    Real high-resolution test photos of Topwear (subCategory), in row order. Mask: the central torso box,
    ``(W/4, 3H/8, 3W/4, 3H/4)`` = (48, 96, 144, 192) on 192x256 (whole 16-px token cells). Asked colour: from the
    fixed list ``ASKED_COLOURS`` (all classifier classes), those whose reference colour is at least
    ``CONTRAST_DELTA_E`` (CIELAB) from the median colour of the photo's masked region and that differ from the
    photo's baseColour; photo i takes candidate ``i mod len(candidates)``. Caption ``"{gender} {asked} {noun}"``
    of the photo's gender and article. Scored: the classifier's colour on the result = asked (hit rate), on the
    photo before the edit, and kept = the classifier's colour of the photo before the edit; the fraction of
    masked pixels whose nearest ``PALETTE`` colour (CIELAB) is the asked one (result vs photo); the mean / max
    absolute pixel change outside the mask (0-255; should be 0). Ceiling: the classifier on the real test
    photos (Apparel) of the asked colour classes.
seam
    Pairs of real Topwear test photos of the same article type (consecutive rows of that type). Style mixing as
    in the README: ``pipe(image=A, style_image=B, mask_image=lower half)``; the seam is the line between rows
    H/2 - 1 and H/2. Statistics on the uint8 output: the seam jump (mean over columns of the RGB distance
    between the two rows on either side of the line), the mean gradient magnitude in the band of rows
    [H/2 - 32, H/2 + 32), the blockiness in that band (mean jump across 16-px token-cell lines over the mean
    jump across all other lines; 1 = no grid) and the off-colour fraction (band pixels farther than
    ``OFF_COLOUR_DELTA_E`` in CIELAB from every pixel of both sources within ``OFF_COLOUR_RADIUS`` pixels of the same
    place: colours neither source has there). The same on the two sources, on a naive
    paste (A's top + B's bottom), on that paste through the tokenizer + decoder (no sampling), and the first
    four on the real Topwear test photos at the same line.
diversity
    Frequent captions: the most frequent (gender, colour, article) triples of the train split (one per
    article, articles the classifier knows), as ``"{gender} {colour} {noun}"``, that have at least
    ``--samples`` high-resolution train photos of the same articleType and baseColour. ``--samples`` (10)
    images per caption with each ``--sampling`` setting of the scheduler (default: the model's own; a constant
    temperature 1.0; temperature 1.5 -> 0.6; the same with confidence noise 8 -> 1), all without guidance, and
    with the model's own sampling at each ``--guidance-scales`` value above 1 (none by default). Diversity = mean pairwise L2
    distance between the Inception-v3 pool features of the images of one caption, next to the same figure for
    ``--samples`` real photos (random, seeded) sharing the caption's articleType and baseColour; also the mean
    pairwise absolute pixel difference, at full size and after area-downsampling to 24x32 (``COARSE``: shape, pose,
    layout and colour, where artefacts of the decoder weigh little). FID/KID of all samples against the 798 real high-resolution test
    photos, next to the real photos' own FID against that reference (the floor at that sample count).
outpainting
    Real Topwear test photos stored at 192x256, in row order. (1) At the photo's own scale onto a canvas 1.5x
    wider (288x256): the pipeline is asked for it and the result (made or refused, with the error) recorded.
    (2) The widest canvas outpainting makes at the photo's height (2x the decoder's square: 512x256), the photo
    at its own scale in the middle.
    (3) 1.5x wider than the input inside the output: the central 128 columns of the photo placed in the box
    (32, 0, 160, 256) of the 192x256 output, the real photo being the truth for the 64 new columns. Scored: the
    fraction of non-white pixels (any channel < 235) in the new area, and whether the garment continues
    across the border (rows where the placed image's outer two columns are non-white: fraction whose 8-px strip
    outside is at least half non-white), next to the real photo's figures where there is one; the mean
    absolute difference to the truth in the new area and the change of the placed image (should be 0).
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import _common  # noqa: F401  (puts src/ on the path)
from _common import REPO_ROOT, add_run_args, command_line, environment, fmt, header, markdown_table, now, out_dir, set_threads, write_results
from m6_fashion_core.validation import DEFAULT_TEXT_GUIDANCE_SCALE
from m6_fashion_core.sampling import SCHEDULE_KEYS, describe_config

DATA_64 = REPO_ROOT.parent / "shared" / "data" / "fashion-product-images"
DATA_HR = REPO_ROOT.parent / "shared" / "data" / "fashion-product-images-hr"
CACHE_DIR = REPO_ROOT / ".cache" / "m6-fashion"
CATEGORIES = ("Apparel", "Footwear")
NO_COLOUR = ("NA", "Multi")
ASKED_COLOURS = ("Red", "Green", "Yellow", "Blue", "Pink", "Purple", "Orange", "Black", "White")
# reference sRGB of colour names, for the contrast rule and the nearest-colour pixel count (CIELAB distances)
PALETTE = {
    "Black": (20, 20, 20), "White": (245, 245, 245), "Grey": (128, 128, 128), "Red": (200, 30, 40), "Maroon": (115, 20, 35),
    "Pink": (240, 140, 180), "Orange": (245, 130, 40), "Yellow": (245, 215, 50), "Green": (40, 150, 60), "Olive": (110, 110, 40),
    "Blue": (40, 90, 200), "Navy Blue": (30, 35, 80), "Purple": (110, 50, 150), "Brown": (115, 70, 40), "Beige": (215, 195, 155),
}
CONTRAST_DELTA_E = 40.0
OFF_COLOUR_DELTA_E = 20.0
OFF_COLOUR_RADIUS = 16  # pixels around the same place in the two sources that count as "there"
WHITE_LEVEL = 235  # a pixel is white when every channel is >= this
NAMES = {"counterfactual": "counterfactual_prompts", "inpainting": "text_guided_inpainting", "seam": "mixing_seam",
         "diversity": "sample_diversity", "outpainting": "outpainting_wider"}
TARGETS = {  # the "done when" figures
    "counterfactual": 0.5,  # both right >= 50% of the ceiling
    "inpainting": 0.7,  # asked colour seen >= 70%
    "diversity": 0.75,  # within 25% of the real-photo figure
}


# ============================================================================================== data helpers
def train_metadata(columns=("text", "gender", "masterCategory", "articleType", "baseColour")):
    import pyarrow.parquet as pq

    return pq.read_table(DATA_64 / "train.parquet", columns=list(columns)).to_pandas()


def hr_metadata(split: str, columns=("id", "subCategory", "articleType", "baseColour", "gender", "source_width", "source_height")):
    import pyarrow.parquet as pq

    return pq.read_table(DATA_HR / f"{split}.parquet", columns=list(columns)).to_pandas()


def _norm(word: str) -> str:
    return re.sub(r"[^a-z]", "", word.lower())


def article_nouns(meta) -> Dict[str, str]:
    """The word(s) the train captions of each article type end with, as a caption noun.

    The most frequent last two words if they hold at least 30% of the type's captions and do not start with a
    colour word ("Casual Shoes", "Track Pants"); else the most frequent last word that starts like the type's
    name ("T-shirt" for Tshirts, "Heels" for Heels); else the most frequent last word.
    """
    colour_words = {_norm(w) for c in meta["baseColour"].dropna().unique() for w in str(c).split()}
    out = {}
    for article, texts in meta.groupby("articleType")["text"]:
        words = [t.split() for t in texts if isinstance(t, str) and t.split()]
        if not words:
            continue
        last1 = Counter(w[-1] for w in words)
        last2 = Counter(" ".join(w[-2:]) for w in words if len(w) > 1 and _norm(w[-2]) not in colour_words)
        if last2:
            bigram, n = last2.most_common(1)[0]
            if n >= 0.3 * len(words):
                out[article] = bigram
                continue
        key = _norm(article)[:4]
        same = [w for w, _ in last1.most_common() if _norm(w)[:4] == key]
        out[article] = same[0] if same else last1.most_common(1)[0][0]
    return out


def article_genders(meta) -> Dict[str, str]:
    return {a: g.value_counts().index[0] for a, g in meta.groupby("articleType")["gender"]}


def caption(gender: str, colour: str, noun: str) -> str:
    return f"{gender} {colour} {noun}"


def hr_test(pipe):
    """The high-resolution test photos at the pipeline's default size (cached by evaluate_hr) + their subCategory."""
    from m6_fashion.evaluation.evaluate_hr import load_hr_split

    h, w = pipe.default_size
    data = load_hr_split("test", h, w, pipe.sample_size, data_dir=DATA_HR, cache_dir=CACHE_DIR)
    meta = hr_metadata("test").set_index("id")
    ids = data["ids"].tolist()
    data["subCategory"] = [meta.loc[i, "subCategory"] for i in ids]
    return data


def real_test_predictions(classifier, categories=CATEGORIES, *more) -> Dict:
    """The classifier on the 64-px test split, restricted to `categories`: predictions and true labels per row.
    With `more` classifiers, one such dict per classifier (the split is read once)."""
    import pyarrow.parquet as pq

    from m6_fashion.evaluation.attribute_classifier import load_split_cache

    data = load_split_cache("test", data_dir=DATA_64, cache_dir=CACHE_DIR)
    table = pq.read_table(DATA_64 / "test.parquet", columns=["id", "masterCategory"]).to_pydict()
    cats = dict(zip(table["id"], table["masterCategory"]))
    keep = [i for i, x in enumerate(data["ids"].tolist()) if cats.get(x) in categories]
    true = [{"baseColour": data["baseColour"][i], "articleType": data["articleType"][i]} for i in keep]
    out = [{"pred": c.predict(data["images"][keep]), "true": true} for c in (classifier, *more)]
    return out if more else out[0]


def recoloured_test_photos(pairs, per_pair: int, categories=CATEGORIES) -> Dict[Tuple[str, str], List]:
    """For each (colour, article): up to `per_pair` real 64-px test photos of the article (in `categories`, in row
    order) whose garment the recolour tool can move from its own colour class, as (original, recoloured to the pair's
    colour) uint8 (H, W, 3) arrays."""
    import io

    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    from m6_fashion.training import recolour as rc

    t = pq.read_table(DATA_64 / "test.parquet", columns=["image", "articleType", "baseColour", "masterCategory"]).to_pandas()
    t = t[t["masterCategory"].isin(categories) & t["baseColour"].isin(rc.SOURCE_COLOURS)]
    out = {}
    for colour, article in pairs:
        found = []
        for cell, own in zip(t.loc[t["articleType"] == article, "image"], t.loc[t["articleType"] == article, "baseColour"]):
            if own == colour:
                continue
            x = np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB"))
            y = rc.recolour(x, own, rc.srgb_to_lab(rc.REFERENCE_RGB[colour]))
            if y is not None:
                found.append((x, y))
            if len(found) == per_pair:
                break
        out[(colour, article)] = found
    return out


def judge_check(pairs, classifier, luma, per_pair: int) -> Dict:
    """Both article judges (and the colour judge) on real photos of each pair's article recoloured to its colour."""
    from m6_fashion.image_processing import preprocess

    photos = recoloured_test_photos(pairs, per_pair)
    per, tot = [], Counter()
    for (colour, article), found in photos.items():
        if not found:
            per.append({"colour": colour, "article": article, "photos": 0})
            continue
        before, after = [preprocess([im[k] for im in found], classifier.config.sample_size) for k in (0, 1)]
        rgb_b, rgb_a = classifier.predict(before), classifier.predict(after)
        luma_b, luma_a = luma.predict(before), luma.predict(after)
        r = {"colour": colour, "article": article, "photos": len(found),
             "article_rgb_before": sum(p["articleType"] == article for p in rgb_b),
             "article_rgb_after": sum(p["articleType"] == article for p in rgb_a),
             "article_luma_before": sum(p["articleType"] == article for p in luma_b),
             "article_luma_after": sum(p["articleType"] == article for p in luma_a),
             "colour_after": sum(p["baseColour"] == colour for p in rgb_a),
             "both_rgb_after": sum(p["baseColour"] == colour and p["articleType"] == article for p in rgb_a),
             "both_luma_after": sum(p["baseColour"] == colour and q["articleType"] == article for p, q in zip(rgb_a, luma_a)),
             "rgb_saw_after": dict(Counter(p["articleType"] for p in rgb_a).most_common(3))}
        per.append(r)
        tot.update({k: v for k, v in r.items() if isinstance(v, int)})
    n = tot["photos"]
    rates = {k: (tot[k] / n if n else None) for k in ("article_rgb_before", "article_rgb_after", "article_luma_before", "article_luma_after",
                                                   "colour_after", "both_rgb_after", "both_luma_after")}
    return {"photos": n, "pairs_with_photos": sum(r["photos"] > 0 for r in per), "per_photo_limit": per_pair, **rates, "per_pair": per}


def class_accuracy(acc: Dict, head: str, label: str) -> Tuple[Optional[float], int]:
    hits = [p[head] == label for p, t in zip(acc["pred"], acc["true"]) if t[head] == label]
    return (sum(hits) / len(hits) if hits else None), len(hits)


def pair_accuracy(acc: Dict, colour: str, article: str) -> Tuple[Optional[float], int]:
    hits = [p["baseColour"] == colour and p["articleType"] == article for p, t in zip(acc["pred"], acc["true"])
            if t["baseColour"] == colour and t["articleType"] == article]
    return (sum(hits) / len(hits) if hits else None), len(hits)


# ============================================================================================== image helpers
def to_pil(images_uint8) -> list:
    import PIL.Image

    import numpy as np

    return [PIL.Image.fromarray(np.ascontiguousarray(a)) for a in images_uint8.permute(0, 2, 3, 1).numpy()]


def classify(classifier, images_uint8, *more):
    """Predictions of the classifier on uint8 (B, 3, H, W) images (padded and downscaled once, `classifier_view`);
    with `more` classifiers of the same input size, one list per classifier."""
    from m6_fashion.evaluation.evaluate_hr import classifier_view

    view = classifier_view(images_uint8, classifier.config.sample_size)
    out = [c.predict(view) for c in (classifier, *more)]
    return out if more else out[0]


def srgb_to_lab(rgb):
    """uint8/float sRGB (..., 3) in 0-255 -> CIELAB (D65), float32 numpy (the recolouring tool's conversion)."""
    import numpy as np
    from m6_fashion.training.recolour import srgb_to_lab as to_lab

    return to_lab(rgb).astype(np.float32)


PALETTE_NAMES = list(PALETTE)


def palette_lab():
    return srgb_to_lab([PALETTE[n] for n in PALETTE_NAMES])


def nearest_palette(pixels_hw3):
    """(..., 3) uint8 -> index of the nearest PALETTE colour (CIELAB) per pixel."""
    import numpy as np

    lab = srgb_to_lab(pixels_hw3)
    d = ((lab[..., None, :] - palette_lab()) ** 2).sum(-1)
    return np.argmin(d, -1)


def non_white(x):
    """uint8 (B, 3, H, W) -> bool (B, H, W): some channel below WHITE_LEVEL."""
    return x.min(1).values < WHITE_LEVEL


def batched(pipe, calls: List[Dict], batch_size: int, seed: int, **common):
    """Runs the pipeline over per-image keyword dicts in batches (lists per key); uint8 images and seconds/image."""
    import torch

    from m6_fashion.evaluation.metrics import to_uint8

    out, t0 = [], time.perf_counter()
    for j, i in enumerate(range(0, len(calls), batch_size)):
        chunk = calls[i : i + batch_size]
        kwargs = {k: [c[k] for c in chunk] for k in chunk[0]}
        res = pipe(**kwargs, **common, generator=torch.Generator().manual_seed(seed + j), output_type="pt")
        out.append(to_uint8(res.images))
    seconds = time.perf_counter() - t0
    return torch.cat(out), seconds / max(1, len(calls))


def save_strip(path: Path, columns: Sequence[Sequence], labels: Sequence[str] = ()) -> None:
    """A JPEG grid: one row per example, one column per image kind (uint8 (3, H, W) tensors or PIL images)."""
    import PIL.Image
    import PIL.ImageDraw

    rows = [[im if isinstance(im, PIL.Image.Image) else to_pil(im[None])[0] for im in col] for col in columns]
    w = max(im.width for r in rows for im in r)
    h = max(im.height for r in rows for im in r)
    pad, text_h = 4, (14 if labels else 0)
    grid = PIL.Image.new("RGB", (len(rows[0]) * (w + pad) + pad, len(rows) * (h + pad + text_h) + pad), (255, 255, 255))
    draw = PIL.ImageDraw.Draw(grid)
    for r, row in enumerate(rows):
        y = pad + r * (h + pad + text_h)
        if labels:
            draw.text((pad, y), labels[r][:150], fill=(0, 0, 0))
        for c, im in enumerate(row):
            grid.paste(im.convert("RGB"), (pad + c * (w + pad), y + text_h))
    grid.save(path, quality=88)


def _load_pipe(model):
    from m6_fashion.pipelines import M6FashionPipeline

    pipe = M6FashionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _base(name: str, args, pipe) -> Dict:
    return {"benchmark": NAMES[name], "date": now(), "command": command_line(), "environment": environment(), "fast": args.fast,
            "model": args.model or "shipped default (M6FashionPipeline.from_pretrained())",
            "output_size": list(pipe.default_size), "steps": args.steps,
            "scheduler_temperature": float(pipe.scheduler.config.temperature), "sampling": sampling_label(pipe.scheduler.config)}


def _dropout_steps(value: str):
    """``--context-dropout-steps`` entries: 'default' or a whole number >= 0."""
    if value == "default":
        return value
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"must be 'default' or a whole number >= 0; got {value!r}")
    return int(value)


def _accuracy(acc: Dict, head: str) -> float:
    return sum(p[head] == t[head] for p, t in zip(acc["pred"], acc["true"])) / max(1, len(acc["pred"]))


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


# ============================================================================================== (a) counterfactual
def recognised(acc: Dict, head: str, label: str, min_accuracy: float, min_photos: int) -> bool:
    """The classifier knows the class: it is in its vocabulary and it recognises it on the real test photos."""
    a, n = class_accuracy(acc, head, label)
    return a is not None and n >= min_photos and a >= min_accuracy


def choose_pairs(meta, classifier, acc, min_rows: int, num_pairs: int, num_frequent: int, per_class: int, min_accuracy: float,
                 min_photos: int):
    sub = meta[meta["masterCategory"].isin(CATEGORIES)]
    cc, ac = sub["baseColour"].value_counts(), sub["articleType"].value_counts()
    known_c, known_a = set(classifier.labels("baseColour")), set(classifier.labels("articleType"))
    colours = [c for c, n in cc.items() if n >= min_rows and c in known_c and c not in NO_COLOUR
               and recognised(acc, "baseColour", c, min_accuracy, min_photos)]
    articles = [a for a, n in ac.items() if n >= min_rows and a in known_a and recognised(acc, "articleType", a, min_accuracy, min_photos)]
    counts = Counter(zip(meta["baseColour"], meta["articleType"]))  # the whole train split

    def greedy(cands, cap_c, cap_a, limit):
        used_c, used_a, out = Counter(), Counter(), []
        for c, a in cands:
            if used_c[c] < cap_c and used_a[a] < cap_a:
                out.append((c, a))
                used_c[c] += 1
                used_a[a] += 1
                if len(out) == limit:
                    break
        return out

    zero = sorted(((c, a) for c in colours for a in articles if counts[(c, a)] == 0), key=lambda p: (-int(cc[p[0]]) * int(ac[p[1]]), p))
    frequent = sorted(((c, a) for c in colours for a in articles if counts[(c, a)] > 0), key=lambda p: (-counts[p], p))
    info = {"candidate_colours": len(colours), "candidate_articles": len(articles), "zero_row_pairs": len(zero),
            "colour_rows": {c: int(cc[c]) for c in colours}, "article_rows": {a: int(ac[a]) for a in articles}}
    return greedy(zero, per_class, per_class, num_pairs), greedy(frequent, 2, 1, num_frequent), counts, info


def run_counterfactual(args) -> Dict:
    from m6_fashion.evaluation.attribute_classifier import load_default_classifier, load_luma_classifier

    pipe = _load_pipe(args.model)
    classifier, luma = load_default_classifier(), load_luma_classifier()
    meta = train_metadata()
    nouns, genders = article_nouns(meta), article_genders(meta)
    if luma.config.sample_size != classifier.config.sample_size:
        raise ValueError(f"the two judges read different sizes ({classifier.config.sample_size} vs {luma.config.sample_size} px)")
    acc, acc_luma = real_test_predictions(classifier, CATEGORIES, luma)
    pairs, frequent, counts, info = choose_pairs(meta, classifier, acc, args.min_rows, args.num_pairs, args.num_frequent, args.per_class,
                                                 args.min_class_accuracy, args.min_test_photos)

    def describe(c, a):
        ca, nc = class_accuracy(acc, "baseColour", c)
        aa, na = class_accuracy(acc, "articleType", a)
        al, _ = class_accuracy(acc_luma, "articleType", a)
        pa, npair = pair_accuracy(acc, c, a)
        return {"colour": c, "article": a, "caption": caption(genders[a], c, nouns[a]), "train_rows_pair": counts[(c, a)],
                "train_rows_colour": info["colour_rows"][c], "train_rows_article": info["article_rows"][a],
                "ceiling_colour": ca, "test_photos_colour": nc, "ceiling_article": aa, "test_photos_article": na,
                "ceiling_both_product": None if ca is None or aa is None else ca * aa,
                "ceiling_article_luma": al, "ceiling_both_luma_product": None if ca is None or al is None else ca * al,
                "real_both_right": pa, "test_photos_pair": npair}

    sets = {"counterfactual": [describe(c, a) for c, a in pairs], "frequent": [describe(c, a) for c, a in frequent]}
    for it in sets["counterfactual"]:
        it["negative_prompt"] = f"{genders[it['article']]} {nouns[it['article']]}"  # the caption without its colour
    rows, strips = [], {}
    # (guidance, with the caption without its colour as negative prompt, negative_guidance_scale)
    g0 = args.guidance_scales[0]
    settings = {"counterfactual": [(g, False, None) for g in args.guidance_scales] + [(g0, True, s) for s in args.contrast_scales]
                + [(g, True, None) for g in args.negative_guidance_scales],
                "frequent": [(g0, False, None)]}
    for set_name in ("counterfactual", "frequent"):
        items = sets[set_name]
        for g, negative, contrast in settings[set_name]:
            calls = [{"prompt": it["caption"], **({"negative_prompt": it["negative_prompt"]} if negative else {})}
                     for it in items for _ in range(args.samples)]
            extra = {} if args.guidance_min_p is None or g <= 1.0 else {"guidance_min_p": args.guidance_min_p}
            if contrast is not None:
                extra["negative_guidance_scale"] = contrast
            images, spi = batched(pipe, calls, args.batch_size, args.seed, num_inference_steps=args.steps, guidance_scale=g, **extra)
            preds, preds_luma = classify(classifier, images, luma)
            per_pair = []
            for k, it in enumerate(items):
                p = preds[k * args.samples : (k + 1) * args.samples]
                q = preds_luma[k * args.samples : (k + 1) * args.samples]
                col = [x["baseColour"] == it["colour"] for x in p]
                art = [x["articleType"] == it["article"] for x in p]
                art_l = [x["articleType"] == it["article"] for x in q]
                per_pair.append({"colour": it["colour"], "article": it["article"], "colour_hits": sum(col), "article_hits": sum(art),
                                 "both_hits": sum(a and b for a, b in zip(col, art)), "article_hits_luma": sum(art_l),
                                 "both_hits_luma": sum(a and b for a, b in zip(col, art_l)), "samples": len(p),
                                 "predicted_colours": dict(Counter(x["baseColour"] for x in p).most_common()),
                                 "predicted_articles": dict(Counter(x["articleType"] for x in p).most_common()),
                                 "predicted_articles_luma": dict(Counter(x["articleType"] for x in q).most_common())})
            n = len(preds)
            hit = {key: sum(r[key] for r in per_pair) / n for key in ("colour_hits", "article_hits", "both_hits", "article_hits_luma", "both_hits_luma")}
            ceil_both = _mean([it["ceiling_both_product"] for it in items])
            ceil_both_l = _mean([it["ceiling_both_luma_product"] for it in items])
            rows.append({"set": set_name, "guidance_scale": g, "negative_prompt": "the caption without its colour" if negative else None,
                         "negative_guidance_scale": contrast,
                         "pairs": len(items), "images": n, "hit_colour": hit["colour_hits"],
                         "hit_article": hit["article_hits"], "hit_both": hit["both_hits"],
                         "hit_article_luma": hit["article_hits_luma"], "hit_both_luma": hit["both_hits_luma"],
                         "pairs_with_a_both_right_sample": sum(r["both_hits"] > 0 for r in per_pair),
                         "pairs_with_a_both_right_sample_luma": sum(r["both_hits_luma"] > 0 for r in per_pair),
                         "ceiling_colour": _mean([it["ceiling_colour"] for it in items]),
                         "ceiling_article": _mean([it["ceiling_article"] for it in items]), "ceiling_both_product": ceil_both,
                         "ceiling_article_luma": _mean([it["ceiling_article_luma"] for it in items]),
                         "ceiling_both_luma_product": ceil_both_l,
                         "real_both_right": _mean([it["real_both_right"] for it in items]),
                         "both_over_ceiling": hit["both_hits"] / ceil_both if ceil_both else None,
                         "both_luma_over_ceiling": hit["both_hits_luma"] / ceil_both_l if ceil_both_l else None,
                         "seconds_per_image": spi, "per_pair": per_pair})
            strips.setdefault(set_name, (images, items))
            if negative:
                strips.setdefault("negative", (images, items, g, contrast))
    data = _base("counterfactual", args, pipe)
    data.update({
        "settings": {"min_rows": args.min_rows, "min_class_accuracy": args.min_class_accuracy, "min_test_photos": args.min_test_photos,
                     "num_pairs": args.num_pairs, "num_frequent": args.num_frequent, "per_class": args.per_class,
                     "samples": args.samples, "guidance_scales": args.guidance_scales,
                     "negative_guidance_scales": args.negative_guidance_scales, "contrast_scales": args.contrast_scales,
                     "guidance_min_p": args.guidance_min_p, "seed": args.seed, "batch_size": args.batch_size,
                     "categories": list(CATEGORIES)},
        "selection": {k: v for k, v in info.items() if k not in ("colour_rows", "article_rows")},
        "pairs": sets["counterfactual"], "frequent_pairs": sets["frequent"], "rows": rows,
        "test_photos_scored": len(acc["pred"]),
        "judge_check": judge_check(pairs, classifier, luma, args.judge_photos),
        "luma_judge": {"test_accuracy_articleType": _accuracy(acc_luma, "articleType"), "rgb_test_accuracy_articleType": _accuracy(acc, "articleType")},
        "target": {"both_over_ceiling": TARGETS["counterfactual"]},
    })
    images, items = strips["counterfactual"]
    k = min(8, len(items))
    shown = min(4, args.samples)
    cols = [[images[i * args.samples + s] for s in range(shown)] for i in range(k)]
    label = f" (0 train rows; {shown} seeds"
    if "negative" in strips:  # the same seeds with the negative prompt beside them
        neg, _, g, contrast = strips["negative"]
        cols = [row + [neg[i * args.samples + s] for s in range(shown)] for i, row in enumerate(cols)]
        right = (f"guidance {g:g} plus {contrast:g} x (caption - the caption without its colour)" if contrast is not None
                 else f"guidance {g:g} with the caption without its colour as negative prompt")
        label += f"; left: guidance {args.guidance_scales[0]:g}, right: {right}"
    data["examples"] = f"{NAMES['counterfactual']}.jpg"
    data["_strip"] = (cols, [it["caption"] + label + ")" for it in items[:k]])
    return data


def render_counterfactual(d) -> str:
    s = d["settings"]
    md = [header("Counterfactual prompts: colour x article pairs never seen together", d)]
    md.append(f"{len(d['pairs'])} colour x article pairs with zero train rows (colours and articles each with >= {s['min_rows']} train rows "
              f"among {' and '.join(s['categories'])} products, classes the classifier knows: it gets >= {s['min_class_accuracy']:.0%} of "
              f">= {s['min_test_photos']} real test photos of the class right; at most {s['per_class']} pairs per class), "
              f"{s['samples']} samples each, T={d['steps']}, seed {s['seed']}, {d['output_size'][1]}x{d['output_size'][0]} outputs. "
              f"Reference: the {len(d['frequent_pairs'])} most frequent pairs of the same candidate classes. Ceiling: the "
              f"classifiers on the real test photos of the same colour classes and article classes ({d['test_photos_scored']} test photos of "
              "those categories); for both attributes the product of the two (no real photo of an unseen pair exists). Colour is always "
              "judged by the attribute classifier; the article by the attribute classifier (RGB) and by the colour-blind luma judge.\n")
    rows = []
    for r in d["rows"]:
        neg = ", negative prompt: the caption without its colour" if r.get("negative_prompt") else ""
        if r.get("negative_guidance_scale") is not None:
            neg = f" plus {r['negative_guidance_scale']:g} x (caption - the caption without its colour), a third pass"
        rows.append([f"{r['set']} pairs, guidance {r['guidance_scale']:g}{neg}", r["images"], fmt(r["hit_colour"]),
                     f"{fmt(r['hit_article'])} / {fmt(r.get('hit_article_luma'))}", f"{fmt(r['hit_both'])} / {fmt(r.get('hit_both_luma'))}",
                     f"{r['pairs_with_a_both_right_sample']} / {r.get('pairs_with_a_both_right_sample_luma', '')} of {r['pairs']}",
                     fmt(r["ceiling_colour"]), f"{fmt(r['ceiling_article'])} / {fmt(r.get('ceiling_article_luma'))}",
                     f"{fmt(r['ceiling_both_product'])} / {fmt(r.get('ceiling_both_luma_product'))}",
                     fmt(r["real_both_right"]) if r["set"] == "frequent" else "",
                     f"{fmt(r['both_over_ceiling'], 2)} / {fmt(r.get('both_luma_over_ceiling'), 2)}"])
    md.append(markdown_table(["prompts", "images", "hit colour", "hit article (RGB / luma judge)", "both right (RGB / luma)",
                              "pairs with >= 1 both right (RGB / luma)", "ceiling colour", "ceiling article (RGB / luma)",
                              "ceiling both, product (RGB / luma)", "real photos of the pair: both right (RGB)",
                              "both / ceiling (RGB / luma)"], rows))
    md.append(f"\nTarget of issue 16: both right >= {TARGETS['counterfactual']:.0%} of the ceiling on the counterfactual pairs.\n")
    j = d.get("judge_check")
    if j:
        lj = d["luma_judge"]
        md.append(f"Judge check: {j['photos']} real test photos of the pairs' articles ({j['pairs_with_photos']} of {len(d['pairs'])} pairs; "
                  f"at most {j['per_photo_limit']} each) recoloured to the pair's colour by `m6_fashion.training.recolour`. The article "
                  f"accuracy of a judge should not fall when only the colour changes. Article accuracy on all real test photos of these "
                  f"categories: RGB classifier {fmt(lj['rgb_test_accuracy_articleType'])}, luma judge {fmt(lj['test_accuracy_articleType'])}.\n")
        md.append(markdown_table(
            ["", "article right (RGB classifier)", "article right (luma judge)", "colour right", "both right (RGB)", "both right (luma judge)"],
            [["the photos as they are", fmt(j["article_rgb_before"]), fmt(j["article_luma_before"]), "", "", ""],
             ["recoloured to the pair's colour", fmt(j["article_rgb_after"]), fmt(j["article_luma_after"]), fmt(j["colour_after"]),
              fmt(j["both_rgb_after"]), fmt(j["both_luma_after"])]]))
        md.append("")
    first = next(r for r in d["rows"] if r["set"] == "counterfactual")
    pr = []
    for it, r in zip(d["pairs"], first["per_pair"]):
        pc = ", ".join(f"{k} {v}" for k, v in r["predicted_colours"].items())
        pa = ", ".join(f"{k} {v}" for k, v in r["predicted_articles"].items())
        pl = ", ".join(f"{k} {v}" for k, v in r.get("predicted_articles_luma", {}).items())
        pr.append([it["caption"], f"{it['train_rows_colour']} / {it['train_rows_article']}", f"{r['colour_hits']}/{r['samples']}",
                   f"{r['article_hits']} / {r.get('article_hits_luma', '')} of {r['samples']}",
                   f"{r['both_hits']} / {r.get('both_hits_luma', '')} of {r['samples']}", pc, pa, pl,
                   f"{fmt(it['ceiling_colour'], 2)} ({it['test_photos_colour']}) / {fmt(it['ceiling_article'], 2)} / "
                   f"{fmt(it.get('ceiling_article_luma'), 2)} ({it['test_photos_article']})"])
    md.append(f"Per pair at guidance {first['guidance_scale']:g}:\n")
    md.append(markdown_table(["caption", "train rows colour / article", "colour", "article (RGB / luma)", "both (RGB / luma)",
                              "classifier saw (colour)", "classifier saw (article)", "luma judge saw (article)",
                              "ceiling colour (n) / article RGB / luma (n)"], pr))
    md.append(f"\n![examples]({d['examples']})")
    return "\n".join(md)


# ============================================================================================== (b) inpainting
def mask_box(h: int, w: int) -> Tuple[int, int, int, int]:
    """The central torso box (left, top, right, bottom): the middle half of the width, rows 3/8 to 3/4 of the height."""
    return (w // 4, 3 * h // 8, 3 * w // 4, 3 * h // 4)


def choose_asked(region_uint8, base_colour: str, i: int) -> str:
    """The i-th (cyclically) colour of ASKED_COLOURS that contrasts with the region (median CIELAB) and is not its label."""
    import numpy as np

    med = np.median(region_uint8.reshape(-1, 3), axis=0)
    lab = srgb_to_lab(med)
    cands = [c for c in ASKED_COLOURS if c != base_colour and float(np.linalg.norm(srgb_to_lab(PALETTE[c]) - lab)) >= CONTRAST_DELTA_E]
    return cands[i % len(cands)]


def run_inpainting(args) -> Dict:
    from m6_fashion.pipelines.pipeline_m6fashion import CONTEXT_DROPOUT_SHARE

    import numpy as np
    import PIL.Image

    from m6_fashion.evaluation.attribute_classifier import load_default_classifier

    pipe = _load_pipe(args.model)
    classifier = load_default_classifier()
    meta = train_metadata()
    nouns, h, w = article_nouns(meta), *pipe.default_size
    data_hr = hr_test(pipe)
    idx = [i for i, s in enumerate(data_hr["subCategory"]) if s == "Topwear" and data_hr["articleType"][i] in nouns][: args.num_photos]
    photos = data_hr["images"][idx]
    box = mask_box(h, w)
    left, top, right, bottom = box
    mask = PIL.Image.new("L", (w, h), 0)
    mask.paste(255, box)
    inside = np.zeros((h, w), bool)
    inside[top:bottom, left:right] = True
    cases = []
    for k, i in enumerate(idx):
        region = photos[k, :, top:bottom, left:right].permute(1, 2, 0).numpy()
        asked = choose_asked(region, data_hr["baseColour"][i], k)
        cases.append({"id": int(data_hr["ids"][i]), "articleType": data_hr["articleType"][i], "baseColour": data_hr["baseColour"][i],
                      "asked": asked, "prompt": caption(data_hr["gender"][i], asked, nouns[data_hr["articleType"][i]])})
    before = classify(classifier, photos)
    pal_before = nearest_palette(photos.permute(0, 2, 3, 1).numpy()[:, inside])
    pils = to_pil(photos)
    acc = real_test_predictions(classifier)
    ceil = {c: class_accuracy(acc, "baseColour", c) for c in sorted({x["asked"] for x in cases})}
    rows, examples = [], []
    for g, cds in [(g, cds) for cds in args.context_dropout_steps for g in args.guidance_scales]:
        calls = [{"prompt": c["prompt"], "image": pils[k]} for k, c in enumerate(cases)]
        extra = {} if cds == "default" else {"context_dropout_steps": cds}  # "default": the pipeline's own choice
        out, spi = batched(pipe, calls, args.batch_size, args.seed, mask_image=mask, num_inference_steps=args.steps, guidance_scale=g, **extra)
        after = classify(classifier, out)
        pal_after = nearest_palette(out.permute(0, 2, 3, 1).numpy()[:, inside])
        diff = (out.int() - photos.int()).abs().float()
        outside = diff[:, :, ~torch_bool(inside)]
        per = []
        for k, c in enumerate(cases):
            a = PALETTE_NAMES.index(c["asked"])
            per.append({**c, "classifier_before": before[k]["baseColour"], "classifier_after": after[k]["baseColour"],
                        "asked_pixels_before": float((pal_before[k] == a).mean()), "asked_pixels_after": float((pal_after[k] == a).mean()),
                        "outside_mean_abs_diff": float(outside[k].mean()), "outside_max_abs_diff": float(outside[k].max()),
                        "inside_mean_abs_diff": float(diff[k][:, torch_bool(inside)].mean())})
        n = len(per)
        rows.append({
            "guidance_scale": g, "photos": n, "seconds_per_image": spi, "pipeline_default": cds == "default",
            # what ran: the pipeline's default for text-guided inpainting is round(CONTEXT_DROPOUT_SHARE * T)
            "context_dropout_steps": round(CONTEXT_DROPOUT_SHARE * args.steps) if cds == "default" else cds,
            "hit_asked_colour": sum(p["classifier_after"] == p["asked"] for p in per) / n,
            "asked_colour_before_edit": sum(p["classifier_before"] == p["asked"] for p in per) / n,
            "kept_colour_before_edit": sum(p["classifier_after"] == p["classifier_before"] for p in per) / n,
            "asked_pixels_after": _mean([p["asked_pixels_after"] for p in per]),
            "asked_pixels_before": _mean([p["asked_pixels_before"] for p in per]),
            "outside_mean_abs_diff": _mean([p["outside_mean_abs_diff"] for p in per]),
            "outside_max_abs_diff": max(p["outside_max_abs_diff"] for p in per),
            "inside_mean_abs_diff": _mean([p["inside_mean_abs_diff"] for p in per]),
            "per_photo": per,
        })
        examples.append(out)
    data = _base("inpainting", args, pipe)
    data.update({
        "settings": {"num_photos": args.num_photos, "guidance_scales": args.guidance_scales, "seed": args.seed, "batch_size": args.batch_size,
                     "context_dropout_steps": args.context_dropout_steps,
                     "mask_box": list(box), "asked_colours": list(ASKED_COLOURS), "contrast_delta_e": CONTRAST_DELTA_E,
                     "palette": {k: list(v) for k, v in PALETTE.items()}},
        "ceiling_asked_colours": {c: {"accuracy": a, "test_photos": n} for c, (a, n) in ceil.items()},
        "ceiling": _mean([ceil[c["asked"]][0] for c in cases]),
        "rows": rows, "target": {"hit_asked_colour": TARGETS["inpainting"], "outside_mean_abs_diff": 0.0},
        "examples": f"{NAMES['inpainting']}.jpg",
    })
    masked = photos.clone()
    masked[:, :, top:bottom, left:right] = 128
    k = min(6, len(cases))
    data["_strip"] = ([[photos[i], masked[i], *(out[i] for out in examples)] for i in range(k)], [f"{c['prompt']} (photo: {c['baseColour']})" for c in cases[:k]])
    return data


def torch_bool(array):
    import torch

    return torch.from_numpy(array)


def render_inpainting(d) -> str:
    s = d["settings"]
    md = [header("Text-guided inpainting of real photos", d)]
    n = d["rows"][0]["photos"]
    md.append(f"{n} real Topwear test photos (high-resolution split, {d['output_size'][1]}x{d['output_size'][0]}), mask = the central torso "
              f"box {tuple(s['mask_box'])} (left, top, right, bottom), caption = the photo's gender and article with a contrasting colour from "
              f"{', '.join(s['asked_colours'])} (CIELAB distance >= {s['contrast_delta_e']:g} from the region's median colour, not the photo's "
              f"label), T={d['steps']}, seed {s['seed']}. Ceiling: the classifier on the real test photos of the asked colour classes: "
              f"{fmt(d['ceiling'])} (weighted as the cases).\n")
    rows = []
    for r in d["rows"]:
        label = f"guidance {r['guidance_scale']:g}, context dropout {r.get('context_dropout_steps', 0)}" + (
            " (the pipeline's default)" if r.get("pipeline_default") else "")
        rows.append([label, fmt(r["hit_asked_colour"]), fmt(r["asked_colour_before_edit"]),
                     fmt(r["kept_colour_before_edit"]), fmt(r["asked_pixels_after"]), fmt(r["asked_pixels_before"]),
                     fmt(r["outside_mean_abs_diff"], 2), fmt(r["outside_max_abs_diff"], 0), fmt(r["inside_mean_abs_diff"], 1)])
    md.append(markdown_table(["", "classifier sees the asked colour", "... on the photo before", "classifier keeps the photo's colour",
                              "masked pixels nearest the asked colour", "... before", "mean abs change outside the mask",
                              "max abs change outside", "mean abs change inside"], rows))
    md.append(f"\nTarget of issue 16: the asked colour seen in >= {TARGETS['inpainting']:.0%} of the cases, pixels outside the mask unchanged. "
              "Pixel changes are on the 0-255 scale; the nearest colour is taken among "
              f"{', '.join(s['palette'])} (CIELAB).")
    md.append(f"\n![photo | mask | one result per row of the table]({d['examples']})")
    return "\n".join(md)


# ============================================================================================== (c) seam
def line_jump(x, y: int):
    """uint8 (B, 3, H, W): mean over columns of the RGB distance between rows y - 1 and y, per image."""
    return (x[:, :, y].float() - x[:, :, y - 1].float()).norm(dim=1).mean(-1)


def band_gradient(x, y0: int, y1: int):
    b = x[:, :, y0:y1].float()
    gy = (b[:, :, 1:, :-1] - b[:, :, :-1, :-1]).norm(dim=1)
    gx = (b[:, :, :-1, 1:] - b[:, :, :-1, :-1]).norm(dim=1)
    return (gx.pow(2) + gy.pow(2)).sqrt().flatten(1).mean(1)


def blockiness(x, y0: int, y1: int, cell: int, x_offset: int):
    """Mean jump across token-cell lines over the mean jump across the other lines, in rows [y0, y1), per image."""
    b = x[:, :, y0:y1].float()
    jy = (b[:, :, 1:] - b[:, :, :-1]).norm(dim=1).mean(-1)  # (B, rows-1): line between row r and r+1 of the band
    jx = (b[:, :, :, 1:] - b[:, :, :, :-1]).norm(dim=1).mean(-2)  # (B, W-1)
    ys = [(y0 + r + 1) % cell == 0 for r in range(jy.shape[1])]
    xs = [(c + 1 + x_offset) % cell == 0 for c in range(jx.shape[1])]
    import torch

    ys, xs = torch.tensor(ys), torch.tensor(xs)
    on = torch.cat([jy[:, ys], jx[:, xs]], 1).mean(1)
    off = torch.cat([jy[:, ~ys], jx[:, ~xs]], 1).mean(1)
    return on / off.clamp_min(1e-6)


def off_colour_fraction(mixed, a, b, y0: int, y1: int, radius: int = OFF_COLOUR_RADIUS):
    """Fraction of band pixels of `mixed` (rows [y0, y1)) farther than OFF_COLOUR_DELTA_E (CIELAB) from every pixel of
    `a` and of `b` within `radius` pixels of the same place (every second pixel of the window): colours that neither
    source has there."""
    import torch
    import torch.nn.functional as F

    def lab(x, k, r0, r1):
        return torch.from_numpy(srgb_to_lab(x[k, :, r0:r1].permute(1, 2, 0).numpy())).permute(2, 0, 1)[None]  # (1, 3, rows, W)

    out = []
    lo, hi = max(0, y0 - radius), min(mixed.shape[-2], y1 + radius)
    for k in range(mixed.shape[0]):
        band = lab(mixed, k, y0, y1).reshape(3, 1, -1)  # (3, 1, P)
        best = None
        for s in (a, b):
            win = lab(s, k, lo, hi)
            win = F.pad(win, (radius, radius, radius - (y0 - lo), radius - (hi - y1)), mode="replicate")
            cand = F.unfold(win, kernel_size=radius + 1, dilation=2).reshape(3, (radius + 1) ** 2, -1)  # (3, window, P)
            d = (cand - band).norm(dim=0).min(0).values
            best = d if best is None else torch.minimum(best, d)
        out.append(float((best > OFF_COLOUR_DELTA_E).float().mean()))
    return torch.tensor(out)


def run_seam(args) -> Dict:
    import PIL.Image
    import torch

    from m6_fashion.evaluation.metrics import to_uint8

    pipe = _load_pipe(args.model)
    h, w = pipe.default_size
    canvas = pipe.output_canvas(h, w)
    data_hr = hr_test(pipe)
    top = [i for i, s in enumerate(data_hr["subCategory"]) if s == "Topwear"]
    by_type: Dict[str, List[int]] = {}
    for i in top:
        by_type.setdefault(data_hr["articleType"][i], []).append(i)
    pairs = sorted((rows[k], rows[k + 1]) for rows in by_type.values() for k in range(0, len(rows) - 1, 2))[: args.num_pairs]
    a = data_hr["images"][[p[0] for p in pairs]]
    b = data_hr["images"][[p[1] for p in pairs]]
    seam = h // 2
    mask = PIL.Image.new("L", (w, h), 0)
    mask.paste(255, (0, seam, w, h))
    calls = [{"image": x, "style_image": y} for x, y in zip(to_pil(a), to_pil(b))]
    mixed, spi = batched(pipe, calls, args.batch_size, args.seed, mask_image=mask, num_inference_steps=args.steps)
    paste = torch.cat([a[:, :, :seam], b[:, :, seam:]], 2)
    from m6_fashion.image_processing import preprocess

    with torch.no_grad():
        rec = to_uint8(canvas.crop(pipe.decode_tokens(pipe.encode_images(preprocess(to_pil(paste), pipe.sample_size)), side=canvas.side).cpu()))
    real = data_hr["images"][top[: args.num_real]]
    y0, y1 = seam - 32, seam + 32
    cell, x_off = canvas.cell, canvas.offset[1] % canvas.cell

    def stats(x, with_off_colour=True):
        r = {"seam_jump": float(line_jump(x, seam).mean()), "band_gradient": float(band_gradient(x, y0, y1).mean()),
             "blockiness": float(blockiness(x, y0, y1, cell, x_off).mean()),
             "blockiness_whole_image": float(blockiness(x, 0, h, cell, x_off).mean()), "images": int(x.shape[0])}
        if with_off_colour:
            r["off_colour_fraction"] = float(off_colour_fraction(x, a, b, y0, y1).mean())
        return r

    rows = {
        "style mixing (pipeline)": stats(mixed),
        "naive paste (A's top + B's bottom)": stats(paste),
        "naive paste through tokenizer + decoder (no sampling)": stats(rec),
        "source A": stats(a, False),
        "source B": stats(b, False),
        "real Topwear test photos": stats(real, False),
    }
    data = _base("seam", args, pipe)
    data.update({
        "settings": {"num_pairs": len(pairs), "num_real": int(real.shape[0]), "seed": args.seed, "batch_size": args.batch_size,
                     "seam_row": seam, "band": [y0, y1], "cell": cell, "off_colour_delta_e": OFF_COLOUR_DELTA_E,
                     "off_colour_radius": OFF_COLOUR_RADIUS,
                     "refine_ratio": 0.25},
        "pairs": [{"a": int(data_hr["ids"][p[0]]), "b": int(data_hr["ids"][p[1]]), "articleType": data_hr["articleType"][p[0]]} for p in pairs],
        "rows": rows, "seconds_per_image": spi, "examples": f"{NAMES['seam']}.jpg",
    })
    k = min(6, len(pairs))
    data["_strip"] = ([[a[i], b[i], paste[i], mixed[i]] for i in range(k)],
                      [f"{data_hr['articleType'][pairs[i][0]]}: A | B | paste | mix" for i in range(k)])
    return data


def render_seam(d) -> str:
    s = d["settings"]
    md = [header("Seam quality of style mixing", d)]
    md.append(f"{s['num_pairs']} pairs of real Topwear test photos of the same article type, mixed with `pipe(image=A, style_image=B, "
              f"mask_image=lower half)` (T={d['steps']}, refine_ratio 0.25, seed {s['seed']}); seam between rows {s['seam_row'] - 1} and "
              f"{s['seam_row']}, band = rows {s['band'][0]}-{s['band'][1] - 1}. Jump and gradient: RGB distance (0-255 scale). Blockiness: "
              f"jump across {s['cell']}-px token-cell lines / jump across other lines in the band (1 = no grid). Off-colour: band pixels "
              f"farther than CIELAB {s['off_colour_delta_e']:g} from every pixel of both sources within {s['off_colour_radius']} px of the "
              "same place.\n")
    rows = [[k, v["images"], fmt(v["seam_jump"], 1), fmt(v["band_gradient"], 1), fmt(v["blockiness"], 2), fmt(v["blockiness_whole_image"], 2),
             fmt(v.get("off_colour_fraction"), 3) if "off_colour_fraction" in v else ""] for k, v in d["rows"].items()]
    md.append(markdown_table(["images", "n", "seam jump", "band gradient", "blockiness (band)", "blockiness (whole image)",
                              "off-colour fraction (band)"], rows))
    md.append(f"\n![A | B | paste | mix]({d['examples']})")
    return "\n".join(md)


# ============================================================================================== (d) diversity
def choose_captions(meta, hr_train, classifier, nouns, genders, num: int, samples: int):
    known_a = set(classifier.labels("articleType"))
    known_c = set(classifier.labels("baseColour"))
    triples = Counter(zip(meta["gender"], meta["baseColour"], meta["articleType"]))
    real = Counter(zip(hr_train["baseColour"], hr_train["articleType"]))
    out, used = [], set()
    for (g, c, a), n in sorted(triples.items(), key=lambda kv: (-kv[1], kv[0])):
        if a in used or a not in known_a or c not in known_c or c in NO_COLOUR or a not in nouns or real[(c, a)] < samples:
            continue
        used.add(a)
        out.append({"gender": g, "colour": c, "article": a, "caption": caption(g, c, nouns[a]), "train_rows": n, "hr_train_photos": real[(c, a)]})
        if len(out) == num:
            break
    return out


def pairwise(x):
    import torch

    return float(torch.pdist(x.double()).mean()) if x.shape[0] > 1 else float("nan")


def run_diversity(args) -> Dict:
    import numpy as np

    from m6_fashion.evaluation.attribute_classifier import load_default_classifier
    from m6_fashion.evaluation.evaluate import cached_real_features, feature_stats, fid_kid, inception_features
    from m6_fashion.evaluation.evaluate_hr import load_hr_split
    from m6_fashion.evaluation.metrics import InceptionFeatureExtractor

    pipe = _load_pipe(args.model)
    h, w = pipe.default_size
    classifier = load_default_classifier()
    meta = train_metadata()
    nouns, genders = article_nouns(meta), article_genders(meta)
    hr_train = hr_metadata("train", columns=("articleType", "baseColour"))
    caps = choose_captions(meta, hr_train, classifier, nouns, genders, args.num_captions, args.samples)
    rng = np.random.default_rng(args.seed)
    rows_real = []
    for c in caps:
        match = np.flatnonzero((hr_train["articleType"] == c["article"]).to_numpy() & (hr_train["baseColour"] == c["colour"]).to_numpy())
        rows_real += sorted(rng.choice(match, args.samples, replace=False).tolist())
    real = load_hr_split("train", h, w, pipe.sample_size, data_dir=DATA_HR, cache_dir=None, rows=rows_real)["images"]
    extractor = InceptionFeatureExtractor()
    real_feats = inception_features(extractor, real)
    ref = load_hr_split("test", h, w, pipe.sample_size, data_dir=DATA_HR, cache_dir=CACHE_DIR, limit=args.num_reference)
    ref_feats = cached_real_features(extractor, ref, "test", CACHE_DIR, tag=f"hr-{w}x{h}")
    ref_stats = feature_stats(ref_feats)
    n = args.samples
    per_caption = [{**c, "real_feature_distance": pairwise(real_feats[k * n : (k + 1) * n]),
                    "real_pixel_distance": pairwise_pixels(real[k * n : (k + 1) * n]),
                    "real_coarse_pixel_distance": pairwise_pixels(real[k * n : (k + 1) * n], COARSE)} for k, c in enumerate(caps)]
    rows, examples, model_scheduler = [], [], pipe.scheduler
    calls = [{"prompt": c["caption"]} for c in caps for _ in range(n)]
    # every sampling setting without guidance, then the model's own sampling with each guidance scale above 1; the
    # pipeline's default for captions is the model's sampling with guidance DEFAULT_TEXT_GUIDANCE_SCALE (and min-p)
    runs = [(spec, 1.0) for spec in args.sampling] + [({}, g) for g in args.guidance_scales if g > 1.0]
    for i, (spec, g) in enumerate(runs):
        pipe.scheduler = type(model_scheduler).from_config(model_scheduler.config, **spec)
        is_default = not spec and g == DEFAULT_TEXT_GUIDANCE_SCALE
        label = (sampling_label(pipe.scheduler.config) + (f", guidance {g:g}" if g > 1.0 else "")
                 + (" (the pipeline's default)" if is_default else ""))
        images, spi = batched(pipe, calls, args.batch_size, args.seed, num_inference_steps=args.steps, guidance_scale=g)
        feats = inception_features(extractor, images)
        for k, pc in enumerate(per_caption):
            pc[f"feature_distance_s{i}"] = pairwise(feats[k * n : (k + 1) * n])
            pc[f"pixel_distance_s{i}"] = pairwise_pixels(images[k * n : (k + 1) * n])
            pc[f"coarse_pixel_distance_s{i}"] = pairwise_pixels(images[k * n : (k + 1) * n], COARSE)
        gen = _mean([pc[f"feature_distance_s{i}"] for pc in per_caption])
        realv = _mean([pc["real_feature_distance"] for pc in per_caption])
        rows.append({"label": label, "default": is_default, "sampling": sampling_config(pipe.scheduler.config),
                     "guidance_scale": g,
                     "images": int(images.shape[0]), "feature_distance": gen, "real_feature_distance": realv,
                     "ratio_to_real": gen / realv if realv else None,
                     "pixel_distance": _mean([pc[f"pixel_distance_s{i}"] for pc in per_caption]),
                     "real_pixel_distance": _mean([pc["real_pixel_distance"] for pc in per_caption]),
                     "coarse_pixel_distance": _mean([pc[f"coarse_pixel_distance_s{i}"] for pc in per_caption]),
                     "real_coarse_pixel_distance": _mean([pc["real_coarse_pixel_distance"] for pc in per_caption]),
                     **fid_kid(ref_feats, feats, real_stats=ref_stats), "seconds_per_image": spi})
        examples.append(images)
    pipe.scheduler = model_scheduler
    floor = fid_kid(ref_feats, real_feats, real_stats=ref_stats)
    data = _base("diversity", args, pipe)
    data.update({
        "settings": {"num_captions": len(caps), "samples": n, "sampling": args.sampling, "guidance_scales": args.guidance_scales,
                     "seed": args.seed, "batch_size": args.batch_size,
                     "num_reference_real": int(ref_feats.shape[0])},
        "captions": per_caption, "rows": rows,
        "real_photos": {"images": int(real.shape[0]), "fid_inception": floor["fid_inception"], "kid_inception_mean": floor["kid_inception_mean"]},
        "target": {"ratio_to_real": TARGETS["diversity"]}, "examples": f"{NAMES['diversity']}.jpg",
    })
    k, m = min(4, len(caps)), min(6, n)
    shown = next((j for j, r in enumerate(rows) if r["default"]), 0)
    data["_strip"] = ([[examples[shown][i * n + s] for s in range(m)] + [real[i * n + s] for s in range(min(2, n))] for i in range(k)],
                      [f"{caps[i]['caption']}: {m} seeds, {rows[shown]['label']} | 2 real photos" for i in range(k)])
    return data


COARSE = (32, 24)  # (height, width) of the coarse pixel distance: shape, pose, layout and colour, not texture


# the model's own sampling, a constant temperature 1, and the schedules that vary the layout most at an equal FID on
# this benchmark (a hotter first pass cooling down, strong confidence noise early; README "Does what the words ... say")
DEFAULT_SAMPLING = ("default", "temperature=1,temperature_end=none,confidence_noise=1,confidence_noise_end=none",
                    "temperature=1.5,temperature_end=0.6,confidence_noise=1,confidence_noise_end=none",
                    "temperature=1.5,temperature_end=0.6,confidence_noise=8,confidence_noise_end=1")


def sampling_spec(text: str) -> Dict:
    """'default' -> {}; 'temperature=1.5,temperature_end=0.6' -> scheduler config overrides ('none' = unset)."""
    if text == "default":
        return {}
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key not in SCHEDULE_KEYS:
            raise argparse.ArgumentTypeError(f"expected 'default' or KEY=VALUE pairs with KEY one of {', '.join(SCHEDULE_KEYS)}; got {part!r}")
        try:
            out[key] = None if value.lower() == "none" else float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{key}: expected a number or 'none'; got {value!r}") from None
    return out


def sampling_config(config) -> Dict:
    return {k: config.get(k) for k in SCHEDULE_KEYS}


def sampling_label(config, default: bool = False) -> str:
    """'temperature 1.5 -> 0.6, confidence noise 8 -> 1 (the model's default)' from a scheduler config."""
    return describe_config(config) + (" (the model's default)" if default else "")


def pairwise_pixels(x, size: Optional[Tuple[int, int]] = None):
    """Mean over pairs of images of the mean absolute pixel difference (0-255); at `size` (area-downsampled) if given."""
    import itertools

    import torch.nn.functional as F

    x = x.float()
    if size is not None:
        x = F.interpolate(x, size=size, mode="area")
    d = [float((x[i] - x[j]).abs().mean()) for i, j in itertools.combinations(range(x.shape[0]), 2)]
    return sum(d) / len(d) if d else float("nan")


def render_diversity(d) -> str:
    s = d["settings"]
    md = [header("Diversity of samples of one caption", d)]
    md.append(f"{s['num_captions']} frequent captions, {s['samples']} samples each (T={d['steps']}, seed {s['seed']}), against {s['samples']} real "
              "high-resolution train photos of the same articleType and baseColour per caption. Diversity: mean pairwise L2 distance of "
              "Inception-v3 pool features within a caption, averaged over the captions; pixel distance: mean pairwise absolute difference "
              f"(0-255), also after area-downsampling to {COARSE[1]}x{COARSE[0]} (coarse: shape, pose, layout and colour, not texture). "
              f"FID/KID: all samples against the {s['num_reference_real']} real high-resolution test photos.\n")
    rows = [[f"samples, {r['label']}", r["images"], fmt(r["feature_distance"], 2), fmt(r["ratio_to_real"], 2),
             fmt(r["pixel_distance"], 1), fmt(r.get("coarse_pixel_distance"), 1),
             fmt(r["coarse_pixel_distance"] / r["real_coarse_pixel_distance"], 2) if r.get("real_coarse_pixel_distance") else "n/a",
             fmt(r["fid_inception"], 1), fmt(r["kid_inception_mean"], 4)] for r in d["rows"]]
    rp, r0 = d["real_photos"], d["rows"][0]
    rows.append(["real photos of the same type and colour", rp["images"], fmt(r0["real_feature_distance"], 2), "1.00",
                 fmt(r0["real_pixel_distance"], 1), fmt(r0.get("real_coarse_pixel_distance"), 1), "1.00", fmt(rp["fid_inception"], 1),
                 fmt(rp["kid_inception_mean"], 4)])
    md.append(markdown_table(["", "images", "feature distance", "/ real", "pixel distance", f"coarse pixel distance ({COARSE[1]}x{COARSE[0]})",
                              "/ real", "FID", "KID"], rows))
    md.append(f"\nTarget of issue 16: diversity within 25% of the real-photo figure (ratio >= {TARGETS['diversity']:.2f}) with FID not worse.\n")
    pr = [[c["caption"], c["hr_train_photos"], *(fmt(c[f"feature_distance_s{i}"], 2) for i in range(len(d["rows"]))),
           fmt(c["real_feature_distance"], 2)] for c in d["captions"]]
    md.append(markdown_table(["caption", "real photos available", *(f"samples ({chr(97 + i)})" for i in range(len(d["rows"]))), "real"], pr))
    md.append("\n" + "; ".join(f"({chr(97 + i)}) {r['label']}" for i, r in enumerate(d["rows"])) + ".")
    md.append(f"\n![samples | real]({d['examples']})")
    return "\n".join(md)


# ============================================================================================== (e) outpainting
def continuation(x, edge_cols: Sequence[int], strip_cols: Sequence[int]):
    """Rows where x's edge columns are non-white: fraction whose strip columns are at least half non-white. Per image."""
    import torch

    nw = non_white(x)
    edge = nw[:, :, list(edge_cols)].any(-1)
    strip = nw[:, :, list(strip_cols)].float().mean(-1) >= 0.5
    out = []
    for k in range(x.shape[0]):
        rows = edge[k]
        out.append(float(strip[k][rows].float().mean()) if rows.any() else float("nan"))
    return torch.tensor(out)


def _nanmean(t) -> Optional[float]:
    import torch

    t = t[~torch.isnan(t)]
    return float(t.mean()) if t.numel() else None


def new_area_stats(out, box, width: int, truth=None, placed=None, strip: int = 8) -> Dict:
    """Non-white fraction of the area outside `box` (left, right columns), continuation at both sides, change of the placed image."""
    left, _, right, _ = box
    new_cols = list(range(0, left)) + list(range(right, width))
    edge = [left, left + 1, right - 2, right - 1]
    strip_cols = list(range(max(0, left - strip), left)) + list(range(right, min(width, right + strip)))
    r = {"new_columns": len(new_cols), "non_white_new_area": float(non_white(out)[:, :, new_cols].float().mean()),
         "continuation": _nanmean(continuation(out, edge, strip_cols))}
    if truth is not None:
        r["truth_non_white_new_area"] = float(non_white(truth)[:, :, new_cols].float().mean())
        r["truth_continuation"] = _nanmean(continuation(truth, edge, strip_cols))
        r["mean_abs_diff_to_truth_new_area"] = float((out.int() - truth.int()).abs()[:, :, :, new_cols].float().mean())
    if placed is not None:
        r["placed_image_mean_abs_change"] = float((out[:, :, :, left:right].int() - placed.int()).abs().float().mean())
    return r


def run_outpainting(args) -> Dict:
    import torch
    from m6_fashion_core import outpainting

    pipe = _load_pipe(args.model)
    h, w = pipe.default_size
    data_hr = hr_test(pipe)
    idx = [i for i, s in enumerate(data_hr["subCategory"]) if s == "Topwear" and data_hr["source_sizes"][i] == f"{w}x{h}"][: args.num_photos]
    photos = data_hr["images"][idx]
    pils = to_pil(photos)
    common = dict(num_inference_steps=args.steps)
    parts = {}
    # (1) own scale, a canvas 1.5x wider
    wide = int(math.ceil(1.5 * w))
    box1 = ((wide - w) // 2, 0, (wide - w) // 2 + w, h)
    try:
        out1, spi1 = batched(pipe, [{"image": p} for p in pils], args.batch_size, args.seed, image_box=box1, height=h, width=wide, **common)
        parts["own_scale_1.5x"] = {"canvas": [h, wide], "box": list(box1), "made": True, "seconds_per_image": spi1,
                                   **new_area_stats(out1, box1, wide, placed=photos)}
        examples = {"wide": out1}
    except ValueError as e:
        parts["own_scale_1.5x"] = {"canvas": [h, wide], "box": list(box1), "made": False, "error": str(e)}
        examples = {}
    # (2) the widest canvas outpainting makes at this height (2x the decoder's square), photo at its own scale
    widest = outpainting.MAX_WIDE_FACTOR * max(pipe.canvas_sides())
    if widest > w:
        box2 = ((widest - w) // 2, 0, (widest - w) // 2 + w, h)
        out2, spi2 = batched(pipe, [{"image": p} for p in pils], args.batch_size, args.seed, image_box=box2, height=h, width=widest, **common)
        parts["own_scale_widest"] = {"canvas": [h, widest], "box": list(box2), "made": True, "widening": widest / w, "seconds_per_image": spi2,
                                     **new_area_stats(out2, box2, widest, placed=photos)}
    # (3) 1.5x wider than the input, inside the output: the central w/1.5 columns, the real photo as truth
    cw = int(round(w / 1.5))
    c0 = (w - cw) // 2
    box3 = (c0, 0, c0 + cw, h)
    crops = photos[:, :, :, c0 : c0 + cw]
    out3, spi3 = batched(pipe, [{"image": p} for p in to_pil(crops)], args.batch_size, args.seed, image_box=box3, **common)
    parts["crop_1.5x"] = {"canvas": [h, w], "box": list(box3), "made": True, "input_size": [h, cw], "widening": w / cw, "seconds_per_image": spi3,
                          **new_area_stats(out3, box3, w, truth=photos, placed=crops)}
    data = _base("outpainting", args, pipe)
    data.update({
        "settings": {"num_photos": len(idx), "seed": args.seed, "batch_size": args.batch_size, "white_level": WHITE_LEVEL, "strip": 8,
                     "output_sizes_at_height": sorted({ww for hh, ww in pipe.output_sizes() if hh == h})},
        "parts": parts, "examples": f"{NAMES['outpainting']}.jpg",
    })
    k = min(6, len(idx))
    white = torch.full_like(photos[:, :, :, :c0], 255)
    shown = torch.cat([white, crops, white], -1)
    cols = [[photos[i], shown[i], out3[i]] + ([examples["wide"][i]] if "wide" in examples else []) for i in range(k)]
    label = "photo | its central 2/3 | outpainted to 1.5x its width" + (f" | photo onto a {wide}-px-wide canvas" if "wide" in examples else "")
    data["_strip"] = (cols, [label] * k)
    return data


def render_outpainting(d) -> str:
    s, p = d["settings"], d["parts"]
    md = [header("Outpainting to a wider canvas", d)]
    md.append(f"{s['num_photos']} real Topwear test photos stored at {d['output_size'][1]}x{d['output_size'][0]}, T={d['steps']}, seed {s['seed']}. "
              f"Non-white: some channel < {s['white_level']}. Continuation: rows where the placed image's outer two columns are non-white, "
              f"fraction whose {s['strip']}-px strip outside is at least half non-white. Output widths the pipeline makes at this height: "
              f"{s['output_sizes_at_height']}.\n")
    rows = []
    labels = {"own_scale_1.5x": "photo at its own scale onto a 1.5x wider canvas",
              "own_scale_widest": "photo at its own scale onto the widest canvas outpainting makes (2x the decoder's)",
              "crop_1.5x": "central 2/3 of the photo outpainted to 1.5x its width (truth: the photo)"}
    for key, label in labels.items():
        r = p.get(key)
        if r is None:
            continue
        canvas = f"{r['canvas'][1]}x{r['canvas'][0]}"
        if not r["made"]:
            rows.append([label, canvas, "refused: " + r["error"].replace("|", "/"), "", "", "", "", ""])
            continue
        rows.append([label, canvas, fmt(r["non_white_new_area"]), fmt(r.get("truth_non_white_new_area")), fmt(r["continuation"]),
                     fmt(r.get("truth_continuation")), fmt(r.get("mean_abs_diff_to_truth_new_area"), 1), fmt(r.get("placed_image_mean_abs_change"), 2)])
    md.append(markdown_table(["task", "canvas", "non-white in the new area", "... real photo", "garment continues", "... real photo",
                              "abs diff to the real photo (new area)", "change of the placed image"], rows))
    md.append(f"\n![examples]({d['examples']})")
    return "\n".join(md)


# ============================================================================================== driver
RUNS = {"counterfactual": (run_counterfactual, render_counterfactual), "inpainting": (run_inpainting, render_inpainting),
        "seam": (run_seam, render_seam), "diversity": (run_diversity, render_diversity), "outpainting": (run_outpainting, render_outpainting)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="which", required=True, metavar="{" + ",".join(RUNS) + "}")
    for name in RUNS:
        s = sub.add_parser(name, help=f"writes {NAMES[name]}.json / .md / .jpg")
        s.add_argument("--model", default=None, help="pipeline folder or shipped name (default: the shipped default)")
        s.add_argument("--steps", type=int, default=None, help="SMART passes (default 10; 2 with --fast)")
        s.add_argument("--batch-size", type=int, default=16)
        s.add_argument("--seed", type=int, default=0)
        if name in ("counterfactual", "inpainting"):
            s.add_argument("--guidance-scales", type=float, nargs="+", default=None, help="the first is the shipped default: 12 1 for counterfactual (text-to-image), 1 3 for inpainting")
        if name == "inpainting":
            s.add_argument("--context-dropout-steps", type=_dropout_steps, nargs="+", default=["default", 0],
                           help="pipeline context_dropout_steps values to try, each with every guidance scale: 'default' (the "
                                "pipeline's own, round(0.8*T) for text-guided inpainting) and/or numbers (0 = off); default: default 0")
        if name == "counterfactual":
            s.add_argument("--guidance-min-p", type=float, default=None,
                           help="the pipeline's guidance_min_p for the guided rows (default: the pipeline's, 0.1; 0 = off)")
            s.add_argument("--negative-guidance-scales", type=float, nargs="*", default=None,
                           help="guidance scales also tried with the caption without its colour as negative_prompt (e.g. 'Men Jeans' "
                                "for 'Men Orange Jeans'), which puts the guidance on the colour; default 3")
            s.add_argument("--contrast-scales", type=float, nargs="*", default=[4.0],
                           help="negative_guidance_scale values tried at the first --guidance-scales value with the caption without "
                                "its colour as negative_prompt: guidance keeps its empty-text pass and a third pass pushes on the "
                                "colour (default 4)")
            s.add_argument("--num-pairs", type=int, default=None, help="unseen pairs (default 32; 3 with --fast)")
            s.add_argument("--num-frequent", type=int, default=None, help="frequent reference pairs (default 12; 2 with --fast)")
            s.add_argument("--samples", type=int, default=None, help="images per caption (default 4; 2 with --fast)")
            s.add_argument("--min-rows", type=int, default=50)
            s.add_argument("--per-class", type=int, default=4)
            s.add_argument("--min-class-accuracy", type=float, default=0.4,
                           help="a class counts as known when the classifier gets at least this share of its real test photos right")
            s.add_argument("--min-test-photos", type=int, default=5, help="... on at least this many real test photos")
            s.add_argument("--judge-photos", type=int, default=None, help="recoloured real photos per pair for the judge check (default 12; 2 with --fast)")
        if name in ("inpainting", "outpainting"):
            s.add_argument("--num-photos", type=int, default=None, help="default 64 (inpainting) / 48 (outpainting); 3 with --fast")
        if name == "seam":
            s.add_argument("--num-pairs", type=int, default=None, help="default 48; 3 with --fast")
            s.add_argument("--num-real", type=int, default=None, help="real photos for the reference (default 300; 8 with --fast)")
        if name == "diversity":
            s.add_argument("--num-captions", type=int, default=None, help="default 12; 2 with --fast")
            s.add_argument("--samples", type=int, default=None, help="images per caption (default 10; 3 with --fast)")
            s.add_argument("--sampling", type=sampling_spec, nargs="+", default=None,
                           help="scheduler settings to compare, each 'default' (the model's own) or KEY=VALUE[,KEY=VALUE...] of the "
                                "scheduler config (temperature, temperature_end, confidence_noise, confidence_noise_end; 'none' "
                                f"unsets); default: {' '.join(DEFAULT_SAMPLING)}")
            s.add_argument("--num-reference", type=int, default=None, help="real test photos for FID (default all 798; 16 with --fast)")
            s.add_argument("--guidance-scales", type=float, nargs="+", default=[DEFAULT_TEXT_GUIDANCE_SCALE],
                           help="besides the --sampling rows (all without guidance), the model's own sampling with each of these "
                                "guidance scales above 1 (default: 12, the pipeline's default for captions)")
        add_run_args(s)
    return p


DEFAULTS = {  # (full, fast)
    "steps": (10, 2), "num_pairs": (32, 3), "num_frequent": (12, 2), "samples": (4, 2), "num_photos": (64, 3), "num_real": (300, 8),
    "num_captions": (12, 2), "num_reference": (None, 16), "judge_photos": (12, 2),
}
DEFAULTS_BY_RUN = {"seam": {"num_pairs": (48, 3)}, "outpainting": {"num_photos": (48, 3)}, "diversity": {"samples": (10, 3)}}


def main(argv=None) -> Dict:
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    defaults = {**DEFAULTS, **DEFAULTS_BY_RUN.get(args.which, {})}
    for key, (full, fast) in defaults.items():
        if hasattr(args, key) and getattr(args, key) is None:
            setattr(args, key, fast if args.fast else full)
    if getattr(args, "sampling", "absent") is None:
        args.sampling = [sampling_spec(t) for t in DEFAULT_SAMPLING]
    if getattr(args, "guidance_scales", "absent") is None:  # counterfactual and inpainting: the pipeline's default first
        args.guidance_scales = [DEFAULT_TEXT_GUIDANCE_SCALE, 1.0] if args.which == "counterfactual" else [1.0, 3.0]
    if getattr(args, "negative_guidance_scales", "absent") is None:
        args.negative_guidance_scales = [3.0]
    directory = out_dir(args.out_dir, args.fast)
    run, render = RUNS[args.which]
    t0 = time.time()
    data = run(args)
    data["seconds_total"] = time.time() - t0
    strip = data.pop("_strip", None)
    write_results(directory, NAMES[args.which], data, render(data))
    if strip is not None:
        save_strip(directory / f"{NAMES[args.which]}.jpg", *strip)
    return data


if __name__ == "__main__":
    main()
