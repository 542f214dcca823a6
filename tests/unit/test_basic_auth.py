"""Optional basic auth: our tracking app chains MLflow's own basic-auth app when a password is set.

Runs in a subprocess with the config file and environment the tracking image's start.py writes:
MLflow's auth app registers hooks on MLflow's global Flask app, which must not leak into the
other tests of this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import base64, json
    from tracking.start import bootstrap_basic_auth
    bootstrap_basic_auth()          # what start.py runs before the server
    from tracking.app import create_app
    from starlette.testclient import TestClient
    client = TestClient(create_app(), base_url="http://localhost")
    get = lambda url, headers=None: client.get(url, headers=headers).status_code
    url = "/api/2.0/mlflow/experiments/search?max_results=1"
    proxy = "/ajax-api/2.0/mlflow/gateway-proxy?gateway_path=api/2.0/endpoints"
    def auth(user, password):
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    admin = auth("admin", "s3cret-パスワード")
    print(json.dumps({
        "anonymous": get(url),
        "wrong": get(url, auth("admin", "nope")),
        "admin": get(url, admin),
        "proxy_anonymous": get(proxy),
        "proxy_wrong": get(proxy, auth("admin", "nope")),
        # Past the login, the proxy answers: its gateway (port 9) is down.
        "proxy_admin": get(proxy, admin),
    }))
''')


def test_ui_and_api_need_the_admin_password_when_it_is_set(tmp_path):
    from tracking.settings import TrackingSettings
    from tracking.start import server_environment

    settings = TrackingSettings.from_env({
        "MLFLOW_AUTH_ADMIN_PASSWORD": "s3cret-パスワード",
        "MLFLOW_DEPLOYMENTS_TARGET": "http://127.0.0.1:9",
    })
    server_env = server_environment(settings, db_dir=tmp_path, auth_config_path=tmp_path / "auth.ini")
    assert (tmp_path / ".flask_secret_key").read_text() == server_env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    env = {
        **os.environ,
        **server_env,
        "MLFLOW_AUTH_ADMIN_PASSWORD": "s3cret-パスワード",
        "MLFLOW_DEPLOYMENTS_TARGET": "http://127.0.0.1:9",
        "_MLFLOW_SERVER_FILE_STORE": f"sqlite:///{tmp_path}/mlflow.db",
        "_MLFLOW_SERVER_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "_MLFLOW_SGI_NAME": "uvicorn",  # what `mlflow server` sets for its default server
    }
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    codes = json.loads(out.stdout.strip().splitlines()[-1])
    assert codes == {"anonymous": 401, "wrong": 401, "admin": 200,
                     "proxy_anonymous": 401, "proxy_wrong": 401, "proxy_admin": 503}
    # The key is generated once and kept: a restart reuses it.
    again = server_environment(settings, db_dir=tmp_path, auth_config_path=tmp_path / "auth.ini")
    assert again["MLFLOW_FLASK_SERVER_SECRET_KEY"] == server_env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
