"""What each model of the llamacpp engine is doing while it is prepared (queued, downloading,
converting, loading, failed), kept for the front's 503s (front.py) and written at each change to
the model-state file (promptlab_stack.model_state), which the healthcheck prints and where a
stop's reason stays for the gateway."""

from __future__ import annotations

import threading
from pathlib import Path

from promptlab_stack.model_state import write_state

# What a 503 asks the client to wait before it tries again.
RETRY_AFTER_S = 10


class States:
    """endpoint -> {"model_id", "state", "message", "at_start"}; set from the preparing thread,
    read from the front's event loop."""

    def __init__(self, models: dict[str, dict], path: Path) -> None:
        self._lock = threading.Lock()
        self.models = models
        self.path = path
        write_state(self.models, self.path)

    def set(self, endpoint: str, state: str, message: str, *, stopped: bool = False) -> None:
        with self._lock:
            self.models[endpoint] = {**self.models[endpoint], "state": state, "message": message}
            write_state(self.models, self.path, stopped=stopped)

    def message(self, endpoint: str | None = None) -> str:
        with self._lock:
            entries = [self.models[endpoint]] if endpoint in self.models else self.models.values()
            return "; ".join(m["message"] for m in entries)
