"""The `pyfunc` gateway provider between MLflow's real gateway app and real scoring server
(tests/unit/gateway/conftest.py)."""

from __future__ import annotations

from constants import QUESTION
from loopback import free_port
from reference import greedy_chat, greedy_completion


def test_provider_is_registered_through_the_entry_point():
    from mlflow.gateway.provider_registry import provider_registry

    from gateway.pyfunc_provider import PyfuncProvider

    assert "pyfunc" in provider_registry.keys()
    assert provider_registry.get("pyfunc") is PyfuncProvider


def test_gateway_lists_chat_and_completions_endpoints(gateway):
    r = gateway.get("/api/2.0/endpoints/")
    assert r.status_code == 200, r.text
    types = {e["name"]: e["endpoint_type"] for e in r.json()["endpoints"]}
    assert types == {"tiny-ja": "llm/v1/chat", "tiny-ja-completions": "llm/v1/completions"}


def test_multi_turn_chat_with_system_prompt_reaches_the_model_whole(gateway, reference_model):
    messages = [
        {"role": "system", "content": "簡潔に答えてください。"},
        {"role": "user", "content": "こんにちは"},
        {"role": "assistant", "content": "こんにちは！"},
        {"role": "user", "content": QUESTION},
    ]
    r = gateway.post(
        "/gateway/tiny-ja/invocations",
        json={"messages": messages, "temperature": 0, "max_tokens": 10},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == greedy_chat(*reference_model, messages, 10)
    assert body["usage"]["completion_tokens"] == 10
    assert body["usage"]["prompt_tokens"] > 20
    assert body["model"] == "tiny-ja"


def test_completions_endpoint(gateway, reference_model):
    r = gateway.post(
        "/gateway/tiny-ja-completions/invocations",
        json={"prompt": "日本の首都は", "temperature": 0, "max_tokens": 6},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["text"] == greedy_completion(*reference_model, "日本の首都は", 6)
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 6


def test_model_errors_keep_their_status_and_message(gateway):
    r = gateway.post("/gateway/tiny-ja-completions/invocations", json={"prompt": "りんご " * 600})
    assert r.status_code == 400
    assert "context is 512 tokens" in r.text


def test_gateway_rejects_out_of_range_parameters_before_the_model(gateway_for):
    # No model server listens: a request that reached it would be a 503, not a 422.
    with gateway_for(f"http://127.0.0.1:{free_port()}") as gateway:
        r = gateway.post(
            "/gateway/tiny-ja/invocations",
            json={"messages": [{"role": "user", "content": "x"}], "temperature": 5},
        )
    assert r.status_code == 422, r.text
    assert "temperature" in r.text


def test_model_server_down_is_a_503_naming_the_model_server(gateway_for):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    with gateway_for(url) as gateway:
        r = gateway.post(
            "/gateway/tiny-ja/invocations", json={"messages": [{"role": "user", "content": "x"}]}
        )
    assert r.status_code == 503
    # The service (the URL's host) and the cause, never the URL: the message reaches the browser.
    assert r.json()["detail"] == (
        "The model server (service 127.0.0.1) is unreachable (connection refused): "
        "it is still starting, or down"
    )
