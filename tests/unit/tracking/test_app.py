"""Optional basic auth: our tracking app (services/tracking/tracking/app.py) chains MLflow's own
basic-auth app when a password is set.

basic_auth_scenario.py runs in a subprocess with the config file and environment the tracking
image's start.py writes: MLflow's auth app registers hooks on MLflow's global Flask app, which
must not leak into the other tests of this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tracking.settings import TrackingSettings
from tracking.start import server_environment

SCENARIO = Path(__file__).with_name("basic_auth_scenario.py")


def test_ui_and_api_need_the_admin_password_when_it_is_set(tmp_path):
    settings = TrackingSettings.from_env(
        {
            "MLFLOW_AUTH_ADMIN_PASSWORD": "s3cret-password",
            "MLFLOW_DEPLOYMENTS_TARGET": "http://127.0.0.1:9",
        }
    )
    server_env = server_environment(
        settings, db_dir=tmp_path, auth_config_path=tmp_path / "auth.ini"
    )
    assert (tmp_path / ".flask_secret_key").read_text() == server_env[
        "MLFLOW_FLASK_SERVER_SECRET_KEY"
    ]
    env = {
        **os.environ,
        **server_env,
        "MLFLOW_AUTH_ADMIN_PASSWORD": "s3cret-password",
        "MLFLOW_DEPLOYMENTS_TARGET": "http://127.0.0.1:9",
        "_MLFLOW_SERVER_FILE_STORE": f"sqlite:///{tmp_path}/mlflow.db",
        "_MLFLOW_SERVER_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "_MLFLOW_SGI_NAME": "uvicorn",  # what `mlflow server` sets for its default server
    }
    out = subprocess.run(
        [sys.executable, str(SCENARIO)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    codes = json.loads(out.stdout.strip().splitlines()[-1])
    assert codes == {
        "anonymous": 401,
        "wrong": 401,
        "admin": 200,
        "proxy_anonymous": 401,
        "proxy_wrong": 401,
        "proxy_admin": 503,
    }
    # The key is generated once and kept: a restart reuses it.
    again = server_environment(settings, db_dir=tmp_path, auth_config_path=tmp_path / "auth.ini")
    assert again["MLFLOW_FLASK_SERVER_SECRET_KEY"] == server_env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
