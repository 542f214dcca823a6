"""The private MLflow names and app-structure assumptions the tracking image relies on, one test
each: each lives in tracking/mlflow_compat.py and nowhere else. When an MLflow upgrade moves or
changes one, the test says which, so the seam can be mended (or dropped, if MLflow now offers a
public way)."""

from __future__ import annotations

import pytest

UPGRADE = "MLflow changed {name}, which {module} relies on: mend it there (or use a public API now)"


def test_tracking_image_sees_which_server_runs_it(monkeypatch):
    from tracking.mlflow_compat import served_by_uvicorn

    monkeypatch.setenv("_MLFLOW_SGI_NAME", "uvicorn")
    assert served_by_uvicorn(), UPGRADE.format(
        name="_MLFLOW_SGI_NAME", module="mlflow_compat.served_by_uvicorn"
    )
    monkeypatch.setenv("_MLFLOW_SGI_NAME", "gunicorn")
    assert not served_by_uvicorn()


def test_tracking_image_has_mlflows_native_route_authentication():
    import inspect

    from tracking.mlflow_compat import fastapi_basic_auth

    authenticate = fastapi_basic_auth()
    assert list(inspect.signature(authenticate).parameters) == ["request"], UPGRADE.format(
        name="mlflow.server.auth._authenticate_custom_for_fastapi",
        module="mlflow_compat.fastapi_basic_auth",
    )


def test_tracking_image_checks_gateway_paths_as_mlflow_does():
    from mlflow.exceptions import MlflowException

    from tracking.mlflow_compat import validate_gateway_path

    msg = UPGRADE.format(
        name="mlflow.server.handlers._validate_gateway_path", module="mlflow_compat"
    )
    validate_gateway_path("GET", "api/2.0/endpoints")
    validate_gateway_path("POST", "gateway/tiny-ja/invocations")
    for method, path in (("POST", "../admin"), ("GET", "gateway/x/invocations"), ("POST", None)):
        with pytest.raises(MlflowException):
            validate_gateway_path(method, path)
            pytest.fail(f"{msg}: {method} {path!r} was accepted")


def test_tracking_image_resolves_run_artifact_roots(tmp_path):
    from tracking.mlflow_compat import proxied_artifact_repo

    repo, root = proxied_artifact_repo(tmp_path.as_uri())
    assert root is None and hasattr(repo, "log_artifact"), UPGRADE.format(
        name="the artifact helpers of mlflow.server.handlers",
        module="mlflow_compat.proxied_artifact_repo",
    )
    # The proxied form is exercised against a real server in tracking/test_promptlab_artifacts.py.


def test_mlflows_fastapi_app_mounts_flask_last_and_keeps_a_lifespan():
    from flask import Flask
    from mlflow.server.fastapi_app import create_fastapi_app
    from starlette.routing import Mount

    app = create_fastapi_app(Flask(__name__))
    msg = UPGRADE.format(
        name="the layout of mlflow.server.fastapi_app",
        module="mlflow_compat.add_route_before_flask / on_shutdown",
    )
    last = app.router.routes[-1]
    assert isinstance(last, Mount) and last.path == "", msg
    assert callable(app.router.lifespan_context), msg


def test_tracking_image_opens_mlflows_upstream_guards_to_the_stacks_gateway_only(monkeypatch):
    import mlflow.gateway.ssrf as ssrf
    import mlflow.utils.validation as validation
    from mlflow.exceptions import MlflowException

    from tracking.mlflow_compat import trust_stack_gateway

    # monkeypatch puts MLflow's own checks back after this test.
    monkeypatch.setattr(
        validation, "_validate_gateway_api_base", validation._validate_gateway_api_base
    )
    monkeypatch.setattr(ssrf, "_assert_public_ip", ssrf._assert_public_ip)
    msg = UPGRADE.format(
        name="mlflow.utils.validation._validate_gateway_api_base / "
        "mlflow.gateway.ssrf._assert_public_ip",
        module="mlflow_compat.trust_stack_gateway",
    )
    # What MLflow refuses on its own: a plain-HTTP api_base, a private address.
    for check in (
        lambda: validation._validate_gateway_secret_auth_config(
            {"api_base": "http://gateway:7000/v1"}
        ),
        lambda: ssrf._assert_public_ip("172.18.0.2", "gateway"),
    ):
        with pytest.raises((MlflowException, ssrf.GatewaySSRFProtectionError)):
            check()
            pytest.fail(f"{msg}: no longer refused")

    trust_stack_gateway("http://gateway:7000/v1")
    # The secret handler's check (through the module global) and the connect-time check pass ours...
    assert validation._validate_gateway_secret_auth_config(
        {"api_base": "http://gateway:7000/v1"}
    ), msg
    ssrf._assert_public_ip("172.18.0.2", "gateway")
    # ...and still refuse everything else.
    for other in ("http://gateway:7001/v1", "http://evil:7000/v1", "http://gateway:7000/admin"):
        with pytest.raises(MlflowException):
            validation._validate_gateway_secret_auth_config({"api_base": other})
    with pytest.raises(ssrf.GatewaySSRFProtectionError):
        ssrf._assert_public_ip("172.18.0.3", "evil")


def test_tracking_image_finds_the_ai_gateways_encrypted_secrets():
    from tracking.mlflow_compat import gateway_secrets_table

    columns = set(gateway_secrets_table().c.keys())
    assert {"secret_name", "wrapped_dek", "kek_version"} <= columns, UPGRADE.format(
        name="mlflow.store.tracking.dbmodels.models.SqlGatewaySecret",
        module="mlflow_compat.gateway_secrets_table",
    )


def test_tracking_image_checks_a_passphrase_against_a_wrapped_data_key():
    from mlflow.utils.crypto import KEKManager, wrap_dek

    from tracking.mlflow_compat import data_key_unwrapper

    right = "right-passphrase-0123456789"
    wrapped = wrap_dek(b"\x01" * 32, KEKManager(passphrase=right, kek_version=1).get_kek())
    assert data_key_unwrapper(right, 1)(wrapped), UPGRADE.format(
        name="mlflow.utils.crypto (KEKManager, unwrap_dek)",
        module="mlflow_compat.data_key_unwrapper",
    )
    assert not data_key_unwrapper("wrong-passphrase-0123456789", 1)(wrapped)
    assert not data_key_unwrapper(right, 2)(wrapped)


def test_the_arena_writes_traces_and_feedback_as_the_user_through_a_rest_store(tmp_path):
    """A real server (tests/tracking_server.py): the store with a login starts a trace, logs its
    span (OTLP), reads it back with its feedback, as the arena does."""
    import time

    from tracking_server import tracking_server

    from tracking.arena import records
    from tracking.arena.tracking_store import ArenaStore
    from tracking.mlflow_compat import rest_tracking_store

    store = rest_tracking_store("http://127.0.0.1:1", "alice", "pw")
    creds = store.get_host_creds()
    assert (creds.host, creds.username, creds.password) == ("http://127.0.0.1:1", "alice", "pw"), (
        UPGRADE.format(
            name="mlflow.store.tracking.rest_store.RestStore and rest_utils.MlflowHostCreds",
            module="mlflow_compat.rest_tracking_store",
        )
    )
    with tracking_server(tmp_path) as (_, url):
        arena = ArenaStore(url, None)
        experiment_id = arena.store.create_experiment("arena-canary")
        now = time.time_ns()
        sides = [records.Side(n, f"e-{n}", records.new_trace_id()[0], now) for n in records.SIDES]
        battle = records.Battle(
            records.new_battle_id(),
            experiment_id,
            [{"role": "user", "content": "hi"}],
            "hi",
            {},
            "",
            0.0,
            4,
            sides,
        )
        arena.start(battle)
        for side in sides:
            side.text, side.ended_ns, side.finish_reason = "ok", time.time_ns(), "stop"
        arena.finish(battle)
        found = arena.battle(experiment_id, battle.battle_id)
        assert {n: s.ok for n, s in found.items()} == {"A": True, "B": True}
        arena.vote(
            experiment_id,
            battle.battle_id,
            {n: s.trace_id for n, s in found.items()},
            "A",
            records.HUMAN,
            "alice",
        )
        again = arena.battles(experiment_id)[battle.battle_id]
        assert records.game_of(again, records.HUMAN) == ("e-A", "e-B", 1.0)
