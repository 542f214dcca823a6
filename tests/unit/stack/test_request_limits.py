"""Request-size limits at the gateway and the model server, and the prompt bound before tokenizing.

The apps are the ones the containers serve: `pyfunc_server.scoring_app.create_app` (MLflow's scoring
server on our saved model) and `gateway.app.create_app` (MLflow's gateway app on our
rendered config), each run by uvicorn on a loopback port, so that Content-Length and chunked
bodies arrive over real HTTP.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlparse

import pytest
from constants import SERVED_MODEL_NAME
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from loopback import serving
from model_server import model_server_app

LIMIT_MB = 0.02  # 20,000 bytes: small enough to send a body past it quickly
LIMIT_BYTES = 20_000


def post(url: str, path: str, body: bytes, *, chunked: bool = False) -> tuple[int, dict]:
    """POST `body` with a Content-Length, or in 4 KB chunks without one."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        if chunked:
            chunks = (body[i : i + 4096] for i in range(0, len(body), 4096))
            conn.request(
                "POST",
                path,
                body=chunks,
                headers={"Content-Type": "application/json"},
                encode_chunked=True,
            )
        else:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def chat_body(text: str) -> bytes:
    return json.dumps(
        {"messages": [{"role": "user", "content": text}], "max_tokens": 2, "temperature": 0},
        ensure_ascii=False,
    ).encode("utf-8")


@pytest.fixture(scope="module")
def limited_model_server(tiny_model_dir, tmp_path_factory):
    """The model server's app as the container runs it, saved with MAX_REQUEST_MB=0.02."""
    from pyfunc_server.settings import ModelServerSettings
    from pyfunc_server.start import save

    path = tmp_path_factory.mktemp("limited") / "model"
    save(
        path,
        ModelServerSettings(
            model_id=str(tiny_model_dir),
            served_model_name=SERVED_MODEL_NAME,
            max_request_mb=LIMIT_MB,
        ),
    )
    with serving(model_server_app(path)) as url:
        yield url


@pytest.fixture(scope="module")
def limited_gateway(model_server_url_for_gateway, tmp_path_factory):
    """Our gateway app (gateway.app.create_app) with MAX_REQUEST_MB=0.02."""
    import os

    from gateway.app import create_app
    from gateway.render_config import BACKEND_URLS
    from gateway.settings import GatewaySettings
    from gateway.start import write_config

    settings = GatewaySettings(
        model_id="/models/tiny-ja", model_backend="pyfunc", max_request_mb=LIMIT_MB
    )
    config = tmp_path_factory.mktemp("gateway") / "gateway.yaml"
    write_config(settings, config, {**BACKEND_URLS, "pyfunc": model_server_url_for_gateway})
    os.environ["MLFLOW_GATEWAY_CONFIG"] = str(config)
    try:
        app = create_app(settings)
    finally:
        del os.environ["MLFLOW_GATEWAY_CONFIG"]
    with serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def model_server_url_for_gateway(limited_model_server):
    return limited_model_server


# Each hop as the container serves it: its URL fixture, the path a prompt takes, the field its
# errors use, and the name it gives itself in the 413.
HOPS = {
    "model server": ("limited_model_server", "/invocations", "message", "the model server"),
    "gateway": (
        "limited_gateway",
        "/gateway/tiny-ja/invocations",
        "detail",
        "the MLflow AI Gateway",
    ),
}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("hop", HOPS)
def test_a_body_over_the_limit_is_a_413_naming_the_hop_and_the_knob(request, hop, chunked):
    fixture, path, field, name = HOPS[hop]
    status, body = post(
        request.getfixturevalue(fixture), path, chat_body("あ" * 10_000), chunked=chunked
    )
    assert status == 413, body
    assert f"{name} takes at most 20,000" in body[field] and "MAX_REQUEST_MB" in body[field]


@pytest.mark.parametrize("hop", HOPS)
def test_a_body_under_the_limit_is_answered(request, hop):
    fixture, path, _, _ = HOPS[hop]
    status, body = post(
        request.getfixturevalue(fixture), path, chat_body("こんにちは"), chunked=True
    )
    assert status == 200, body
    assert body["usage"]["completion_tokens"] == 2


# -- the prompt bound before tokenizing ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_tokenizer(reference_model):
    return reference_model[0]


def test_a_prompt_past_the_bound_is_a_400_before_it_is_tokenized(scoring_with_spy):
    scoring, calls = scoring_with_spy
    limit = scoring.generator.prompt_bytes_limit
    calls.clear()
    r = scoring.client.post("/invocations", json={"prompt": "x" * (limit + 1), "max_tokens": 1})
    assert r.status_code == 400, r.text
    assert (
        f"more than fits the model's context of {scoring.generator.context_length} tokens"
        in r.json()["message"]
    )
    assert calls == []  # the tokenizer never saw it
    # Just under the bound it is tokenized, and the exact check (tokens) refuses it.
    r = scoring.client.post("/invocations", json={"prompt": "x" * limit, "max_tokens": 1})
    assert r.status_code == 400 and "tokens long, but the model's context is" in r.json()["message"]
    assert calls


def test_a_chat_of_many_empty_messages_is_a_400_before_it_is_templated(scoring_with_spy):
    scoring, calls = scoring_with_spy
    assert scoring.generator.message_overhead > 0  # the tiny model's template writes a header
    calls.clear()
    messages = [{"role": "user", "content": ""}] * 50_000
    r = scoring.client.post("/invocations", json={"messages": messages, "max_tokens": 1})
    assert r.status_code == 400, r.text
    assert "counting the template's text for its 50,000 messages" in r.json()["message"]
    assert calls == []  # neither the template nor the tokenizer saw it


@pytest.fixture(scope="module")
def scoring_with_spy(pyfunc_dir):
    """MLflow's scoring server on our model, with a record of the texts its tokenizer is called
    on."""
    import time
    from types import SimpleNamespace

    import mlflow.pyfunc
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(str(pyfunc_dir))
    client = TestClient(scoring_server.init(model))
    assert client.post("/invocations", json={"prompt": "x", "max_tokens": 1}).status_code == 200
    with model.unwrap_python_model().pool.use(None, time.monotonic() + 60) as generator:
        pass
    calls: list = []
    tokenizer = generator.tokenizer
    original = type(tokenizer).__call__

    class Spy(type(tokenizer)):
        def __call__(self, text, *args, **kwargs):
            calls.append(len(text))
            return original(self, text, *args, **kwargs)

    tokenizer.__class__ = Spy
    return SimpleNamespace(client=client, generator=generator), calls


@hsettings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(min_size=1, max_size=400))
def test_the_bound_never_refuses_a_prompt_that_fits(tiny_tokenizer, text):
    """Soundness: every text needs at least bytes / (longest entry x margin) tokens, so a prompt
    refused by the bound could never have fit the context."""
    from pyfunc_server.prompt_size import NORMALIZER_MARGIN, longest_entry_bytes

    tokens = len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])
    assert tokens * longest_entry_bytes(tiny_tokenizer) * NORMALIZER_MARGIN >= len(
        text.encode("utf-8")
    )


def nested_body(depth: int = 5_000) -> bytes:
    """A chat request with a field nested deeper than Python's JSON decoder recurses."""
    return (
        b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "extra": '
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )


@pytest.mark.parametrize("hop", HOPS)
def test_json_nested_too_deep_is_a_400_naming_the_problem(request, hop):
    fixture, path, field, _ = HOPS[hop]
    status, body = post(request.getfixturevalue(fixture), path, nested_body())
    assert status == 400, body
    assert "nested" in body[field].lower(), body


@hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.sampled_from(["user", "assistant", "system"]), st.text(max_size=60)),
        min_size=1,
        max_size=12,
    )
)
def test_the_bound_never_refuses_a_chat_that_fits(tiny_tokenizer, turns):
    """Soundness with the messages counted: the rendered chat needs at least as many tokens as
    the bound says, so a chat refused by it could never have fit the context."""
    from pyfunc_server.prompt_size import (
        NORMALIZER_MARGIN,
        longest_entry_bytes,
        message_overhead_bytes,
        prompt_bytes,
    )
    from pyfunc_server.requests import CHAT, GenerationRequest

    messages = [{"role": role, "content": text} for role, text in turns]
    try:
        ids = tiny_tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    except Exception:  # an order the template refuses is refused before any bound matters
        return
    request = GenerationRequest(kind=CHAT, messages=tuple(messages))
    counted = prompt_bytes(request, message_overhead_bytes(tiny_tokenizer))
    assert len(ids) * longest_entry_bytes(tiny_tokenizer) * NORMALIZER_MARGIN >= counted
