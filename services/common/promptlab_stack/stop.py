"""One way for a long-running service to stop on a problem that a restart cannot fix.

A bad setting (or a model that cannot be served) is not fixed by restarting into it again. Every
service of the stack runs under compose's `restart: on-failure`: a crash (a non-zero status)
restarts it, while `stop_service` ends it with status 0, so it stays stopped, and its last log
line names the service, the knob and the fix. `docker compose up --wait` then fails at once
("exited (0)") instead of waiting for a health check that never passes.

Commands a person runs (promptlab-eval, promptlab-backup, ...) are not services: they exit 2 on a
bad setting, as command-line tools do.
"""

from __future__ import annotations

import sys

STOPPED = 0  # not restarted by `restart: on-failure`


def stop_service(service: str, problem: object) -> int:
    """Print `<service> stopped: <problem>` as the last log line; the status to exit with."""
    print(f"{service} stopped: {problem}", file=sys.stderr, flush=True)
    return STOPPED
