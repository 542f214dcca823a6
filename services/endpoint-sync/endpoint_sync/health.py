"""The endpoint-sync container's healthcheck: healthy while the sync keeps making passes.

Every pass (start.py's loop, or its idle loop when the sync is off) leaves a heartbeat file that
says how the pass went; the check passes while the last one is recent and prints it, which
`docker inspect` shows. A pass that failed (the tracking server or the gateway down) still counts:
the sync retries by itself and its log says why; only a sync that stopped making passes is
unhealthy.

Usage (docker-compose.yml): python -m endpoint_sync.health
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

# On the container's memory-backed /tmp (docker-compose.yml's hardening).
HEARTBEAT = Path("/tmp/endpoint-sync.heartbeat")
# A pass makes a few calls of at most sync.TIMEOUT_S each, then sleeps sync.SYNC_INTERVAL_S.
MAX_AGE_S = 120.0


def beat(status: str, path: Path = HEARTBEAT) -> None:
    """Record a pass: `status` says how it went."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(status + "\n", encoding="utf-8")
    tmp.replace(path)


def check(path: Path = HEARTBEAT, max_age_s: float = MAX_AGE_S) -> tuple[bool, str]:
    """(healthy, what to print)."""
    try:
        age = time.time() - path.stat().st_mtime
        status = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return False, "starting: no pass yet"
    if age > max_age_s:
        return False, f"stuck: the last pass was {age:.0f} s ago ({status})"
    return True, status


def main() -> int:
    healthy, message = check()
    print(message)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
