"""Quantiser ablation (paper Table 4 analog): product (PQ) vs vector (VQ) vs residual (RQ) quantisation.

Equal codebook storage: every quantiser stores K x D = 256 x 64 codebook numbers (PQ: 4 codebooks of 256
codes x 16 channels; VQ: one codebook of 256 codes x 64 channels; RQ: 4 stages sharing one codebook of
256 codes x 64 channels). Equal training budget: each tokenizer + decoder is trained from scratch with
`python -m m6_fashion.training.train_tokenizer` for the same number of steps, batch size, learning rate,
seed and train subset (no adversarial loss, so the budget is the same reconstruction-loss training for
all three). Then, on the first test images: reconstruction PSNR/SSIM, rFID (Inception-v3 FID of the
reconstructions vs the same originals) and per-group codebook usage/perplexity.

Generation FID per quantiser needs a stage-2 transformer trained on each tokenizer's codes:
`bench_generation_ablation.py` trains them (on the tokenizers this script leaves in runs/bench_quantizers)
and writes generation_ablation.json; when that file is in the output folder, its SMART FIDs are joined
into this table.

The default budget is small (CPU): the absolute numbers are far below the shipped stage 1 (trained for
many more steps on a GPU), which is reported on the same test images for reference; only the comparison
between the three rows at equal budget is meaningful.

    python benchmarks/bench_quantizers.py                  # full: 150 steps x batch 16 on 2,000 train images each
    python benchmarks/bench_quantizers.py --fast           # CI smoke run: 2 steps x batch 4

Writes quantizers.json / .md / .png to benchmarks/results (runs/benchmarks-fast with --fast); the trained
models go to --work-dir (default runs/bench_quantizers, not tracked).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import _common  # noqa: F401  (puts src/ on the path)
from _common import REPO_ROOT, add_run_args, command_line, environment, fmt, header, markdown_table, now, out_dir, plt, set_threads, write_results

QUANTIZERS = ("product", "vector", "residual")
LABELS = {"product": "PQ (4 x 256 codes of 16-d)", "vector": "VQ (256 codes of 64-d)", "residual": "RQ (4 stages, shared 256 codes of 64-d)"}


def train_one(qtype: str, args, work: Path, fast: bool) -> dict:
    out = work / qtype
    cmd = [
        sys.executable, "-m", "m6_fashion.training.train_tokenizer",
        "--data", args.data_dir, "--output_dir", str(out), "--quantizer_type", qtype,
        "--num_groups", "4", "--codebook_size", "256", "--latent_channels", "64",
        "--encoder_channels", *map(str, args.encoder_channels), "--decoder_channels", *map(str, args.decoder_channels),
        "--style_channels", str(args.style_channels),
        "--train_batch_size", str(args.batch_size), "--max_train_steps", str(args.steps),
        "--train_limit", str(args.train_limit), "--eval_limit", str(args.eval_limit),
        "--adv_start_step", str(args.steps + 1), "--eval_every", str(args.steps + 1),
        "--checkpoint_every", str(args.steps + 1), "--seed", str(args.seed),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", str(args.threads or 1))
    env["TQDM_DISABLE"] = "1"
    env["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    if (out / "image_tokenizer" / "config.json").is_file() and (out / "final_metrics.json").is_file():
        meta = json.loads((out / "final_metrics.json").read_text())
        if meta["args"]["max_train_steps"] == args.steps and meta["args"]["train_batch_size"] == args.batch_size:
            print(f"{qtype}: reusing the trained model in {out}", flush=True)
            return {"dir": out, "train_seconds": meta.get("train_seconds"), "reused": True}
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    print(f"{qtype}: training ({args.steps} steps x batch {args.batch_size})", flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True, env=env, cwd=REPO_ROOT)
    seconds = time.time() - t0
    meta = json.loads((out / "final_metrics.json").read_text())
    meta["train_seconds"] = seconds
    (out / "final_metrics.json").write_text(json.dumps(meta, indent=2))
    return {"dir": out, "train_seconds": seconds, "reused": False}


def render(data) -> str:
    md = [header("Quantiser ablation: PQ vs VQ vs RQ at equal codebook storage and training budget", data)]
    s = data["settings"]
    md.append(
        f"Each tokenizer + decoder trained from scratch for {s['steps']} steps x batch {s['batch_size']} on the first "
        f"{s['train_limit']} train images (encoder {s['encoder_channels']}, decoder {s['decoder_channels']}, no adversarial "
        f"loss, seed {s['seed']}); evaluated on the first {s['eval_images']} test images. Generation FID: "
        f"{data['generation_fid']}.\n"
    )
    rows = []
    for r in data["rows"]:
        cb = r["codebook"]
        rows.append([r["label"], r["codebook_numbers"], r["tokens_per_position"], fmt(r["psnr"], 2), fmt(r["ssim"], 4),
                     fmt(r["rfid_inception"], 1), " / ".join(f"{u:.2f}" for u in cb["usage"]),
                     " / ".join(f"{p:.0f}" for p in cb["perplexity"]), fmt(r.get("train_seconds"), 0),
                     fmt(r["generation_fid_smart"], 1) if r.get("generation_fid_smart") is not None else "not measured"])
    md.append(markdown_table(["quantiser", "codebook numbers", "codes per position", "PSNR (dB)", "SSIM", "rFID",
                              "codebook usage per group", "perplexity per group", "train s", "generation FID"], rows))
    md.append("")
    md.append("One seed per quantiser; run-to-run variation was not measured, so differences of a few tenths of a dB are not conclusive. "
              "\"train s\" is the wall time of the training command (data loading included) on a machine shared with "
              "other jobs, not a speed comparison.")
    ref = data.get("shipped_reference")
    if ref:
        md.append("")
        md.append(f"For reference, the shipped stage-1 tokenizer ({ref['quantizer_type']}, trained much longer on a GPU) on the "
                  f"same {ref['num_images']} test images: PSNR {fmt(ref['psnr'], 2)} dB, SSIM {fmt(ref['ssim'], 4)}, "
                  f"rFID {fmt(ref['rfid_inception'], 1)}, mean codebook usage {fmt(ref['codebook']['mean_usage'])}.")
    md.append("\n![quantiser ablation](quantizers.png)")
    return "\n".join(md)


def plot(data, path) -> None:
    pyplot = plt()
    rows = data["rows"]
    names = [r["quantizer_type"] for r in rows]
    fig, axes = pyplot.subplots(1, 3, figsize=(12, 3.5))
    axes[0].bar(names, [r["psnr"] for r in rows], color=["C0", "C1", "C2"][: len(rows)])
    axes[0].set_title("reconstruction PSNR (dB, higher is better)", fontsize=9)
    axes[1].bar(names, [r["rfid_inception"] for r in rows], color=["C0", "C1", "C2"][: len(rows)])
    axes[1].set_title("rFID, Inception-v3 (lower is better)", fontsize=9)
    for i, r in enumerate(rows):
        usage = r["codebook"]["usage"]
        axes[2].bar([f"{r['quantizer_type']}\ng{j}" for j in range(len(usage))], usage, color=f"C{i}")
    axes[2].set_title("codebook usage per group", fontsize=9)
    axes[2].tick_params(axis="x", labelsize=6)
    fig.suptitle(f"PQ vs VQ vs RQ at equal codebook storage, {data['settings']['steps']} training steps each ({data['date']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="training steps per quantiser (default 150; 2 with --fast)")
    p.add_argument("--batch-size", type=int, default=None, help="default 16; 4 with --fast")
    p.add_argument("--train-limit", type=int, default=None, help="train images (default 2000; 32 with --fast)")
    p.add_argument("--eval-limit", type=int, default=None, help="test images for evaluation (default 256; 8 with --fast)")
    p.add_argument("--encoder-channels", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--decoder-channels", type=int, nargs="+", default=[128, 64, 32])
    p.add_argument("--style-channels", type=int, default=64)
    p.add_argument("--quantizers", nargs="+", default=list(QUANTIZERS), choices=QUANTIZERS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--work-dir", default=None, help="where the trained tokenizers go (default runs/bench_quantizers)")
    add_run_args(p)
    args = p.parse_args(argv)

    import torch

    from m6_fashion.evaluation import InceptionFeatureExtractor
    from m6_fashion.evaluation import evaluate as ev
    from m6_fashion.models import PQTokenizer, StyleDecoder

    set_threads(args.threads)
    fast = args.fast
    args.steps = args.steps or (2 if fast else 150)
    args.batch_size = args.batch_size or (4 if fast else 16)
    args.train_limit = args.train_limit or (32 if fast else 2000)
    args.eval_limit = args.eval_limit or (8 if fast else 256)
    args.data_dir = args.data_dir or ev.DEFAULT_DATA_DIR
    cache_dir = args.cache_dir or ev.DEFAULT_CACHE_DIR
    work = Path(args.work_dir) if args.work_dir else REPO_ROOT / "runs" / ("bench_quantizers_fast" if fast else "bench_quantizers")
    directory = out_dir(args.out_dir, fast)
    t_start = time.time()

    data = ev.load_split("test", 64, args.data_dir, cache_dir, limit=args.eval_limit)
    extractor = InceptionFeatureExtractor()
    reference = {}

    def real_features():
        """Inception features of the evaluation images (looked up once the first tokenizer is trained)."""
        if not reference:
            all_cache = Path(cache_dir) / f"inception-test-all-64px-n{len(ev.load_split('test', 64, args.data_dir, cache_dir)['ids'])}.pt"
            cached = torch.load(all_cache, weights_only=True) if all_cache.is_file() else None
            if cached is not None and torch.equal(cached["ids"][: len(data["ids"])], data["ids"]):
                real = cached["features"][: len(data["ids"])]  # the evaluation's cache of the whole split
            else:
                real = ev.inception_features(extractor, data["images"])
            reference.update(real=real, stats=ev.feature_stats(real))
        return reference["real"], reference["stats"]

    result = {
        "benchmark": "quantizers",
        "date": now(),
        "command": command_line(),
        "environment": environment(),
        "fast": fast,
        "settings": {"steps": args.steps, "batch_size": args.batch_size, "train_limit": args.train_limit,
                     "eval_images": int(data["images"].shape[0]), "encoder_channels": args.encoder_channels,
                     "decoder_channels": args.decoder_channels, "style_channels": args.style_channels,
                     "latent_channels": 64, "codebook_size": 256, "num_groups": 4, "seed": args.seed,
                     "adversarial_loss": False},
        "generation_fid": "not measured (needs a stage-2 transformer trained on each tokenizer's codes: bench_generation_ablation.py)",
        "rows": [],
    }
    gen_path = directory / "generation_ablation.json"
    gen_fid = {}
    if gen_path.is_file():
        gen = json.loads(gen_path.read_text())
        gen_fid = {r["quantizer"]: r["fid_inception"] for r in gen["rows"] if r["sampler"].startswith("SMART")}
        st = gen["settings"]
        result["generation_fid"] = (
            f"SMART T=10 on 200 test captions with a {st['layers']} x {st['hidden_size']} transformer trained for {st['steps']} "
            f"steps on each tokenizer's codes, from generation_ablation.json ({gen['date']}, `{gen['command']}`)")
    for q in args.quantizers:
        trained = train_one(q, args, work, fast)
        tok = PQTokenizer.from_pretrained(str(trained["dir"] / "image_tokenizer")).eval()
        dec = StyleDecoder.from_pretrained(str(trained["dir"] / "decoder")).eval()
        shim = SimpleNamespace(image_tokenizer=tok, decoder=dec, device=torch.device("cpu"))
        real, real_stats = real_features()
        r = ev.evaluate_reconstruction(shim, data, extractor, real, real_stats=real_stats)
        row = {"quantizer_type": q, "label": LABELS[q], "codebook_numbers": tok.codebook_numel(),
               "tokens_per_position": tok.num_token_groups, "train_seconds": trained["train_seconds"],
               "reused_trained_model": trained["reused"], "generation_fid_smart": gen_fid.get(q), **r}
        result["rows"].append(row)
        print(f"{q}: PSNR {r['psnr']:.2f}  SSIM {r['ssim']:.4f}  rFID {r['rfid_inception']:.1f}  "
              f"usage {[round(u, 2) for u in r['codebook']['usage']]}", flush=True)
        write_results(directory, "quantizers", result, render(result))

    # the shipped stage 1 on the same images, for scale
    from m6_fashion.default_model import default_model_path

    root = Path(default_model_path())
    tok = PQTokenizer.from_pretrained(str(root / "image_tokenizer"), dtype=torch.float32).eval()
    dec = StyleDecoder.from_pretrained(str(root / "decoder"), dtype=torch.float32).eval()
    shim = SimpleNamespace(image_tokenizer=tok, decoder=dec, device=torch.device("cpu"))
    real, real_stats = real_features()
    ref = ev.evaluate_reconstruction(shim, data, extractor, real, real_stats=real_stats)
    ref["quantizer_type"] = tok.config.quantizer_type
    result["shipped_reference"] = ref
    result["seconds_total"] = time.time() - t_start
    write_results(directory, "quantizers", result, render(result))
    plot(result, directory / "quantizers.png")
    print(f"total {time.time() - t_start:.0f} s")
    return result


if __name__ == "__main__":
    main()
