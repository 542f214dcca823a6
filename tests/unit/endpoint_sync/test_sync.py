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

import endpoint_sync.sync
from endpoint_sync.health import check
from endpoint_sync.ownership import Owners
from endpoint_sync.settings import EndpointSyncSettings
from endpoint_sync.sync import (
    API,
    MANAGED_TAG,
    RETRY_INTERVAL_S,
    SECRET_NAME,
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


def secret_named(url, name, auth=None) -> dict:
    return next(
        s
        for s in TrackingGatewayAPI(url, requests.Session(), auth).secrets()
        if s["secret_name"] == name
    )


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
            "secret_id": secret_named(url, SECRET_NAME)["secret_id"],
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
        # it; tracking's start.py refuses such a password. When this fails, MLflow decodes
        # UTF-8: drop the refusal (start.password_problem).
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
            "MLflow's native routes now take non-ASCII passwords: drop start.py's refusal"
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


# Someone's own server: a public address, so that MLflow takes it; nothing calls it here.
ELSEWHERE = "https://8.8.8.8/v1"
MALLORY = ("mallory", "mallory-pass-1234")


def call(url, path, auth=None, **body) -> dict:
    r = requests.post(f"{url}{API}{path}", auth=auth, json=body, timeout=10)
    assert r.status_code == 200, (path, r.text)
    return r.json()


def chain(url, auth=None, name="tiny-ja") -> tuple[dict, dict, dict]:
    """The endpoint `name`, its one model definition and that definition's secret."""
    gw = TrackingGatewayAPI(url, requests.Session(), auth)
    endpoint = next(e for e in gw.endpoints() if e["name"] == name)
    [mapping] = endpoint["model_mappings"]
    definition = next(
        d
        for d in gw.model_definitions()
        if d["model_definition_id"] == mapping["model_definition_id"]
    )
    secret = next(s for s in gw.secrets() if s["secret_id"] == definition["secret_id"])
    return endpoint, definition, secret


def serving(monkeypatch, names: list[str]) -> None:
    """Our gateway serves `names` (EndpointSync.step asks it; nothing listens here)."""
    monkeypatch.setattr(endpoint_sync.sync, "served_chat_endpoints", lambda *_: list(names))


def warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "ai-gateway-endpoints"
    ]


def test_with_basic_auth_what_a_user_made_under_the_stacks_names_is_never_used(
    tmp_path, caplog, monkeypatch
):
    """Issue 25: a user creates `promptlab-stack-gateway` and `promptlab-stack-<model>` first,
    pointing at their own server, even claiming the admin made them (MLflow stores the
    `created_by` a client sends). The sync uses neither and names both in its log; the stack's
    endpoint still works, on objects of its own. Later changes are caught on the next pass."""
    serving(monkeypatch, ["tiny-ja"])
    password = "s3cret-ascii"
    with tracking_server(tmp_path, MLFLOW_AUTH_ADMIN_PASSWORD=password) as (settings, url):
        admin = (settings.mlflow_auth_admin_username.encode(), password.encode())
        mallory = (MALLORY[0].encode(), MALLORY[1].encode())
        r = requests.post(
            f"{url}/api/2.0/mlflow/users/create",
            auth=admin,
            timeout=10,
            json={"username": MALLORY[0], "password": MALLORY[1]},
        )
        assert r.status_code == 200, r.text
        squatted_secret = call(
            url,
            "/secrets/create",
            mallory,
            secret_name=SECRET_NAME,
            provider="openai",
            secret_value={"api_key": "k"},
            auth_config={"api_base": ELSEWHERE},
            created_by="admin",
        )["secret"]
        squatted_definition = call(
            url,
            "/model-definitions/create",
            mallory,
            name="promptlab-stack-tiny-ja",
            secret_id=squatted_secret["secret_id"],
            provider="openai",
            model_name="tiny-ja",
            created_by="admin",
        )["model_definition"]
        assert squatted_secret["created_by"] == squatted_definition["created_by"] == "admin"

        sync_settings = EndpointSyncSettings.from_env(
            {"MLFLOW_DEPLOYMENTS_TARGET": OUR_GATEWAY, "MLFLOW_AUTH_ADMIN_PASSWORD": password}
        )
        base = sync_settings.gateway_api_base
        heartbeat = tmp_path / "heartbeat"
        sync = EndpointSync(sync_settings, url, heartbeat=heartbeat)
        with caplog.at_level(logging.INFO, logger="ai-gateway-endpoints"):
            sync.step()
            sync.step()  # named once, while it stays

        endpoint, definition, secret = chain(url, admin)
        assert is_managed(endpoint)
        assert definition["model_definition_id"] != squatted_definition["model_definition_id"]
        assert secret["secret_id"] != squatted_secret["secret_id"]
        assert (definition["provider"], definition["model_name"]) == ("openai", "tiny-ja")
        assert secret["auth_config"] == {"api_base": base}
        assert secret["created_by"] == definition["created_by"] == endpoint["created_by"] == "admin"
        # The names were taken: the stack's own carry a fresh suffix.
        assert secret["secret_name"].startswith(SECRET_NAME + "-")
        assert definition["name"].startswith("promptlab-stack-tiny-ja-")
        # Theirs are left as they were: not adopted, not "fixed" either.
        assert secret_named(url, SECRET_NAME, admin)["auth_config"] == {"api_base": ELSEWHERE}

        said = warnings(caplog)
        assert len(said) == 2, said
        assert any(
            f"AI Gateway secret {SECRET_NAME!r} ({squatted_secret['secret_id']}) is not the "
            "stack's (user 'mallory' can change it): never used"
            in w
            and "delete it" in w
            for w in said
        ), said
        assert any(
            "AI Gateway model definition 'promptlab-stack-tiny-ja' "
            f"({squatted_definition['model_definition_id']}) is not the stack's (user 'mallory' "
            "can change it): never used"
            in w
            and "delete it" in w
            for w in said
        ), said
        assert not any(ELSEWHERE in w or "'k'" in w for w in said)
        assert "in sync: tiny-ja; not the stack's, never used: 2" in check(heartbeat)[1]

        # A restart finds the stack's own again: by owner and content, not by name.
        gw = TrackingGatewayAPI(url, requests.Session(), admin, "admin")
        again = sync_once(gw, ["tiny-ja"], base)
        assert again.created == again.restored == [] and len(again.refused) == 2
        assert chain(url, admin)[1]["model_definition_id"] == definition["model_definition_id"]

        # Later: an admin lets mallory edit the stack's secret, and she points it at her server;
        # the stack's endpoint is pointed at her model definition.
        r = requests.post(
            f"{url}/api/3.0/mlflow/users/permissions/grant",
            auth=admin,
            timeout=10,
            json={
                "username": MALLORY[0],
                "resource_type": "gateway_secret",
                "resource_id": secret["secret_id"],
                "permission": "EDIT",
            },
        )
        assert r.status_code == 200, r.text
        call(
            url,
            "/secrets/update",
            mallory,
            secret_id=secret["secret_id"],
            auth_config={"api_base": ELSEWHERE},
        )
        call(
            url,
            "/endpoints/update",
            admin,
            endpoint_id=endpoint["endpoint_id"],
            model_configs=[
                {
                    "model_definition_id": squatted_definition["model_definition_id"],
                    "linkage_type": "PRIMARY",
                    "weight": 1.0,
                }
            ],
        )
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ai-gateway-endpoints"):
            sync.step()
        after, definition_after, secret_after = chain(url, admin)
        assert after["endpoint_id"] == endpoint["endpoint_id"] and is_managed(after)
        assert definition_after["model_definition_id"] == definition["model_definition_id"]
        assert secret_after["secret_id"] not in (secret["secret_id"], squatted_secret["secret_id"])
        assert secret_after["auth_config"] == {"api_base": base}
        said = warnings(caplog)
        assert any(
            f"AI Gateway secret {secret['secret_name']!r} ({secret['secret_id']}) is not the "
            "stack's (user 'mallory' can change it): never used" in w
            for w in said
        ), said
        assert any("AI Gateway endpoint tiny-ja had been changed" in w for w in said), said
        assert any(
            f"AI Gateway model definition {definition['name']!r} had been changed" in w
            for w in said
        ), said

        # A user's endpoint that carries the stack's tag is still the user's: not used, not removed.
        theirs = call(
            url,
            "/endpoints/create",
            mallory,
            name="tiny-b",
            model_configs=[
                {
                    "model_definition_id": squatted_definition["model_definition_id"],
                    "linkage_type": "PRIMARY",
                    "weight": 1.0,
                }
            ],
        )["endpoint"]
        call(
            url,
            "/endpoints/set-tag",
            mallory,
            endpoint_id=theirs["endpoint_id"],
            key=MANAGED_TAG,
            value="true",
        )
        tagged = sync_once(gw, ["tiny-ja", "tiny-b"], base)
        assert tagged.created == [] and tagged.deleted == []
        assert any(
            "AI Gateway endpoint tiny-b carries the stack's tag but is not the stack's "
            "(user 'mallory' can change it)" in w
            for w in tagged.refused
        ), tagged.refused
        assert (
            chain(url, admin, "tiny-b")[1]["model_definition_id"]
            == (squatted_definition["model_definition_id"])
        )
        assert sync_once(gw, ["tiny-ja"], base).deleted == []
        assert "tiny-b" in [e["name"] for e in gw.endpoints()]


def test_without_auth_the_stacks_objects_are_checked_on_every_pass_and_set_back(
    tmp_path, caplog, monkeypatch
):
    """With no users, anyone may change anything: the sync checks what its objects say on every
    pass. An object that names another creator is not the stack's."""
    serving(monkeypatch, ["tiny-ja"])
    with tracking_server(tmp_path) as (_, url):
        base = SYNC_SETTINGS.gateway_api_base
        theirs = call(
            url,
            "/secrets/create",
            secret_name=SECRET_NAME,
            provider="openai",
            secret_value={"api_key": "k"},
            auth_config={"api_base": ELSEWHERE},
            created_by="mallory",
        )["secret"]
        sync = EndpointSync(SYNC_SETTINGS, url, heartbeat=tmp_path / "heartbeat")
        with caplog.at_level(logging.INFO, logger="ai-gateway-endpoints"):
            sync.step()
        endpoint, definition, secret = chain(url)
        assert secret["secret_id"] != theirs["secret_id"]
        assert secret["auth_config"] == {"api_base": base} and not secret.get("created_by")
        assert definition["name"] == "promptlab-stack-tiny-ja"
        assert [w for w in warnings(caplog) if "is not the stack's (created by 'mallory')" in w]

        # Someone moves the stack's definition onto their secret, and the endpoint onto a second
        # model of theirs.
        call(
            url,
            "/model-definitions/update",
            model_definition_id=definition["model_definition_id"],
            secret_id=theirs["secret_id"],
        )
        call(
            url,
            "/endpoints/update",
            endpoint_id=endpoint["endpoint_id"],
            model_configs=[
                {
                    "model_definition_id": definition["model_definition_id"],
                    "linkage_type": "PRIMARY",
                    "weight": 1.0,
                },
                {
                    "model_definition_id": call(
                        url,
                        "/model-definitions/create",
                        name="theirs",
                        secret_id=theirs["secret_id"],
                        provider="openai",
                        model_name="other",
                    )["model_definition"]["model_definition_id"],
                    "linkage_type": "FALLBACK",
                    "weight": 1.0,
                    "fallback_order": 0,
                },
            ],
        )
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ai-gateway-endpoints"):
            sync.step()
        after, definition_after, secret_after = chain(url)  # one model again
        assert after["endpoint_id"] == endpoint["endpoint_id"]
        assert definition_after["model_definition_id"] == definition["model_definition_id"]
        assert secret_after["secret_id"] == secret["secret_id"]
        said = warnings(caplog)
        assert any("model definition 'promptlab-stack-tiny-ja' had been changed" in w for w in said)
        assert any("AI Gateway endpoint tiny-ja had been changed" in w for w in said)

        # The stack's secret pointed elsewhere: set back, with a warning.
        call(
            url,
            "/secrets/update",
            secret_id=secret["secret_id"],
            auth_config={"api_base": ELSEWHERE},
        )
        result = sync_once(api(url), ["tiny-ja"], base)
        assert any(f"AI Gateway secret {secret['secret_name']!r}" in m for m in result.restored)
        assert chain(url)[2]["auth_config"] == {"api_base": base}

        # One model's endpoint pointed at another model's definition: each gets its own back,
        # and the other's definition is not rewritten (which would break its endpoint).
        gw = api(url)
        sync_once(gw, ["tiny-ja", "tiny-b"], base)
        b_definition = chain(url, name="tiny-b")[1]
        call(
            url,
            "/endpoints/update",
            endpoint_id=endpoint["endpoint_id"],
            model_configs=[
                {
                    "model_definition_id": b_definition["model_definition_id"],
                    "linkage_type": "PRIMARY",
                    "weight": 1.0,
                }
            ],
        )
        swapped = sync_once(gw, ["tiny-ja", "tiny-b"], base)
        assert [m for m in swapped.restored if m.startswith("AI Gateway model definition")] == []
        assert [m for m in swapped.restored if m.startswith("AI Gateway endpoint tiny-ja")], (
            swapped.restored
        )
        assert chain(url)[1]["model_definition_id"] == definition["model_definition_id"]
        assert chain(url, name="tiny-b")[1] == b_definition
        assert sync_once(gw, ["tiny-ja", "tiny-b"], base).restored == []


def test_who_can_change_an_object_is_read_from_every_non_admin_users_grants():
    def user(name, *grants, is_admin=False):
        permissions = [
            {"resource_type": t, "resource_pattern": p, "permission": g} for t, p, g in grants
        ]
        return {"username": name, "is_admin": is_admin, "roles": [{"permissions": permissions}]}

    owners = Owners.from_users(
        "admin",
        [
            user("admin", ("gateway_secret", "s-1", "MANAGE"), is_admin=True),
            user("other-admin", ("workspace", "*", "MANAGE"), is_admin=True),
            user("reader", ("gateway_secret", "s-1", "READ"), ("gateway_secret", "*", "USE")),
            user("denied", ("gateway_secret", "s-1", "DENY")),
            user("editor", ("gateway_model_definition", "d-1", "EDIT")),
            user("future", ("gateway_endpoint", "e-1", "SOMETHING_NEW")),
        ],
    )
    assert owners.not_ours("gateway_secret", {"secret_id": "s-1", "created_by": "admin"}) is None
    assert owners.not_ours("gateway_secret", {"secret_id": "s-1", "created_by": ""}) is None
    assert owners.not_ours("gateway_secret", {"secret_id": "s-1", "created_by": "x"}) == (
        "created by 'x'"
    )
    assert owners.not_ours("gateway_model_definition", {"model_definition_id": "d-1"}) == (
        "user 'editor' can change it"
    )
    assert owners.not_ours("gateway_model_definition", {"model_definition_id": "d-2"}) is None
    assert owners.not_ours("gateway_endpoint", {"endpoint_id": "e-1"}) == (
        "user 'future' can change it"
    )
    everywhere = Owners.from_users(
        "admin",
        [user("ws", ("workspace", "*", "MANAGE")), user("all", ("gateway_secret", "*", "EDIT"))],
    )
    assert everywhere.not_ours("gateway_secret", {"secret_id": "s-9"}) == (
        "users 'all', 'ws' can change it"
    )
