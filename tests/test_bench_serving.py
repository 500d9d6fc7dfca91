"""Smoke run of benchmarks/bench_serving.py --fast: the studio served in-process, driven by gradio_client users, with
batching off and on; it runs and writes finite figures (which mean nothing at this size)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]


def test_serving_fast(tmp_path):
    pytest.importorskip("gradio", reason="the studio needs Gradio: pip install -e '.[studio]'")
    pytest.importorskip("gradio_client", reason="the serving benchmark drives the studio with gradio_client")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_serving.py"), "--fast", "--threads", "1",
                        "--out-dir", str(tmp_path)], capture_output=True, text=True, env=subprocess_env(), timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((tmp_path / "serving.json").read_text())
    assert data["fast"] and data["settings"]["steps"] == 2 and data["environment"]["cpu"]
    rows = {(row["users"], row["batching"]): row for row in data["rows"]}
    assert set(rows) == {(1, "off"), (1, "on"), (4, "off"), (4, "on")}
    for (users, mode), row in rows.items():
        assert row["errors"] == [], row["errors"]
        assert row["requests"] >= 1 and row["images"] == row["requests"]
        for key in ("images_per_second", "latency_median_s", "latency_p90_s", "mean_batch"):
            assert math.isfinite(row[key]) and row[key] > 0, (users, mode, key)
        assert row["latency_p90_s"] >= row["latency_median_s"]
        assert row["max_batch_size"] == (1 if mode == "off" else data["settings"]["max_batch_size"])
    assert rows[(1, "off")]["max_batch"] == rows[(4, "off")]["max_batch"] == 1  # off: one request per call
    assert rows[(1, "on")]["max_batch"] == 1  # a lone user's requests never share a call
    md = (tmp_path / "serving.md").read_text()
    assert "| users | batching |" in md and "images/s" in md and "p90 latency s" in md


def test_serving_refuses_bad_options(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_serving.py"), "--fast", "--max-batch-size", "1",
                        "--out-dir", str(tmp_path)], capture_output=True, text=True, env=subprocess_env(), timeout=300, cwd=ROOT)
    assert r.returncode == 2 and "--max-batch-size 1 is the 'off' mode already" in r.stderr
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_serving.py"), "--fast", "--users", "0",
                        "--out-dir", str(tmp_path)], capture_output=True, text=True, env=subprocess_env(), timeout=300, cwd=ROOT)
    assert r.returncode == 2 and "--users must be from 1 to 64; got [0]" in r.stderr
