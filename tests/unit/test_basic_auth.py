"""Optional basic auth: our tracking app chains MLflow's own basic-auth app when a password is set.

Runs in a subprocess: MLflow's auth app registers hooks on MLflow's global Flask app, which must
not leak into the other tests of this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import base64, json, os, sys
    from mlflow.server.auth import bootstrap_admin_user, get_flask_server_secret_key
    get_flask_server_secret_key()
    bootstrap_admin_user()          # what services/tracking/start.sh runs before the server
    from mlflow_promptlab_utf8.app import create_app
    served = create_app()
    if sys.argv[1] == "uvicorn":    # MLflow's FastAPI app, where the gateway proxy is native
        from starlette.testclient import TestClient
        client = TestClient(served, base_url="http://localhost")
        get = lambda url, headers=None: client.get(url, headers=headers).status_code
    else:                           # MLflow's Flask app, as served by gunicorn or waitress
        client = served.test_client()
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


@pytest.mark.parametrize("server", ["uvicorn", "flask"])
def test_ui_and_api_need_the_admin_password_when_it_is_set(tmp_path, server):
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path}/basic_auth.db\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": "s3cret-パスワード",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-key",
        "_MLFLOW_SERVER_FILE_STORE": f"sqlite:///{tmp_path}/mlflow.db",
        "_MLFLOW_SERVER_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "MLFLOW_DEPLOYMENTS_TARGET": "http://127.0.0.1:9",
    }
    env.pop("_MLFLOW_SGI_NAME", None)
    if server == "uvicorn":
        env["_MLFLOW_SGI_NAME"] = "uvicorn"  # what `mlflow server` sets for its default server
    out = subprocess.run([sys.executable, "-c", SCRIPT, server], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    codes = json.loads(out.stdout.strip().splitlines()[-1])
    assert codes == {"anonymous": 401, "wrong": 401, "admin": 200,
                     "proxy_anonymous": 401, "proxy_wrong": 401, "proxy_admin": 503}
