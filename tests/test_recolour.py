"""Colour re-balancing data for fine-tuning (``m6_fashion.training.recolour``), on real train photos."""

from __future__ import annotations

import io
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from conftest import FASHION_DIR, requires_fashion_data
from m6_fashion.training import recolour as rc


def test_lab_round_trip_is_exact_to_one_level():
    rgb = np.random.default_rng(0).integers(0, 256, size=(500, 3)).astype(np.uint8)
    back = rc.lab_to_srgb(rc.srgb_to_lab(rgb))
    assert np.abs(back.astype(int) - rgb).max() <= 1


def test_large_parts_drops_small_islands():
    mask = np.zeros((20, 20), bool)
    mask[2:12, 2:12] = True  # 100 px
    mask[15:17, 15:17] = True  # 4 px island
    mask[2:12, 14:19] = True  # 50 px, kept (>= 20% of the largest)
    kept = rc._large_parts(mask, 0.2)
    assert kept[5, 5] and kept[5, 16] and not kept[16, 16]
    assert kept.sum() == 150


@pytest.mark.parametrize(
    "caption,old,new,expected",
    [
        ("Turtle Check Men Navy Blue Shirt", "Navy Blue", "Orange", "Turtle Check Men Orange Shirt"),
        ("Nike Men Black Shoe", "Black", "Gold", "Nike Men Gold Shoe"),
        ("Puma Men Black and Green Striped Polo", "Black", "Red", None),  # names a second colour
        ("ADIDAS Mens ESS 3S Polo T-shirt", "Maroon", "Red", None),  # names no colour
        ("Men Black Black Shoes", "Black", "Red", None),  # twice
        ("Blackberrys Men Grey Suit", "Grey", "Blue", "Blackberrys Men Blue Suit"),  # whole words only
    ],
)
def test_replace_colour(caption, old, new, expected):
    assert rc.replace_colour(caption, old, new) == expected


def _real_rows(colours, n):
    import pyarrow.parquet as pq

    t = pq.read_table(FASHION_DIR / "train.parquet", columns=["image", "text", "masterCategory", "baseColour"]).to_pandas()
    t = t[t.masterCategory.isin(rc.CATEGORIES) & t.baseColour.isin(colours)]
    return t.groupby("baseColour").head(n)


@requires_fashion_data
def test_recolour_changes_the_garment_only_and_reaches_the_target():
    rows = _real_rows(["Black", "Blue", "Red", "Green"], 6)
    target = rc.srgb_to_lab(rc.REFERENCE_RGB["Orange"])
    done = 0
    for _, r in rows.iterrows():
        x = np.asarray(Image.open(io.BytesIO(r.image["bytes"])).convert("RGB"))
        found = rc.garment_mask(x, r.baseColour)
        y = rc.recolour(x, r.baseColour, target)
        assert (found is None) == (y is None)
        if y is None:
            continue
        done += 1
        _, own, mask = found
        assert y.shape == x.shape and y.dtype == np.uint8
        # outside the (blurred) mask nothing moves: pixels two steps away from it are untouched
        near = mask.copy()
        for _ in range(2):
            p = np.pad(near, 1)
            near = near | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
        assert np.array_equal(y[~near], x[~near])
        # inside, the garment's median colour is the asked one (shading kept around it)
        new_median = np.median(rc.srgb_to_lab(y)[mask], axis=0)
        assert np.linalg.norm(new_median - target) < 12, (r.text, new_median, target)
        assert np.linalg.norm(new_median - own) > 30
    assert done >= 12, f"only {done} of {len(rows)} real photos got a garment mask"


@requires_fashion_data
def test_white_and_unknown_colours():
    x = np.full((80, 60, 3), 255, np.uint8)  # a blank (all background) canvas has no garment
    assert rc.garment_mask(x, "Black") is None
    with pytest.raises(ValueError, match="no reference colour for 'Teal'"):
        rc.garment_mask(x, "Teal")


def _small_train(tmp_path):
    """The first 600 train rows as a Parquet file, its rows' attributes and their (colour, article) counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(FASHION_DIR / "train.parquet")
    batch = next(pf.iter_batches(batch_size=600))
    src = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_batches([batch], schema=pf.schema_arrow), src)
    train = pq.read_table(src, columns=["baseColour", "articleType"]).to_pandas()
    return src, train, Counter(zip(train.baseColour, train.articleType))


@requires_fashion_data
def test_build_never_creates_an_unseen_colour_article_pair(tmp_path):
    import pyarrow.parquet as pq

    src, _, seen = _small_train(tmp_path)

    summary = rc.build(str(src), str(tmp_path / "out.parquet"), num_recoloured=40, num_replay=20, seed=0,
                       min_pair_rows=2, palette_photos=12)
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert len(out) == summary["rows"] == summary["recoloured"] + summary["replay"]
    assert summary["replay"] == 20 and 0 < summary["recoloured"] <= 40
    assert summary["new_pairs"] == 0
    assert json.loads((tmp_path / "out.json").read_text()) == summary
    for _, r in out[out.recoloured].iterrows():
        assert seen[(r.target_colour, r.articleType)] >= 2, r.text
        assert r.target_colour != r.source_colour
        assert r.target_colour in r.text
        img = Image.open(io.BytesIO(r.image["bytes"]))
        assert img.size[0] >= 16 and img.mode == "RGB"
    # the file is what `m6-fashion finetune --data` reads
    from m6_fashion.training.finetune_data import load_finetune_data

    assert len(load_finetune_data(str(tmp_path / "out.parquet"))) == len(out)


@requires_fashion_data
def test_build_with_held_out_pairs_creates_new_pairs_but_never_those(tmp_path):
    import pyarrow.parquet as pq

    src, train, seen = _small_train(tmp_path)
    articles = train.articleType.value_counts().index[:3]
    held = {(c, a) for a in articles for c in ("Red", "Green", "Yellow", "Pink", "Orange") if seen[(c, a)] == 0}
    spec = tmp_path / "held.json"
    spec.write_text(json.dumps([list(p) for p in sorted(held)]))
    assert rc.held_out_pairs(spec) == held
    summary = rc.build(str(src), str(tmp_path / "out.parquet"), num_recoloured=60, num_replay=0, seed=0,
                       min_pair_rows=0, palette_photos=12, held_out=rc.held_out_pairs(spec), new_pair_share=1.0)
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    made = set(zip(out.target_colour, out.articleType))
    assert summary["new_pairs"] > 0 and summary["held_out_created"] == 0 and summary["held_out_pairs"] == len(held)
    assert not made & held and any(seen[p] == 0 for p in made)
    with pytest.raises(ValueError, match="give held_out pairs"):
        rc.build(str(src), str(tmp_path / "x.parquet"), num_recoloured=1, num_replay=0, min_pair_rows=0)


def test_cli_refuses_pairs_without_train_rows(capsys):
    with pytest.raises(SystemExit) as e:
        rc.main(["--out", "x.parquet", "--min_pair_rows", "0"])
    assert e.value.code == 2
    assert "must not create a colour x article pair" in capsys.readouterr().err
