"""The models one model server serves: fetched and loaded in the background from the start while
they fit a memory budget, later on demand, the least recently used idle one unloaded to make room.

The server answers at once, whatever its models are doing (the UI is never hostage to a model):
a request for a model that is not ready waits for it until its deadline, then answers 503 with
what the model is doing: queued, downloading (bytes, rate, time left), retrying after a network
error, loading, or failed with the reason and the fix. Each model has its own generator (and so
its own batcher: batching is per model). A request for an unloaded model starts its load. A load
that failed is tried again by the next request, unless waiting cannot fix it (then it stays
failed). Network errors during a download are retried with backoff, and the download resumes.
Loads run one at a time, so two large models never load at once. Every change is logged and
written to the state file (promptlab_stack/model_state.py) that the healthcheck and the gateway
read.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

from promptlab_stack.model_state import (
    DOWNLOADING,
    FAILED,
    LOADING,
    ON_DEMAND,
    QUEUED,
    READY,
    RETRYING,
    write_state,
)
from pyfunc_server.model_download import Progress, describe_permanent, download, is_transient
from pyfunc_server.preflight import ModelPlan, loaded_size, snapshot_folder, weight_files
from pyfunc_server.settings import ModelServerSettings

logger = logging.getLogger(__name__)

UNLOADED = "unloaded"
GB = 1e9
RETRY_BACKOFF_S = (2, 4, 8, 16, 30, 60)  # then every 60 s
# A request waits this long at most for a model that is loading (seconds to a minute), and not
# at all for one that is queued, downloading or retrying (minutes to hours): it gets the 503 that
# says so at once, and the UI stays responsive.
LOAD_WAIT_S = 10.0
PROGRESS_LOG_EVERY_S = 10.0


@dataclass(eq=False)
class Slot:
    endpoint: str
    model_id: str
    state: str = UNLOADED
    generator: Any = None
    bytes: int = 0
    last_used: float = 0.0
    in_use: int = 0
    attempt: int = 0  # loads started; a waiter is answered by the attempt it waited for
    since: float = 0.0  # when the current load started
    error: str = ""
    detail: str = ""  # what the download is doing (bytes, rate, time left; or the network error)
    fatal: bool = False  # failed for a reason that waiting cannot fix: not retried
    at_start: bool = False  # fetched and loaded at start (the healthcheck waits for these)
    plan: ModelPlan | None = None  # where the files are, what to download


def estimate_bytes(model_id: str, cuda: bool) -> int | None:
    """What the weights will take once loaded (preflight.loaded_size of the weight files). None
    when the files are not on this machine yet (a repo that was never downloaded)."""
    folder = Path(model_id) if Path(model_id).is_dir() else snapshot_folder(model_id)
    files = weight_files(folder) if folder is not None else []
    if folder is None or not files:
        return None
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}  # saved as float32, as transformers assumes
    return loaded_size(sum(f.stat().st_size for f in files), config, cuda)


class ModelPool:
    def __init__(
        self,
        settings: ModelServerSettings,
        load: Callable[[ModelServerSettings, str], Any],
        plans: list | None = None,
        state_path: Path | None = None,
        token: str | None = None,
    ):
        self.settings = settings
        self.load = (
            load  # (settings, model_id or folder) -> generator with memory_bytes() and close()
        )
        self.budget = settings.memory_budget_bytes
        self.slots = {m.endpoint: Slot(m.endpoint, m.model_id) for m in settings.served_models}
        for plan in plans or []:
            self.slots[plan.endpoint].plan = plan
        self.state_path = state_path  # None: no state file (tests, the benchmark)
        self.token = token
        self.started = threading.Event()  # the models loaded at start are ready or failed
        self.default = settings.served_models[0].endpoint
        self.cuda = settings.device.startswith("cuda")
        self._cond = threading.Condition()
        self._load_lock = threading.Lock()  # one load at a time
        self.loads = 0
        self.unloads = 0

    # -- start -------------------------------------------------------------------------------
    def start(self) -> None:
        """Queue the models for the start, then fetch and load them in a background thread;
        returns at once."""
        queued = self._queue_for_start()
        threading.Thread(
            target=self._load_queued, args=(queued,), name="preload", daemon=True
        ).start()

    def wait_started(self, timeout: float) -> bool:
        return self.started.wait(timeout)

    def preload(self) -> None:
        """What start() does, in this thread (the server then answers once it is done)."""
        self._load_queued(self._queue_for_start())

    def _queue_for_start(self) -> list:
        """The first model, then each next one whose estimated size still fits the budget; the
        others load on first use."""
        planned = 0
        chosen = []
        for i, slot in enumerate(self.slots.values()):
            estimate = getattr(slot.plan, "memory_bytes", None) or estimate_bytes(
                slot.model_id, self.cuda
            )
            if i and (estimate is None or planned + estimate > self.budget):
                logger.info(
                    "Model %s (%s) will load on first use (%s)",
                    slot.endpoint,
                    slot.model_id,
                    "size unknown"
                    if estimate is None
                    else f"{estimate / GB:.2f} GB over the {self.budget / GB:.2f} GB budget",
                )
                continue
            planned += estimate or 0
            chosen.append((slot, estimate))
        with self._cond:
            for slot, _ in chosen:
                slot.state, slot.at_start = QUEUED, True
        self.publish()
        return chosen

    def _load_queued(self, chosen: list) -> None:
        try:
            for slot, estimate in chosen:
                with self._cond:
                    if slot.state != QUEUED:
                        continue
                    slot.state, slot.attempt, slot.since = (
                        LOADING,
                        slot.attempt + 1,
                        time.monotonic(),
                    )
                self._load(slot, estimate)
        finally:
            self.started.set()
            self.publish()

    # -- what the models are doing -----------------------------------------------------------
    def describe(self, slot: Slot) -> str:
        """What `slot`'s model is doing, for a 503 and the state file."""
        name = f"model {slot.endpoint!r} ({slot.model_id})"
        if slot.state == READY:
            return f"{name} is ready"
        if slot.state == FAILED:
            return (
                f"{name} failed: {slot.error}"
                if slot.fatal
                else f"{name} failed to load: {slot.error}"
            )
        if slot.state == QUEUED:
            return f"{name} is queued: it loads after the models before it"
        if slot.state == DOWNLOADING:
            return f"{name} is downloading {slot.detail}: try again later"
        if slot.state == RETRYING:
            return f"{name} is retrying after a network error ({slot.detail})"
        if slot.state == LOADING:
            return (
                f"{name} is loading ({time.monotonic() - slot.since:.0f} s so far): "
                "try again in a moment"
            )
        return f"{name} loads on first use"

    def publish(self) -> None:
        if self.state_path is None:
            return
        with self._cond:
            models = {
                s.endpoint: {
                    "model_id": s.model_id,
                    "state": ON_DEMAND if s.state == UNLOADED else s.state,
                    "message": self.describe(s),
                    "at_start": s.at_start,
                }
                for s in self.slots.values()
            }
        write_state(models, self.state_path)

    def used_bytes(self) -> int:
        return sum(s.bytes for s in self.slots.values() if s.state == READY)

    # -- the request threads -----------------------------------------------------------------
    @contextmanager
    def use(self, endpoint: str | None, deadline: float) -> Iterator[object]:
        """The generator of `endpoint` (default: the first model), loaded if need be."""
        name = endpoint or self.default
        slot = self.slots.get(name)
        if slot is None:
            raise MlflowException(
                f"this model server has no model named {name!r}; it serves {', '.join(self.slots)}",
                error_code=RESOURCE_DOES_NOT_EXIST,
            )
        deadline = min(deadline, time.monotonic() + LOAD_WAIT_S)
        with self._cond:
            waiting_for = None
            while slot.state != READY:
                if slot.state == FAILED and (slot.fatal or waiting_for == slot.attempt):
                    raise MlflowException(self.describe(slot), error_code=TEMPORARILY_UNAVAILABLE)
                if slot.state in (UNLOADED, FAILED):
                    slot.state, slot.attempt, slot.since, slot.error = (
                        LOADING,
                        slot.attempt + 1,
                        time.monotonic(),
                        "",
                    )
                    threading.Thread(
                        target=self._load, args=(slot,), name=f"load {name}", daemon=True
                    ).start()
                if slot.state in (QUEUED, DOWNLOADING, RETRYING):
                    raise MlflowException(self.describe(slot), error_code=TEMPORARILY_UNAVAILABLE)
                waiting_for = slot.attempt
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise MlflowException(self.describe(slot), error_code=TEMPORARILY_UNAVAILABLE)
                self._cond.wait(remaining)
            slot.in_use += 1
            slot.last_used = time.monotonic()
            generator = slot.generator
        try:
            yield generator
        finally:
            with self._cond:
                slot.in_use -= 1
                self._cond.notify_all()

    # -- loading and unloading ---------------------------------------------------------------
    def _set(self, slot: Slot, **fields) -> None:
        with self._cond:
            for key, value in fields.items():
                setattr(slot, key, value)
            self._cond.notify_all()
        self.publish()

    def _fail(self, slot: Slot, error: str, fatal: bool) -> None:
        logger.error("Model %s (%s) failed: %s", slot.endpoint, slot.model_id, error)
        self._set(slot, state=FAILED, error=error, fatal=fatal)

    def _fetch(self, slot: Slot) -> str | None:
        """Where `slot`'s model loads from, downloading its files first if the plan says so;
        None when the download failed for good."""
        plan = slot.plan
        if plan is None or not plan.files:
            return str(plan.folder) if plan is not None and plan.folder else slot.model_id
        last_log = 0.0

        def on_progress(progress: Progress) -> None:
            nonlocal last_log
            self._set(slot, state=DOWNLOADING, detail=progress.describe())
            if (
                time.monotonic() - last_log >= PROGRESS_LOG_EVERY_S
                or progress.done >= progress.total
            ):
                last_log = time.monotonic()
                logger.info("Downloading %s: %s", slot.model_id, progress.describe())

        for attempt in range(1, 10_000):
            try:
                self._set(
                    slot, state=DOWNLOADING, detail=Progress(0, plan.download_bytes, 0.0).describe()
                )
                folder = download(
                    slot.model_id, plan.files, plan.download_bytes, self.token, on_progress
                )
                plan.folder, plan.files = folder, []
                return str(folder)
            except Exception as e:  # noqa: BLE001 - classified below
                if not is_transient(e):
                    self._fail(slot, describe_permanent(e), fatal=True)
                    return None
                wait = RETRY_BACKOFF_S[min(attempt - 1, len(RETRY_BACKOFF_S) - 1)]
                error = describe_permanent(e)
                logger.warning(
                    "Download of %s interrupted (%s); retrying in %d s, resuming where it stopped",
                    slot.model_id,
                    error,
                    wait,
                )
                self._set(
                    slot,
                    state=RETRYING,
                    detail=f"attempt {attempt}, next in {wait} s; "
                    f"resumes where it stopped: {error}",
                )
                time.sleep(wait)
        return None

    def _load(self, slot: Slot, estimate: int | None = None) -> None:
        """Fetch and load `slot`'s model; `estimate`: its size if the caller already estimated
        it."""
        with self._load_lock:
            source = self._fetch(slot)
            if source is None:
                return
            if estimate is None:
                estimate = estimate_bytes(source, self.cuda)
            estimate = estimate or 0
            self._make_room(estimate, keep=slot)
            self._set(slot, state=LOADING, since=time.monotonic())
            started = time.monotonic()
            logger.info(
                "Loading model %s (%s), about %.2f GB", slot.endpoint, slot.model_id, estimate / GB
            )
            try:
                generator = self.load(self.settings, source)
                size = generator.memory_bytes()
            except Exception as e:  # reported to the waiting requests, retried by the next one
                logger.exception("Model %s (%s) failed to load", slot.endpoint, slot.model_id)
                # The kind of error only: the message reaches the browser, the traceback the log.
                self._fail(
                    slot,
                    f"{type(e).__name__} while loading; its cause is in the model server's "
                    "log (docker compose logs pyfunc)",
                    fatal=False,
                )
                return
            with self._cond:
                slot.generator, slot.bytes, slot.state = generator, size, READY
                slot.last_used = time.monotonic()
                self.loads += 1
                self._cond.notify_all()
                used = self.used_bytes()
            self.publish()
            logger.info(
                "Loaded model %s in %.1f s: %.2f GB; %d of %d models loaded, "
                "%.2f of %.2f GB budget",
                slot.endpoint,
                time.monotonic() - started,
                size / GB,
                sum(s.state == READY for s in self.slots.values()),
                len(self.slots),
                used / GB,
                self.budget / GB,
            )

    def _make_room(self, need: int, keep: Slot) -> None:
        """Unload idle models, least recently used first, until `need` more bytes fit."""
        while True:
            with self._cond:
                if self.used_bytes() + need <= self.budget:
                    return
                idle = sorted(
                    (
                        s
                        for s in self.slots.values()
                        if s.state == READY and s.in_use == 0 and s is not keep
                    ),
                    key=lambda s: s.last_used,
                )
                if not idle:
                    logger.warning(
                        "Loading %s over the %.2f GB memory budget (MODEL_MEMORY_BUDGET_GB): "
                        "the loaded models are all busy or none is left to unload",
                        keep.endpoint,
                        self.budget / GB,
                    )
                    return
                victim = idle[0]
                victim.state, generator, victim.generator = UNLOADED, victim.generator, None
                freed, victim.bytes = victim.bytes, 0
                self.unloads += 1
            generator.close()
            del generator
            gc.collect()
            if self.cuda:
                import torch

                torch.cuda.empty_cache()
            logger.info(
                "Unloaded model %s (%.2f GB, least recently used) to make room for %s",
                victim.endpoint,
                freed / GB,
                keep.endpoint,
            )
            self.publish()
