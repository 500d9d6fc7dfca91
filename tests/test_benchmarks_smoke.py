"""Smoke runs of the cheap benchmark scripts in their --fast mode: they run and write finite figures.

(The speed targets themselves live in the scripts' printed ratios, never in timed tests.)
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, out_dir: Path, *args: str) -> dict:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--fast", "--out-dir", str(out_dir), *args],
                       capture_output=True, text=True, env=subprocess_env(), timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_smart_vs_ar_fast(tmp_path):
    _run("bench_smart_vs_ar.py", tmp_path, "--threads", "1", "--dtypes", "float32")
    data = json.loads((tmp_path / "smart_vs_ar.json").read_text())
    row = data["rows"][0]
    assert row["batch_size"] == 1 and row["steps"] == 2 and row["dtype"] == "float32"
    for key in ("ar_s_per_image", "smart_s_per_image", "ratio_ar_over_smart", "smart_prefix_reencoded_s_per_image"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    md = (tmp_path / "smart_vs_ar.md").read_text()
    assert "AR / SMART" in md and ">= 5x" not in md  # targets are only judged at T=10


def test_roofline_fast(tmp_path):
    _run("bench_roofline.py", tmp_path)
    r = json.loads((tmp_path / "roofline.json").read_text())["results"]
    assert r["matmul_roof_gflops"] > 0 and r["flops_per_image"] > 0 and 0 < r["roofline_fraction"] < 1.5



# ---------------------------------------------------------------------------------------------- does what the words and the mask say
DATA = ROOT.parent / "shared" / "data"
WORDS_AND_MASKS = {"counterfactual": "counterfactual_prompts", "inpainting": "text_guided_inpainting", "seam": "mixing_seam",
                   "diversity": "sample_diversity", "outpainting": "outpainting_wider"}


@pytest.mark.skipif(not all((DATA / d / "test.parquet").is_file() for d in ("fashion-product-images", "fashion-product-images-hr")),
                    reason="fashion-product-images(-hr) not found beside the repo")
@pytest.mark.parametrize("which", list(WORDS_AND_MASKS))
def test_words_and_masks_fast(tmp_path, which):
    """Each of the five benchmarks of bench_words_and_masks.py runs from one command and writes finite figures."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_words_and_masks.py"), which, "--fast", "--threads", "1",
                        "--out-dir", str(tmp_path)], capture_output=True, text=True, env=subprocess_env(), timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    name = WORDS_AND_MASKS[which]
    data = json.loads((tmp_path / f"{name}.json").read_text())
    assert data["benchmark"] == name and data["fast"] and data["command"].startswith("python benchmarks/bench_words_and_masks.py")
    assert (tmp_path / f"{name}.md").read_text().startswith("## ") and (tmp_path / f"{name}.jpg").stat().st_size > 0
    if which == "counterfactual":
        assert data["pairs"] and all(p["train_rows_pair"] == 0 for p in data["pairs"])
        assert all(p["train_rows_pair"] > 0 for p in data["frequent_pairs"])
        for row in data["rows"]:
            assert all(0 <= row[k] <= 1 for k in ("hit_colour", "hit_article", "hit_both", "ceiling_colour", "ceiling_article",
                                                 "hit_article_luma", "hit_both_luma", "ceiling_article_luma"))
            assert row["hit_both_luma"] <= min(row["hit_colour"], row["hit_article_luma"])
        # the pipeline's text-to-image default (guidance 12) and no guidance, then the default guidance plus a third pass
        # on the caption without its colour (negative_guidance_scale 4), then guidance 3 with that caption as the
        # negative prompt
        assert [(r["guidance_scale"], bool(r["negative_prompt"]), r["negative_guidance_scale"])
                for r in data["rows"] if r["set"] == "counterfactual"] == [(12.0, False, None), (1.0, False, None), (12.0, True, 4.0), (3.0, True, None)]
        assert all(p["negative_prompt"].split() == [w for w in p["caption"].split() if w not in p["colour"].split()] for p in data["pairs"])
        judge = data["judge_check"]  # real photos recoloured to each pair's colour, scored by both article judges
        assert judge["photos"] >= 1 and all(0 <= judge[k] <= 1 for k in ("article_rgb_after", "article_luma_after", "both_luma_after"))
    elif which == "inpainting":
        for row in data["rows"]:
            assert 0 <= row["hit_asked_colour"] <= 1 and row["outside_mean_abs_diff"] <= 1.0  # the pixels outside the mask are kept
            assert all(p["asked"] != p["baseColour"] for p in row["per_photo"])
    elif which == "seam":
        for row in data["rows"].values():
            assert all(math.isfinite(row[k]) and row[k] >= 0 for k in ("seam_jump", "band_gradient", "blockiness"))
        assert data["rows"]["naive paste (A's top + B's bottom)"]["off_colour_fraction"] == 0  # its pixels all come from the sources
    elif which == "diversity":
        for row in data["rows"]:
            assert row["feature_distance"] > 0 and row["real_feature_distance"] > 0 and math.isfinite(row["fid_inception"])
        # the model's own sampling and the settings it is compared with, unguided; then the pipeline's default for
        # captions: the model's own sampling with guidance 12
        assert [r["default"] for r in data["rows"]] == [False, False, False, False, True]
        labels = [r["label"] for r in data["rows"]]
        assert labels[1:4] == ["temperature 1", "temperature 1.5 -> 0.6", "temperature 1.5 -> 0.6, confidence noise 8 -> 1"]
        assert labels[4] == labels[0] + ", guidance 12 (the pipeline's default)"
        assert [r["guidance_scale"] for r in data["rows"]] == [1.0, 1.0, 1.0, 1.0, 12.0]
    else:
        wide = data["parts"]["own_scale_1.5x"]
        assert wide["canvas"][1] >= 1.5 * data["output_size"][1]
        assert ("non_white_new_area" in wide) if wide["made"] else "cannot make" in wide["error"]  # measured, or the refusal recorded
        crop = data["parts"]["crop_1.5x"]
        assert crop["widening"] >= 1.5 and crop["placed_image_mean_abs_change"] <= 1.0


def test_diversity_sampling_option_is_checked():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_words_and_masks as b

    assert b.sampling_spec("default") == {}
    assert b.sampling_spec("temperature=1.5,temperature_end=none") == {"temperature": 1.5, "temperature_end": None}
    with pytest.raises(Exception, match="KEY one of temperature"):
        b.sampling_spec("temp=1")
    with pytest.raises(Exception, match="expected a number or 'none'"):
        b.sampling_spec("temperature=hot")
