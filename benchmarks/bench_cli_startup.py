"""Start-up time of the `m6-fashion` command line: how long `--help` and an argument error take.

1. Runs `m6-fashion --help` --runs times (default 5) as a fresh process and takes the median wall time.
2. Runs one argument error (`m6-fashion generate --steps 0 --out x.png`, which must exit 2 with one
   `error:` line and no traceback) and times it.
3. For scale, times one `python -c "import torch, diffusers, transformers"` (what every command paid at
   start-up before the heavy imports moved into the commands); skipped with --fast.

Target: both under 2 s. The command is the console script beside this interpreter (`m6-fashion`), or
`python -m m6_fashion` when there is none.

    python benchmarks/bench_cli_startup.py             # 5 runs of --help, the error run, the import reference
    python benchmarks/bench_cli_startup.py --fast      # smoke run: 2 runs of --help, no import reference

Writes cli_startup.json / .md to benchmarks/results (runs/benchmarks-fast with --fast).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common  # noqa: F401
from _common import REPO_ROOT, command_line, environment, fmt, header, markdown_table, now, out_dir, write_results

TARGET_SECONDS = 2.0


def cli_command() -> list:
    script = shutil.which("m6-fashion", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "m6_fashion"]


def timed(cmd: list, env: dict) -> tuple:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=600)
    return time.perf_counter() - t, r


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def render(data) -> str:
    r = data["results"]
    md = [header("Command-line start-up time", data)]
    md.append(f"Command: `{data['settings']['cli']}` on {data['cpu']}.\n")
    rows = [
        [f"`--help` (median of {len(r['help_seconds_all'])})", fmt(r["help_seconds_median"], 3),
         "yes" if r["help_under_target"] else "no"],
        ["argument error (`generate --steps 0 --out x.png`)", fmt(r["error_seconds"], 3),
         "yes" if r["error_under_target"] else "no"],
    ]
    if r.get("heavy_import_seconds") is not None:
        rows.append(["reference: `import torch, diffusers, transformers`", fmt(r["heavy_import_seconds"], 3), ""])
    md.append(markdown_table(["run", "seconds", f"under {TARGET_SECONDS:g} s"], rows))
    md.append("")
    md.append(f"The argument error exited with status {r['error_returncode']} and printed: `{r['error_stderr']}`.")
    return "\n".join(md)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=None, help="timed runs of --help (default 5; 2 with --fast)")
    p.add_argument("--fast", action="store_true", help="smoke run: 2 runs, no import reference (the numbers mean little)")
    p.add_argument("--out-dir", default=None, help="result folder (default benchmarks/results; runs/benchmarks-fast with --fast)")
    args = p.parse_args(argv)
    runs = args.runs or (2 if args.fast else 5)
    directory = out_dir(args.out_dir, args.fast)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cli = cli_command()

    help_times = []
    for _ in range(runs):
        seconds, r = timed(cli + ["--help"], env)
        if r.returncode != 0 or "usage: m6-fashion" not in r.stdout:
            raise SystemExit(f"error: `{' '.join(cli)} --help` failed (status {r.returncode}): {r.stderr[-2000:]}")
        help_times.append(seconds)
    error_seconds, r = timed(cli + ["generate", "--steps", "0", "--out", "x.png"], env)
    error_stderr, error_returncode = r.stderr.strip(), r.returncode
    if r.returncode == 0 or "Traceback" in r.stderr:
        raise SystemExit(f"error: the argument-error run did not fail cleanly (status {r.returncode}): {r.stderr[-2000:]}")
    heavy = None
    if not args.fast:
        heavy, h = timed([sys.executable, "-c", "import torch, diffusers, transformers"], env)
        if h.returncode != 0:
            heavy = None

    help_median = statistics.median(help_times)
    data = {
        "benchmark": "cli_startup",
        "date": now(),
        "command": command_line(),
        "environment": environment(),
        "cpu": cpu_model(),
        "fast": args.fast,
        "settings": {"cli": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cli)), "runs": runs,
                     "target_seconds": TARGET_SECONDS},
        "results": {
            "help_seconds_median": help_median,
            "help_seconds_all": help_times,
            "help_under_target": help_median < TARGET_SECONDS,
            "error_seconds": error_seconds,
            "error_returncode": error_returncode,
            "error_stderr": error_stderr,
            "error_under_target": error_seconds < TARGET_SECONDS,
            "heavy_import_seconds": heavy,
        },
    }
    print(f"m6-fashion --help: {help_median:.3f} s median of {runs} "
          f"({'under' if help_median < TARGET_SECONDS else 'NOT under'} {TARGET_SECONDS:g} s)")
    print(f"argument error:    {error_seconds:.3f} s "
          f"({'under' if error_seconds < TARGET_SECONDS else 'NOT under'} {TARGET_SECONDS:g} s)")
    write_results(directory, "cli_startup", data, render(data))
    return data


if __name__ == "__main__":
    main()
