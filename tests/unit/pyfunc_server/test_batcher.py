"""The batcher on its own (pyfunc_server/batcher.py): how jobs are gathered into batches, join a
running one, are refused when the queue is full, and fail when their deadline passed in the
queue."""

from __future__ import annotations

import threading
import time

import pytest

from pyfunc_server.batcher import DeadlineExceeded, Job, MicroBatcher


def test_a_request_that_timed_out_in_the_queue_never_runs():
    ran = []
    batcher = MicroBatcher(ran.append, window_s=0)
    try:
        job = Job("late", deadline=time.monotonic() - 1)
        with pytest.raises(DeadlineExceeded):
            batcher.submit(job).result(timeout=10)
    finally:
        batcher.close(timeout=10)
    assert ran == []


def test_batcher_respects_max_batch_size_and_token_budget():
    sizes = []
    release = threading.Event()

    def run(jobs):
        release.wait(10)
        sizes.append([j.payload for j in jobs])
        for j in jobs:
            j.future.set_result(j.payload)

    batcher = MicroBatcher(run, window_s=30.0, max_batch_size=3, max_batch_tokens=100)
    batcher.expected = 3
    try:
        jobs = [Job(i, width=10, budget=10) for i in range(5)]  # 20 tokens each
        jobs.append(Job(5, width=50, budget=40))  # 90 tokens: too big to share a batch
        jobs.append(Job(6, width=1, budget=1))  # small, but padded to job 5's size with it
        for j in jobs:
            batcher.submit(j)
        release.set()
        assert [j.future.result(timeout=10) for j in jobs] == list(range(7))
    finally:
        batcher.close(timeout=10)
    # 3 (max_batch_size); 2 (with job 5 it would be 3 x 90 tokens); job 5 alone (2 x 90 with 6).
    # Jobs left over from a full batch do not wait for the (here 30 s) window.
    assert sizes == [[0, 1, 2], [3, 4], [5], [6]]
    assert batcher.batch_sizes == {3: 1, 2: 1, 1: 2}


def test_clients_that_come_back_rejoin_the_others_in_one_batch():
    batches = []
    running_b, gate = threading.Event(), threading.Event()

    def run(jobs):
        if jobs[0].payload == "B":
            running_b.set()
            gate.wait(10)  # B's batch runs while C, D and E arrive
        batches.append([j.payload for j in jobs])
        for j in jobs:
            j.future.set_result(j.payload)

    batcher = MicroBatcher(run, window_s=30.0, max_batch_size=8)
    try:
        # One request at a time never waits for the (here 30 s) window.
        assert batcher.submit(Job("A")).result(timeout=10) == "A"
        b = batcher.submit(Job("B"))
        assert running_b.wait(10)
        later = [batcher.submit(Job(x)) for x in "CDE"]
        gate.set()
        assert b.result(timeout=10) == "B"
        # Four requests were in the server while B ran: C, D and E wait for B's client to send
        # its next request, F, instead of taking turns with it.
        f = batcher.submit(Job("F"))
        assert [x.result(timeout=10) for x in [*later, f]] == list("CDEF")
    finally:
        batcher.close(timeout=10)
    assert batches == [["A"], ["B"], ["C", "D", "E", "F"]]


def test_a_full_queue_refuses_at_once_and_loses_nothing_it_accepted():
    from pyfunc_server.batcher import QueueFull

    release = threading.Event()

    def run_batch(jobs):
        release.wait(10)
        for job in jobs:
            job.future.set_result(job.payload)

    batcher = MicroBatcher(run_batch, window_s=0, max_batch_size=1, max_queued=2)
    running = batcher.submit(Job("running"))
    deadline = time.monotonic() + 5
    while not batcher._running:  # the first job is on the model
        assert time.monotonic() < deadline
        time.sleep(0.01)
    queued = batcher.submit_all([Job("a"), Job("b")])
    started = time.monotonic()
    with pytest.raises(QueueFull, match="2 prompts are already waiting .*MAX_QUEUED_REQUESTS=2"):
        batcher.submit(Job("refused"))
    assert time.monotonic() - started < 0.1 and batcher.refused == 1
    release.set()
    assert [f.result(10) for f in [running, *queued]] == ["running", "a", "b"]
    batcher.close(5)


def test_joining_respects_the_batch_size_and_token_bound(generator):
    batcher = generator.batcher
    batcher.max_batch_size, batcher.max_batch_tokens = 3, 1000
    try:
        jobs = [Job(i, width=10, budget=10) for i in range(4)]
        batcher._queue.extend(jobs)
        # 2 rows running: one more row fits the batch size.
        assert batcher.take_joining(2, 10, 10) == jobs[:1]
        # 1 row with a 400-position cache and 100 tokens to go: a second row needs 2 x 500.
        assert batcher.take_joining(1, 400, 100) == jobs[1:2]
        assert batcher.take_joining(1, 500, 100) == []  # 2 x 600 > 1000: it waits
        expired = Job("late", deadline=time.monotonic() - 1)
        batcher._queue.appendleft(expired)
        assert batcher.take_joining(0, 0, 0) == jobs[2:4]
        with pytest.raises(DeadlineExceeded):
            expired.future.result(timeout=1)
    finally:
        batcher._queue.clear()
        batcher._running, batcher._current = [], []
        batcher.max_batch_size, batcher.max_batch_tokens = 16, 8192
