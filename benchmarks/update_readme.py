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


def text_to_image() -> str:
    gen = _load("evaluate_m6-fashion-64_test_generation.json")
    bf16 = _load("evaluate_m6-fashion-64_test_bf16.json")
    shipped = REPO_ROOT / "src" / "m6_fashion" / "pretrained" / "m6-fashion-64" / "scheduler" / "scheduler_config.json"
    default_t = json.loads(shipped.read_text())["temperature"]
    rows = []
    for r in sorted(gen["text_to_image"], key=lambda r: r["temperature"]):
        label = f"generated, temperature {r['temperature']:.1f}"
        if abs(r["temperature"] - default_t) < 1e-9:
            label += " (shipped default)"
        rows.append(_scored_row(label, r["hit_rate"], r))
    for r in bf16["text_to_image"]:
        rows.append(_scored_row(f"generated, temperature {r['temperature']:.1f}, transformer in bfloat16 (`--bf16`)", r["hit_rate"], r))
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
    if t:
        rows = [[labels[k], f"{t[k]['fid_inception']:.1f}", f"{t[k]['kid_inception_mean']:.3f}",
                 *(_pct(t[k]["hit_rate"][x]) for x in HEADS), f"{t[k]['sharpness']:.0f}", f"{t[k]['seconds_per_image']:.2f}"]
                for k in ("hr", "baseline")]
        p = d["prompts"]
        rows.append([f"the {real['num_images']} real test photos at {size}; hit rates: the classifier on the captions' photos (ceiling)",
                     "", "", *(_pct(p["classifier_accuracy_real"][x]) for x in HEADS), f"{real['sharpness']:.0f}", ""])
        rows.append(["most frequent value among these captions", "", "", *(_pct(p["chance_majority"][x]["rate"]) for x in HEADS), "", ""])
        ref = d.get("references")
        if ref and "fid_inception" in ref:
            rows.append([f"{ref['num_fake']} real {ref['real_images_from']} photos (FID floor at this sample count)",
                         f"{ref['fid_inception']:.1f}", f"{ref['kid_inception_mean']:.3f}", "", "", "", f"{ref['sharpness']:.0f}", ""])
        parts += [f"Text-to-image, {t['num_images']} test captions (T={t['steps']}, temperature {t['temperature']:g}, seed {st['seed']}, "
                  f"batch {st['batch_size']}, transformer in {st['transformer_dtype']}); both rows from the same tokens "
                  f"(identical on {t['tokens_identical']} of {t['num_images']} images):", "",
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
                 f"{_measured(d)}")
    return "\n".join(parts)


TABLES = {
    "reconstruction": reconstruction,
    "text_to_image": text_to_image,
    "smart_vs_ar": smart_vs_ar,
    "generation_ablation": generation_ablation,
    "catalogue_resolution": catalogue_resolution,
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
