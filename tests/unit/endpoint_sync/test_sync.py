"""The stack's models as endpoints of the tracking server's built-in AI Gateway
(services/endpoint-sync/endpoint_sync/sync.py), against a real `mlflow server` run as the tracking
image runs it (tests/tracking_server.py), on loopback with a fresh database.

The whole path (the endpoint-sync service, Playground, chat through the built-in gateway to the
model) is in the compose tests.
"""

from __future__ import annotations

import logging

import pytest
import requests
from loopback import free_port
from tracking_server import OUR_GATEWAY, tracking_server

from endpoint_sync.health import check
from endpoint_sync.settings import EndpointSyncSettings
from endpoint_sync.sync import (
    RETRY_INTERVAL_S,
    EndpointSync,
    TrackingGatewayAPI,
    is_managed,
    sync_once,
)

SYNC_SETTINGS = EndpointSyncSettings.from_env({"MLFLOW_DEPLOYMENTS_TARGET": OUR_GATEWAY})


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    db = tmp_path_factory.mktemp("tracking")
    with tracking_server(db) as (settings, url):
        yield settings, url, db


def api(url):
    return TrackingGatewayAPI(url, requests.Session())


def endpoint_names(url) -> list[str]:
    return sorted(e["name"] for e in api(url).endpoints())


def test_sync_registers_each_model_once_follows_the_list_and_leaves_users_endpoints_alone(tracking):
    _, url, _ = tracking
    base = SYNC_SETTINGS.gateway_api_base
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
    user_definition = gw._call(
        "POST",
        "/model-definitions/create",
        json={
            "name": "users-own",
            "secret_id": gw.ensure_secret(base),
            "provider": "openai",
            "model_name": "judge",
        },
    )["model_definition"]["model_definition_id"]
    gw._call(
        "POST",
        "/endpoints/create",
        json={
            "name": "judge",
            "model_configs": [
                {"model_definition_id": user_definition, "linkage_type": "PRIMARY", "weight": 1.0}
            ],
        },
    )

    changed = sync_once(api(url), ["tiny-ja", "judge"], base)
    assert (
        changed.deleted == ["tiny-b"] and changed.created == [] and changed.left_alone == ["judge"]
    )
    assert endpoint_names(url) == ["judge", "tiny-ja"]
    assert not is_managed(next(e for e in api(url).endpoints() if e["name"] == "judge"))
    # The removed endpoint's model definition went with it; the user's stays.
    definitions = sorted(d["name"] for d in api(url).model_definitions())
    assert definitions == ["promptlab-stack-tiny-ja", "users-own"]

    assert sync_once(api(url), [], base).deleted == ["tiny-ja"]
    assert endpoint_names(url) == ["judge"]


def test_only_the_stacks_own_gateway_is_allowed_as_a_private_http_upstream(tracking):
    """The tracking server trusts exactly the upstream the sync registers (two services, one
    URL)."""
    settings, url, _ = tracking
    assert settings.gateway_api_base == SYNC_SETTINGS.gateway_api_base

    def create_secret(name, api_base):
        return requests.post(
            f"{url}/api/3.0/mlflow/gateway/secrets/create",
            timeout=10,
            json={
                "secret_name": name,
                "provider": "openai",
                "secret_value": {"api_key": "k"},
                "auth_config": {"api_base": api_base},
            },
        )

    assert create_secret("ours", SYNC_SETTINGS.gateway_api_base).status_code == 200
    for name, other in (
        ("port", "http://127.0.0.1:10/v1"),
        ("path", f"{OUR_GATEWAY}/admin"),
        ("host", "http://localhost:9/v1"),
    ):
        r = create_secret(name, other)
        assert r.status_code == 400, (other, r.text)
        assert "api_base" in r.json()["message"]


def test_the_sync_reaches_the_tracking_server_by_its_compose_name(tracking):
    """The sync calls http://tracking:5000 (its own container): the server takes that Host header
    with no MLFLOW_ALLOWED_HOSTS set (tracking's start.py), and still refuses others."""
    _, url, _ = tracking
    for host, expected in (("tracking:5000", 200), ("tracking", 200), ("evil.example.net", 403)):
        r = requests.get(
            f"{url}/api/3.0/mlflow/gateway/endpoints/list", headers={"Host": host}, timeout=10
        )
        assert r.status_code == expected, (host, r.text)


def test_with_basic_auth_the_ai_gateway_needs_a_login_and_the_sync_logs_in_as_admin(tmp_path):
    password = "s3cret-ascii"
    with tracking_server(tmp_path, MLFLOW_AUTH_ADMIN_PASSWORD=password) as (settings, url):
        chat = {"model": "tiny-ja", "messages": [{"role": "user", "content": "こんにちは"}]}
        anonymous = {
            "list": requests.get(f"{url}/api/3.0/mlflow/gateway/endpoints/list", timeout=10),
            "ui list": requests.get(
                f"{url}/ajax-api/3.0/mlflow/gateway/endpoints/list", timeout=10
            ),
            "chat": requests.post(
                f"{url}/gateway/mlflow/v1/chat/completions", json=chat, timeout=10
            ),
            "invocations": requests.post(
                f"{url}/gateway/tiny-ja/mlflow/invocations", json=chat, timeout=10
            ),
        }
        assert {k: r.status_code for k, r in anonymous.items()} == dict.fromkeys(anonymous, 401)

        sync_settings = EndpointSyncSettings.from_env(
            {"MLFLOW_DEPLOYMENTS_TARGET": OUR_GATEWAY, "MLFLOW_AUTH_ADMIN_PASSWORD": password}
        )
        sync = EndpointSync(
            sync_settings, url, heartbeat=tmp_path / "heartbeat"
        )  # logs in as run() does
        admin = (settings.mlflow_auth_admin_username.encode(), password.encode())
        assert sync.api.auth == admin
        assert sync_once(sync.api, ["tiny-ja"], sync_settings.gateway_api_base).created == [
            "tiny-ja"
        ]
        # Logged in, the call gets past the login to the stack's gateway (down here: port 9).
        r = requests.post(
            f"{url}/gateway/mlflow/v1/chat/completions", json=chat, auth=admin, timeout=30
        )
        assert r.status_code not in (401, 403) and r.status_code >= 500, r.text

        # Canary: MLflow checks logins on its native routes (the AI Gateway's) with credentials
        # decoded as ASCII, so a non-ASCII password is refused there while the Flask routes take
        # it; tracking's start.py warns about such a password. When this fails, MLflow decodes
        # UTF-8: drop the warning.
        user = ("ユーザー".encode(), "パスワード-1234-abcd".encode())
        created = requests.post(
            f"{url}/api/2.0/mlflow/users/create",
            auth=admin,
            timeout=10,
            json={"username": "ユーザー", "password": "パスワード-1234-abcd"},
        )
        assert created.status_code == 200, created.text
        assert (
            requests.get(
                f"{url}/api/2.0/mlflow/experiments/search?max_results=1", auth=user, timeout=10
            ).status_code
            == 200
        )
        r = requests.post(
            f"{url}/gateway/mlflow/v1/chat/completions", json=chat, auth=user, timeout=30
        )
        assert r.status_code == 401, (
            "MLflow's native routes now take non-ASCII passwords: drop start.py's warning"
        )


def test_a_pass_that_fails_is_logged_once_retried_soon_and_still_a_heartbeat(tmp_path, caplog):
    """Before the first success (the server and the gateway coming up) a failure is news once, at
    info; the service stays healthy: it is still making passes."""
    heartbeat = tmp_path / "heartbeat"
    sync = EndpointSync(SYNC_SETTINGS, f"http://127.0.0.1:{free_port()}", heartbeat=heartbeat)
    with caplog.at_level(logging.INFO, logger="ai-gateway-endpoints"):
        assert sync.step() == RETRY_INTERVAL_S
        assert sync.step() == RETRY_INTERVAL_S
    failures = [r for r in caplog.records if "not synced (retrying)" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.INFO
    healthy, said = check(heartbeat)
    assert healthy and said.startswith("not synced (retrying): ConnectionError")
