"""Run a server command as PID 1's child and let it drain on `docker stop`.

`mlflow server`, `mlflow gateway start` and `mlflow models serve` each start uvicorn as a child
process and do not forward SIGTERM: when Docker stops the container, the CLI exits at once and
the uvicorn child, still answering requests, is killed with it. This entrypoint starts the
command in its own process group, forwards SIGTERM/SIGINT to the whole group (uvicorn then stops
accepting connections and finishes the requests in flight), reaps orphans as PID 1 must, and
exits once every process of the group is gone. Docker's stop grace period (STOP_GRACE_PERIOD)
bounds the drain.

The signal handlers are installed before the command starts: as PID 1, a signal without a handler
is ignored by the kernel, so a `docker stop` during start-up used to wait out the whole grace
period. A SIGTERM that arrives before the command exists is passed on as soon as it does. When the
command exits on its own (a crash, not a stop), processes it left in its group (a helper beside
the server) are asked to stop, then killed after LEFTOVER_GRACE_S, so the container exits and its
restart policy applies instead of it running on without its server.

Usage (ENTRYPOINT): python -m promptlab_stack.run_and_drain COMMAND [ARGS...]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


LEFTOVER_GRACE_S = 10.0


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m promptlab_stack.run_and_drain COMMAND [ARGS...]", file=sys.stderr)
        return 2
    received: list[int] = []
    pgid = None

    def forward(signum, _frame):
        received.append(signum)
        print(
            f"run-and-drain: {signal.Signals(signum).name}: draining in-flight requests",
            file=sys.stderr,
            flush=True,
        )
        if pgid is not None:
            try:
                os.killpg(pgid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    child = subprocess.Popen(argv, start_new_session=True)
    pgid = child.pid
    if received:  # stopped while the command was starting
        os.killpg(pgid, received[-1])
    status = child.wait()
    if not received and group_alive(pgid):
        # The command exited on its own: its leftovers must not keep the container up.
        print(
            "run-and-drain: the command exited; stopping the processes it left",
            file=sys.stderr,
            flush=True,
        )
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + LEFTOVER_GRACE_S
        while group_alive(pgid) and time.monotonic() < deadline:
            reap()
            time.sleep(0.2)
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
    # The CLI may exit before its server child has finished draining: wait for the whole group.
    while group_alive(pgid):
        reap()
        time.sleep(0.2)
    reap()
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
