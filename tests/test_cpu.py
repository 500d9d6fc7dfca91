"""CPU facts and thread defaults (m6_fashion.cpu) and the CLI's dtype choice."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest
import torch

from m6_fashion import cpu


def test_available_cores_respects_the_affinity_mask():
    n = cpu.available_cores()
    assert 1 <= n <= (os.cpu_count() or 1)
    assert n <= len(os.sched_getaffinity(0))


def test_fast_bfloat16_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert cpu.has_fast_bfloat16()
    monkeypatch.setattr(cpu, "cpu_flags", lambda: {"avx2", "fma"})
    assert not cpu.has_fast_bfloat16()
    assert "(" in cpu.cpu_model()


@pytest.mark.parametrize("user_policy, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_import_sets_passive_waiting_unless_the_user_chose(user_policy, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user_policy:
        env["OMP_WAIT_POLICY"] = user_policy
    code = "import os, m6_fashion, torch; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_apply_thread_defaults_sets_torch_threads_and_refuses_bad_counts(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("M6FASHION_THREADS", raising=False)
        assert cpu.apply_thread_defaults(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("M6FASHION_THREADS", "x")
        with pytest.raises(ValueError, match="M6FASHION_THREADS"):
            cpu.apply_thread_defaults()
        with pytest.raises(ValueError, match="thread count"):
            cpu.apply_thread_defaults(0)
    finally:
        torch.set_num_threads(before)


def test_cli_dtype_auto_picks_bfloat16_only_on_cpus_that_have_it(monkeypatch):
    from m6_fashion.cli import _transformer_dtype

    args = argparse.Namespace(dtype="auto", bf16=False)
    monkeypatch.setattr(cpu, "has_fast_bfloat16", lambda: True)
    assert _transformer_dtype(args) == (torch.float32 if torch.cuda.is_available() else torch.bfloat16)
    monkeypatch.setattr(cpu, "has_fast_bfloat16", lambda: False)
    assert _transformer_dtype(args) == torch.float32
    assert _transformer_dtype(argparse.Namespace(dtype="float32", bf16=True)) == torch.bfloat16
    assert _transformer_dtype(argparse.Namespace(dtype="float32", bf16=False)) == torch.float32
