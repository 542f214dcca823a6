"""services/run-and-drain.py: docker stop's SIGTERM reaches the server, which finishes its work."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "services" / "run-and-drain.py"

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
    proc = subprocess.Popen([sys.executable, str(ENTRYPOINT), "sh", "-c", cli])
    deadline = time.monotonic() + 10
    while not (tmp_path / "done.started").exists():
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) is not None
    assert done.read_text() == "finished", "run-and-drain exited before the server drained"


def test_exit_status_of_the_command_is_kept():
    assert subprocess.run([sys.executable, str(ENTRYPOINT), "sh", "-c", "exit 3"]).returncode == 3
    assert subprocess.run([sys.executable, str(ENTRYPOINT)]).returncode == 2
