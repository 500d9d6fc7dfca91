"""Throughput against the machine's own matmul throughput (a roofline fraction), and peak memory.

1. Measures this machine's dense float32 matmul throughput (GFLOP/s) with `torch.matmul` on square
   matrices at the current torch thread count (best of several runs): the practical compute roof.
2. Counts the floating-point operations of one text-to-image pipeline call at batch 16, T=10 SMART passes
   (transformer passes + pixel decoding) with `torch.utils.flop_counter.FlopCounterMode` (matmuls,
   convolutions, attention; elementwise work is not counted).
3. Times the same call (median of --repeats after one warm-up): images per second, achieved GFLOP/s and
   the fraction of the matmul roof.
4. Peak resident memory of the process (`ru_maxrss`).

    python benchmarks/bench_roofline.py                    # full: batch 16, T=10, 3 timed runs
    python benchmarks/bench_roofline.py --fast             # CI smoke run: batch 2, T=2

On a shared machine other processes take cores too: the matmul roof and the pipeline timings are measured
back to back in the same process so that their ratio stays meaningful, but absolute numbers vary.
Writes roofline.json / .md / .png to benchmarks/results (runs/benchmarks-fast with --fast).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import _common  # noqa: F401
from _common import add_run_args, command_line, environment, fmt, header, markdown_table, now, out_dir, plt, set_threads, write_results


def matmul_gflops(n: int, repeats: int) -> dict:
    import torch

    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.matmul(a, b)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t)
    flops = 2 * n ** 3
    return {"n": n, "best_seconds": min(times), "median_seconds": statistics.median(times),
            "gflops_best": flops / min(times) / 1e9, "gflops_median": flops / statistics.median(times) / 1e9}


def render(data) -> str:
    md = [header("Roofline: pipeline throughput vs measured matmul throughput", data)]
    s, r = data["settings"], data["results"]
    rows = [
        ["matmul roof (float32, best of sizes)", f"{fmt(r['matmul_roof_gflops'], 1)} GFLOP/s"],
        ["pipeline FLOPs per image (counted)", f"{fmt(r['flops_per_image'] / 1e9, 2)} GFLOP"],
        ["  of which transformer / decoder", f"{fmt(r['flops_transformer_per_image'] / 1e9, 2)} / {fmt(r['flops_decoder_per_image'] / 1e9, 2)} GFLOP"],
        [f"images per second (batch {s['batch_size']}, T={s['steps']})", fmt(r["images_per_second"], 3)],
        ["achieved GFLOP/s", fmt(r["achieved_gflops"], 1)],
        ["fraction of the matmul roof", fmt(r["roofline_fraction"], 3)],
        ["peak RSS of the process", f"{fmt(r['peak_rss_mib'], 0)} MiB"],
    ]
    md.append(markdown_table(["quantity", "value"], rows))
    md.append("")
    md.append("Matmul throughput per size: " + ", ".join(f"n={m['n']}: {m['gflops_best']:.1f} GFLOP/s" for m in data["matmul"]) + ".")
    md.append("FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` (matmul, convolution and attention "
              "kernels; softmax, normalisation and sampling are not counted).")
    md.append("\n![roofline](roofline.png)")
    return "\n".join(md)


def plot(data, path) -> None:
    pyplot = plt()
    r = data["results"]
    fig, ax = pyplot.subplots(figsize=(6, 3.2))
    names = ["matmul roof", "pipeline (achieved)"]
    vals = [r["matmul_roof_gflops"], r["achieved_gflops"]]
    ax.barh(names, vals, color=["gray", "C0"])
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.1f}", va="center", fontsize=8)
    ax.set_xlabel("GFLOP/s (float32, CPU)")
    ax.set_title(f"batch {data['settings']['batch_size']}, T={data['settings']['steps']}: "
                 f"{r['images_per_second']:.2f} images/s, {100 * r['roofline_fraction']:.0f}% of the matmul roof", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--batch-size", type=int, default=None, help="default 16; 2 with --fast")
    p.add_argument("--steps", type=int, default=None, help="SMART passes (default 10; 2 with --fast)")
    p.add_argument("--repeats", type=int, default=None, help="timed pipeline calls (default 3; 1 with --fast)")
    p.add_argument("--matmul-sizes", type=int, nargs="+", default=None, help="default 512 1024 2048; 256 512 with --fast")
    add_run_args(p)
    args = p.parse_args(argv)

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from m6_fashion.pipelines import M6FashionPipeline

    set_threads(args.threads)
    fast = args.fast
    bs = args.batch_size or (2 if fast else 16)
    steps = args.steps or (2 if fast else 10)
    repeats = args.repeats or (1 if fast else 3)
    sizes = args.matmul_sizes or ([256, 512] if fast else [512, 1024, 2048])
    directory = out_dir(args.out_dir, fast)

    pipe = M6FashionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["Men Navy Blue Casual Shirt"] * bs

    def call():
        with torch.no_grad():
            return pipe(prompt=prompts, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="pt")

    # FLOPs of one call, split into transformer and decoder
    counter = FlopCounterMode(display=False, depth=1)
    with counter:
        call()
    total = counter.get_total_flops()
    per_module = counter.get_flop_counts()
    flops_transformer = sum(sum(v.values()) for k, v in per_module.items() if k.split(".")[-1] == "M6FashionTransformer")
    flops_decoder = sum(sum(v.values()) for k, v in per_module.items() if k.split(".")[-1] == "StyleDecoder")

    call()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    t_med = statistics.median(times)
    matmul = [matmul_gflops(n, 3 if fast else 5) for n in sizes]
    roof = max(m["gflops_best"] for m in matmul)
    achieved = total / t_med / 1e9
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data = {
        "benchmark": "roofline",
        "date": now(),
        "command": command_line(),
        "environment": environment(),
        "fast": fast,
        "settings": {"batch_size": bs, "steps": steps, "repeats": repeats, "model": args.model or "shipped default"},
        "matmul": matmul,
        "results": {
            "matmul_roof_gflops": roof,
            "flops_per_call": total,
            "flops_per_image": total / bs,
            "flops_transformer_per_image": flops_transformer / bs,
            "flops_decoder_per_image": flops_decoder / bs,
            "seconds_per_call_median": t_med,
            "seconds_per_call_all": times,
            "images_per_second": bs / t_med,
            "achieved_gflops": achieved,
            "roofline_fraction": achieved / roof,
            "peak_rss_mib": peak_kib / 1024,
        },
    }
    write_results(directory, "roofline", data, render(data))
    plot(data, directory / "roofline.png")
    return data


if __name__ == "__main__":
    main()
