"""Every private name of CPython the model server relies on, in one place.

tests/unit/pyfunc_server/test_python_compat.py exercises each of them and fails with a message
naming it when a Python upgrade moves or changes one; nothing else in this package uses a private
CPython name.
"""

from __future__ import annotations

import threading
import weakref
from concurrent.futures import ThreadPoolExecutor


def widen_thread_pool(threads: int) -> bool:
    """Let the thread pool that runs the calling thread grow to `threads` threads.

    `mlflow models serve` runs every request's `predict` with `asyncio.to_thread`, i.e. in the
    event loop's default `ThreadPoolExecutor` of min(32, CPUs + 4) threads (mlflow_compat.py): 6
    on a 2-CPU machine, so no more than 6 requests could ever wait for (and share) a batch. The pool
    cannot be replaced when the model loads (uvicorn loads the app before its event loop exists),
    so the first `predict` raises the pool's limit from inside, through the pool worker's
    reference to its executor. Returns whether the calling thread's pool now allows `threads`
    threads (anything but a `ThreadPoolExecutor` worker is left alone).

    Why private: a worker thread reaches its executor only through the weak reference that is the
    first of its `Thread._args` (what `ThreadPoolExecutor` starts `_worker` with), and the pool's
    limit is `ThreadPoolExecutor._max_workers`, read each time a task is submitted; Python offers
    no public way to resize a pool.
    """
    args = getattr(threading.current_thread(), "_args", None)
    ref = args[0] if isinstance(args, tuple) and args else None
    pool = ref() if isinstance(ref, weakref.ReferenceType) else None
    limit = getattr(pool, "_max_workers", None)
    if not isinstance(pool, ThreadPoolExecutor) or not isinstance(limit, int):
        return False
    if pool._max_workers < threads:
        pool._max_workers = threads  # new threads are started as requests need them
    return True
