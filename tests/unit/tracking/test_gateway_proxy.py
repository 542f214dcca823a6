"""The UI's gateway proxy in our tracking app passes the gateway's errors through as they are.

No Docker: MLflow's real gateway app runs with uvicorn on a loopback port (its model server is
absent, as while the model loads), and our proxy route is installed as on MLflow's FastAPI app.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager

import pytest
from constants import QUESTION
from gateway_server import gateway_app
from loopback import free_port, serving
from reference import greedy_chat


@pytest.fixture(scope="module")
def gateway_url():
    """The gateway as served (tests/gateway_server.py), its model server down."""
    with serving(gateway_app(f"http://127.0.0.1:{free_port()}")) as url:
        yield url


PROXY_URL = "/ajax-api/2.0/mlflow/gateway-proxy"


class Proxy:
    def __init__(self, client):
        self.client = client

    def get(self, gateway_path):
        r = self.client.get(PROXY_URL, params={"gateway_path": gateway_path})
        return r.status_code, r.json()

    def post_raw(self, body: bytes, content_type: str = "application/json"):
        r = self.client.post(PROXY_URL, content=body, headers={"content-type": content_type})
        return r.status_code, r.json()

    def stream(self, endpoint: str, data: dict):
        """POST a streamed request; the response (its text is the whole stream)."""
        path = f"gateway/{endpoint}/invocations"
        return self.client.post(
            PROXY_URL, json={"gateway_path": path, "json_data": {**data, "stream": True}}
        )


@contextmanager
def proxy_to(target: str, timeout_s: float = 30, **options):
    """Our route installed as on MLflow's FastAPI app: after Flask was mounted at "/", whose
    stock view would answer "stock" if the route did not take precedence. The app's lifespan
    closes the route's pooled connections at the end."""
    from fastapi import FastAPI
    from flask import Flask
    from starlette.responses import PlainTextResponse
    from starlette.testclient import TestClient

    from tracking.gateway_proxy import install_gateway_proxy

    flask_app = Flask(__name__)
    flask_app.add_url_rule(
        PROXY_URL, "serve_gateway_proxy", lambda: "stock", methods=["GET", "POST"]
    )
    app = FastAPI()
    # Stands for MLflow's WSGI mount of the Flask app: it answers whatever reaches it.
    app.mount("/", PlainTextResponse("stock"))
    assert install_gateway_proxy(app, flask_app, target=target, timeout_s=timeout_s, **options) == [
        PROXY_URL
    ]
    with TestClient(app) as client:
        yield Proxy(client)


@pytest.fixture(scope="module")
def proxy(gateway_url):
    with proxy_to(gateway_url) as p:
        yield p


def post(proxy, path, data):
    return proxy.post_raw(json.dumps({"gateway_path": path, "json_data": data}).encode())


def test_endpoint_list_passes_through(proxy):
    status, body = proxy.get("api/2.0/endpoints")
    assert status == 200
    assert {e["name"] for e in body["endpoints"]} == {"tiny-ja", "tiny-ja-completions"}


def test_without_a_gateway_the_endpoint_list_is_empty():
    with proxy_to("") as proxy:
        assert proxy.get("api/2.0/endpoints") == (200, {"endpoints": []})


@pytest.mark.parametrize(
    "path, payload, status, words",
    [
        (
            "gateway/tiny-ja/invocations",
            {"messages": [{"role": "user", "content": "x"}], "temperature": 5},
            422,
            "temperature",
        ),
        (
            "gateway/tiny-ja/invocations",
            {"messages": [{"role": "user", "content": "x"}], "max_tokens": -5},
            422,
            "max_tokens",
        ),
        ("gateway/tiny-ja/invocations", {"messages": "りんご"}, 422, "messages"),
        ("gateway/no-such-endpoint/invocations", {"prompt": "x"}, 404, "no-such-endpoint"),
        # The model server is down: the gateway says which one, the proxy keeps the 503.
        (
            "gateway/tiny-ja/invocations",
            {"messages": [{"role": "user", "content": "x"}]},
            503,
            "The model server (service 127.0.0.1) is unreachable (connection refused)",
        ),
    ],
)
def test_gateway_errors_keep_their_status_and_message(proxy, path, payload, status, words):
    started = time.monotonic()
    got_status, body = post(proxy, path, payload)
    assert time.monotonic() - started < 5
    assert got_status == status, body
    assert words in body["message"] and body["error_code"]
    assert "http://" not in body["message"] and "Traceback" not in body["message"]


def test_gateway_down_is_a_503_naming_the_gateway():
    target = f"http://127.0.0.1:{free_port()}"
    with proxy_to(target) as proxy:
        status, body = post(proxy, "gateway/tiny-ja/invocations", {"prompt": "x"})
    assert status == 503
    # The service, not its internal URL.
    assert (
        body["message"]
        == "The MLflow AI Gateway (service gateway) is unreachable: it is starting or down"
    )


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'"text"',
        b"Infinity",
        b'{"gateway_path": "gateway/tiny-ja/invocations", "json_data": NaN}',
    ],
)
def test_broken_or_non_object_json_is_a_400(proxy, body):
    status, answer = proxy.post_raw(body)
    assert status == 400 and "JSON object" in answer["message"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_post_that_is_not_json_is_refused_before_reaching_the_gateway(proxy, content_type):
    # What a page on another origin can send without a CORS preflight.
    body = b'{"gateway_path": "gateway/tiny-ja/invocations", "json_data": {"prompt": "x"}}'
    status, answer = proxy.post_raw(body, content_type)
    assert (
        status == 415
        and "application/json" in answer["message"]
        and content_type in answer["message"]
    )


def test_a_body_over_the_limit_is_a_413_before_it_is_read_or_passed_on(gateway_url):
    with proxy_to(gateway_url, max_body_bytes=1000) as proxy:
        huge = json.dumps(
            {
                "gateway_path": "gateway/tiny-ja/invocations",
                "json_data": {"prompt": "りんご" * 1000},
            }
        ).encode()
        status, answer = proxy.post_raw(huge)
        assert (
            status == 413
            and "at most 1,000" in answer["message"]
            and "MAX_REQUEST_MB" in answer["message"]
        )
        status, _ = proxy.post_raw(json.dumps({"gateway_path": "../x", "json_data": {}}).encode())
        assert status == 400  # a small body goes on to the usual checks


def test_paths_outside_the_gateway_api_are_refused(proxy):
    status, body = post(proxy, "../admin", {})
    assert status == 400 and "Invalid gateway_path" in body["message"]


def test_the_mlflow_server_under_uvicorn_serves_this_proxy_on_the_event_loop(
    monkeypatch, gateway_url
):
    # What `mlflow server --app-name promptlab` serves with its default uvicorn.
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from tracking.app import create_app

    monkeypatch.setenv("_MLFLOW_SGI_NAME", "uvicorn")
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    monkeypatch.setenv("MLFLOW_DEPLOYMENTS_TARGET", gateway_url)
    served = create_app()
    paths = [getattr(r, "path", None) for r in served.router.routes]
    flask_mount = next(
        i for i, r in enumerate(served.router.routes) if isinstance(r, Mount) and r.path == ""
    )
    ours = [i for i, p in enumerate(paths) if p and p.endswith("/mlflow/gateway-proxy")]
    assert ours and max(ours) < flask_mount, paths
    # Through MLflow's own middleware (host check, workspaces) and lifespan, which closes the
    # route's pooled connections at the end.
    with TestClient(served, base_url="http://localhost") as client:
        r = client.get(PROXY_URL, params={"gateway_path": "api/2.0/endpoints"})
    assert r.status_code == 200 and r.json()["endpoints"]


def test_a_slow_gateway_is_a_504_after_the_proxy_timeout():
    import asyncio

    from fastapi import FastAPI

    slow = FastAPI()

    @slow.post("/gateway/{name}/invocations")
    async def hang(name: str):
        await asyncio.sleep(3)

    with serving(slow) as url, proxy_to(url, timeout_s=0.5) as proxy:
        started = time.monotonic()
        status, body = post(proxy, "gateway/tiny-ja/invocations", {"prompt": "x"})
        elapsed = time.monotonic() - started
    assert status == 504 and "did not answer in time" in body["message"]
    assert elapsed < 3


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"detail": "Not Found"}', "Not Found"),
        (b'{"detail": {"detail": "Server is pinned to m"}}', "Server is pinned to m"),
        (
            b'{"detail": {"error": {"message": "prompt too long", "type": "invalid"}}}',
            "prompt too long",
        ),
        (
            b'{"detail": [{"loc": ["body", "temperature"], "msg": "too big"}]}',
            "temperature: too big",
        ),
        # An HTML error page or a stack trace is not passed on to the browser.
        (b"Traceback (most recent call last): ...", "The MLflow AI Gateway answered HTTP 502"),
        (b"", "The MLflow AI Gateway answered HTTP 502"),
    ],
)
def test_gateway_error_messages_are_made_readable(body, message):
    from tracking.gateway_proxy import gateway_error_message

    assert gateway_error_message(body, 502) == message


def test_json_nested_too_deep_is_a_400_not_a_traceback(proxy):
    nested = b'{"gateway_path": "gateway/tiny-ja/invocations", "json_data": '
    status, answer = proxy.post_raw(nested + b"[" * 5_000 + b"]" * 5_000 + b"}")
    assert status == 400 and "nested more than 500 levels" in answer["message"], answer


def events_of(text: str) -> list:
    events = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", text
    return [json.loads(e) for e in events[:-1]]


@pytest.fixture(scope="module")
def live_proxy(model_server):
    """The proxy to the gateway as served, to the tiny model's model server (tests/conftest.py)."""
    with serving(gateway_app(model_server)) as url, proxy_to(url) as proxy:
        yield proxy


def test_a_streamed_request_gets_the_gateways_stream_as_it_comes(live_proxy, reference_model):
    messages = [{"role": "user", "content": QUESTION}]
    r = live_proxy.stream("tiny-ja", {"messages": messages, "temperature": 0, "max_tokens": 8})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    # nginx (the tls profile) passes each piece on as it comes.
    assert r.headers["x-accel-buffering"] == "no"
    chunks = events_of(r.text)
    pieces = [c["choices"][0]["delta"].get("content") or "" for c in chunks]
    assert "".join(pieces) == greedy_chat(*reference_model, messages, 8)
    assert len([p for p in pieces if p]) > 1
    assert chunks[-1]["usage"]["completion_tokens"] == 8


def test_a_streamed_request_that_fails_before_its_first_token_keeps_status_and_message(
    live_proxy, proxy
):
    long = {"messages": [{"role": "user", "content": "りんご " * 600}]}
    r = live_proxy.stream("tiny-ja", long)
    assert r.status_code == 400 and "context is 512 tokens" in r.json()["message"], r.text
    r = live_proxy.stream("no-such-endpoint", long)
    assert r.status_code == 404 and "no endpoint named 'no-such-endpoint'" in r.json()["message"]
    # The model server down (`proxy`'s gateway has none): the gateway's own 503, not a stream.
    r = proxy.stream("tiny-ja", {"messages": [{"role": "user", "content": QUESTION}]})
    assert r.status_code == 503 and "model server" in r.json()["message"], r.text


def test_a_stream_that_breaks_off_ends_with_an_error_event():
    from fastapi import FastAPI
    from starlette.responses import StreamingResponse

    broken = FastAPI()

    @broken.post("/gateway/{name}/invocations")
    async def half(name: str):
        async def pieces():
            yield b'data: {"choices": [{"delta": {"content": "\u308a"}}]}\n\n'
            raise RuntimeError("the gateway's worker died")

        return StreamingResponse(pieces(), media_type="text/event-stream")

    with serving(broken) as url, proxy_to(url) as proxy:
        r = proxy.stream("tiny-ja", {"messages": [{"role": "user", "content": QUESTION}]})
    assert r.status_code == 200
    first, last = events_of(r.text)
    assert first["choices"][0]["delta"]["content"] == "り"
    assert last["error"] == {
        "message": "The MLflow AI Gateway (service gateway) broke off its answer",
        "code": 502,
    }


def test_a_stream_that_breaks_off_mid_event_ends_with_a_readable_error_event():
    """The half-written event is dropped, so the error event starts on a line of its own."""
    from fastapi import FastAPI
    from starlette.responses import StreamingResponse

    broken = FastAPI()
    whole = b'data: {"choices": [{"delta": {"content": "\u308a"}}]}\n\n'

    @broken.post("/gateway/{name}/invocations")
    async def half(name: str):
        async def pieces():
            yield whole + whole[:20]
            raise RuntimeError("the gateway's worker died")

        return StreamingResponse(pieces(), media_type="text/event-stream")

    with serving(broken) as url, proxy_to(url) as proxy:
        r = proxy.stream("tiny-ja", {"messages": [{"role": "user", "content": QUESTION}]})
    first, last = events_of(r.text)
    assert first["choices"][0]["delta"]["content"] == "り"
    assert last["error"]["code"] == 502


def test_a_stream_past_the_pools_bound_ends_with_an_error_event():
    """The default bound (promptlab_stack/http_pool.py's MAX_ANSWER_BYTES), not a small one."""
    from fastapi import FastAPI
    from starlette.responses import StreamingResponse

    from promptlab_stack.http_pool import MAX_ANSWER_BYTES

    endless = FastAPI()
    event = b'data: {"choices": [{"delta": {"content": "' + b"a" * 65_000 + b'"}}]}\n\n'

    @endless.post("/gateway/{name}/invocations")
    async def flood(name: str):
        async def pieces():
            for _ in range(MAX_ANSWER_BYTES // len(event) + 2):
                yield event

        return StreamingResponse(pieces(), media_type="text/event-stream")

    with serving(endless) as url, proxy_to(url) as proxy:
        r = proxy.stream("tiny-ja", {"messages": [{"role": "user", "content": QUESTION}]})
    assert r.status_code == 200
    *_, last = events_of(r.text)
    assert last["error"]["code"] == 502
    assert f"streamed more than {MAX_ANSWER_BYTES:,} bytes" in last["error"]["message"]
    assert len(r.content) <= MAX_ANSWER_BYTES + len(event) + 1000
