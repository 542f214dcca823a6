"""The llamacpp container's healthcheck: healthy once llama-server has loaded every model of
MODELS; until then its output says what each model is doing (docker inspect)."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

from promptlab_stack.model_state import read_state
from promptlab_stack.topology import LLAMACPP


def statuses_in(listing: dict) -> dict[str, str]:
    """endpoint -> its status (loaded, loading, unloaded, ...) in llama-server's /models."""
    return {
        m.get("id", "?"): (m.get("status") or {}).get("value", "?")
        for m in listing.get("data", [])
        if isinstance(m, dict)
    }


def every_model_loaded(statuses: dict[str, str]) -> bool:
    return bool(statuses) and all(s == "loaded" for s in statuses.values())


def model_statuses(port: int = LLAMACPP.port) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/models", timeout=4) as resp:
        return statuses_in(json.loads(resp.read()))


def main() -> int:
    try:
        statuses = model_statuses()
    except (OSError, ValueError, urllib.error.URLError):
        state = read_state() or {"models": {}}
        print("; ".join(m.get("message", "") for m in state["models"].values()) or "starting")
        return 1
    if not every_model_loaded(statuses):
        waiting = {name: status for name, status in statuses.items() if status != "loaded"}
        print("llama-server: " + (", ".join(f"{n} {s}" for n, s in waiting.items()) or "no model"))
        return 1
    print("llama-server: every model loaded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
