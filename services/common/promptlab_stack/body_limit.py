"""A request-body size limit for the ASGI apps of our services (the gateway and the model server).

Neither MLflow's gateway app nor its scoring server bounds a request body: both read it whole into
memory, then parse it. The UI proxy refuses a large body first (MAX_REQUEST_MB), but the gateway
is also reached through MLflow's built-in AI Gateway (the Playground) and by scripts, so every hop
enforces the same limit itself: a body declared larger is refused with a 413 before a byte of it
is read, and a body that turns out larger while it streams in (chunked, or a lying
Content-Length) is cut off with a 413 as soon as it passes the limit.

uvicorn and gunicorn have no body limit of their own (only header limits), hence this middleware.
It also refuses, with a 400, a body whose JSON nests too deeply to parse (json_nesting.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

from promptlab_stack.json_nesting import too_deep

KNOB = "MAX_REQUEST_MB"


def detail_body(message: str) -> bytes:
    """FastAPI's error shape, as MLflow's gateway answers its other errors."""
    return json.dumps({"detail": message}, ensure_ascii=False).encode("utf-8")


def mlflow_error_body(message: str) -> bytes:
    """MLflow's REST error shape, as the scoring server answers its other errors."""
    return json.dumps(
        {"error_code": "INVALID_PARAMETER_VALUE", "message": message}, ensure_ascii=False
    ).encode("utf-8")


class BodyLimit:
    """Answer 413 for a request body over `max_bytes`; `error_body(message)` shapes the answer."""

    def __init__(
        self, app, max_bytes: int, service: str, error_body: Callable[[str], bytes] = detail_body
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.service = service  # named in the message: which hop refused
        self.error_body = error_body

    def _message(self, size: int | None) -> str:
        what = (
            f"is {size:,} bytes" if size is not None else f"is larger than {self.max_bytes:,} bytes"
        )
        return f"The request body {what}; {self.service} takes at most {self.max_bytes:,} ({KNOB})"

    async def _refuse(self, send, size: int | None) -> None:
        await self._answer(send, 413, self._message(size))

    async def _answer(self, send, status: int, message: str) -> None:
        body = self.error_body(message)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await drop_some(_body_chunks(receive), self.max_bytes, int(declared))
            return await self._refuse(send, int(declared))
        # Read the body here, up to the limit, and hand it to the app whole: both apps read it
        # whole anyway, and an error raised from inside the app's `receive` would reach the
        # client as the app's own 500.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                if message.get("more_body"):
                    await drop_some(_body_chunks(receive), self.max_bytes)
                return await self._refuse(send, None)
            if not message.get("more_body"):
                break
        if problem := too_deep(bytes(body), self.service):
            return await self._answer(send, 400, problem)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: the client's disconnect

        await self.app(scope, replay, send)


async def _body_chunks(receive) -> AsyncIterator[bytes]:
    """The rest of a request body, chunk by chunk, from an ASGI `receive`."""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        yield message.get("body", b"")
        if not message.get("more_body"):
            return


async def drop_some(chunks: AsyncIterator[bytes], limit: int, declared: int | None = None) -> None:
    """Read (and drop) up to another `limit` bytes of a refused body before answering: a client
    that sends its whole body before it reads the answer (most do) then gets the 413 instead of a
    broken connection. A body larger still is cut off: the server closes the connection, and one
    whose Content-Length (`declared`) already says so is not read at all. The UI's gateway proxy
    drops the same way (gateway_proxy.read_body)."""
    if declared is not None and declared > 2 * limit:
        return
    dropped = 0
    async for chunk in chunks:
        dropped += len(chunk)
        if dropped > limit:
            return
