"""Default text-to-image call on an idle and on a busy machine, with and without passive OpenMP waiting.

Each configuration runs in a fresh subprocess (the OpenMP wait policy is read when torch loads): the
shipped pipeline is loaded, one warm-up call is made, then ``--calls`` default calls
(``pipe("Men Navy Blue Casual Shirt")``, T=10, batch 1) are timed. "busy" starts ``--spinners``
pure-Python busy loops beside it (one per core by default), the synthetic stand-in for other users' work.

The slowdown is normalised by the CPU share left to the call: with ``c`` cores and ``s`` spinners a fair
scheduler leaves it ``share = c / (c + s)`` of the machine, so ``normalised = (busy / idle) * share``, and
1.0 means "as fast as the CPU left allows". Target: under 1.5 for the default settings.

Configurations: ``default`` (what the CLI and ``import m6_fashion`` set up: passive waiting, one thread
per available core) and ``active-waiting`` (``OMP_WAIT_POLICY=ACTIVE``, the same thread count: what a
plain torch program gets with libgomp's spinning); and the torch-free runtime (the shipped model exported
to a temporary bundle first) with its default (``spin_wait=False``: idle ONNX Runtime threads sleep) and
with ``spin_wait=True`` (onnxruntime's own default), each in a subprocess that cannot import torch.

    python benchmarks/bench_busy_machine.py            # 5 timed calls per configuration
    python benchmarks/bench_busy_machine.py --fast     # CI smoke run: 1 call, T=2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import _common  # noqa: F401
from _common import REPO_ROOT, add_run_args, command_line, environment, fmt, header, markdown_table, now, out_dir, write_results

CHILD = r"""
import json, sys, time
from m6_fashion.cpu import apply_thread_defaults
threads = apply_thread_defaults(int(sys.argv[3]) if sys.argv[3] != "auto" else None)
import torch
from m6_fashion import M6FashionPipeline
pipe = M6FashionPipeline.from_pretrained()
pipe.set_progress_bar_config(disable=True)
steps, calls = int(sys.argv[1]), int(sys.argv[2])
pipe("Men Navy Blue Casual Shirt", num_inference_steps=steps, generator=torch.Generator().manual_seed(0))
times = []
for i in range(calls):
    t = time.perf_counter()
    pipe("Men Navy Blue Casual Shirt", num_inference_steps=steps, generator=torch.Generator().manual_seed(i))
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "threads": torch.get_num_threads(), "policy": __import__("os").environ.get("OMP_WAIT_POLICY")}))
"""

RUNTIME_CHILD = r"""
import json, sys, time
for name in ("torch", "m6_fashion"):
    sys.modules[name] = None  # the runtime must not import them
from m6_fashion_runtime import M6FashionRuntime
bundle, steps, calls, spin = sys.argv[4], int(sys.argv[1]), int(sys.argv[2]), sys.argv[5] == "spin"
rt = M6FashionRuntime(bundle, num_threads=None if sys.argv[3] == "auto" else int(sys.argv[3]), spin_wait=spin)
rt("Men Navy Blue Casual Shirt", num_inference_steps=steps, seed=0)
times = []
for i in range(calls):
    t = time.perf_counter()
    rt("Men Navy Blue Casual Shirt", num_inference_steps=steps, seed=i)
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "threads": sys.argv[3], "policy": "spin_wait=" + str(spin)}))
"""

SPIN = "while True: pass"
# (row name, side, setting): the pipeline with an OpenMP wait policy, the runtime with or without spinning
CONFIGS = (("default", "pipeline", "default"), ("active-waiting", "pipeline", "ACTIVE"),
           ("runtime default", "runtime", "sleep"), ("runtime spin_wait=True", "runtime", "spin"))


def run_child(side: str, setting: str, steps: int, calls: int, threads: str, bundle: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if side == "runtime":
        env["PYTHONPATH"] = str(REPO_ROOT / "runtime" / "src")
        cmd = [sys.executable, "-c", RUNTIME_CHILD, str(steps), str(calls), threads, bundle, setting]
    else:
        if setting != "default":
            env["OMP_WAIT_POLICY"] = setting
        env["PYTHONPATH"] = str(REPO_ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-c", CHILD, str(steps), str(calls), threads]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def export_bundle(folder: str) -> str:
    """The shipped model's runtime bundle, exported in a subprocess (float32, no parity check)."""
    code = ("import sys; sys.path[:0] = [%r]; from m6_fashion.export import export_onnx as ex; "
            "ex.export_bundle(None, %r, parity=False, log=lambda *a: None)") % (str(REPO_ROOT / "src"), folder)
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return folder


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--spinners", type=int, default=None, help="background busy loops (default: one per core)")
    args = p.parse_args()
    if args.fast:
        args.calls, args.steps = 1, 2
    from m6_fashion.cpu import available_cores

    cores = available_cores()
    spinners = args.spinners if args.spinners is not None else cores
    threads = str(args.threads) if args.threads else "auto"
    share = cores / (cores + spinners)
    results = {}
    import tempfile

    bundle = export_bundle(os.path.join(tempfile.mkdtemp(prefix="m6_busy_"), "bundle"))
    for name, side, setting in CONFIGS:
        idle = run_child(side, setting, args.steps, args.calls, threads, bundle)
        procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(spinners)]
        try:
            time.sleep(1.0)
            busy = run_child(side, setting, args.steps, args.calls, threads, bundle)
        finally:
            for pr in procs:
                pr.kill()
            for pr in procs:
                pr.wait()
        i_med, b_med = statistics.median(idle["times"]), statistics.median(busy["times"])
        normalised = b_med / i_med * share
        results[name] = {"idle": idle, "busy": busy, "idle_median_s": i_med, "busy_median_s": b_med,
                         "slowdown": b_med / i_med, "normalised_slowdown": normalised}
    data = {"date": now(), "command": command_line(), "environment": environment(), "cores": cores,
            "spinners": spinners, "cpu_share_left": share, "steps": args.steps, "calls": args.calls, "results": results}
    md = header("Default call on an idle and a busy machine", data) + "\n" + table(data) + "\n"
    write_results(out_dir(args.out_dir, args.fast), "busy_machine", data, md)


def table(data: dict) -> str:
    """The results table, each default's target met or not (also rendered into the README by update_readme.py)."""
    rows = []
    for name, r in data["results"].items():
        target = "met" if r["normalised_slowdown"] < 1.5 else "not met"
        rows.append([name, r["idle"]["policy"] or "libgomp default", r["idle"]["threads"], fmt(r["idle_median_s"]),
                     fmt(r["busy_median_s"]), f"{r['slowdown']:.2f}x", f"{r['normalised_slowdown']:.2f}",
                     f"< 1.5: {target}" if name in ("default", "runtime default") else ""])
    return markdown_table(
        ["settings", "waiting", "threads", "idle s/call", "busy s/call", "busy / idle", "normalised by CPU share", "target"], rows,
    ) + (f"\n\nBusy = {data['spinners']} busy-loop processes on {data['cores']} cores (CPU share left {data['cpu_share_left']:.2f}); "
         f"medians of {data['calls']} calls, T={data['steps']}.")


if __name__ == "__main__":
    main()
