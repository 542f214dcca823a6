"""promptlab_stack.run_and_drain: docker stop's SIGTERM reaches the server, which finishes its
work."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

# What every image's ENTRYPOINT runs.
ENTRYPOINT = [sys.executable, "-m", "promptlab_stack.run_and_drain"]

# Like `mlflow server`: a CLI that starts a server child and dies at once on SIGTERM, while the
# child (uvicorn) finishes the request it is serving before it exits.
SERVER = """
import signal, sys, time
done = sys.argv[1]
signal.signal(signal.SIGTERM, lambda *a: None)  # uvicorn: stop accepting, finish in-flight
open(done + ".started", "w").close()
time.sleep(1.5)                                   # the request still being generated
open(done, "w").write("finished")
"""


def test_sigterm_waits_for_the_servers_in_flight_work(tmp_path):
    done = tmp_path / "done"
    cli = f"{sys.executable} -c '{SERVER}' {done} & wait"
    proc = subprocess.Popen([*ENTRYPOINT, "sh", "-c", cli])
    deadline = time.monotonic() + 10
    while not (tmp_path / "done.started").exists():
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    # The shell (the CLI) dies of the forwarded SIGTERM at once: 128 + 15, as Docker reports it.
    assert proc.wait(timeout=15) == 128 + signal.SIGTERM
    assert done.read_text() == "finished", "run-and-drain exited before the server drained"


def test_exit_status_of_the_command_is_kept():
    assert subprocess.run([*ENTRYPOINT, "sh", "-c", "exit 3"]).returncode == 3
    assert subprocess.run(ENTRYPOINT).returncode == 2


def test_a_sigterm_right_at_start_stops_it_promptly():
    # As PID 1 a signal without a handler is ignored: the handler is in place before the command.
    proc = subprocess.Popen([*ENTRYPOINT, "sh", "-c", "sleep 30"])
    time.sleep(0.3)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 5


def test_processes_left_behind_by_a_command_that_exits_on_its_own_are_stopped(tmp_path):
    # e.g. the tracking server crashed and its endpoint sync is still running: the container must
    # exit so that its restart policy applies.
    pid_file = tmp_path / "leftover.pid"
    started = time.monotonic()
    out = subprocess.run(
        [*ENTRYPOINT, "sh", "-c", f"sleep 300 & echo $! > {pid_file}; exit 4"], timeout=60
    )
    assert out.returncode == 4 and time.monotonic() - started < 20
    pid = int(pid_file.read_text())
    try:
        import os

        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, "the leftover process still runs"
