"""The `openai-compatible` gateway provider (gateway/openai_engine_provider.py) in MLflow's real
gateway app."""

from __future__ import annotations

from fastapi.testclient import TestClient
from loopback import free_port


def test_provider_is_registered_through_the_entry_point():
    from mlflow.gateway.provider_registry import provider_registry

    from gateway.openai_engine_provider import OpenAIEngineProvider

    assert provider_registry.get("openai-compatible") is OpenAIEngineProvider


def test_an_openai_compatible_server_that_is_down_is_a_503_naming_it():
    from mlflow.gateway.app import create_app_from_config

    from gateway.engine_http import close_pooled_session
    from gateway.render_config import render, validate
    from gateway.settings import GatewaySettings

    base = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens here
    settings = GatewaySettings(
        model_id="/models/tiny-ja",
        model_backend="pyfunc",
        openai_compatible_endpoints=f"far={base}",
    )
    config = validate(render(settings, has_completions=lambda url: None))
    with TestClient(create_app_from_config(config)) as gateway:
        for path, body in (
            ("far", {"messages": [{"role": "user", "content": "x"}]}),
            ("far-completions", {"prompt": "x"}),
        ):
            r = gateway.post(f"/gateway/{path}/invocations", json=body)
            assert r.status_code == 503, r.text
            assert r.json()["detail"] == (
                f"The OpenAI-compatible server of endpoint {path!r} is unreachable "
                "(connection refused): it is still starting, or down"
            )
        gateway.portal.call(close_pooled_session)
