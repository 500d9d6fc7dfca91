"""Regenerates the result tables of the top-level README.md from the JSON files in benchmarks/results/,
and benchmarks/results/evaluate_m6-fashion-64_test.md (the printed summaries of the `m6-fashion evaluate` runs).

Each table sits between ``<!-- begin:NAME -->`` and ``<!-- end:NAME -->`` markers in README.md and is
rebuilt from the result files named below, with the date and the command that measured it. Nothing in a
table is typed by hand: after a benchmark run, run this script and commit README.md with the results.

    python benchmarks/update_readme.py           # rewrite the tables in README.md
    python benchmarks/update_readme.py --check   # exit 1 if either file is out of date (run by the tests)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
README = REPO_ROOT / "README.md"
HEADS = ("articleType", "baseColour", "gender")
if str(REPO_ROOT / "runtime" / "src") not in sys.path:  # the torch-free core, from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT / "runtime" / "src"))
from m6_fashion_core.sampling import describe, describe_config  # noqa: E402


def _load(name: str) -> dict:
    path = RESULTS / name
    if not path.is_file():
        raise SystemExit(f"error: {path.relative_to(REPO_ROOT)} is missing; run the benchmark that writes it first")
    return json.loads(path.read_text())


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def _table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _measured(d: dict) -> str:
    return f"Measured {d['date']} with `{d['command']}`."


def _scored_row(label: str, hits: dict, r: dict) -> list:
    """A table row: label, hit rate per attribute, FID, KID."""
    return [label, *(_pct(hits[k]) for k in HEADS), f"{r['fid_inception']:.1f}", f"{r['kid_inception_mean']:.3f}"]


def _sampling(r: dict) -> str:
    """How a result's images were sampled, in words (results from before the schedules record the temperature only)."""
    return r.get("sampling") or describe(r["temperature"])


def text_to_image() -> str:
    gen = _load("evaluate_m6-fashion-64_test_generation.json")
    bf16 = _load("evaluate_m6-fashion-64_test_bf16.json")
    shipped = REPO_ROOT / "src" / "m6_fashion" / "pretrained" / "m6-fashion-64" / "scheduler" / "scheduler_config.json"
    shipped_sampling = describe_config(json.loads(shipped.read_text()))
    rows = []
    for r in sorted(gen["text_to_image"], key=lambda r: r["temperature"]):
        label = f"generated, {_sampling(r)}"
        if _sampling(r) == shipped_sampling:
            label += " (shipped default)"
        rows.append(_scored_row(label, r["hit_rate"], r))
    for r in bf16["text_to_image"]:
        rows.append(_scored_row(f"generated, {_sampling(r)}, transformer in bfloat16 (`--bf16`)", r["hit_rate"], r))
    u = gen.get("unconditional")
    if u:
        rows.append(_scored_row("unconditional samples vs the same captions (measured chance)", u["hit_rate_unconditional_vs_prompts"], u))
    maj = gen["prompts"]["chance_majority"]
    rows.append(["most frequent value among these captions", *(_pct(maj[k]["rate"]) for k in HEADS), "", ""])
    acc = gen["prompts"]["classifier_accuracy_real"]
    rows.append(["the classifier on the real photos of the same captions (ceiling)", *(_pct(acc[k]) for k in HEADS), "", ""])
    ref = gen.get("references")
    if ref:
        rows.append([f"{ref['num_fake']} real {ref['real_images_from']} photos (FID floor at this sample count)", "", "", "",
                     f"{ref['fid_inception']:.1f}", f"{ref['kid_inception_mean']:.3f}"])
    return "\n".join([
        _table(["", "article type", "base colour", "gender", "FID", "KID"], rows),
        "",
        _measured(gen),
        _measured(bf16),
    ])


def reconstruction() -> str:
    d = _load("evaluate_m6-fashion-64_test_reconstruction_all.json")
    r = d["reconstruction"]
    cb = r["codebook"]
    rows = [[r["num_images"], f"{r['psnr']:.1f} dB", f"{r['ssim']:.3f}", f"{r['rfid_inception']:.1f}",
             " / ".join(f"{100 * u:.0f}%" for u in cb["usage"]), " / ".join(f"{p:.0f}" for p in cb["perplexity"])]]
    return "\n".join([_table(["test images", "PSNR", "SSIM", "rFID", "codebook usage per group", "perplexity per group"], rows),
                      "", _measured(d)])


def smart_vs_ar() -> str:
    d = _load("smart_vs_ar.json")
    targets = {int(k): v for k, v in d["targets_ar_over_smart"].items()}
    rows = []
    for r in d["rows"]:
        t = targets.get(r["batch_size"]) if r["steps"] == 10 else None
        verdict = "" if t is None else f">= {t:g}x: {'met' if r['ratio_ar_over_smart'] >= t else 'not met'}"
        rows.append([r["batch_size"], r["dtype"], f"{r['ar_s_per_image']:.3f}", f"{r['smart_s_per_image']:.3f}",
                     f"{r['ratio_ar_over_smart']:.2f}x", verdict])
    s = d["settings"]
    return "\n".join([
        _table(["batch", "dtype", "AR s/image", "SMART s/image", "AR / SMART", "target"], rows),
        "",
        f"{s['layers']} layers x {s['hidden_size']}, T={s['steps']}, medians of {s['repeats']} interleaved runs, "
        f"{d['environment']['threads']} CPU threads. " + _measured(d),
    ])


def generation_ablation() -> str:
    d = _load("generation_ablation.json")
    s = d["settings"]
    rows = []
    for r in d["rows"]:
        h = r["hit_rate"]
        rows.append([r["name"], f"{r['fid_inception']:.1f}", f"{r['kid_inception_mean']:.3f}", *(_pct(h[k]) for k in HEADS),
                     f"{r['seconds_per_image']:.3f}"])
    if "chance_majority" in d:
        rows.append(["most frequent value among these captions", "", "", *(_pct(d["chance_majority"][k]["rate"]) for k in HEADS), ""])
    rows.append(["the classifier on the real photos (ceiling)", "", "", *(_pct(d["references"][k]) for k in HEADS), ""])
    return "\n".join([
        _table(["tokenizer + sampler", "FID", "KID", "hit article type", "hit base colour", "hit gender", "s/image"], rows),
        "",
        f"Each row: a {s['layers']} x {s['hidden_size']} transformer trained from scratch for {s['steps']} steps x batch "
        f"{s['batch_size']} on {s['train_limit']} train images (same recipe and seed; only the tokenizer or the objective "
        f"differs), {s['num_samples']} test captions at temperature 1.0. " + _measured(d),
    ])


CATALOGUE_RESOLUTION = "evaluate_m6-fashion-hr_test.json"
CATALOGUE_DEFAULT_GUIDANCE = "evaluate_m6-fashion-hr_test_text_to_image_default.json"


def _guidance(section: dict) -> str:
    """'guidance 12, min-p 0.2' or 'no guidance' for a text_to_image section of an evaluate result."""
    g = section.get("guidance_scale", 1.0)
    if g <= 1.0:
        return "no guidance"
    return f"guidance {g:g}" + (f", min-p {section['guidance_min_p']:g}" if section.get("guidance_min_p") else ", no min-p filter")


def catalogue_resolution() -> str:
    """`m6-fashion evaluate --height 256 --width 192`: decoder_hr vs the 64-px output upscaled, same tokens."""
    d = _load(CATALOGUE_RESOLUTION)
    st, real = d["settings"], d["real"]
    h, w = st["height"], st["width"]
    lh, lw = st["baseline_native_size"]
    size = f"{w}x{h}"
    labels = {"hr": f"(a) the pipeline at {size} (`decoder_hr`)",
              "baseline": f"(b) the 64-px output's central {lw}x{lh}, bicubic to {size}"}
    parts = []
    t = d.get("text_to_image")
    # text-to-image at the pipeline's default guidance (same captions and seeds), when that run exists
    dd = _load(CATALOGUE_DEFAULT_GUIDANCE) if (RESULTS / CATALOGUE_DEFAULT_GUIDANCE).is_file() else None
    if t:
        runs = ([(dd["text_to_image"], f", {_guidance(dd['text_to_image'])} (the default)")] if dd else []) + [(t, f", {_guidance(t)}")]
        rows = [[labels[k] + suffix, f"{r[k]['fid_inception']:.1f}", f"{r[k]['kid_inception_mean']:.3f}",
                 *(_pct(r[k]["hit_rate"][x]) for x in HEADS), f"{r[k]['sharpness']:.0f}", f"{r[k]['seconds_per_image']:.2f}"]
                for r, suffix in runs for k in ("hr", "baseline")]
        p = d["prompts"]
        rows.append([f"the {real['num_images']} real test photos at {size}; hit rates: the classifier on the captions' photos (ceiling)",
                     "", "", *(_pct(p["classifier_accuracy_real"][x]) for x in HEADS), f"{real['sharpness']:.0f}", ""])
        rows.append(["most frequent value among these captions", "", "", *(_pct(p["chance_majority"][x]["rate"]) for x in HEADS), "", ""])
        ref = d.get("references")
        if ref and "fid_inception" in ref:
            rows.append([f"{ref['num_fake']} real {ref['real_images_from']} photos (FID floor at this sample count)",
                         f"{ref['fid_inception']:.1f}", f"{ref['kid_inception_mean']:.3f}", "", "", "", f"{ref['sharpness']:.0f}", ""])
        parts += [f"Text-to-image, {t['num_images']} test captions (T={t['steps']}, {_sampling(t)}, seed {st['seed']}, "
                  f"batch {st['batch_size']}, transformer in {st['transformer_dtype']}); both rows from the same tokens "
                  f"(identical on {t['tokens_identical']} of {t['num_images']} images"
                  + (f"; at the default guidance on {dd['text_to_image']['tokens_identical']}" if dd else "") + "):", "",
                  _table(["", "FID", "KID", "article type", "base colour", "gender", "sharpness", "s/image"], rows), ""]
    r = d.get("reconstruction")
    if r:
        rows = [[labels[k].replace("the pipeline at", "tokens ->"), f"{r[k]['psnr']:.2f} dB", f"{r[k]['ssim']:.3f}",
                 f"{r[k]['rfid_inception']:.1f}", f"{r[k]['sharpness']:.0f}", f"{1000 * r[k]['seconds_per_image']:.0f}"]
                for k in ("hr", "baseline")]
        rows.append(["the real photos", "", "", "", f"{r['real_sharpness']:.0f}", ""])
        parts += [f"Reconstruction of {r['num_images']} test photos (tokens of the 64-px input; `decoder_hr` has the higher PSNR "
                  f"on {r['hr_psnr_wins']} of {r['num_images']}):", "",
                  _table(["", "PSNR", "SSIM", "rFID", "sharpness", "ms/image"], rows), ""]
    by_size = "; ".join(f"{k}: {v['num_images']}, sharpness {v['sharpness']:.0f}" for k, v in real["sharpness_by_source_size"].items())
    parts.append(f"Real photos ({by_size}) are padded on white to {w}:{h} and resized (bicubic) to {size}, so the "
                 f"168x224 ones are upscales. FID/KID: Inception-v3 against all {st['num_reference_real']} real test photos. "
                 "Hit rates: the attribute classifier on each image padded to a square and downscaled to 64 px. Sharpness: "
                 "variance of the 3x3 Laplacian of the grey image (0-255), mean over images; the real photos set the target. "
                 f"s/image: the pipeline call, {d['environment']['threads']} CPU threads on a shared {d['environment']['cpu']}. "
                 f"{_measured(d)}" + (f" Rows at the default guidance ({dd['environment']['threads']} CPU thread(s), {dd['environment']['cpu']}; "
                    f"s/image compares rows of one run only): {_measured(dd)}" if dd else ""))
    return "\n".join(parts)


WORDS_AND_MASKS = ("counterfactual_prompts", "text_guided_inpainting", "mixing_seam", "sample_diversity", "outpainting_wider")


def _met(ok) -> str:
    return "" if ok is None else ("met" if ok else "not met")


def _setting(row: dict) -> str:
    """The sampling settings of a result row that differ from the defaults, e.g. 'guidance 3'."""
    parts = [f"guidance {row['guidance_scale']:g}"]
    if row.get("negative_guidance_scale") is not None:
        parts.append(f"plus {row['negative_guidance_scale']:g} x (caption - {row['negative_prompt']}), a third pass")
    elif row.get("negative_prompt"):
        parts.append(f"negative prompt: {row['negative_prompt']}")
    if "context_dropout_steps" in row:
        parts.append(f"context dropout {row['context_dropout_steps']}" + (" (default)" if row.get("pipeline_default") else ""))
    return ", ".join(parts)


def words_and_masks() -> str:
    """The five benchmarks of `bench_words_and_masks.py` (issue 16): one summary table, then the command of each."""
    cf, inp, seam, div, out = (_load(f"{name}.json") for name in WORDS_AND_MASKS)
    rows = []
    # (a) counterfactual prompts
    c1 = next(r for r in cf["rows"] if r["set"] == "counterfactual")
    fr = next(r for r in cf["rows"] if r["set"] == "frequent")
    others = [r for r in cf["rows"] if r["set"] == "counterfactual" and r is not c1]
    target = cf["target"]["both_over_ceiling"]
    label = f"counterfactual prompts ({c1['pairs']} colour x article pairs with 0 train rows, {cf['settings']['samples']} samples each)"
    rows.append([label, "colour / article / both right",
                 f"{_pct(c1['hit_colour'])} / {_pct(c1['hit_article'])} / {_pct(c1['hit_both'])}"
                 + "".join(f"; {_setting(r)}: {_pct(r['hit_colour'])} / {_pct(r['hit_article'])} / {_pct(r['hit_both'])}"
                           for r in others),
                 f"classifier on real photos of those classes: {_pct(c1['ceiling_colour'])} / {_pct(c1['ceiling_article'])} / "
                 f"{_pct(c1['ceiling_both_product'])} (product); {fr['pairs']} frequent pairs, generated: {_pct(fr['hit_colour'])} / "
                 f"{_pct(fr['hit_article'])} / {_pct(fr['hit_both'])}",
                 f"both right >= {target:.0%} of the ceiling: {c1['both_over_ceiling'] or 0:.2f} of it, "
                 f"{_met((c1['both_over_ceiling'] or 0) >= target)}"])
    if "hit_both_luma" in c1:  # the article also judged by the colour-blind luma classifier
        j = cf["judge_check"]
        rows.append(["", "colour / article / both right, article by the colour-blind luma judge",
                     f"{_pct(c1['hit_colour'])} / {_pct(c1['hit_article_luma'])} / {_pct(c1['hit_both_luma'])}"
                     + "".join(f"; {_setting(r)}: {_pct(r['hit_colour'])} / {_pct(r['hit_article_luma'])} / {_pct(r['hit_both_luma'])}"
                               for r in others),
                     f"classifiers on real photos of those classes: {_pct(c1['ceiling_colour'])} / {_pct(c1['ceiling_article_luma'])} / "
                     f"{_pct(c1['ceiling_both_luma_product'])} (product); real photos of those articles recoloured to the pair's colour "
                     f"({j['photos']}): article right {_pct(j['article_rgb_after'])} for the RGB classifier (before recolouring "
                     f"{_pct(j['article_rgb_before'])}), {_pct(j['article_luma_after'])} for the luma judge ({_pct(j['article_luma_before'])})",
                     f"{c1['both_luma_over_ceiling'] or 0:.2f} of the ceiling, {_met((c1['both_luma_over_ceiling'] or 0) >= target)}"
                     + "".join(f"; {_setting(r)}: {r['both_luma_over_ceiling'] or 0:.2f}" for r in others)])
    # (b) text-guided inpainting
    i1 = inp["rows"][0]
    target = inp["target"]["hit_asked_colour"]
    label = (f"text-guided inpainting ({i1['photos']} real test photos, central torso box "
             f"{tuple(inp['settings']['mask_box'])}, caption with a contrasting colour)")
    rows.append([label, "classifier sees the asked colour",
                 _pct(i1["hit_asked_colour"]) + "".join(f"; {_setting(r)}: {_pct(r['hit_asked_colour'])}" for r in inp["rows"][1:]),
                 f"before the edit: {_pct(i1['asked_colour_before_edit'])}; ceiling (classifier on real photos of those colours): {_pct(inp['ceiling'])}",
                 f">= {target:.0%}: {_met(i1['hit_asked_colour'] >= target)}"])
    rows.append(["", "masked pixels nearest the asked colour", _pct(i1["asked_pixels_after"]), f"before the edit: {_pct(i1['asked_pixels_before'])}", ""])
    rows.append(["", "classifier keeps the photo's colour", _pct(i1["kept_colour_before_edit"]), "", ""])
    rows.append(["", "mean / max abs pixel change outside the mask (0-255)", f"{i1['outside_mean_abs_diff']:.2f} / {i1['outside_max_abs_diff']:.0f}", "",
                 f"unchanged: {_met(i1['outside_max_abs_diff'] == 0)}"])
    # (c) seam of style mixing
    sr = seam["rows"]
    mix, real = sr["style mixing (pipeline)"], sr["real Topwear test photos"]
    paste, recon = sr["naive paste (A's top + B's bottom)"], sr["naive paste through tokenizer + decoder (no sampling)"]
    label = f"style mixing seam ({seam['settings']['num_pairs']} pairs of real test photos, lower half from B)"
    rows.append([label, "blockiness across the seam band (1 = no token grid)", f"{mix['blockiness']:.2f}",
                 f"real photos {real['blockiness']:.2f}; naive paste through the decoder {recon['blockiness']:.2f}", "like the real photos"])
    rows.append(["", "jump across the seam line (RGB distance)", f"{mix['seam_jump']:.1f}",
                 f"real photos at that line {real['seam_jump']:.1f}; naive paste {paste['seam_jump']:.1f}", "like the real photos"])
    rows.append(["", "off-colour pixels in the band", _pct(mix["off_colour_fraction"]),
                 f"naive paste through the decoder {_pct(recon['off_colour_fraction'])}", ""])
    # (d) diversity
    d0 = next((r for r in div["rows"] if r.get("default")), div["rows"][0])
    target = div["target"]["ratio_to_real"]
    label = f"diversity ({div['settings']['num_captions']} frequent captions, {div['settings']['samples']} samples each)"
    rows.append([label, "mean pairwise Inception distance, / real photos",
                 "; ".join(f"{r['label']}: {r['feature_distance']:.2f} ({r['ratio_to_real']:.2f})" for r in div["rows"]),
                 f"real photos of the same type and colour: {d0['real_feature_distance']:.2f}",
                 f">= {target:.2f} of real: {_met(d0['ratio_to_real'] >= target)} on Inception features at the default sampling"])
    rows.append(["", "mean pairwise pixel difference at 24x32 (shape, pose, layout), / real photos",
                 "; ".join(f"{r['label']}: {r['coarse_pixel_distance']:.1f} "
                           f"({r['coarse_pixel_distance'] / r['real_coarse_pixel_distance']:.2f})" for r in div["rows"]),
                 f"real photos: {d0['real_coarse_pixel_distance']:.1f}",
                 f"the same bar: {_met(d0['coarse_pixel_distance'] / d0['real_coarse_pixel_distance'] >= target)}"])
    rows.append(["", "FID of all samples", "; ".join(f"{r['label']}: {r['fid_inception']:.1f}" for r in div["rows"]),
                 f"the real photos themselves: {div['real_photos']['fid_inception']:.1f}", "not worse than before the schedules"])
    # (e) outpainting
    p = out["parts"]
    wide, crop = p["own_scale_1.5x"], p["crop_1.5x"]
    made = (f"non-white in the new area {_pct(wide['non_white_new_area'])}" if wide["made"]
            else f"refused: {wide['error'].split(';')[0]}")
    label = f"outpainting ({out['settings']['num_photos']} real test photos)"
    rows.append([label, f"photo at its own scale onto a {wide['canvas'][1]}x{wide['canvas'][0]} canvas (1.5x wider)", made, "",
                 "a wider canvas with the garment continued"])
    if "own_scale_widest" in p:
        r = p["own_scale_widest"]
        rows.append(["", f"... onto the widest canvas it makes ({r['canvas'][1]}x{r['canvas'][0]}): non-white / garment continues",
                     f"{_pct(r['non_white_new_area'])} / {_pct(r['continuation'])}", "", ""])
    rows.append(["", f"central {crop['input_size'][1]} columns outpainted to {crop['canvas'][1]} (1.5x): non-white / garment continues",
                 f"{_pct(crop['non_white_new_area'])} / {_pct(crop['continuation'])}",
                 f"the real photo: {_pct(crop['truth_non_white_new_area'])} / {_pct(crop['truth_continuation'])}", ""])
    return "\n".join([
        _table(["benchmark", "figure", "the pipeline (shipped defaults)", "reference", "issue 16 target"], rows),
        "",
        "Details, per-pair and per-caption tables and example images in `benchmarks/results/` "
        + ", ".join(f"[{n}.md](benchmarks/results/{n}.md)" for n in WORDS_AND_MASKS) + ".",
        "",
        *(f"- {_measured(d)}" for d in (cf, inp, seam, div, out)),
    ])


def runtime_speed() -> str:
    return _bench("bench_runtime").render(_load("runtime.json"))


def roofline() -> str:
    d = _load("roofline.json")
    r, s = d["results"], d["settings"]
    ok = r["roofline_fraction"] >= 0.5
    return "\n".join([
        _table(["batch", "T", "matmul roof (float32)", "counted GFLOP / image", "images / s", "achieved GFLOP/s",
                "fraction of the roof", "target >= 0.5"],
               [[s["batch_size"], s["steps"], f"{r['matmul_roof_gflops']:.1f} GFLOP/s", f"{r['flops_per_image'] / 1e9:.2f}",
                 f"{r['images_per_second']:.3f}", f"{r['achieved_gflops']:.1f}", f"{r['roofline_fraction']:.3f}",
                 "met" if ok else "not met"]]),
        "",
        f"{d['environment']['threads']} CPU thread(s); transformer / decoder GFLOP per image "
        f"{r['flops_transformer_per_image'] / 1e9:.2f} / {r['flops_decoder_per_image'] / 1e9:.2f}. " + _measured(d),
    ])


def _bench(name: str):
    """A benchmark script's module (its table renderer is the one source of its README table)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    return __import__(name)


def busy_machine() -> str:
    d = _load("busy_machine.json")
    return "\n".join([_bench("bench_busy_machine").table(d), "", _measured(d)])


def serving() -> str:
    d = _load("serving.json")
    return "\n".join([_bench("bench_serving").table(d), "", _measured(d)])


TABLES = {
    "reconstruction": reconstruction,
    "text_to_image": text_to_image,
    "smart_vs_ar": smart_vs_ar,
    "generation_ablation": generation_ablation,
    "catalogue_resolution": catalogue_resolution,
    "words_and_masks": words_and_masks,
    "runtime_speed": runtime_speed,
    "roofline": roofline,
    "busy_machine": busy_machine,
    "serving": serving,
}


EVALUATE_SUMMARY = RESULTS / "evaluate_m6-fashion-64_test.md"
EVALUATE_RUNS = (  # the `m6-fashion evaluate` result files summarised in EVALUATE_SUMMARY, in this order
    "evaluate_m6-fashion-64_test_generation.json",
    "evaluate_m6-fashion-64_test_bf16.json",
    "evaluate_m6-fashion-64_test_reconstruction_all.json",
    "evaluate_m6-fashion-64_test_reconstruction.json",
    CATALOGUE_RESOLUTION,
)


def evaluate_summary() -> str:
    sys.path.insert(0, str(REPO_ROOT / "src"))  # a checkout without `pip install -e .`
    from m6_fashion.evaluation.evaluate import format_summary

    parts = ["## `m6-fashion evaluate` on the shipped model (test split)", ""]
    for name in EVALUATE_RUNS:
        d = _load(name)
        parts += [f"`{d['command']}` ({d['date']}, {d['seconds_total']:.0f} s, {d['environment']['threads']} CPU thread(s)):", "",
                  "```", format_summary(d).rstrip(), "```", ""]
    return "\n".join(parts)


def render(readme: str) -> str:
    def block(m: re.Match) -> str:
        name = m.group(1)
        if name not in TABLES:
            raise SystemExit(f"error: README.md has a block {name!r}; known: {', '.join(TABLES)}")
        return f"<!-- begin:{name} -->\n{TABLES[name]()}\n<!-- end:{name} -->"

    return re.sub(r"<!-- begin:(\w+) -->.*?<!-- end:\1 -->", block, readme, flags=re.S)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if README.md differs from the results")
    args = p.parse_args(argv)
    targets = {README: render(README.read_text()), EVALUATE_SUMMARY: evaluate_summary()}
    stale = [p for p, text in targets.items() if not p.is_file() or p.read_text() != text]
    if args.check:
        if stale:
            print(f"out of date: {', '.join(p.name for p in stale)}: run `python benchmarks/update_readme.py`", file=sys.stderr)
            return 1
        print("README.md tables and the evaluate summary match benchmarks/results/")
        return 0
    for p in stale:
        p.write_text(targets[p])
    print(f"rewritten from benchmarks/results/: {', '.join(p.name for p in stale) or 'nothing (already up to date)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
