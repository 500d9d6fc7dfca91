"""CPU facts and thread defaults, without importing torch.

Two measured problems on the 2-core CPUs this project runs on:

* OpenMP threads that busy-wait between parallel regions (libgomp's default) collapse when other work
  shares the cores: one default text-to-image call took a median 18.7 s with 2 threads under a load
  average of 4-6, against 2.4 s with ``OMP_WAIT_POLICY=PASSIVE``. :func:`apply_thread_defaults` sets
  passive waiting (unless the user set a policy) before torch loads its OpenMP runtime.
* ``os.cpu_count()`` counts the host's cores, not the ones this process may use (CPU affinity, a
  cgroup quota): :func:`available_cores` reads both.

bfloat16 matrix products are only fast with AVX512-BF16 or AMX (about 6x *slower* than float32 on an
AVX2-only EPYC): :func:`has_fast_bfloat16` reads the CPU flags.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Optional

__all__ = ["apply_thread_defaults", "available_cores", "cpu_flags", "cpu_model", "has_fast_bfloat16"]


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def cpu_flags() -> set:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model() -> str:
    """The CPU's model name, with the flags the figures depend on, e.g. ``AMD EPYC (avx2, avx512_bf16)``."""
    import platform

    name = next(
        (ln.split(":", 1)[1].strip() for ln in _cpuinfo().splitlines() if ln.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    flags = cpu_flags()
    has = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(has) or 'no AVX2'})"


def has_fast_bfloat16() -> bool:
    """True when the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _cgroup_quota() -> Optional[float]:
    """CPUs allowed by a cgroup v2 (``cpu.max``) or v1 (``cfs_quota_us``) quota, or None."""
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="utf-8") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", encoding="utf-8") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us", encoding="utf-8") as f:
            period = int(f.read())
        if quota > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def available_cores() -> int:
    """Cores this process may run on: the affinity mask, capped by a cgroup CPU quota (at least 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def apply_thread_defaults(threads: Optional[int] = None) -> int:
    """Sets passive OpenMP waiting and the thread count; returns the thread count used.

    ``OMP_WAIT_POLICY`` only takes effect if set before torch loads its OpenMP runtime, so call this
    before ``import torch`` (the CLI does); a value the user exported is kept. ``threads`` (default:
    ``$M6FASHION_THREADS``, else :func:`available_cores`) goes to ``OMP_NUM_THREADS`` and, when torch is
    already imported, to ``torch.set_num_threads``.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads is None:
        env = os.environ.get("M6FASHION_THREADS")
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise ValueError(f"M6FASHION_THREADS must be a positive integer; got {env!r}") from None
    if threads is None:
        threads = available_cores()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"the thread count must be an integer >= 1; got {threads!r}")
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads
