"""Generation quality at an equal small training budget: PQ vs VQ vs RQ (paper Table 4, generation FID),
and SMART vs the autoregressive baseline (paper Table 2, quality columns).

Each row trains a stage-2 transformer from scratch with `python -m m6_fashion.training.train_transformer`,
all with the same size, data, steps, batch, learning rate and seed; only the tokenizer or the objective
differs:

* PQ / VQ / RQ + SMART: a bidirectional masked-modelling transformer on the codes of each tokenizer trained by
  `bench_quantizers.py` (equal codebook storage and tokenizer budget), sampled by SMART (T=10).
* PQ + AR: the same size with `attention="causal"` and the next-token objective on the PQ codes, decoded in
  raster order with a KV cache (`M6FashionTransformer.generate_autoregressive`).

Every model generates one image per test caption (the same seeded caption sample as `m6-fashion evaluate`,
temperature 1.0 for both samplers), scored with the same metrics: Inception FID/KID against all real test
images, the attribute-classifier hit rates, and seconds per image (token generation + decoding, batch 16).

The budget is what a CPU affords, so every model here is far weaker than the shipped one (trained on a GPU)
and only the comparison between rows is meaningful; one seed per row, so small differences are noise.

    python benchmarks/bench_quantizers.py                 # first: the three tokenizers (runs/bench_quantizers)
    python benchmarks/bench_generation_ablation.py        # 4 trainings + 4 x 200 generated images
    python benchmarks/bench_generation_ablation.py --fast # CI smoke run (numbers mean nothing)

Trained models go to --work-dir (default runs/bench_generation_ablation, not tracked); a rerun reuses
finished trainings. Writes generation_ablation.json / .md to benchmarks/results (runs/benchmarks-fast with --fast).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (puts src/ on the path)
from _common import REPO_ROOT, add_run_args, command_line, environment, fmt, header, markdown_table, now, out_dir, set_threads, write_results

ROWS = (  # (name, quantizer, attention)
    ("PQ + SMART", "product", "bidirectional"),
    ("VQ + SMART", "vector", "bidirectional"),
    ("RQ + SMART", "residual", "bidirectional"),
    ("PQ + AR", "product", "causal"),
)
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "fashion-product-images"


def _slug(name: str) -> str:
    return name.lower().replace(" + ", "-").replace(" ", "-")


def _training_settings(args) -> dict:
    """What makes two trainings the same: a finished one is reused only when these match."""
    return {k: getattr(args, k) for k in ("steps", "batch_size", "train_limit", "hidden_size", "layers", "learning_rate", "seed", "fp32")}


def train_one(name: str, qtype: str, attention: str, args, work: Path, text_tokenizer: Path) -> dict:
    out = work / _slug(name)
    done = out / "bench_meta.json"
    settings = _training_settings(args)
    if done.is_file() and json.loads(done.read_text()).get("settings") == settings:
        print(f"{name}: reusing the trained model in {out}", flush=True)
        return json.loads(done.read_text())
    tok_dir = Path(args.tokenizers_dir) / qtype / "image_tokenizer"
    if not (tok_dir / "config.json").is_file():
        raise SystemExit(f"error: no {qtype} tokenizer in {tok_dir}; run `python benchmarks/bench_quantizers.py` first "
                         f"(or pass --tokenizers-dir)")
    cmd = [
        sys.executable, "-m", "m6_fashion.training.train_transformer",
        "--data_dir", str(args.data_dir), "--pq_tokenizer", str(tok_dir), "--text_tokenizer", str(text_tokenizer),
        "--pretokenize_cache_dir", str(work / "pretokenized"), "--output_dir", str(out),
        "--hidden_size", str(args.hidden_size), "--num_hidden_layers", str(args.layers),
        "--num_attention_heads", str(max(1, args.hidden_size // 64)), "--intermediate_size", str(4 * args.hidden_size),
        "--attention", attention, "--prefix_attention", "full" if attention == "causal" else "isolated",
        "--max_text_length", "32", "--max_condition_tokens", "256",
        "--per_device_train_batch_size", str(args.batch_size), "--learning_rate", str(args.learning_rate),
        "--warmup_steps", str(max(1, args.steps // 10)), "--lr_scheduler_type", "cosine", "--max_steps", str(args.steps),
        "--weight_decay", "0.01", "--max_train_samples", str(args.train_limit), "--eval_strategy", "no", "--max_eval_samples", str(min(500, args.train_limit)),
        "--save_strategy", "steps", "--save_steps", str(max(1, args.steps // 4)), "--save_total_limit", "1",
        "--logging_steps", str(max(1, args.steps // 20)), "--seed", str(args.seed), "--report_to", "none",
        "--dataloader_num_workers", "0", "--disable_tqdm", "true",
    ]
    if not args.fp32:
        cmd.append("--bf16")
    if any(out.glob("checkpoint-*")):
        cmd += ["--resume_from_checkpoint", "latest"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    print(f"{name}: training {args.steps} steps x batch {args.batch_size} ({attention}, {qtype} codes)", flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True, env=env, cwd=REPO_ROOT)
    meta = {"dir": str(out), "settings": settings, "train_seconds": time.time() - t0}
    state = sorted(out.glob("checkpoint-*/trainer_state.json"))
    if state:
        logs = [e for e in json.loads(state[-1].read_text())["log_history"] if "loss" in e]
        meta["final_train_loss"] = logs[-1]["loss"] if logs else None
    done.write_text(json.dumps(meta, indent=2))
    return meta


def build_pipeline(qtype: str, model_dir: Path, tokenizers_dir: Path):
    from transformers import PreTrainedTokenizerFast

    from m6_fashion import M6FashionPipeline, M6FashionTransformer, PQTokenizer, SMARTScheduler, StyleDecoder

    it = PQTokenizer.from_pretrained(tokenizers_dir / qtype / "image_tokenizer").eval()
    pipe = M6FashionPipeline(
        image_tokenizer=it, decoder=StyleDecoder.from_pretrained(tokenizers_dir / qtype / "decoder").eval(),
        transformer=M6FashionTransformer.from_pretrained(model_dir).eval(),
        tokenizer=PreTrainedTokenizerFast.from_pretrained(model_dir),
        scheduler=SMARTScheduler(mask_token_id=it.config.codebook_size, temperature=1.0),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate_ar(pipe, prompts, batch_size: int, seed: int, temperature: float = 1.0) -> dict:
    """One image per prompt with the causal transformer (KV cache), batches seeded like `evaluate.generate`."""
    import torch

    from m6_fashion.evaluation.evaluate import _to_uint8
    from m6_fashion.models.sequence_layout import build_model_inputs

    cfg = pipe.transformer.config
    out, seconds = [], 0.0
    for j, i in enumerate(range(0, len(prompts), batch_size)):
        batch = list(prompts[i : i + batch_size])
        g = torch.Generator().manual_seed(seed + j)
        t0 = time.perf_counter()
        inputs = build_model_inputs(cfg, pipe.encode_prompt(batch), None, None)
        prefix = {k: v[:, : -cfg.num_image_tokens] for k, v in inputs.items()}
        with torch.no_grad():
            codes = pipe.transformer.generate_autoregressive(**prefix, generator=g, temperature=temperature)
            pixels = pipe.decode_tokens(codes)
        seconds += time.perf_counter() - t0
        out.append(_to_uint8(pixels))
    return {"images": torch.cat(out), "seconds_per_image": seconds / len(prompts)}


def score(images, real_features, real_stats, classifier, extractor, attributes) -> dict:
    from m6_fashion.evaluation.evaluate import _hit_rates, fid_kid, inception_features, is_classifier

    feats = inception_features(extractor, images)
    return {**fid_kid(real_features, feats, real_stats=real_stats), **is_classifier(classifier, images),
            "hit_rate": _hit_rates(classifier, images, attributes)}


def render(data: dict) -> str:
    s = data["settings"]
    md = [header("Generation at an equal small training budget: quantisers and SMART vs AR", data)]
    md.append(
        f"Every row: a stage-2 transformer of {s['layers']} layers x {s['hidden_size']} trained from scratch for "
        f"{s['steps']} steps x batch {s['batch_size']} (lr {s['learning_rate']}, seed {s['seed']}, "
        f"{'float32' if s.get('fp32') else 'bfloat16 autocast'}) on the first "
        f"{s['train_limit']} train images, coded by the tokenizers of `bench_quantizers.py`; {s['num_samples']} test "
        f"captions, one image each, temperature 1.0; FID/KID (Inception-v3) against {s['num_real']} real test images. "
        "Far below the shipped model's budget: compare rows, not absolute values.\n"
    )
    rows = []
    for r in data["rows"]:
        h = r["hit_rate"]
        rows.append([r["name"], r["sampler"], fmt(r.get("final_train_loss"), 3), fmt(r["fid_inception"], 1),
                     fmt(r["kid_inception_mean"], 4), fmt(h["articleType"], 3), fmt(h["baseColour"], 3), fmt(h["gender"], 3),
                     fmt(r["seconds_per_image"], 3), fmt(r["train_seconds"], 0)])
    md.append(markdown_table(["row", "sampler", "final train loss", "FID", "KID", "hit articleType", "hit baseColour",
                              "hit gender", "s/image", "train s"], rows))
    md.append("")
    md.append("Train losses are not comparable between the masked (SMART) and next-token (AR) objectives. "
              "s/image: batch 16, token generation + pixel decoding, 1 process on a shared CPU.")
    ref = data.get("references")
    if ref:
        md.append(f"\nClassifier on the real images of the same captions: articleType {fmt(ref['articleType'], 3)}, "
                  f"baseColour {fmt(ref['baseColour'], 3)}, gender {fmt(ref['gender'], 3)}.")
    ch = data.get("chance_majority")
    if ch:
        md.append("Chance (the most frequent value among the captions): "
                  + ", ".join(f"{h} {fmt(ch[h]['rate'], 3)}" for h in ch) + ".")
    return "\n".join(md)


def main(argv=None) -> dict:
    import torch

    from m6_fashion.default_model import default_model_path
    from m6_fashion.evaluation.attribute_classifier import load_default_classifier
    from m6_fashion.evaluation.attribute_classifier import HEADS
    from m6_fashion.evaluation.evaluate import (_clean, _majority, _hit_rates, cached_real_features, feature_stats, generate,
                                                 load_split, prompt_rows)
    from m6_fashion.evaluation.metrics import InceptionFeatureExtractor

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizers-dir", default=None, help="output of bench_quantizers.py (default runs/bench_quantizers)")
    p.add_argument("--work-dir", default=None, help="trained transformers (default runs/bench_generation_ablation)")
    p.add_argument("--data-dir", default=str(DATA_DIR))
    p.add_argument("--steps", type=int, default=None, help="training steps per row (default 400; 2 with --fast)")
    p.add_argument("--batch-size", type=int, default=None, help="default 32; 4 with --fast")
    p.add_argument("--train-limit", type=int, default=None, help="train images (default 8000; 64 with --fast)")
    p.add_argument("--hidden-size", type=int, default=None, help="default 192; 64 with --fast")
    p.add_argument("--layers", type=int, default=None, help="default 3; 1 with --fast")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--fp32", action="store_true", help="train in float32 (default: bfloat16 autocast, faster on CPUs with AVX512-BF16)")
    p.add_argument("--num-samples", type=int, default=None, help="test captions per row (default 200; 4 with --fast)")
    p.add_argument("--rows", nargs="+", default=None, help="subset of row names, e.g. 'PQ + SMART' 'PQ + AR'")
    p.add_argument("--seed", type=int, default=0)
    add_run_args(p)
    args = p.parse_args(argv)
    fast = args.fast
    args.steps = args.steps or (2 if fast else 400)
    args.batch_size = args.batch_size or (4 if fast else 32)
    args.train_limit = args.train_limit or (64 if fast else 8000)
    args.hidden_size = args.hidden_size or (64 if fast else 192)
    args.layers = args.layers or (1 if fast else 3)
    num_samples = args.num_samples or (4 if fast else 200)
    tokenizers_dir = Path(args.tokenizers_dir or REPO_ROOT / "runs" / ("bench_quantizers_fast" if fast else "bench_quantizers"))
    args.tokenizers_dir = str(tokenizers_dir)
    work = Path(args.work_dir or REPO_ROOT / "runs" / ("bench_generation_ablation_fast" if fast else "bench_generation_ablation"))
    work.mkdir(parents=True, exist_ok=True)
    set_threads(args.threads)
    rows_spec = [r for r in ROWS if args.rows is None or r[0] in args.rows]
    if not rows_spec:
        raise SystemExit(f"error: --rows matched nothing; accepted: {', '.join(r[0] for r in ROWS)}")
    text_tokenizer = Path(default_model_path()) / "tokenizer"  # the shipped word-level tokenizer, for every row

    trained = {name: train_one(name, q, a, args, work, text_tokenizer) for name, q, a in rows_spec}

    classifier = load_default_classifier(None)
    extractor = InceptionFeatureExtractor()
    limit = 8 if fast else None
    data = load_split("test", 64, args.data_dir, None if fast else REPO_ROOT / ".cache" / "m6-fashion", limit=limit)
    real_features = cached_real_features(extractor, data, "test", None if fast else REPO_ROOT / ".cache" / "m6-fashion",
                                         tag="head" if fast else "all")
    real_stats = feature_stats(real_features)
    idx = prompt_rows(data, num_samples, args.seed)
    prompts = [data["text"][i] for i in idx]
    attributes = [{h: _clean(data[h][i]) for h in HEADS} for i in idx]
    references = _hit_rates(classifier, data["images"][torch.as_tensor(idx)], attributes)
    chance = {h: _majority([a[h] for a in attributes]) for h in HEADS}

    results = {
        "date": now(), "command": command_line(), "environment": environment(), "fast": fast,
        "settings": _training_settings(args) | {"num_samples": num_samples, "num_real": int(real_features.shape[0]), "smart_steps": 10, "temperature": 1.0},
        "references": references,
        "chance_majority": chance,
        "prompt_row_ids": [int(data["ids"][i]) for i in idx],
        "rows": [],
    }
    for name, qtype, attention in rows_spec:
        pipe = build_pipeline(qtype, Path(trained[name]["dir"]), tokenizers_dir)
        print(f"{name}: generating {num_samples} images", flush=True)
        if attention == "causal":
            gen = generate_ar(pipe, prompts, 16, args.seed)
        else:
            gen = generate(pipe, prompts, steps=10, temperature=1.0, batch_size=16, seed=args.seed)
        row = {"name": name, "quantizer": qtype, "sampler": "AR (KV cache)" if attention == "causal" else "SMART T=10",
               **score(gen["images"], real_features, real_stats, classifier, extractor, attributes),
               "seconds_per_image": gen["seconds_per_image"], "train_seconds": trained[name]["train_seconds"],
               "final_train_loss": trained[name].get("final_train_loss")}
        print(f"{name}: FID {row['fid_inception']:.1f}, hit articleType {row['hit_rate']['articleType']:.3f}", flush=True)
        results["rows"].append(row)
    write_results(out_dir(args.out_dir, fast), "generation_ablation", results, render(results))
    return results


if __name__ == "__main__":
    main()
