"""A gateway proxy for the Prompt Engineering UI that keeps the gateway's status and message.

MLflow 3.17.2's `/ajax-api/2.0/mlflow/gateway-proxy` turns every non-200 answer of the gateway
(a 400 for temperature 5, a 404 for an unknown endpoint, a 503 while the model loads) into an
HTTP 500 "INTERNAL_ERROR", and a gateway that is down into a bare 500. The UI shows the message
of `{"error_code", "message"}` bodies, so our proxy answers with the gateway's own status and a
readable message instead, and names the gateway when it cannot be reached.

This module holds what the proxy decides (which gateway URL, what to answer) and the Flask view
used when MLflow's Flask app is served directly (gunicorn, waitress). Under uvicorn, MLflow's
default, the same decisions are served by a native async route (gateway_proxy_asgi.py).
"""

from __future__ import annotations

import json
import os

# MLflow error codes for the statuses the gateway answers with (the UI shows `message`).
ERROR_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    422: "INVALID_PARAMETER_VALUE",
    429: "RESOURCE_EXHAUSTED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
ROUTE_SUFFIX = "/mlflow/gateway-proxy"
# What MLflow answers for the endpoint list when no gateway is configured.
NO_GATEWAY_ANSWER = json.dumps({"endpoints": []}).encode()


class ProxyError(Exception):
    """An answer of the proxy itself (not the gateway's): an HTTP status and a readable message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def proxy_timeout_seconds() -> float:
    # Outermost of the three timeouts (model server T, gateway route T+5, this proxy T+10), so
    # the innermost component reports a timeout with its own, more precise message.
    return float(os.environ.get("GENERATION_TIMEOUT_SECONDS", "300")) + 10


def gateway_target() -> str | None:
    from mlflow.environment_variables import MLFLOW_DEPLOYMENTS_TARGET

    return MLFLOW_DEPLOYMENTS_TARGET.get() or None


def gateway_request(target: str, method: str, args) -> tuple[str, str, dict | None]:
    """Check the UI's proxy request; return `(gateway_path, url, json body)`.

    `args` is the query (GET) or the decoded JSON body (POST). Raises ProxyError(400) for a body
    that is not an object and for paths outside the gateway API (MLflow's own check).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.server.handlers import _validate_gateway_path

    if not isinstance(args, dict):
        raise ProxyError(400, "The gateway proxy request body must be a JSON object")
    gateway_path = args.get("gateway_path")
    try:
        _validate_gateway_path(method, gateway_path)
    except MlflowException as e:
        raise ProxyError(400, e.message) from None
    json_data = args.get("json_data") if method == "POST" else None
    return gateway_path, f"{target.rstrip('/')}/{gateway_path.lstrip('/')}", json_data


def timeout_error(target: str) -> ProxyError:
    return ProxyError(504, f"The MLflow AI Gateway at {target} did not answer in time")


def unreachable_error(target: str) -> ProxyError:
    return ProxyError(503, f"The MLflow AI Gateway at {target} is unreachable: it is starting or down")


def gateway_answer(method: str, gateway_path: str, status: int, body: bytes) -> tuple[int, bytes]:
    """What the UI gets for the gateway's answer: a 200 as it is, anything else as an MLflow
    error body with the gateway's status (a non-HTTP-error status becomes 502)."""
    if status == 200:
        return 200, body
    proxy_status = status if 400 <= status < 600 else 502
    message = gateway_error_message(body, status)
    if proxy_status == 404 and method == "POST":
        # The gateway only says "Not Found"; name what was not found.
        endpoint = gateway_path.strip("/").split("/")[1]
        message = f"The gateway has no endpoint named {endpoint!r} ({message})"
    return proxy_status, error_body(proxy_status, message)


def error_body(status: int, message: str) -> bytes:
    code = ERROR_CODES.get(status, "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")
    return json.dumps({"error_code": code, "message": message}, ensure_ascii=False).encode()


def gateway_error_message(body: bytes, status: int) -> str:
    """The human part of a gateway error body: FastAPI's `detail`, a list of pydantic errors, or
    an engine's own error object nested inside (`{"detail": {"error": {"message": ...}}}`)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip() or f"HTTP {status}"
    return _message_of(data) or f"HTTP {status}"


def _message_of(detail) -> str:
    if isinstance(detail, dict):
        for key in ("message", "detail", "error"):
            if key in detail:
                return _message_of(detail[key])
        return json.dumps(detail, ensure_ascii=False)
    if isinstance(detail, list):  # request validation errors: [{"loc": [...], "msg": ...}]
        parts = []
        for err in detail:
            if isinstance(err, dict) and "msg" in err:
                loc = ".".join(str(p) for p in err.get("loc", []) if p != "body")
                parts.append(f"{loc}: {err['msg']}" if loc else str(err["msg"]))
            else:
                parts.append(_message_of(err))
        return "; ".join(parts)
    return "" if detail is None else str(detail)


def gateway_proxy_view():
    """The Flask view (MLflow's Flask app served without uvicorn)."""
    import requests
    from flask import Response, request

    def answer(status: int, body: bytes):
        return Response(body, status=status, mimetype="application/json")

    target = gateway_target()
    if not target:
        return answer(200, NO_GATEWAY_ANSWER)
    args = request.args if request.method == "GET" else request.get_json(silent=True)
    try:
        gateway_path, url, json_data = gateway_request(target, request.method, args)
        try:
            resp = requests.request(request.method, url, json=json_data,
                                    timeout=proxy_timeout_seconds())
        except requests.Timeout:
            raise timeout_error(target) from None
        except requests.ConnectionError:
            raise unreachable_error(target) from None
    except ProxyError as e:
        return answer(e.status, error_body(e.status, e.message))
    return answer(*gateway_answer(request.method, gateway_path, resp.status_code, resp.content))


def gateway_proxy_rules(app) -> list:
    """MLflow's URL rules for the UI's gateway proxy (with any static prefix)."""
    return [rule for rule in app.url_map.iter_rules() if rule.rule.endswith(ROUTE_SUFFIX)]


def wrap_gateway_proxy(app) -> list[str]:
    """Route the UI's gateway-proxy URL(s) to `gateway_proxy_view`; return the endpoints."""
    endpoints = sorted({rule.endpoint for rule in gateway_proxy_rules(app)})
    for endpoint in endpoints:
        app.view_functions[endpoint] = gateway_proxy_view
    return endpoints
