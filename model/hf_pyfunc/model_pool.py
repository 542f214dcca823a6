"""The models one model server serves: loaded at start while they fit a memory budget, later on
demand, the least recently used idle one unloaded to make room.

Each model has its own generator (and so its own batcher: batching is per model). A request names
its model; if that model is not loaded, its load starts in the background and the request waits
for it until its deadline, then answers 503 "loading" (the model keeps loading for the next
request). A failed load answers 503 with the reason, and the next request tries again. Loads run
one at a time, so two large models never load at once. Loads and unloads are logged with their
times and sizes.
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

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

from hf_pyfunc.settings import ModelServerSettings

logger = logging.getLogger(__name__)

UNLOADED, LOADING, READY, FAILED = "unloaded", "loading", "ready", "failed"
GB = 1e9


@dataclass(eq=False)
class Slot:
    endpoint: str
    model_id: str
    state: str = UNLOADED
    generator: object = None
    bytes: int = 0
    last_used: float = 0.0
    in_use: int = 0
    attempt: int = 0  # loads started; a waiter is answered by the attempt it waited for
    since: float = 0.0  # when the current load started
    error: str = ""


def estimate_bytes(model_id: str, cuda: bool) -> int | None:
    """What the weights will take once loaded: the weight files' size, doubled when bf16/fp16
    weights are loaded as float32 (on CPU) and halved the other way. None when the files are not
    on this machine yet (a repo that was never downloaded)."""
    folder = Path(model_id)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(model_id, local_files_only=True))
        except Exception:
            return None
    files = list(folder.glob("*.safetensors")) or list(folder.glob("pytorch_model*.bin"))
    if not files:
        return None
    size = sum(f.stat().st_size for f in files)
    try:
        config = json.loads((folder / "config.json").read_text())
        saved = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    except (OSError, ValueError):
        saved = "float32"
    half = saved in ("bfloat16", "float16")
    if half and not cuda:
        return size * 2
    if not half and cuda:
        return size // 2
    return size


class ModelPool:
    def __init__(self, settings: ModelServerSettings, load: Callable[[ModelServerSettings, str], object]):
        self.settings = settings
        self.load = load  # (settings, model_id) -> generator with memory_bytes() and close()
        self.budget = settings.memory_budget_bytes
        self.slots = {m.endpoint: Slot(m.endpoint, m.model_id) for m in settings.served_models}
        self.default = settings.served_models[0].endpoint
        self.cuda = settings.device.startswith("cuda")
        self._cond = threading.Condition()
        self._load_lock = threading.Lock()  # one load at a time
        self.loads = 0
        self.unloads = 0

    # -- start -------------------------------------------------------------------------------
    def preload(self) -> None:
        """Load the first model, then each next one whose estimated size still fits the budget."""
        for i, slot in enumerate(self.slots.values()):
            estimate = estimate_bytes(slot.model_id, self.cuda)
            if i and (estimate is None or self.used_bytes() + estimate > self.budget):
                logger.info("Model %s (%s) will load on first use (%s)", slot.endpoint, slot.model_id,
                            "size unknown" if estimate is None else
                            f"{estimate / GB:.2f} GB over the {self.budget / GB:.2f} GB budget")
                continue
            with self._cond:
                slot.state, slot.attempt, slot.since = LOADING, slot.attempt + 1, time.monotonic()
            self._load(slot, estimate)
            if i == 0 and slot.state == FAILED:
                raise RuntimeError(f"the first model, {slot.model_id}, failed to load: {slot.error}")

    def used_bytes(self) -> int:
        return sum(s.bytes for s in self.slots.values() if s.state == READY)

    # -- the request threads -----------------------------------------------------------------
    @contextmanager
    def use(self, endpoint: str | None, deadline: float) -> Iterator[object]:
        """The generator of `endpoint` (default: the first model), loaded if need be."""
        name = endpoint or self.default
        slot = self.slots.get(name)
        if slot is None:
            raise MlflowException(f"this model server has no model named {name!r}; it serves "
                                  f"{', '.join(self.slots)}", error_code=RESOURCE_DOES_NOT_EXIST)
        with self._cond:
            waiting_for = None
            while slot.state != READY:
                if slot.state == FAILED and waiting_for == slot.attempt:
                    raise MlflowException(f"model {name!r} ({slot.model_id}) failed to load: {slot.error}",
                                          error_code=TEMPORARILY_UNAVAILABLE)
                if slot.state in (UNLOADED, FAILED):
                    slot.state, slot.attempt, slot.since, slot.error = LOADING, slot.attempt + 1, time.monotonic(), ""
                    threading.Thread(target=self._load, args=(slot,), name=f"load {name}", daemon=True).start()
                waiting_for = slot.attempt
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise MlflowException(
                        f"model {name!r} ({slot.model_id}) is loading ({time.monotonic() - slot.since:.0f} s "
                        "so far): try again in a moment", error_code=TEMPORARILY_UNAVAILABLE)
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
    def _load(self, slot: Slot, estimate: int | None = None) -> None:
        """Load `slot`'s model; `estimate`: its size if the caller already estimated it."""
        with self._load_lock:
            if estimate is None:
                estimate = estimate_bytes(slot.model_id, self.cuda)
            estimate = estimate or 0
            self._make_room(estimate, keep=slot)
            started = time.monotonic()
            logger.info("Loading model %s (%s), about %.2f GB", slot.endpoint, slot.model_id, estimate / GB)
            try:
                generator = self.load(self.settings, slot.model_id)
                size = generator.memory_bytes()
            except Exception as e:  # reported to the waiting requests, retried by the next one
                logger.exception("Model %s (%s) failed to load", slot.endpoint, slot.model_id)
                with self._cond:
                    slot.state, slot.error = FAILED, f"{type(e).__name__}: {e}"
                    self._cond.notify_all()
                return
            with self._cond:
                slot.generator, slot.bytes, slot.state = generator, size, READY
                slot.last_used = time.monotonic()
                self.loads += 1
                self._cond.notify_all()
                used = self.used_bytes()
            logger.info("Loaded model %s in %.1f s: %.2f GB; %d of %d models loaded, %.2f of %.2f GB budget",
                        slot.endpoint, time.monotonic() - started, size / GB,
                        sum(s.state == READY for s in self.slots.values()), len(self.slots),
                        used / GB, self.budget / GB)

    def _make_room(self, need: int, keep: Slot) -> None:
        """Unload idle models, least recently used first, until `need` more bytes fit."""
        while True:
            with self._cond:
                if self.used_bytes() + need <= self.budget:
                    return
                idle = sorted((s for s in self.slots.values()
                               if s.state == READY and s.in_use == 0 and s is not keep),
                              key=lambda s: s.last_used)
                if not idle:
                    logger.warning("Loading %s over the %.2f GB memory budget (MODEL_MEMORY_BUDGET_GB): "
                                   "the loaded models are all busy or none is left to unload",
                                   keep.endpoint, self.budget / GB)
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
            logger.info("Unloaded model %s (%.2f GB, least recently used) to make room for %s",
                        victim.endpoint, freed / GB, keep.endpoint)
