"""What each model of the local engine (pyfunc or llamacpp) is doing, as one small JSON file.

The model server writes it at every change (downloading with bytes, rate and time left, loading,
retrying after a network error, ready, failed with the reason and the fix). Two readers:
- the pyfunc container's healthcheck (`python -m pyfunc_server.health`): healthy once every model it
  loads at start is ready, and its output says what the model is doing (`docker inspect`);
- the gateway, when the model server does not answer: a model server that stopped on an error
  that waiting cannot fix left its reason here, so a prompt's 503 says why.

The file sits on the `model-state` volume (model server: read-write; gateway: read-only).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from promptlab_stack.topology import MODEL_STATE_PATH

STATE_PATH = MODEL_STATE_PATH

QUEUED, DOWNLOADING, CONVERTING, LOADING, RETRYING, READY, FAILED, ON_DEMAND = (
    "queued",
    "downloading",
    "converting",  # the llamacpp engine's GGUF conversion
    "loading",
    "retrying",
    "ready",
    "failed",
    "on demand",
)


def write_state(models: dict[str, dict], path: Path = STATE_PATH, *, stopped: bool = False) -> None:
    """Replace the file at once (a reader never sees half of it). `models`: endpoint ->
    {"model_id", "state", "message", "at_start"}; `stopped`: the server is exiting."""
    data = {"updated": time.time(), "stopped": stopped, "models": models}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # no state volume (a test or a bare `mlflow models serve`): the state is in the log


def read_state(path: Path = STATE_PATH) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("models"), dict) else None


def failure_of(endpoint: str | None, path: Path = STATE_PATH) -> str | None:
    """The reason a stopped model server left for `endpoint` (any model when None), if any."""
    state = read_state(path)
    if not state or not state.get("stopped"):
        return None
    models = state["models"]
    entries = [models[endpoint]] if endpoint in models else list(models.values())
    failed = [
        m.get("message", "") for m in entries if isinstance(m, dict) and m.get("state") == FAILED
    ]
    return "; ".join(failed) or None
