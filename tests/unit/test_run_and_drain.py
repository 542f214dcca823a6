"""promptlab_stack.run_and_drain: docker stop's SIGTERM reaches the server, which finishes its work."""

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
