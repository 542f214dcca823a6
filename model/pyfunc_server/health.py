"""The pyfunc container's healthcheck: healthy once the server answers and every model it loads at
start is ready; otherwise it prints what each model is doing (downloading with bytes and time
left, loading, retrying, failed with the reason and the fix), which `docker inspect` shows.

Usage (docker-compose.yml): python -m pyfunc_server.health
"""

from __future__ import annotations

import sys
import urllib.request

from promptlab_stack.model_state import READY, read_state
from promptlab_stack.topology import MODEL_STATE_PATH, PYFUNC


def main() -> int:
    state = read_state(MODEL_STATE_PATH)
    if state is None:
        print("starting: no model state yet")
        return 1
    at_start = {name: m for name, m in state["models"].items() if m.get("at_start")}
    waiting = [m.get("message", name) for name, m in at_start.items() if m.get("state") != READY]
    if waiting:
        print("; ".join(waiting))
        return 1
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{PYFUNC.port}/ping", timeout=4)
    except OSError as e:
        print(f"the models are ready but the server does not answer /ping: {e}")
        return 1
    others = [
        f"{name}: {m.get('state')}" for name, m in state["models"].items() if not m.get("at_start")
    ]
    print(
        "ready: " + ", ".join(at_start) + (f" (on demand: {', '.join(others)})" if others else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
