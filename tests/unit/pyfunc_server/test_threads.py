"""The torch thread count (pyfunc_server/threads.py)."""

from __future__ import annotations


def test_torch_threads_follow_the_model_unless_set():
    from pyfunc_server.threads import choose_torch_threads, usable_cpus

    assert choose_torch_threads(3, 10**6, cpus=2)[0] == 3  # TORCH_THREADS wins
    assert choose_torch_threads(0, 10**6, cpus=2)[0] == 1  # tiny: one thread
    assert choose_torch_threads(0, 840 * 10**6, cpus=2)[0] == 2  # llm-jp-3-3.7b width: every CPU
    assert choose_torch_threads(0, 3_800 * 10**6, cpus=16)[0] == 16
    assert 1 <= usable_cpus() <= (__import__("os").cpu_count() or 1)
