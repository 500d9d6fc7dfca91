"""Torch-free runtime (ONNX Runtime + numpy) vs the PyTorch pipeline on the shipped model, CPU.

    python benchmarks/bench_runtime.py [--bundle DIR] [--threads 2] [--repeats 3] [--batches 1 8] [--json out.json]

Prints, all measured in this one run:

* time per image of a full text-to-image generation (10 SMART passes, sampling, decode to PIL) at each
  batch size: PyTorch ``M6FashionPipeline`` vs the runtime with the float32 transformer and with the
  int8 (dynamic quantisation) transformer; both frameworks get the same number of intra-op threads;
  runs alternate between the three so that load changes on the machine hit all of them alike;
* int8 vs float32 quality: argmax agreement of the transformer logits on real test inputs (test-split
  photos encoded, half of the tokens masked, their captions), and the token agreement of a whole
  deterministic generation;
* installed size: the files of each side's distributions and their dependencies (transitively,
  extras excluded) in site-packages; the model files (bundle vs pipeline folder) separately;
* peak RSS and time to the first image, each side in its own subprocess generating one image (the
  runtime's subprocess cannot import torch).

Without ``--bundle`` the shipped model is exported (float32 + int8) into a temporary folder first.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Set

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNTIME_SRC = REPO_ROOT / "runtime" / "src"
FASHION_TEST = REPO_ROOT.parent / "shared" / "data" / "fashion-product-images" / "test.parquet"
for p in (str(REPO_ROOT / "src"), str(REPO_ROOT), str(RUNTIME_SRC)):
    if p not in sys.path:
        sys.path.insert(0, p)

FALLBACK_PROMPTS = [
    "Men Navy Blue Casual Shirt", "Women Pink Handbag", "Unisex Black Sports Shoes", "Girls Red Dress",
    "Men Grey Melange T-shirt", "Women Blue Jeans", "Men Brown Leather Belt", "Women White Kurta",
]


# ---------------------------------------------------------------------------------------------- sizes
def _req_name(req: str) -> Optional[str]:
    """Distribution name of a requirement string, or None when it only applies to an extra / other platform."""
    from packaging.requirements import Requirement

    r = Requirement(req)
    if r.marker is not None and not r.marker.evaluate({"extra": ""}):
        return None
    return r.name


def dependency_closure(roots: List[str]) -> Set[str]:
    """Installed distributions needed by ``roots`` (transitively, no extras), normalised names."""
    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
    seen: Set[str] = set()
    todo = list(roots)
    while todo:
        name = norm(todo.pop())
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen.add(name)
        for req in dist.requires or []:
            dep = _req_name(req)
            if dep:
                todo.append(dep)
    return seen


def dist_size(name: str) -> int:
    """Bytes of the files a distribution installed (for an editable install: its package folder)."""
    dist = md.distribution(name)
    total = 0
    files = dist.files or []
    for f in files:
        p = Path(dist.locate_file(f))
        if p.is_file() and "__pycache__" not in p.parts:
            total += p.stat().st_size
    if total < 100_000 and name in ("m6-fashion",):  # editable install: count the source package
        import m6_fashion

        pkg = Path(m6_fashion.__file__).parent
        total += sum(f.stat().st_size for f in pkg.rglob("*") if f.is_file() and "__pycache__" not in f.parts and "pretrained" not in f.parts)
    return total


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def runtime_requirements() -> List[str]:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    meta = tomllib.loads((REPO_ROOT / "runtime" / "pyproject.toml").read_text())["project"]
    return [n for n in (_req_name(r) for r in meta["dependencies"]) if n]


# ---------------------------------------------------------------------------------------------- timing workers
def peak_rss_mb() -> float:
    """This process's own resident-set high-water mark (VmHWM). ``ru_maxrss`` is not used: on Linux it
    survives execve, so a subprocess would report the benchmark's own memory at fork time."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(kind: str, bundle: str, threads: int, steps: int, repeats: int, batches: List[int], prompts: List[str]) -> dict:
    """Runs in a fresh subprocess: load, first image (cold start + memory), then timed runs per batch size."""
    t0 = time.perf_counter()
    if kind == "pytorch":
        import torch

        torch.set_num_threads(threads)
        from m6_fashion import M6FashionPipeline

        pipe = M6FashionPipeline.from_pretrained()
        pipe.set_progress_bar_config(disable=True)

        def generate(batch_prompts, seed):
            return pipe(batch_prompts, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed)).images
    else:
        from m6_fashion_runtime import M6FashionRuntime

        rt = M6FashionRuntime(bundle, num_threads=threads, int8=kind == "runtime_int8")

        def generate(batch_prompts, seed):
            return rt(batch_prompts, num_inference_steps=steps, seed=seed).images
    load_s = time.perf_counter() - t0
    generate(prompts[:1], 0)
    out = {"kind": kind, "load_s": load_s, "first_image_s": time.perf_counter() - t0, "peak_rss_mb_first_image": peak_rss_mb(),
           "torch_imported": "torch" in sys.modules and sys.modules["torch"] is not None, "per_image_s": {},
           "prefix_cache": True if kind == "pytorch" else rt.uses_prefix_cache}
    for b in batches:
        batch_prompts = (prompts * b)[:b]
        generate(batch_prompts, 1)  # warm-up at this shape
        runs = []
        for r in range(repeats):
            t = time.perf_counter()
            generate(batch_prompts, r + 2)
            runs.append((time.perf_counter() - t) / b)
        out["per_image_s"][str(b)] = runs
    out["peak_rss_mb_all"] = peak_rss_mb()
    return out


def run_worker(kind: str, env: dict, args, bundle: str, prompts_file: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--bundle", bundle, "--threads", str(args.threads),
           "--steps", str(args.steps), "--repeats", str(args.repeats), "--prompts", str(prompts_file), "--batches", *map(str, args.batches)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    if res.returncode != 0 or not line:
        raise RuntimeError(f"{kind} worker failed ({res.returncode}): {res.stderr[-3000:]}")
    return json.loads(line[-1][len("RESULT "):])


def worker_envs(tmp: Path, threads: int):
    base = dict(os.environ)
    base["OMP_NUM_THREADS"] = str(threads)
    base["TOKENIZERS_PARALLELISM"] = "false"
    base["TQDM_DISABLE"] = "1"
    pipe_env = dict(base)
    pipe_env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), base.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    shim = tmp / "no_torch"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(
        "import sys\nfor n in ('torch', 'm6_fashion', 'transformers', 'diffusers'):\n    sys.modules[n] = None  # import fails\n")
    rt_env = dict(base)
    rt_env["PYTHONPATH"] = os.pathsep.join([str(shim), str(RUNTIME_SRC)])
    return pipe_env, rt_env


# ---------------------------------------------------------------------------------------------- main
def generation_quality(rt32, rt8, num: int, batch_size: int = 16, seed: int = 0) -> dict:
    """FID/KID and attribute hit rates of runtime fp32 vs int8 samples for the `m6-fashion evaluate` captions."""
    import numpy as np
    import torch

    from m6_fashion.evaluation.attribute_classifier import HEADS, load_default_classifier
    from m6_fashion.evaluation.evaluate import (_clean, _hit_rates, cached_real_features, feature_stats, fid_kid,
                                                 inception_features, load_split, prompt_rows)
    from m6_fashion.evaluation.metrics import InceptionFeatureExtractor

    cache = REPO_ROOT / ".cache" / "m6-fashion"
    data = load_split("test", rt32.sample_size, FASHION_TEST.parent, cache)
    extractor = InceptionFeatureExtractor()
    real = cached_real_features(extractor, data, "test", cache, tag="all")
    stats = feature_stats(real)
    classifier = load_default_classifier(None)
    idx = prompt_rows(data, num, seed)
    prompts = [data["text"][i] for i in idx]
    attributes = [{h: _clean(data[h][i]) for h in HEADS} for i in idx]
    print(f"\n== generation quality, runtime fp32 vs int8: {num} test captions (the `m6-fashion evaluate` sample), "
          f"T=10, sampling, batch {batch_size}, decoded at {rt32.sample_size} px like the real test images ==")
    out = {"num_samples": num, "real_images": int(real.shape[0]), "image_size": rt32.sample_size}
    for key, rt in (("fp32", rt32), ("int8", rt8)):
        images = []
        for j, i in enumerate(range(0, num, batch_size)):
            # at the reference's size (the 64-px test images; the tokens, which int8 changes, are the same at every size)
            images.append(rt(prompts[i : i + batch_size], seed=seed + j, output_type="np",
                             height=rt.sample_size, width=rt.sample_size).images)
        imgs = torch.from_numpy(np.concatenate(images)).permute(0, 3, 1, 2).contiguous()
        scores = fid_kid(real, inception_features(extractor, imgs), real_stats=stats)
        hits = _hit_rates(classifier, imgs, attributes)
        out[key] = {**scores, "hit_rate": hits}
        print(f"runtime {key}: FID {scores['fid_inception']:.1f}, KID {scores['kid_inception_mean']:.4f}, hit rate "
              + ", ".join(f"{h} {hits[h]:.3f}" for h in HEADS))
    return out


def main(argv: Optional[List[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=None, help="bundle folder of the shipped model, exported with --int8 (default: export one to a temp folder)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for both PyTorch and ONNX Runtime (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per batch size after one warm-up (median reported)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--steps", type=int, default=10, help="SMART passes (default 10, the pipeline's default)")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    ap.add_argument("--out-dir", default=None, help="where runtime.json / runtime.md go (default benchmarks/results)")
    ap.add_argument("--quality", type=int, default=0, metavar="N",
                    help="also generate N test captions (the `m6-fashion evaluate` sample) with the runtime in fp32 and int8 "
                         "and score them: Inception FID/KID vs all real test images and attribute hit rates (default 0 = skip)")
    ap.add_argument("--worker", default=None, choices=["pytorch", "runtime_fp32", "runtime_int8"], help=argparse.SUPPRESS)
    ap.add_argument("--prompts", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        prompts = json.loads(Path(args.prompts).read_text())
        print("RESULT " + json.dumps(worker(args.worker, args.bundle, args.threads, args.steps, args.repeats, args.batches, prompts)))
        return {}

    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="m6_bench_runtime_"))
    results: Dict[str, object] = {"threads": args.threads, "steps": args.steps, "cpu_count": os.cpu_count(), "batches": args.batches}
    bundle = args.bundle
    if bundle is None:
        bundle = str(tmp / "bundle")
        # exported in a subprocess so that this process never holds PyTorch's threads or memory
        code = ("import sys; sys.path[:0] = [%r]; from m6_fashion.export import export_onnx as ex; "
                "ex.export_bundle(None, %r, int8=True, parity=False, log=lambda *a: None)") % (str(REPO_ROOT / "src"), bundle)
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
        if res.returncode != 0:
            raise SystemExit(f"error: export failed: {res.stderr[-3000:]}")
        results["export_s"] = time.perf_counter() - t0
        print(f"exported the shipped model (float32 + int8 transformer) in {results['export_s']:.1f} s")
    from m6_fashion_runtime import M6FashionRuntime
    from m6_fashion_runtime.image import preprocess

    prompts, rows = list(FALLBACK_PROMPTS), []
    if FASHION_TEST.is_file():
        import datasets

        ds = datasets.load_dataset("parquet", data_files={"test": str(FASHION_TEST)}, split="test")
        rows = [ds[i] for i in range(max(8, max(args.batches)))]
        prompts = [r["text"] for r in rows]
    prompts_file = tmp / "prompts.json"
    prompts_file.write_text(json.dumps(prompts))

    # ---- time per image, each side in its own process
    print(f"\n== time per image, text-to-image, {args.steps} SMART passes, sampling, decode to PIL; "
          f"{args.threads} intra-op threads each; median of {args.repeats} after a warm-up ==")
    pipe_env, rt_env = worker_envs(tmp, args.threads)
    workers = {}
    for kind, env in (("pytorch", pipe_env), ("runtime_fp32", rt_env), ("runtime_int8", rt_env)):
        workers[kind] = run_worker(kind, env, args, bundle, prompts_file)
    if workers["runtime_fp32"]["torch_imported"] or workers["runtime_int8"]["torch_imported"]:
        raise SystemExit("error: the runtime worker imported torch")
    timing = {}
    for b in args.batches:
        med = {k: statistics.median(w["per_image_s"][str(b)]) for k, w in workers.items()}
        timing[b] = {"per_image_s": med, "speedup_fp32": med["pytorch"] / med["runtime_fp32"], "speedup_int8": med["pytorch"] / med["runtime_int8"],
                     "runs": {k: w["per_image_s"][str(b)] for k, w in workers.items()}}
        print(f"batch {b}: pytorch {med['pytorch']:.3f} s/img | runtime fp32 {med['runtime_fp32']:.3f} s/img "
              f"({timing[b]['speedup_fp32']:.2f}x faster) | runtime int8 {med['runtime_int8']:.3f} s/img ({timing[b]['speedup_int8']:.2f}x faster)")
    results["timing"] = timing

    # ---- int8 vs fp32 quality (runtime only)
    print("\n== int8 vs fp32 transformer ==")
    rt32 = M6FashionRuntime(bundle, num_threads=args.threads)
    rt8 = M6FashionRuntime(bundle, num_threads=args.threads, int8=True)
    q: Dict[str, float] = {}
    if rows:
        from m6_fashion_runtime.layout import build_model_inputs

        n = 8
        geo = rt32.geometry
        tokens = rt32.encode_images(preprocess([r["image"] for r in rows[:n]], geo.sample_size))
        rng = np.random.default_rng(0)
        masked = rng.random(tokens.shape[:2]) < 0.5
        tokens[masked] = geo.codebook_size
        feed = build_model_inputs(geo, rt32.special, rt32.encode_prompt(prompts[:n]), tokens)
        l32, l8 = rt32.transformer_logits(feed), rt8.transformer_logits(feed)
        agree = l32.argmax(-1) == l8.argmax(-1)
        pass_times = {"fp32": [], "int8": []}
        for _ in range(max(3, args.repeats)):
            for key, rt in (("fp32", rt32), ("int8", rt8)):
                t0 = time.perf_counter()
                rt.transformer_logits(feed)
                pass_times[key].append(time.perf_counter() - t0)
        q.update({
            "argmax_agreement_all": float(agree.mean()), "argmax_agreement_masked": float(agree[masked].mean()),
            "logit_max_abs_diff": float(np.abs(l32 - l8).max()),
            "pass_s_fp32": statistics.median(pass_times["fp32"]), "pass_s_int8": statistics.median(pass_times["int8"]),
        })
        print(f"one transformer pass, batch {n}, length {feed['input_ids'].shape[1]}: fp32 {q['pass_s_fp32']:.3f} s, int8 {q['pass_s_int8']:.3f} s "
              f"({q['pass_s_fp32'] / q['pass_s_int8']:.2f}x)")
        print(f"argmax agreement int8 vs fp32 on real test inputs (photo tokens, half masked, captions): "
              f"{q['argmax_agreement_all']:.2%} of all (position, group) codes, {q['argmax_agreement_masked']:.2%} at masked positions; "
              f"logit max abs diff {q['logit_max_abs_diff']:.3f}")
    else:
        print("(test split not found: argmax agreement on real inputs skipped)")
    det32 = rt32(prompts[:8], num_inference_steps=args.steps, deterministic=True, output_type="tokens").tokens
    det8 = rt8(prompts[:8], num_inference_steps=args.steps, deterministic=True, output_type="tokens").tokens
    q["deterministic_token_agreement"] = float((det32 == det8).mean())
    q["deterministic_identical_images"] = int((det32 == det8).reshape(det32.shape[0], -1).all(-1).sum())
    print(f"deterministic generation of 8 captions: int8 tokens equal fp32 tokens at {q['deterministic_token_agreement']:.2%} "
          f"of codes ({q['deterministic_identical_images']}/8 token grids identical)")
    results["int8"] = q
    if args.quality > 0:
        results["int8_generation_quality"] = generation_quality(rt32, rt8, args.quality)

    # ---- installed size
    print("\n== installed size (files in site-packages of each side's dependencies, transitively, extras excluded) ==")
    rt_deps = dependency_closure(runtime_requirements())
    pt_deps = dependency_closure(["m6-fashion"])
    sizes = {d: dist_size(d) for d in rt_deps | pt_deps}
    rt_size = sum(sizes[d] for d in rt_deps)
    pt_size = sum(sizes[d] for d in pt_deps)
    top = sorted(((sizes[d], d) for d in pt_deps), reverse=True)[:4]
    top_rt = sorted(((sizes[d], d) for d in rt_deps), reverse=True)[:4]
    from m6_fashion_runtime.bundle import load_bundle

    b = load_bundle(bundle)
    results["installed"] = {
        "runtime_mb": rt_size / 1e6, "runtime_dists": sorted(rt_deps),
        "pytorch_mb": pt_size / 1e6, "pytorch_dists": sorted(pt_deps),
        "bundle_mb_fp32": sum(os.path.getsize(b.path(k)) for k in ("image_encoder", "image_decoder", "transformer", "tokenizer")) / 1e6,
        "int8_transformer_mb": os.path.getsize(b.path("transformer_int8")) / 1e6,
    }
    try:
        from m6_fashion.default_model import default_model_path

        results["installed"]["pipeline_folder_mb"] = folder_size(Path(default_model_path())) / 1e6
    except Exception:  # noqa: BLE001 - informational only
        pass
    inst = results["installed"]
    print(f"runtime: {inst['runtime_mb']:.0f} MB in {len(rt_deps)} distributions (largest: {', '.join(f'{d} {s / 1e6:.0f} MB' for s, d in top_rt)})")
    print(f"pytorch pipeline: {inst['pytorch_mb']:.0f} MB in {len(pt_deps)} distributions (largest: {', '.join(f'{d} {s / 1e6:.0f} MB' for s, d in top)})")
    if "pipeline_folder_mb" in inst:
        print(f"model files (not included above): bundle {inst['bundle_mb_fp32']:.0f} MB float32 (+{inst['int8_transformer_mb']:.0f} MB int8 "
              f"transformer) vs pipeline folder {inst['pipeline_folder_mb']:.0f} MB (float16 storage)")

    # ---- memory and cold start (from the timing workers)
    print("\n== peak RSS (VmHWM) and cold start, from the timing subprocesses ==")
    for kind, w in workers.items():
        print(f"{kind}: peak RSS {w['peak_rss_mb_first_image']:.0f} MB after the first image (batch 1), "
              f"{w['peak_rss_mb_all']:.0f} MB after batch {max(args.batches)}; load {w['load_s']:.1f} s (imports included), "
              f"first image {w['first_image_s']:.1f} s after start")
    results["workers"] = workers
    results["targets"] = verdicts(results)
    for line in results["targets"]["lines"]:
        print(line)
    from _common import command_line, environment, now, out_dir, write_results

    data = {"date": now(), "command": command_line(), "environment": {**environment(), "threads": args.threads}, **results}
    write_results(out_dir(args.out_dir, False), "runtime", data, render(data))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=2, default=str)
    return data


TARGETS = {"speedup_fp32": 1.5, "speedup_int8": 2.5, "int8_fid_delta": 1.0}  # the edge-runtime issue's targets


def verdicts(results: dict) -> dict:
    """Each target of the runtime against the PyTorch pipeline, met or not, from the measured numbers."""
    out = {"targets": TARGETS, "met": {}, "lines": []}
    for b, t in results["timing"].items():
        for key in ("speedup_fp32", "speedup_int8"):
            ok = t[key] >= TARGETS[key]
            out["met"][f"{key}_batch{b}"] = ok
            out["lines"].append(f"target {key} >= {TARGETS[key]}x at batch {b}: {t[key]:.2f}x, {'met' if ok else 'not met'}")
    q = results.get("int8_generation_quality")
    if q:
        delta = q["int8"]["fid_inception"] - q["fp32"]["fid_inception"]
        out["met"]["int8_fid_delta"] = delta <= TARGETS["int8_fid_delta"]
        out["lines"].append(f"target int8 FID within {TARGETS['int8_fid_delta']:g} of float32: {delta:+.1f}, "
                            f"{'met' if delta <= TARGETS['int8_fid_delta'] else 'not met'}")
    return out


def render(data: dict) -> str:
    """The Markdown table of runtime.md (also rendered into the README by update_readme.py)."""
    rows = []
    for b, t in data["timing"].items():
        med = t["per_image_s"]
        rows.append([b, f"{med['pytorch']:.3f}", f"{med['runtime_fp32']:.3f}", f"{t['speedup_fp32']:.2f}x",
                     f"{med['runtime_int8']:.3f}", f"{t['speedup_int8']:.2f}x"])
    head = ["batch", "PyTorch s/image", "runtime float32 s/image", "float32 speed-up (target >= 1.5x)",
            "runtime int8 s/image", "int8 speed-up (target >= 2.5x)"]
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    lines.append("")
    lines += [f"- {line}" for line in data["targets"]["lines"]]
    q = data.get("int8_generation_quality")
    if q:
        lines.append(f"- generation quality on {q['num_samples']} test captions, decoded at {q.get('image_size', 64)} px against the "
                     f"{q['real_images']} real test images: FID float32 {q['fp32']['fid_inception']:.1f} vs int8 "
                     f"{q['int8']['fid_inception']:.1f}; mean hit rate {q['fp32']['hit_rate']['mean']:.3f} vs {q['int8']['hit_rate']['mean']:.3f}")
    w = data["workers"]
    lines.append(f"- peak RSS after the first image: PyTorch {w['pytorch']['peak_rss_mb_first_image']:.0f} MB, runtime "
                 f"{w['runtime_fp32']['peak_rss_mb_first_image']:.0f} MB; first image after start: {w['pytorch']['first_image_s']:.1f} s "
                 f"vs {w['runtime_fp32']['first_image_s']:.1f} s; prefix cache in the runtime: {w['runtime_fp32']['prefix_cache']}")
    lines.append(f"- {data['steps']} SMART passes, text-to-image decoded to PIL at the default size, {data['threads']} threads each, "
                 f"medians of {len(next(iter(data['timing'].values()))['runs']['pytorch'])} runs; `{data['command']}`, "
                 f"{data['date']}, {data['environment']['cpu']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
