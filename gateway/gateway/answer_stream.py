"""Streamed answers that keep their errors' status, and errors that keep their message.

The tracking server's built-in AI Gateway asks our gateway's OpenAI-compatible
`/v1/chat/completions` for `"stream": true` when its client does, and `promptlab-eval` asks an
endpoint's `/gateway/<endpoint>/invocations` (through the UI's proxy); our providers stream what
the engines generate (pyfunc_provider.py, openai_engine_provider.py). But MLflow's gateway app
starts a streamed response (status 200) before the provider has run, so a model that is loading, a
prompt that is too long or a full queue would break a stream that already said 200, instead of
answering with its own status and message.

So this ASGI middleware holds the response's start until the first piece of the answer: an error
before it is answered as it would be unstreamed (its status and `{"detail": message}`, what
MLflow's translate_http_exception makes of it on its other routes); an error after it ends the
stream with an `error` event that says what happened, as OpenAI's API does. A stream ends with
OpenAI's `data: [DONE]`, which MLflow's gateway app leaves out.

MLflow's `/v1/...` handlers also let a provider's error escape as a 500 "Internal Server Error"
on unstreamed requests (its `/gateway/<endpoint>/invocations` routes translate them; these do
not), so such an error is answered with its own status and message too.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from mlflow.gateway.exceptions import AIGatewayException

from promptlab_stack import sse
from promptlab_stack.sse import DONE

logger = logging.getLogger(__name__)

# MLflow's OpenAI-compatible routes.
OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions")
# MLflow's own endpoint routes, which stream too.
INVOCATIONS_PATH = re.compile(r"/gateway/[^/]+/invocations")


def is_event_stream(start: dict[str, Any]) -> bool:
    return start.get("status") == 200 and any(
        k.lower() == b"content-type" and v.startswith(b"text/event-stream")
        for k, v in start.get("headers", [])
    )


def error_response(status: int, detail: Any) -> tuple[int, list, bytes]:
    body = json.dumps({"detail": detail}, ensure_ascii=False).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return status, headers, body


def error_event(status: int, detail: Any) -> bytes:
    message = detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
    return sse.error_event(status, message)


async def _read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def _replay(body: bytes, receive):
    """The request body again, then the client's own messages (its disconnect)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _send_whole(send, status: int, headers, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _call_buffered(app, scope, receive) -> tuple[int, list, bytes]:
    """Run the app and return its whole response. A provider error that escapes becomes its status
    and `{"detail": message}` (Starlette's error middleware has by then answered a 500, which is
    dropped)."""
    start: dict[str, Any] = {}
    parts: list[bytes] = []

    async def capture(message) -> None:
        if message["type"] == "http.response.start":
            start.clear()
            parts.clear()
            start.update(message)
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    try:
        await app(scope, receive, capture)
    except AIGatewayException as e:
        return error_response(e.status_code, e.detail)
    return start.get("status", 502), start.get("headers", []), b"".join(parts)


async def _call_streamed(app, scope, receive, send) -> None:
    """Run the app, its response's start held until the first piece of its body."""
    held: dict[str, Any] = {}
    started = False

    async def hold_start(message) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            held.clear()
            held.update(message)
            return
        if message["type"] == "http.response.body" and not started:
            if not message.get("body") and message.get("more_body"):
                return  # nothing to show yet
            started = True
            await send(held)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            if is_event_stream(held):  # OpenAI's last event, which MLflow leaves out
                message = {**message, "body": message.get("body", b"") + DONE}
        await send(message)

    try:
        await app(scope, receive, hold_start)
    except AIGatewayException as e:
        if not started:
            return await _send_whole(send, *error_response(e.status_code, e.detail))
        logger.warning("a streamed answer broke off: %s", e.detail)
        await send(
            {
                "type": "http.response.body",
                "body": error_event(e.status_code, e.detail) + DONE,
                "more_body": False,
            }
        )
        return
    if not started and held:  # an answer with no body at all
        await send(held)
        await send({"type": "http.response.body", "body": b""})


class StreamedAnswers:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        openai = scope["path"] in OPENAI_PATHS
        if not openai and not INVOCATIONS_PATH.fullmatch(scope["path"]):
            return await self.app(scope, receive, send)
        body = await _read_body(receive)
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        replayed = _replay(body, receive)
        if isinstance(request, dict) and request.get("stream") is True:
            return await _call_streamed(self.app, scope, replayed, send)
        if not openai:  # MLflow's endpoint routes answer their errors with their status already
            return await self.app(scope, replayed, send)
        await _send_whole(send, *await _call_buffered(self.app, scope, replayed))
