"""Streamed answers, and errors that keep their status on MLflow's OpenAI routes
(gateway/answer_stream.py), through the real gateway app and the model server's app
(tests/unit/gateway/conftest.py)."""

from __future__ import annotations

import json

from constants import QUESTION
from reference import greedy_chat


def streamed_events(text: str) -> list:
    events = [
        line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")
    ]
    assert events[-1] == "[DONE]", text
    return [json.loads(e) for e in events[:-1]]


def test_a_streamed_chat_request_gets_the_same_answer_as_chunks_with_usage(
    gateway, reference_model
):
    # What the built-in AI Gateway sends on the Playground's behalf.
    messages = [
        {"role": "system", "content": "簡潔に答えてください。"},
        {"role": "user", "content": QUESTION},
    ]
    r = gateway.post(
        "/v1/chat/completions",
        json={
            "model": "tiny-ja",
            "messages": messages,
            "temperature": 0,
            "max_tokens": 8,
            "n": 1,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    chunks = streamed_events(r.text)
    pieces = [c["choices"][0]["delta"].get("content") or "" for c in chunks]
    assert "".join(pieces) == greedy_chat(*reference_model, messages, 8)
    assert len([p for p in pieces if p]) > 1  # as generated, not whole at the end
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 8


def test_a_streamed_request_that_fails_keeps_the_model_servers_status_and_message(gateway):
    r = gateway.post(
        "/v1/chat/completions",
        json={
            "model": "tiny-ja",
            "messages": [{"role": "user", "content": "りんご " * 600}],
            "stream": True,
        },
    )
    assert r.status_code == 400
    assert "context is 512 tokens" in r.json()["detail"]


def test_a_streamed_completion_joins_to_the_unstreamed_one(gateway):
    body = {"model": "tiny-ja-completions", "prompt": "東京は", "temperature": 0, "max_tokens": 12}
    whole = gateway.post("/v1/completions", json=body).json()
    r = gateway.post("/v1/completions", json={**body, "stream": True})
    assert r.status_code == 200, r.text
    chunks = streamed_events(r.text)
    assert "".join(c["choices"][0]["text"] or "" for c in chunks) == whole["choices"][0]["text"]
    assert chunks[-1]["usage"] == whole["usage"]


def test_openai_routes_keep_the_model_servers_status_and_message_unstreamed_too(gateway):
    # MLflow's own /v1 handlers turn this 400 into a 500 (answer_stream.py).
    for path, body in (
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "りんご " * 600}]}),
        ("/v1/completions", {"prompt": "りんご " * 600}),
    ):
        model = "tiny-ja" if "chat" in path else "tiny-ja-completions"
        r = gateway.post(path, json={"model": model, **body})
        assert r.status_code == 400, r.text
        assert "context is 512 tokens" in r.json()["detail"]


def test_an_endpoints_own_route_streams_too_and_keeps_its_errors_status(gateway):
    # What promptlab-eval asks for through the UI's proxy.
    body = {"messages": [{"role": "user", "content": QUESTION}], "temperature": 0, "max_tokens": 9}
    whole = gateway.post("/gateway/tiny-ja/invocations", json=body).json()
    r = gateway.post("/gateway/tiny-ja/invocations", json={**body, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    chunks = streamed_events(r.text)
    pieces = [c["choices"][0]["delta"].get("content") or "" for c in chunks]
    assert "".join(pieces) == whole["choices"][0]["message"]["content"]
    assert len([p for p in pieces if p]) > 1
    assert chunks[-1]["usage"] == whole["usage"]
    long = {"messages": [{"role": "user", "content": "りんご " * 600}], "stream": True}
    r = gateway.post("/gateway/tiny-ja/invocations", json=long)
    assert r.status_code == 400 and "context is 512 tokens" in r.json()["detail"]
