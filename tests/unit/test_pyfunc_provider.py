"""The `pyfunc` gateway provider between MLflow's real gateway app and real scoring server.

No Docker: the scoring server runs with uvicorn on a loopback port in this process, and the
gateway app is built from the config our renderer produces, exactly as `mlflow gateway start`
builds it, wrapped as the container serves it (gateway/app.py).
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from constants import QUESTION
from loopback import free_port, serving
from reference import greedy_chat, greedy_completion


@pytest.fixture(scope="module")
def model_server(pyfunc_dir):
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    with serving(scoring_server.init(mlflow.pyfunc.load_model(str(pyfunc_dir)))) as url:
        yield url


@contextmanager
def gateway_for(url: str):
    """MLflow's gateway app on our rendered config, on one event loop; its pool closed after."""
    from gateway.answer_stream import StreamWholeAnswers
    from gateway.engine_http import close_pooled_session
    from gateway.render_config import BACKEND_URLS, render, validate
    from gateway.settings import GatewaySettings
    from mlflow.gateway.app import create_app_from_config

    settings = GatewaySettings(model_id="/models/tiny-ja", model_backend="pyfunc")
    config = validate(render(settings, {**BACKEND_URLS, "pyfunc": url}))
    with TestClient(StreamWholeAnswers(create_app_from_config(config))) as client:
        yield client
        client.portal.call(close_pooled_session)


@pytest.fixture(scope="module")
def gateway(model_server):
    with gateway_for(model_server) as client:
        yield client


def test_provider_is_registered_through_the_entry_point():
    from mlflow.gateway.provider_registry import provider_registry

    assert "pyfunc" in provider_registry.keys()


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
    r = gateway.post("/gateway/tiny-ja/invocations", json={"messages": messages, "temperature": 0, "max_tokens": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == greedy_chat(*reference_model, messages, 10)
    assert body["usage"]["completion_tokens"] == 10
    assert body["usage"]["prompt_tokens"] > 20
    assert body["model"] == "tiny-ja"


def streamed_events(text: str) -> list:
    events = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", text
    return [json.loads(e) for e in events[:-1]]


def test_a_streamed_chat_request_gets_the_same_answer_as_chunks_with_usage(gateway, reference_model):
    # What the built-in AI Gateway sends on the Playground's behalf.
    messages = [{"role": "system", "content": "簡潔に答えてください。"}, {"role": "user", "content": QUESTION}]
    r = gateway.post("/v1/chat/completions", json={
        "model": "tiny-ja", "messages": messages, "temperature": 0, "max_tokens": 8, "n": 1,
        "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    chunks = streamed_events(r.text)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == greedy_chat(*reference_model, messages, 8)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 8


def test_a_streamed_request_that_fails_keeps_the_model_servers_status_and_message(gateway):
    r = gateway.post("/v1/chat/completions", json={
        "model": "tiny-ja", "messages": [{"role": "user", "content": "りんご " * 600}], "stream": True})
    assert r.status_code == 400
    assert "context is 512 tokens" in r.text


def test_openai_routes_keep_the_model_servers_status_and_message_unstreamed_too(gateway):
    # MLflow's own /v1 handlers turn this 400 into a 500 (answer_stream.py).
    for path, body in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "りんご " * 600}]}),
                       ("/v1/completions", {"prompt": "りんご " * 600})):
        model = "tiny-ja" if "chat" in path else "tiny-ja-completions"
        r = gateway.post(path, json={"model": model, **body})
        assert r.status_code == 400, r.text
        assert "context is 512 tokens" in r.json()["detail"]


def test_completions_endpoint(gateway, reference_model):
    r = gateway.post("/gateway/tiny-ja-completions/invocations",
                     json={"prompt": "日本の首都は", "temperature": 0, "max_tokens": 6})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["text"] == greedy_completion(*reference_model, "日本の首都は", 6)
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 6


def test_model_errors_keep_their_status_and_message(gateway):
    r = gateway.post("/gateway/tiny-ja-completions/invocations", json={"prompt": "りんご " * 600})
    assert r.status_code == 400
    assert "context is 512 tokens" in r.text


def test_gateway_rejects_out_of_range_parameters_before_the_model():
    # No model server listens: a request that reached it would be a 503, not a 422.
    with gateway_for(f"http://127.0.0.1:{free_port()}") as gateway:
        r = gateway.post("/gateway/tiny-ja/invocations",
                         json={"messages": [{"role": "user", "content": "x"}], "temperature": 5})
    assert r.status_code == 422, r.text
    assert "temperature" in r.text


def test_model_server_down_is_a_503_naming_the_model_server():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    with gateway_for(url) as gateway:
        r = gateway.post("/gateway/tiny-ja/invocations",
                         json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 503
    # The service (the URL's host) and the cause, never the URL: the message reaches the browser.
    assert r.json()["detail"] == ("The model server (service 127.0.0.1) is unreachable (connection refused): "
                                  "it is still starting, or down")


def test_an_openai_compatible_server_that_is_down_is_a_503_naming_it():
    from gateway.engine_http import close_pooled_session
    from gateway.render_config import render, validate
    from gateway.settings import GatewaySettings
    from mlflow.gateway.app import create_app_from_config

    base = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens here
    settings = GatewaySettings(model_id="/models/tiny-ja", model_backend="pyfunc",
                               openai_compatible_endpoints=f"far={base}")
    config = validate(render(settings, has_completions=lambda url: None))
    with TestClient(create_app_from_config(config)) as gateway:
        for path, body in (("far", {"messages": [{"role": "user", "content": "x"}]}),
                           ("far-completions", {"prompt": "x"})):
            r = gateway.post(f"/gateway/{path}/invocations", json=body)
            assert r.status_code == 503, r.text
            assert r.json()["detail"] == (f"The OpenAI-compatible server of endpoint {path!r} is unreachable "
                                          "(connection refused): it is still starting, or down")
        gateway.portal.call(close_pooled_session)
