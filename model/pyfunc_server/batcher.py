"""Gather generation jobs that arrive from many threads into batches for one copy of the model.

`mlflow models serve` runs every request's `predict` in its own thread. Each thread submits its
job here and waits on a future; one worker thread owns the model and runs the jobs in batches.
Jobs that arrive while a batch runs are queued and go together in the next one.

How long a batch waits for company adapts to the load. A batch starts as soon as `expected` jobs
are queued, where `expected` is the most requests that were in the server (generating or queued)
while the previous batch ran; or once it has waited `window()` (BATCH_WINDOW_MS, or half a
decoding step when steps are longer; counted from the later of the oldest job's arrival and the
end of the previous batch); or when `max_batch_size` jobs are queued.
So one request at a time never waits, and eight clients that each send a new request as soon as
they have an answer end up in one batch of eight, instead of in two groups of four that take
turns on the model (which is what "start with whatever is queued" settles into).
A job's answer may come before its batch ends (the generator resolves each future as soon as its
row is done).

Continuous batching: while a batch runs, `run_batch` may call `take_joining` between two decoding
steps; it hands over the queued jobs that fit beside the running rows (MAX_BATCH_SIZE rows,
MAX_BATCH_TOKENS KV positions), oldest first, and they become part of the running batch. So a
request that arrives during a long answer waits one step, not the whole answer; the window above
only decides how the first rows of a batch are gathered.

The batcher knows nothing about models: `run_batch(jobs)` does the work and must resolve every
job's future (the ones it took with `take_joining` too). If `run_batch` raises for a batch of
several jobs, each unanswered job is run again alone, with no others joining, so that one bad job
cannot fail the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


# The longest a new batch waits for the jobs it expects, however slow the steps are.
MAX_STEP_WINDOW_S = 1.0


class QueueFull(RuntimeError):
    """More jobs are waiting than `max_queued` allows: the request is refused at once, so that an
    overloaded server answers "try again" in milliseconds instead of a timeout minutes later."""


class DeadlineExceeded(TimeoutError):
    """The job's deadline passed (the server already answered 504): its generation was stopped."""


@dataclass(eq=False)
class Job:
    payload: Any  # what `run_batch` needs (for the generator: token ids and sampling settings)
    width: int = 0  # prompt tokens: a batch is left-padded to its longest prompt
    budget: int = 0  # new tokens at most
    deadline: float | None = None  # time.monotonic() after which nobody waits for the answer
    future: Future = field(default_factory=Future)
    submitted: float = field(default_factory=time.monotonic)
    # Told the row's new tokens after each decoding step that does not end it (a streamed answer);
    # the caller cancels `future` when nobody reads any more, and the row is dropped.
    progress: Callable[[list[int]], None] | None = None

    def expired(self, now: float | None = None) -> bool:
        return self.deadline is not None and (now or time.monotonic()) >= self.deadline


def batch_tokens(jobs: list[Job]) -> int:
    """KV-cache positions a padded batch may need: rows x (longest prompt + largest budget)."""
    return len(jobs) * (max(j.width for j in jobs) + max(j.budget for j in jobs)) if jobs else 0


class MicroBatcher:
    def __init__(
        self,
        run_batch: Callable[[list[Job]], None],
        *,
        window_s: float = 0.01,
        max_batch_size: int = 16,
        max_batch_tokens: int | None = None,
        max_queued: int | None = None,
        name: str = "hf-batcher",
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if window_s < 0:
            raise ValueError(f"the batching window must not be negative, got {window_s}")
        self.run_batch = run_batch
        self.window_s = window_s
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_queued = max_queued  # jobs waiting for a batch; None: no bound
        self.refused = 0
        self.name = name
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._leftover = False  # the last batch was full and left jobs in the queue
        # Jobs a batch waits for (up to window_s) before it starts: see the module's docstring.
        self.expected = 1
        self._running: list[Job] = []  # the batch now on the model
        self._peak = 0  # most jobs in the server (unanswered running + queued) during that batch
        self._last_end = 0.0  # time.monotonic() when the last batch ended
        # How many batches of each size ran (a retry of a failed batch counts its single runs).
        self.batch_sizes: Counter[int] = Counter()
        self.joined = 0  # jobs that joined a running batch (take_joining)
        self.step_s = 0.0  # a decoding step's time (note_step), which stretches the window
        self._current: list[Job] = []  # the running batch's jobs, joined ones included
        self._isolating = False  # retrying a failed batch's jobs one by one: nobody joins

    # -- called from the request threads ------------------------------------------------------
    def submit(self, job: Job) -> Future:
        return self.submit_all([job])[0]

    def submit_all(self, jobs: list[Job]) -> list[Future]:
        """Queue a request's jobs together, or none of them (QueueFull)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if self.max_queued is not None and len(self._queue) + len(jobs) > self.max_queued:
                self.refused += 1
                raise QueueFull(
                    f"{len(self._queue)} prompts are already waiting for the model "
                    f"(MAX_QUEUED_REQUESTS={self.max_queued})"
                )
            if self._thread is None:
                # Started on first use: nothing runs while the model is only being saved.
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._queue.extend(jobs)
            if self._running:
                unanswered = sum(not j.future.done() for j in self._running)
                self._peak = max(self._peak, unanswered + len(self._queue))
            self._cond.notify()
        return [job.future for job in jobs]

    def window(self) -> float:
        """How long a new batch waits for the jobs it expects: BATCH_WINDOW_MS, or half a
        decoding step where steps are longer. With a model of a real size on a CPU a step is
        long, and answers that go back through the tracking proxy and the gateway bring the next
        prompts in over longer than the window: a batch that started without them would run its
        first steps short, and they would join later with a prefill of their own while the
        others wait, their answers a step apart from then on. Half a step is little next to the
        answer's many steps; with a tiny model it is next to nothing."""
        return max(self.window_s, min(0.5 * self.step_s, MAX_STEP_WINDOW_S))

    # -- called from run_batch, in the worker thread, between decoding steps ------------------
    def note_step(self, seconds: float) -> None:
        """A decoding step took `seconds` (a moving average is kept for `window`)."""
        self.step_s = seconds if not self.step_s else 0.8 * self.step_s + 0.2 * seconds

    def take_joining(self, rows: int, width: int, budget: int) -> list[Job]:
        """Queued jobs that may join a running batch of `rows` rows, whose KV cache is `width`
        positions long and whose longest remaining answer is `budget` tokens: as many as fit in
        MAX_BATCH_SIZE rows and MAX_BATCH_TOKENS positions, rows x (longest cache + longest
        remaining answer), oldest first. Jobs whose deadline passed in the queue fail here."""
        if self._isolating:
            return []
        taken: list[Job] = []
        now = time.monotonic()
        with self._cond:
            while self._queue and rows + len(taken) < self.max_batch_size:
                job = self._queue[0]
                if job.expired(now) or job.future.done():
                    self._queue.popleft()
                    _fail(
                        job, DeadlineExceeded("the request timed out before its generation started")
                    )
                    continue
                if self.max_batch_tokens:
                    width = max(width, job.width)
                    needed = (rows + len(taken) + 1) * (width + max(budget, job.budget))
                    if needed > self.max_batch_tokens:
                        break  # first come, first served: it joins when rows have left
                    budget = max(budget, job.budget)
                taken.append(self._queue.popleft())
            if taken:
                self._running.extend(taken)
                self._current.extend(taken)
                self.joined += len(taken)
                self._peak = max(self._peak, rows + len(taken) + len(self._queue))
        return taken

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no batch runs and none is queued; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._running and not self._queue, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued jobs, then stop the worker thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # -- the worker thread --------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            jobs = self._next_batch()
            if jobs is None:
                return
            try:
                self._run(jobs)
            except BaseException:  # never let the worker die: the server would hang forever
                logger.exception("batch of %d failed outside run_batch", len(jobs))
                for job in [*jobs, *self._current]:
                    _fail(job, RuntimeError("generation failed; see the model server's log"))
            with self._cond:
                self.expected, self._running = self._peak, []
                self._last_end = time.monotonic()
                self._cond.notify_all()  # wait_idle

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            # Jobs left over from a full batch do not wait at all.
            close_at = max(self._queue[0].submitted, self._last_end) + self.window()
            wanted = min(self.max_batch_size, max(1, self.expected))
            while len(self._queue) < wanted and not self._closed and not self._leftover:
                remaining = close_at - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            jobs = [self._queue.popleft()]
            while self._queue and len(jobs) < self.max_batch_size:
                if (
                    self.max_batch_tokens
                    and batch_tokens([*jobs, self._queue[0]]) > self.max_batch_tokens
                ):
                    break  # first come, first served: the next batch starts with it
                jobs.append(self._queue.popleft())
            self._leftover = bool(self._queue)
            self._running, self._peak = jobs, len(jobs) + len(self._queue)
        return jobs

    def _run(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        live = []
        for job in jobs:
            if job.expired(now):
                _fail(job, DeadlineExceeded("the request timed out before its generation started"))
            elif not job.future.done():
                live.append(job)
        if not live:
            return
        self._current = batch = list(live)  # take_joining adds to it
        try:
            self.batch_sizes[len(live)] += 1
            self.run_batch(live)
        except Exception as e:
            if len(batch) == 1:
                logger.exception("generation failed")
                _fail(batch[0], e)
            else:
                logger.exception(
                    "a batch of %d failed; running its requests one by one", len(batch)
                )
                isolating, self._isolating = self._isolating, True
                try:
                    for job in batch:
                        if not job.future.done():
                            self._run([job])
                finally:
                    self._isolating = isolating
        for job in batch:
            _fail(job, RuntimeError("the generator returned no answer for this request"))


def _fail(job: Job, error: BaseException) -> None:
    """Resolve the job's future with `error`, unless it already has an answer."""
    if not job.future.done():
        try:
            job.future.set_exception(error)
        except Exception:  # set by another thread in the meantime
            pass
