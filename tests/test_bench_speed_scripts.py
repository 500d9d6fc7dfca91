"""Smoke runs of the speed benchmarks' bookkeeping: bench_busy_machine.py --fast (pipeline and runtime, idle and
busy) runs and writes finite figures (which mean nothing at this size), and the runtime benchmark's verdicts and
table name every target."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.slow
def test_busy_machine_fast(tmp_path):
    pytest.importorskip("onnxruntime", reason="the runtime rows need onnxruntime: pip install -e '.[export]'")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_busy_machine.py"), "--fast", "--spinners", "1",
                        "--out-dir", str(tmp_path)], capture_output=True, text=True, env=subprocess_env(), timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((tmp_path / "busy_machine.json").read_text())
    assert set(data["results"]) == {"default", "active-waiting", "runtime default", "runtime spin_wait=True"}
    assert data["spinners"] == 1 and 0 < data["cpu_share_left"] < 1
    for name, row in data["results"].items():
        assert math.isfinite(row["normalised_slowdown"]) and row["idle_median_s"] > 0, (name, row)
    assert data["results"]["runtime default"]["busy"]["policy"] == "spin_wait=False"
    assert "< 1.5" in (tmp_path / "busy_machine.md").read_text()


def test_runtime_verdicts_follow_the_numbers():
    from bench_runtime import TARGETS, verdicts

    timing = {"1": {"speedup_fp32": 1.6, "speedup_int8": 2.4}, "8": {"speedup_fp32": 1.2, "speedup_int8": 2.6}}
    quality = {"fp32": {"fid_inception": 120.0}, "int8": {"fid_inception": 121.5}}
    v = verdicts({"timing": timing, "int8_generation_quality": quality})
    assert v["targets"] == TARGETS
    assert v["met"] == {"speedup_fp32_batch1": True, "speedup_int8_batch1": False, "speedup_fp32_batch8": False,
                        "speedup_int8_batch8": True, "int8_fid_delta": False}
    assert any("+1.5, not met" in line for line in v["lines"])
