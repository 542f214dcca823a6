"""`mlflow server` as the tracking image's start.py runs it (our app, our environment), on
loopback with a fresh database: for the tests of the tracking server (tests/unit/tracking) and of
the endpoint sync, which talks to it (tests/unit/endpoint_sync).

Run as a program, it does what start.py does before the server starts with basic auth (in its own
process: MLflow's auth module reads its config once, at import).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager

# Where the stack's endpoints point; nothing needs to listen.
OUR_GATEWAY = "http://127.0.0.1:9"


@contextmanager
def tracking_server(db, **env):
    """Yields the server's settings and URL; `env`: the tracking container's variables."""
    import requests
    from loopback import free_port

    from tracking.settings import TrackingSettings
    from tracking.start import server_command, server_environment

    (db / "artifacts").mkdir()
    env = {"MLFLOW_DEPLOYMENTS_TARGET": OUR_GATEWAY, "MLFLOW_WORKERS": "1", **env}
    settings = TrackingSettings.from_env(env)
    port = free_port()
    command = server_command(
        settings, db_dir=db, artifacts_dir=db / "artifacts", host="127.0.0.1", port=port
    )
    command = [sys.executable, "-m", *command]  # `mlflow ...` from this interpreter's environment
    env = {
        **os.environ,
        **env,
        **server_environment(settings, db_dir=db, auth_config_path=db / "auth.ini"),
    }
    if settings.basic_auth:  # what start.py does before the server starts
        bootstrap = subprocess.run(
            [sys.executable, __file__], env=env, capture_output=True, text=True
        )
        assert bootstrap.returncode == 0, bootstrap.stdout + bootstrap.stderr[-2000:]
    log = open(db / "server.log", "wb")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (
                db / "server.log"
            ).read_text()[-3000:]
            time.sleep(0.5)
        yield settings, url
    finally:
        server.terminate()
        server.wait(30)
        log.close()


if __name__ == "__main__":
    from tracking.start import bootstrap_basic_auth

    if problem := bootstrap_basic_auth():
        print(problem)
        sys.exit(2)
