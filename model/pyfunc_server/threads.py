"""How many CPU threads torch uses in the model server: TORCH_THREADS, or chosen at start.

torch's default is one thread per core. Each matrix product is then split across all cores and
the threads meet at a barrier after it; for a small model a product takes microseconds, the
meeting costs as much, and threads that spin or wait take the CPU from the server's own HTTP
threads and from the gateway and tracking server beside it. On a small machine the tiny test
model served concurrent clients far slower with torch's default than with one thread.
A model of a real size (a 3.7B model's layers: products of 3072 x 8192 weights) is the opposite:
its per-token work is large enough to split, and every core helps.

So with TORCH_THREADS=0 (the default) the count follows the model: one thread for every
`PARAMETERS_PER_THREAD` parameters, at least 1, at most the CPUs this process may use (its CPU
affinity and its container's CPU quota). A TORCH_THREADS above 0 is used as it is.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

# Enough work per thread and token that splitting pays: measured on a 2-CPU machine, the tiny
# model (~0.1 M parameters) is fastest with 1 thread, the llm-jp-3-3.7b-width model (0.8 G
# parameters with 2 layers, 3.8 G with 28) with 2 (bench/README.md).
PARAMETERS_PER_THREAD = 50_000_000


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup CPU quota (docker --cpus,
    compose `cpus:`), as cgroup v2's cpu.max or v1's cfs quota/period."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_cpu_quota() -> float | None:
    try:
        value = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if value and value[0] != "max":
            return int(value[0]) / int(value[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def choose_torch_threads(
    requested: int, parameters: int, cpus: int | None = None
) -> tuple[int, str]:
    """The thread count for a model of `parameters` parameters, and why (for the log)."""
    if requested > 0:
        return requested, "TORCH_THREADS"
    cpus = usable_cpus() if cpus is None else cpus
    threads = max(1, min(cpus, parameters // PARAMETERS_PER_THREAD))
    return threads, (
        f"chosen for {parameters / 1e6:,.1f} M parameters on {cpus} usable CPUs "
        f"(one per {PARAMETERS_PER_THREAD / 1e6:.0f} M; TORCH_THREADS overrides)"
    )
