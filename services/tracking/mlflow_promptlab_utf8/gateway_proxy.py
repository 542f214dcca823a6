"""A gateway proxy for the Prompt Engineering UI that keeps the gateway's status and message.

MLflow 3.17.2's `/ajax-api/2.0/mlflow/gateway-proxy` turns every non-200 answer of the gateway
(a 400 for temperature 5, a 404 for an unknown endpoint, a 503 while the model loads) into an
HTTP 500 "INTERNAL_ERROR", and a gateway that is down into a bare 500. The UI shows the message
of `{"error_code", "message"}` bodies, so this view answers with the gateway's own status and a
readable message instead, and names the gateway when it cannot be reached.
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


def proxy_timeout_seconds() -> float:
    # Outermost of the three timeouts (model server T, gateway route T+5, this proxy T+10), so
    # the innermost component reports a timeout with its own, more precise message.
    return float(os.environ.get("GENERATION_TIMEOUT_SECONDS", "300")) + 10


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


def error_response(status: int, message: str):
    from flask import Response

    code = ERROR_CODES.get(status, "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")
    return Response(
        json.dumps({"error_code": code, "message": message}, ensure_ascii=False),
        status=status,
        mimetype="application/json",
    )


def gateway_proxy_view():
    import requests
    from flask import Response, request
    from mlflow.environment_variables import MLFLOW_DEPLOYMENTS_TARGET
    from mlflow.exceptions import MlflowException
    from mlflow.server.handlers import _validate_gateway_path

    target = MLFLOW_DEPLOYMENTS_TARGET.get()
    if not target:
        return {"endpoints": []}  # what MLflow answers without a gateway
    if request.method == "GET":
        args = request.args
    else:
        args = request.get_json(silent=True)
        if not isinstance(args, dict):
            return error_response(400, "The gateway proxy request body must be a JSON object")
    gateway_path = args.get("gateway_path")
    try:
        _validate_gateway_path(request.method, gateway_path)
    except MlflowException as e:
        return error_response(400, e.message)
    json_data = args.get("json_data") if request.method == "POST" else None
    url = f"{target.rstrip('/')}/{gateway_path.lstrip('/')}"
    try:
        resp = requests.request(request.method, url, json=json_data, timeout=proxy_timeout_seconds())
    except requests.Timeout:
        return error_response(504, f"The MLflow AI Gateway at {target} did not answer in time")
    except requests.ConnectionError:
        return error_response(
            503, f"The MLflow AI Gateway at {target} is unreachable: it is starting or down"
        )
    if resp.status_code == 200:
        return Response(resp.content, status=200, mimetype="application/json")
    status = resp.status_code if 400 <= resp.status_code < 600 else 502
    message = gateway_error_message(resp.content, resp.status_code)
    if status == 404 and request.method == "POST":
        # The gateway only says "Not Found"; name what was not found.
        endpoint = gateway_path.strip("/").split("/")[1]
        message = f"The gateway has no endpoint named {endpoint!r} ({message})"
    return error_response(status, message)


def wrap_gateway_proxy(app) -> list[str]:
    """Route the UI's gateway-proxy URL(s) to `gateway_proxy_view`; return the endpoints."""
    endpoints = sorted(
        {rule.endpoint for rule in app.url_map.iter_rules() if rule.rule.endswith(ROUTE_SUFFIX)}
    )
    for endpoint in endpoints:
        app.view_functions[endpoint] = gateway_proxy_view
    return endpoints
