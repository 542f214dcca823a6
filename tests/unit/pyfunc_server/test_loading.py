"""Loading a model for serving (pyfunc_server/loading.py)."""

from __future__ import annotations


def test_the_tiny_model_runs_on_one_thread_by_default(generator):
    assert generator.torch_threads == 1
