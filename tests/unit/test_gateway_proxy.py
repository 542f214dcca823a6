"""The UI's gateway proxy in our tracking app passes the gateway's errors through as they are.

No Docker: MLflow's real gateway app runs with uvicorn on a loopback port (its model server is
absent, as while the model loads), and MLflow's real Flask app serves the proxy route.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gateway_url():
    import uvicorn
    from local_llm_gateway.render_config import render, validate
    from mlflow.gateway.app import create_app_from_config

    dead_model_server = f"http://127.0.0.1:{free_port()}"
    config = validate(render({"MODEL_ID": "/models/tiny-ja", "MODEL_BACKEND": "pyfunc",
                              "PYFUNC_URL": dead_model_server}))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app_from_config(config), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def proxy(monkeypatch):
    from flask import Flask
    from mlflow_promptlab_utf8.gateway_proxy import wrap_gateway_proxy

    app = Flask(__name__)
    # The same URL rule MLflow registers; our view replaces MLflow's.
    app.add_url_rule("/ajax-api/2.0/mlflow/gateway-proxy", "serve_gateway_proxy",
                     lambda: "stock", methods=["GET", "POST"])
    assert wrap_gateway_proxy(app) == ["serve_gateway_proxy"]
    return app.test_client()


def post(client, path, data):
    return client.post("/ajax-api/2.0/mlflow/gateway-proxy",
                       json={"gateway_path": path, "json_data": data})


def test_endpoint_list_passes_through(proxy, gateway_url, monkeypatch):
    monkeypatch.setenv("MLFLOW_DEPLOYMENTS_TARGET", gateway_url)
    r = proxy.get("/ajax-api/2.0/mlflow/gateway-proxy", query_string={"gateway_path": "api/2.0/endpoints"})
    assert r.status_code == 200
    assert {e["name"] for e in r.get_json()["endpoints"]} == {"tiny-ja", "tiny-ja-completions"}


@pytest.mark.parametrize(
    "path, payload, status, words",
    [
        ("gateway/tiny-ja/invocations", {"messages": [{"role": "user", "content": "x"}], "temperature": 5},
         422, "temperature"),
        ("gateway/tiny-ja/invocations", {"messages": [{"role": "user", "content": "x"}], "max_tokens": -5},
         422, "max_tokens"),
        ("gateway/tiny-ja/invocations", {"messages": "りんご"}, 422, "messages"),
        ("gateway/no-such-endpoint/invocations", {"prompt": "x"}, 404, "no-such-endpoint"),
        # The model server is down: the gateway says which one, the proxy keeps the 503.
        ("gateway/tiny-ja/invocations", {"messages": [{"role": "user", "content": "x"}]},
         503, "unreachable"),
    ],
)
def test_gateway_errors_keep_their_status_and_message(proxy, gateway_url, monkeypatch, path, payload,
                                                      status, words):
    monkeypatch.setenv("MLFLOW_DEPLOYMENTS_TARGET", gateway_url)
    started = time.monotonic()
    r = post(proxy, path, payload)
    assert time.monotonic() - started < 5
    assert r.status_code == status, r.data
    body = r.get_json()
    assert words in body["message"] and body["error_code"]


def test_gateway_down_is_a_503_naming_the_gateway(proxy, monkeypatch):
    target = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_DEPLOYMENTS_TARGET", target)
    r = post(proxy, "gateway/tiny-ja/invocations", {"prompt": "x"})
    assert r.status_code == 503
    assert target in r.get_json()["message"] and "unreachable" in r.get_json()["message"]


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"'])
def test_broken_or_non_object_json_is_a_400(proxy, monkeypatch, body):
    monkeypatch.setenv("MLFLOW_DEPLOYMENTS_TARGET", "http://127.0.0.1:9")
    r = proxy.post("/ajax-api/2.0/mlflow/gateway-proxy", data=body, content_type="application/json")
    assert r.status_code == 400


def test_paths_outside_the_gateway_api_are_refused(proxy, monkeypatch):
    monkeypatch.setenv("MLFLOW_DEPLOYMENTS_TARGET", "http://127.0.0.1:9")
    r = post(proxy, "../admin", {})
    assert r.status_code == 400 and "Invalid gateway_path" in r.get_json()["message"]


def test_the_mlflow_server_app_gets_this_proxy():
    from mlflow.server import app
    from mlflow_promptlab_utf8.gateway_proxy import gateway_proxy_view, wrap_gateway_proxy

    endpoints = wrap_gateway_proxy(app)
    assert endpoints, "MLflow no longer routes /ajax-api/2.0/mlflow/gateway-proxy"
    assert all(app.view_functions[e] is gateway_proxy_view for e in endpoints)


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"detail": "Not Found"}', "Not Found"),
        (b'{"detail": {"detail": "Server is pinned to m"}}', "Server is pinned to m"),
        (b'{"detail": {"error": {"message": "prompt too long", "type": "invalid"}}}', "prompt too long"),
        (b'{"detail": [{"loc": ["body", "temperature"], "msg": "too big"}]}', "temperature: too big"),
        (b"plain text", "plain text"),
        (b"", "HTTP 502"),
    ],
)
def test_gateway_error_messages_are_made_readable(body, message):
    from mlflow_promptlab_utf8.gateway_proxy import gateway_error_message

    assert gateway_error_message(body, 502) == message
