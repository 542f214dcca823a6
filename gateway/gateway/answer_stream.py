"""Streamed chat requests answered whole: errors keep their status, answers stay equal.

MLflow's Playground, through the tracking server's built-in AI Gateway, asks our gateway's
OpenAI-compatible `/v1/chat/completions` for `"stream": true`. MLflow's gateway app starts a
streamed response (status 200) before the provider has run, so a model that is loading or a prompt
that is too long would break the stream halfway instead of answering with its status and message,
and our providers would each need a streaming variant of an answer the engines return whole (the
pyfunc model server's batcher finishes a row before it answers; the OpenAI-compatible provider
post-processes whole answers, promptlab_stack/text.py).

MLflow's `/v1/...` handlers also let a provider's error escape as a 500 "Internal Server Error"
(its `/gateway/<endpoint>/invocations` routes translate them; these do not), so the middleware
answers such an error with its own status and message, as those routes do.

So this ASGI middleware asks the app for the same request unstreamed. An error passes through
as it is; an answer is sent as an OpenAI stream: one chunk with the role and the whole text per
choice, then one with the finish reasons and the token usage (what `stream_options.include_usage`
asks for), then `[DONE]`. A greedy answer is the same whichever way it is asked.
"""

from __future__ import annotations

import json
from typing import Any

from mlflow.gateway.exceptions import AIGatewayException

# MLflow's OpenAI-compatible routes; only chat is asked to stream (by the built-in AI Gateway).
OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions")
STREAMED_PATHS = ("/v1/chat/completions",)


def answer_chunks(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """A whole chat completion as the chunks OpenAI would have streamed."""
    head = {
        "id": answer.get("id"),
        "object": "chat.completion.chunk",
        "created": answer.get("created"),
        "model": answer.get("model"),
    }
    choices = answer.get("choices") or []
    text = [
        {
            "index": c.get("index", i),
            "finish_reason": None,
            "delta": {
                "role": "assistant",
                "content": (c.get("message") or {}).get("content") or "",
            },
        }
        for i, c in enumerate(choices)
    ]
    finish = [
        {"index": c.get("index", i), "delta": {}, "finish_reason": c.get("finish_reason") or "stop"}
        for i, c in enumerate(choices)
    ]
    return [{**head, "choices": text}, {**head, "choices": finish, "usage": answer.get("usage")}]


def sse(chunks: list[dict[str, Any]]) -> bytes:
    events = [f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in chunks] + [
        "data: [DONE]\n\n"
    ]
    return "".join(events).encode("utf-8")


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
    and `{"detail": message}`, as MLflow's translate_http_exception makes it on the other routes
    (Starlette's error middleware has by then answered a 500, which is dropped)."""
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
        body = json.dumps({"detail": e.detail}, ensure_ascii=False).encode("utf-8")
        return (
            e.status_code,
            [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            body,
        )
    return start.get("status", 502), start.get("headers", []), b"".join(parts)


class StreamWholeAnswers:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in OPENAI_PATHS
        ):
            return await self.app(scope, receive, send)
        body = await _read_body(receive)
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not (
            scope["path"] in STREAMED_PATHS
            and isinstance(request, dict)
            and request.get("stream") is True
        ):
            return await _send_whole(
                send, *await _call_buffered(self.app, scope, _replay(body, receive))
            )

        unstreamed = {k: v for k, v in request.items() if k not in ("stream", "stream_options")}
        new_body = json.dumps(unstreamed).encode("utf-8")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(new_body)).encode()))
        status, response_headers, answer_body = await _call_buffered(
            self.app, {**scope, "headers": headers}, _replay(new_body, receive)
        )
        if status == 200:
            try:
                answer = json.loads(answer_body)
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                stream = sse(answer_chunks(answer))
                await _send_whole(
                    send,
                    200,
                    [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        (b"content-length", str(len(stream)).encode()),
                    ],
                    stream,
                )
                return
        await _send_whole(send, status, response_headers, answer_body)
