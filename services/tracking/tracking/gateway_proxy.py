"""The Prompt Engineering UI's gateway proxy, keeping the gateway's status and message.

MLflow's `/ajax-api/2.0/mlflow/gateway-proxy` turns every non-200 answer of the gateway
(a 400 for temperature 5, a 404 for an unknown endpoint, a 503 while the model loads) into an
HTTP 500 "INTERNAL_ERROR", and a gateway that is down into a bare 500. The UI shows the message
of `{"error_code", "message"}` bodies, so this proxy answers with the gateway's own status and a
readable message instead, and names the gateway when it cannot be reached.

It is a native async route of MLflow's FastAPI app (uvicorn, which the stack always runs),
answered on the event loop ahead of the Flask mount, with one pool of keep-alive connections per
worker process (promptlab_stack/http_pool.py). MLflow's Flask view, through the WSGI bridge,
took a worker thread and a new connection per prompt: measured with bench/, that added latency
to every call and capped how much the UI gained from prompts in flight.

A request whose `json_data` asks for `"stream": true` (MLflow's UI never does; `promptlab-eval`
does, to time the first token) gets the gateway's stream as it comes: an error before the first
piece keeps its status and message as above, a stream that breaks off ends with an `error` event.
Closing the stream closes the gateway's, and so frees the model server's row.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

from promptlab_stack.body_limit import drop_some
from promptlab_stack.error_body import readable_message
from promptlab_stack.http_pool import AnswerTooLarge, SessionPool
from promptlab_stack.json_nesting import too_deep
from promptlab_stack.sse import DONE, error_event, whole_events
from promptlab_stack.timings import UI_PROXY_POOL_KEEPALIVE_S
from tracking.login import refused
from tracking.mlflow_compat import add_route_before_flask, on_shutdown, validate_gateway_path

# MLflow error codes for the statuses the gateway answers with (the UI shows `message`).
ERROR_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "REQUEST_LIMIT_EXCEEDED",
    415: "INVALID_PARAMETER_VALUE",
    422: "INVALID_PARAMETER_VALUE",
    429: "RESOURCE_EXHAUSTED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
ROUTE_SUFFIX = "/mlflow/gateway-proxy"
# What MLflow answers for the endpoint list when no gateway is configured.
NO_GATEWAY_ANSWER = json.dumps({"endpoints": []}).encode()
POOL_MAX_CONNECTIONS = 256
# Through a reverse proxy (the tls profile's nginx), each piece goes on as it comes.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ProxyError(Exception):
    """An answer of the proxy itself (not the gateway's): an HTTP status and a readable message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def gateway_request(target: str, method: str, args) -> tuple[str, str, dict | None]:
    """Check the UI's proxy request; return `(gateway_path, url, json body)`.

    `args` is the query (GET) or the decoded JSON body (POST). Raises ProxyError(400) for a body
    that is not an object and for paths outside the gateway API (MLflow's own check).
    """
    from mlflow.exceptions import MlflowException

    if not isinstance(args, dict):
        raise ProxyError(400, "The gateway proxy request body must be a JSON object")
    gateway_path = args.get("gateway_path")
    try:
        validate_gateway_path(method, gateway_path)
    except MlflowException as e:
        raise ProxyError(400, e.message) from None
    if not isinstance(
        gateway_path, str
    ):  # MLflow's check refuses it too; this tells the type checker
        raise ProxyError(400, "The gateway proxy request needs gateway_path, a string")
    json_data = args.get("json_data") if method == "POST" else None
    # The gateway's one canonical path for each accepted one: MLflow's gateway answers the endpoint
    # list without its trailing slash with a redirect, which this proxy does not follow.
    path = "api/2.0/endpoints/" if method == "GET" else gateway_path.strip("/")
    return gateway_path, f"{target.rstrip('/')}/{path}", json_data


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


def wants_stream(method: str, json_data) -> bool:
    return method == "POST" and isinstance(json_data, dict) and json_data.get("stream") is True


def gateway_error_message(body: bytes, status: int) -> str:
    """The human part of a gateway error body (promptlab_stack/error_body.py): FastAPI's `detail`,
    a list of pydantic errors, or an engine's own error object nested inside."""
    try:
        data = json.loads(body)
    except ValueError:  # an HTML error page or a stack trace: not for the browser
        return f"The MLflow AI Gateway answered HTTP {status}"
    return readable_message(data) or f"HTTP {status}"


class GatewayClient:
    """The gateway's connection pool, one per event loop (a uvicorn worker has one)."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        # Shorter than the gateway keeps idle connections (promptlab_stack/timings.py).
        self.pool = SessionPool(keepalive_s=UI_PROXY_POOL_KEEPALIVE_S, limit=POOL_MAX_CONNECTIONS)

    async def request(self, method: str, url: str, json_data) -> tuple[int, bytes]:
        return await self.pool.request(method, url, json=json_data, timeout_s=self.timeout_s)

    async def stream(self, url: str, json_data: dict) -> tuple[int, bytes] | AsyncIterator[bytes]:
        """POST for a stream: the gateway's pieces as they come when it streams (its response is
        closed when they have all been read, or the iterator is closed), else its status and
        whole body."""
        stack = contextlib.AsyncExitStack()
        try:
            resp = await stack.enter_async_context(
                self.pool.open("POST", url, json=json_data, timeout_s=self.timeout_s)
            )
            if resp.status != 200 or resp.content_type != "text/event-stream":
                return resp.status, await self.pool.read(resp)
            return self._pieces(resp, stack.pop_all())
        finally:
            await stack.aclose()

    async def _pieces(self, resp, owned: contextlib.AsyncExitStack) -> AsyncIterator[bytes]:
        import aiohttp

        read = 0
        pending = b""
        try:
            async for piece in resp.content.iter_any():
                read += len(piece)
                if read > self.pool.max_answer_bytes:
                    yield (
                        error_event(
                            502,
                            "The MLflow AI Gateway (service gateway) streamed more than "
                            f"{self.pool.max_answer_bytes:,} bytes",
                        )
                        + DONE
                    )
                    return
                whole, pending = whole_events(pending + piece)
                if whole:
                    yield whole
            if pending:
                yield pending  # a stream that does not end with a blank line
        except TimeoutError:
            yield (
                error_event(504, "The MLflow AI Gateway (service gateway) did not finish in time")
                + DONE
            )
        except (aiohttp.ClientError, OSError):
            yield (
                error_event(502, "The MLflow AI Gateway (service gateway) broke off its answer")
                + DONE
            )
        finally:
            await owned.aclose()

    async def close(self) -> None:
        await self.pool.close()


DEFAULT_MAX_BODY_BYTES = 8_000_000


async def read_body(request, limit: int) -> bytes:
    """The request body, or ProxyError 413 as soon as it is larger than `limit` (the whole of a
    huge body is never read, let alone passed on to the gateway and the model server). Up to
    another `limit` of the rest is read and dropped first, so that a client that sends its whole
    body before reading the answer (most do) gets the 413 rather than a broken connection; past
    that the connection is cut (promptlab_stack/body_limit.py does the same at the other hops)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        await drop_some(request.stream(), limit, int(declared))
        raise ProxyError(
            413,
            f"The request body is {int(declared):,} bytes; the UI's gateway proxy takes "
            f"at most {limit:,} (MAX_REQUEST_MB)",
        )
    body = bytearray()
    stream = request.stream()
    async for chunk in stream:
        body += chunk
        if len(body) > limit:
            await drop_some(stream, limit)
            raise ProxyError(
                413,
                f"The request body is larger than {limit:,} bytes, the most the UI's "
                "gateway proxy takes (MAX_REQUEST_MB)",
            )
    return bytes(body)


def _not_json(constant: str):
    """NaN and Infinity: Python's json reads them, JSON has no such numbers, and the gateway would
    refuse them with a 500 after the proxy had passed them on."""
    raise ValueError(f"{constant} is not a JSON number")


def make_gateway_proxy_endpoint(
    client: GatewayClient,
    target: str,
    authenticate=None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
):
    """The route's endpoint. `target` is the gateway's URL (empty: no gateway). `authenticate
    (request)`, given when MLflow's basic auth is on, returns the user, None, or a response to send
    instead (a login challenge): MLflow's auth middleware does not check this route itself."""
    import aiohttp
    from starlette.responses import Response, StreamingResponse

    def answer(status: int, body: bytes) -> Response:
        # A 429 is the model server's full queue (the gateway says when to try again: 1 s).
        headers = {"Retry-After": "1"} if status == 429 else None
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    async def gateway_proxy(request):
        if (refusal := await refused(authenticate, request)) is not None:
            return refusal
        if not target:
            return answer(200, NO_GATEWAY_ANSWER)
        method = request.method
        try:
            if method == "GET":
                args = dict(request.query_params)
            else:
                # A cross-site form or text/plain POST needs no CORS preflight: only JSON is taken.
                media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
                if media_type != "application/json":
                    raise ProxyError(
                        415,
                        "The UI's gateway proxy takes application/json request bodies, "
                        f"not {media_type or 'a body without a Content-Type'}",
                    )
                body = await read_body(request, max_body_bytes)
                if problem := too_deep(body, "the UI's gateway proxy"):
                    raise ProxyError(400, problem)
                try:
                    args = json.loads(body, parse_constant=_not_json)
                except ValueError:
                    args = None  # refused by gateway_request as "not a JSON object"
            gateway_path, url, json_data = gateway_request(target, method, args)
            try:
                if wants_stream(method, json_data):
                    answered = await client.stream(url, json_data)
                    if not isinstance(answered, tuple):
                        return StreamingResponse(
                            answered, media_type="text/event-stream", headers=STREAM_HEADERS
                        )
                    status, body = answered
                else:
                    status, body = await client.request(method, url, json_data)
            except TimeoutError:
                raise ProxyError(
                    504, "The MLflow AI Gateway (service gateway) did not answer in time"
                ) from None
            except AnswerTooLarge as e:
                raise ProxyError(
                    502,
                    f"The MLflow AI Gateway (service gateway) answered more than "
                    f"{e.max_bytes:,} bytes",
                ) from None
            except aiohttp.ClientConnectionError:
                raise ProxyError(
                    503,
                    "The MLflow AI Gateway (service gateway) is unreachable: "
                    "it is starting or down",
                ) from None
        except ProxyError as e:
            return answer(e.status, error_body(e.status, e.message))
        return answer(*gateway_answer(method, gateway_path, status, body))

    return gateway_proxy


def gateway_proxy_paths(flask_app) -> list[str]:
    """The URL(s) MLflow routes the UI's gateway proxy at (with any static prefix)."""
    return sorted(
        {rule.rule for rule in flask_app.url_map.iter_rules() if rule.rule.endswith(ROUTE_SUFFIX)}
    )


def install_gateway_proxy(
    fastapi_app,
    flask_app,
    *,
    target: str,
    timeout_s: float,
    authenticate=None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    client: GatewayClient | None = None,
) -> list[str]:
    """Serve the Flask app's gateway-proxy URLs with our route, ahead of the Flask mount; close the
    connection pool (`client`, or one of its own) with the app. Returns the paths."""
    client = client or GatewayClient(timeout_s)
    endpoint = make_gateway_proxy_endpoint(client, target, authenticate, max_body_bytes)
    paths = gateway_proxy_paths(flask_app)
    for path in paths:
        add_route_before_flask(fastapi_app, path, endpoint, ["GET", "POST"])
    on_shutdown(fastapi_app, client.close)
    return paths
