"""The stack's models as endpoints of the tracking server's built-in AI Gateway
(services/tracking/tracking/ai_gateway_endpoints.py), against a real `mlflow server`
run as the tracking image runs it (our app, our environment), on loopback with a fresh database.

The whole path (Playground, chat through the built-in gateway to the model) is in the compose tests.
The tracking server's Host check (MLFLOW_ALLOWED_HOSTS) is tested here too, on the same server setup.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import requests
from loopback import free_port

OUR_GATEWAY = "http://127.0.0.1:9"  # where the stack's endpoints point; nothing needs to listen


@contextmanager
def tracking_server(db, **env):
    """`mlflow server` as the tracking image's start.py runs it, on loopback; yields its settings
    and URL."""
    from tracking.settings import TrackingSettings
    from tracking.start import server_command, server_environment

    (db / "artifacts").mkdir()
    env = {"MLFLOW_DEPLOYMENTS_TARGET": OUR_GATEWAY, "MLFLOW_WORKERS": "1", **env}
    settings = TrackingSettings.from_env(env)
    port = free_port()
    command = server_command(settings, db_dir=db, artifacts_dir=db / "artifacts", host="127.0.0.1", port=port)
    command = [sys.executable, "-m", *command]  # `mlflow ...` from this interpreter's environment
    env = {**os.environ, **env, **server_environment(settings, db_dir=db, auth_config_path=db / "auth.ini")}
    if settings.basic_auth:  # what start.py does before the server starts
        subprocess.run([sys.executable, "-c", "from tracking.start import bootstrap_basic_auth; "
                        "bootstrap_basic_auth()"], env=env, check=True, capture_output=True)
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
            assert server.poll() is None and time.monotonic() < deadline, (db / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield settings, url
    finally:
        server.terminate()
        server.wait(30)
        log.close()


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    db = tmp_path_factory.mktemp("tracking")
    with tracking_server(db) as (settings, url):
        yield settings, url, db


def api(url):
    from tracking.ai_gateway_endpoints import TrackingGatewayAPI

    return TrackingGatewayAPI(url, requests.Session())


def endpoint_names(url) -> list[str]:
    return sorted(e["name"] for e in api(url).endpoints())


def test_sync_registers_each_model_once_follows_the_list_and_leaves_users_endpoints_alone(tracking):
    from tracking.ai_gateway_endpoints import (
        gateway_api_base, is_managed, sync_once)

    settings, url, _ = tracking
    base = gateway_api_base(settings)
    assert base == f"{OUR_GATEWAY}/v1"

    first = sync_once(api(url), ["tiny-ja", "tiny-b"], base)
    assert sorted(first.created) == ["tiny-b", "tiny-ja"]
    # A restart syncs again: nothing new.
    again = sync_once(api(url), ["tiny-ja", "tiny-b"], base)
    assert again.created == again.deleted == []
    assert endpoint_names(url) == ["tiny-b", "tiny-ja"]
    endpoint = next(e for e in api(url).endpoints() if e["name"] == "tiny-ja")
    definition = endpoint["model_mappings"][0]["model_definition"]
    assert (definition["provider"], definition["model_name"]) == ("openai", "tiny-ja")
    assert is_managed(endpoint) and endpoint["usage_tracking"] is True

    # A user's own endpoint, even one named like a model the stack serves later, is left alone.
    gw = api(url)
    user_definition = gw._call("POST", "/model-definitions/create", json={
        "name": "users-own", "secret_id": gw.ensure_secret(base), "provider": "openai",
        "model_name": "judge"})["model_definition"]["model_definition_id"]
    gw._call("POST", "/endpoints/create", json={"name": "judge", "model_configs": [
        {"model_definition_id": user_definition, "linkage_type": "PRIMARY", "weight": 1.0}]})

    changed = sync_once(api(url), ["tiny-ja", "judge"], base)
    assert changed.deleted == ["tiny-b"] and changed.created == [] and changed.left_alone == ["judge"]
    assert endpoint_names(url) == ["judge", "tiny-ja"]
    assert not is_managed(next(e for e in api(url).endpoints() if e["name"] == "judge"))
    # The removed endpoint's model definition went with it; the user's stays.
    definitions = sorted(d["name"] for d in api(url).model_definitions())
    assert definitions == ["promptlab-stack-tiny-ja", "users-own"]

    assert sync_once(api(url), [], base).deleted == ["tiny-ja"]
    assert endpoint_names(url) == ["judge"]


def test_only_the_stacks_own_gateway_is_allowed_as_a_private_http_upstream(tracking):
    from tracking.ai_gateway_endpoints import gateway_api_base

    settings, url, _ = tracking

    def create_secret(name, api_base):
        return requests.post(f"{url}/api/3.0/mlflow/gateway/secrets/create", timeout=10, json={
            "secret_name": name, "provider": "openai", "secret_value": {"api_key": "k"},
            "auth_config": {"api_base": api_base}})

    assert create_secret("ours", gateway_api_base(settings)).status_code == 200
    for name, other in (("port", "http://127.0.0.1:10/v1"), ("path", f"{OUR_GATEWAY}/admin"),
                        ("host", "http://localhost:9/v1")):
        r = create_secret(name, other)
        assert r.status_code == 400, (other, r.text)
        assert "api_base" in r.json()["message"]


def test_the_secrets_passphrase_is_generated_once_and_kept_beside_the_database(tracking, tmp_path):
    from tracking.settings import TrackingSettings
    from tracking.start import server_environment

    settings, _, db = tracking
    kept = (db / ".kek_passphrase").read_text().strip()
    assert len(kept) >= 32 and oct((db / ".kek_passphrase").stat().st_mode)[-3:] == "600"
    env = server_environment(settings, db_dir=db, auth_config_path=tmp_path / "auth.ini")
    assert env["MLFLOW_CRYPTO_KEK_PASSPHRASE"] == kept
    chosen = TrackingSettings.from_env({"MLFLOW_CRYPTO_KEK_PASSPHRASE": "from-dot-env"})
    assert server_environment(chosen, db_dir=tmp_path, auth_config_path=tmp_path / "a.ini")[
        "MLFLOW_CRYPTO_KEK_PASSPHRASE"] == "from-dot-env"


def test_with_basic_auth_the_ai_gateway_needs_a_login_and_the_sync_logs_in_as_admin(tmp_path):
    from tracking.ai_gateway_endpoints import TrackingGatewayAPI, gateway_api_base, sync_once

    password = "s3cret-ascii"
    with tracking_server(tmp_path, MLFLOW_AUTH_ADMIN_PASSWORD=password) as (settings, url):
        chat = {"model": "tiny-ja", "messages": [{"role": "user", "content": "こんにちは"}]}
        anonymous = {
            "list": requests.get(f"{url}/api/3.0/mlflow/gateway/endpoints/list", timeout=10),
            "ui list": requests.get(f"{url}/ajax-api/3.0/mlflow/gateway/endpoints/list", timeout=10),
            "chat": requests.post(f"{url}/gateway/mlflow/v1/chat/completions", json=chat, timeout=10),
            "invocations": requests.post(f"{url}/gateway/tiny-ja/mlflow/invocations", json=chat, timeout=10),
        }
        assert {k: r.status_code for k, r in anonymous.items()} == dict.fromkeys(anonymous, 401)

        admin = (settings.mlflow_auth_admin_username.encode(), password.encode())  # as run() sends it
        api = TrackingGatewayAPI(url, requests.Session(), auth=admin)
        assert sync_once(api, ["tiny-ja"], gateway_api_base(settings)).created == ["tiny-ja"]
        # Logged in, the call gets past the login to the stack's gateway (down here: port 9).
        r = requests.post(f"{url}/gateway/mlflow/v1/chat/completions", json=chat, auth=admin, timeout=30)
        assert r.status_code not in (401, 403) and r.status_code >= 500, r.text

        # Canary: MLflow checks logins on its native routes (the AI Gateway's) with credentials
        # decoded as ASCII, so a non-ASCII password is refused there while the Flask routes take
        # it; start.py warns about such a password. When this fails, MLflow decodes UTF-8: drop
        # the warning.
        user = ("ユーザー".encode(), "パスワード-1234-abcd".encode())
        created = requests.post(f"{url}/api/2.0/mlflow/users/create", auth=admin, timeout=10,
                                json={"username": "ユーザー", "password": "パスワード-1234-abcd"})
        assert created.status_code == 200, created.text
        assert requests.get(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", auth=user,
                            timeout=10).status_code == 200
        r = requests.post(f"{url}/gateway/mlflow/v1/chat/completions", json=chat, auth=user, timeout=30)
        assert r.status_code == 401, "MLflow's native routes now take non-ASCII passwords: drop start.py's warning"


def test_allowed_hosts_add_to_mlflows_defaults(tmp_path):
    """MLFLOW_ALLOWED_HOSTS is documented as extra hosts: 127.0.0.1 and localhost keep working."""
    with tracking_server(tmp_path, MLFLOW_ALLOWED_HOSTS="mlflow.example.com") as (_, url):
        def status(host: str) -> int:
            return requests.get(f"{url}/api/2.0/mlflow/experiments/search?max_results=1",
                                headers={"Host": host}, timeout=10).status_code

        assert status("mlflow.example.com") == 200
        assert status(url.removeprefix("http://")) == 200
        assert status("localhost:5000") == 200
        assert status("evil.example.net") == 403


def test_auth_fails_closed_and_a_rotated_password_is_the_one_that_works(tmp_path):
    """Basic auth once on stays on: a restart without the password does not open the server; a
    password changed through MLflow's API works after a restart with it, the old one does not."""
    from tracking.settings import TrackingSettings
    from tracking.start import auth_dropped

    old, new = "first-password-1", "second-password-2"
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    with tracking_server(tmp_path, MLFLOW_AUTH_ADMIN_PASSWORD=old) as (_, url):
        r = requests.patch(f"{url}/api/2.0/mlflow/users/update-password", auth=("admin", old), timeout=10,
                           json={"username": "admin", "password": new, "current_password": old})
        assert r.status_code == 200, r.text

    for env in ({}, {"MLFLOW_AUTH_ADMIN_PASSWORD": ""}):
        problem = auth_dropped(TrackingSettings.from_env(env), db_dir=tmp_path)
        assert problem and "stays down rather than start with every route open" in problem
        assert "MLFLOW_AUTH_DISABLE=true" in problem
    assert auth_dropped(TrackingSettings.from_env({"MLFLOW_AUTH_DISABLE": "true"}), db_dir=tmp_path) is None
    assert auth_dropped(TrackingSettings.from_env({}), db_dir=tmp_path / "never-had-auth") is None

    (tmp_path / "artifacts").rename(tmp_path / "artifacts-1")
    with tracking_server(tmp_path, MLFLOW_AUTH_ADMIN_PASSWORD=new) as (_, url):
        assert requests.get(url + search, auth=("admin", new), timeout=10).status_code == 200
        assert requests.get(url + search, auth=("admin", old), timeout=10).status_code == 401
        assert requests.get(url + search, timeout=10).status_code == 401
