"""`POST /stream` on the model server's app as the container serves it (scoring_app.create_app):
the answer as it is generated, equal to the unstreamed one; errors before the first token keep
their status; a reader that goes away frees its row (pyfunc_server/stream_route.py)."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
import requests
from constants import SERVED_MODEL_NAME
from loopback import serving
from model_server import model_server_app

QUESTION = [{"role": "user", "content": "りんごは何色ですか？"}]


@pytest.fixture(scope="module")
def server(pyfunc_dir):
    app = model_server_app(pyfunc_dir)
    with serving(app) as url:
        yield url, app.app.python_model  # BodyLimit(StreamRoute(...))


def events(response) -> list:
    """The stream's events, parsed ("[DONE]" as is)."""
    out = []
    for line in response.iter_lines(decode_unicode=False):
        if line.startswith(b"data: "):
            data = line[len(b"data: ") :].decode("utf-8")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def stream(url: str, body: dict, **kwargs) -> requests.Response:
    return requests.post(f"{url}/stream", json=body, stream=True, timeout=60, **kwargs)


@pytest.mark.parametrize("kind", ["chat", "completions"])
def test_the_stream_joins_to_the_unstreamed_answer_and_ends_with_usage(server, kind):
    url, _ = server
    prompt = {"messages": QUESTION} if kind == "chat" else {"prompt": "東京タワーは"}
    body = {**prompt, "temperature": 0, "max_tokens": 40}
    whole = requests.post(f"{url}/invocations", json=body, timeout=60).json()
    with stream(url, body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        got = events(r)
    assert got[-1] == "[DONE]"
    chunks, last = got[:-1], got[-2]
    if kind == "chat":
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks]
        expected = whole["choices"][0]["message"]["content"]
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    else:
        pieces = [c["choices"][0]["text"] for c in chunks]
        expected = whole["choices"][0]["text"]
    assert "".join(pieces) == expected and expected
    # A piece never ends inside a character (the random model's answer may hold a U+FFFD of its
    # own: an invalid byte followed by more text).
    assert not any(p.endswith("\ufffd") for p in pieces)
    assert len([p for p in pieces if p]) > 2  # streamed in pieces, not whole at the end
    assert last["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert last["usage"] == whole["usage"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_errors_before_the_first_token_keep_their_status_and_message(server):
    url, _ = server
    cases = [
        ({"messages": QUESTION, "temperature": 5}, 400, "temperature must be between 0 and 2"),
        ({"messages": QUESTION, "model": "nope"}, 404, "no model named 'nope'"),
        ({"prompt": ["a", "b"]}, 400, "a streamed completion takes one prompt"),
        ({"nothing": 1}, 400, "expected 'messages' (chat) or 'prompt'"),
    ]
    for body, status, message in cases:
        r = requests.post(f"{url}/stream", json=body, timeout=60)
        assert r.status_code == status, (body, r.text)
        assert message in r.json()["message"], r.text
    r = requests.post(f"{url}/stream", data=b"{not json", timeout=60)
    assert r.status_code == 400 and "not JSON" in r.json()["message"]
    assert requests.get(f"{url}/stream", timeout=60).status_code == 405


def test_a_reader_that_goes_away_frees_its_row_and_the_others_are_unchanged(
    server, monkeypatch, caplog
):
    url, python_model = server
    generator = python_model.pool.slots[SERVED_MODEL_NAME].generator
    body = {"messages": QUESTION, "temperature": 0, "max_tokens": 60}
    expected = requests.post(f"{url}/invocations", json=body, timeout=60).json()
    real_forward = generator.model.forward
    steps = []

    def slow_forward(*args, **kwargs):
        steps.append(1)
        time.sleep(0.05)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(generator.model, "forward", slow_forward)
    other: dict = {}
    with caplog.at_level(logging.INFO, logger="pyfunc_server.decode_loop"):
        with stream(url, {**body, "max_tokens": 500}) as r:
            lines = r.iter_lines()
            seen = [line for _, line in zip(range(8), lines, strict=False)]
            assert len([line for line in seen if line.startswith(b"data: ")]) >= 3
            # A second request joins the batch while the first row still decodes.
            worker = threading.Thread(
                target=lambda: other.update(
                    requests.post(f"{url}/invocations", json=body, timeout=120).json()
                )
            )
            worker.start()
            time.sleep(0.3)
        dropped_at = len(steps)
        worker.join(120)
        deadline = time.monotonic() + 10
        while not any("dropped a row" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the closed stream's row was not dropped"
            time.sleep(0.1)
    assert other["choices"] == expected["choices"]
    assert generator.batcher.wait_idle(30)
    # Far fewer than the 500 steps the closed stream asked for: nothing decoded for nobody.
    assert len(steps) < dropped_at + 80, (dropped_at, len(steps))
