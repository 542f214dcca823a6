"""The private CPython names the model server relies on (pyfunc_server/python_compat.py), one test
each: when a Python upgrade moves or changes one, the test says which."""

from __future__ import annotations

import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest

UPGRADE = (
    "Python changed {name}, which model/pyfunc_server/python_compat.py relies on: mend it there "
    "(or use a public API now)"
)


def test_a_pool_worker_still_reaches_its_executor_through_its_thread_args():
    msg = UPGRADE.format(
        name="threading.Thread._args (a ThreadPoolExecutor worker starts with a weak "
        "reference to its executor)"
    )
    with ThreadPoolExecutor(1) as pool:
        args = pool.submit(lambda: getattr(threading.current_thread(), "_args", None)).result(10)
        assert isinstance(args, tuple) and args, msg
        assert isinstance(args[0], weakref.ReferenceType) and args[0]() is pool, msg


def test_a_pools_max_workers_is_still_the_limit_it_starts_threads_up_to():
    msg = UPGRADE.format(name="ThreadPoolExecutor._max_workers")
    pool = ThreadPoolExecutor(1)
    try:
        assert isinstance(getattr(pool, "_max_workers", None), int), msg
        pool._max_workers = 3
        together = threading.Barrier(3)
        futures = [pool.submit(together.wait, 10) for _ in range(3)]
        try:
            for f in futures:
                f.result(20)
        except threading.BrokenBarrierError:
            pytest.fail(f"{msg}: a raised limit no longer starts more threads")
    finally:
        pool.shutdown()


def test_the_scoring_servers_thread_pool_grows_to_hold_a_full_batch():
    """`mlflow models serve` runs predict via asyncio.to_thread: min(32, CPUs + 4) threads by
    default, 6 on a 2-CPU machine. Once a predict has run, 20 must be able to wait at once."""
    import asyncio

    from pyfunc_server.python_compat import widen_thread_pool

    assert widen_thread_pool(32) is False  # the main thread belongs to no pool: nothing to do
    together = threading.Barrier(20)

    async def serve():
        assert await asyncio.to_thread(widen_thread_pool, 32)  # what the first predict does
        # Each call returns only once all 20 are running at the same time.
        await asyncio.gather(*(asyncio.to_thread(together.wait, 10) for _ in range(20)))

    asyncio.run(serve())
