"""Smoke runs of the cheap benchmark scripts in their --fast mode: they run and write finite figures.

(The speed targets themselves live in the scripts' printed ratios, never in timed tests.)
"""

import json
import math
import subprocess
import sys
from pathlib import Path

from conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, out_dir: Path, *args: str) -> dict:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--fast", "--out-dir", str(out_dir), *args],
                       capture_output=True, text=True, env=subprocess_env(), timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_smart_vs_ar_fast(tmp_path):
    _run("bench_smart_vs_ar.py", tmp_path, "--threads", "1", "--dtypes", "float32")
    data = json.loads((tmp_path / "smart_vs_ar.json").read_text())
    row = data["rows"][0]
    assert row["batch_size"] == 1 and row["steps"] == 2 and row["dtype"] == "float32"
    for key in ("ar_s_per_image", "smart_s_per_image", "ratio_ar_over_smart", "smart_prefix_reencoded_s_per_image"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    md = (tmp_path / "smart_vs_ar.md").read_text()
    assert "AR / SMART" in md and ">= 5x" not in md  # targets are only judged at T=10


def test_roofline_fast(tmp_path):
    _run("bench_roofline.py", tmp_path)
    r = json.loads((tmp_path / "roofline.json").read_text())["results"]
    assert r["matmul_roof_gflops"] > 0 and r["flops_per_image"] > 0 and 0 < r["roofline_fraction"] < 1.5

