"""`POST /stream`: one chat or completion answered as it is generated, beside MLflow's scoring app.

MLflow's scoring server answers `/invocations` whole and has no streaming route, so this ASGI
wrapper serves one in front of it: the same body as `/invocations` in the unified shape
(`{"messages": [...]}` or `{"prompt": "..."}`, with `model`, `temperature`, `max_tokens`,
`top_p`, `stop`), answered as OpenAI's server-sent events (`chat.completion.chunk` or
`text_completion` chunks, the last one with the finish reason and the token usage, then
`[DONE]`).

Everything that can go wrong before the first token (bad input, a model that is loading, a full
queue) is answered with its own status and MLflow's error body, as `/invocations` answers it; the
stream starts only once the row is queued. An error after that (the request's deadline) ends the
stream with an `error` event. When the reader goes away, the row's future is cancelled and the
step loop drops the row at its next step (decode_loop.py): nothing decodes for nobody.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack
from typing import Any

from mlflow.exceptions import MlflowException

from promptlab_stack.sse import DONE, error_event, event
from pyfunc_server.batcher import DeadlineExceeded
from pyfunc_server.generator import timed_out
from pyfunc_server.requests import CHAT, bad_request, parse_model_input
from pyfunc_server.sampling import Completion

logger = logging.getLogger(__name__)

STREAM_PATH = "/stream"
# The request fields that are sampling settings (the rest is the prompt and the model's name).
PARAM_FIELDS = ("temperature", "max_tokens", "top_p", "stop")


class OpenStream:
    """A queued row and what it needs to be streamed: its job, the text deltas, the model's name,
    and the pool slot it holds until the stream ends (`close`)."""

    def __init__(self, job, deltas, kind: str, model: str, hold: ExitStack):
        self.job, self.deltas, self.kind, self.model, self.hold = job, deltas, kind, model, hold
        self.id = f"{'chatcmpl' if kind == CHAT else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def close(self) -> None:
        """Idempotent."""
        if not self.job.future.done():
            self.job.future.cancel()  # the step loop drops the row at its next step
        self.hold.close()

    def chunk(self, text: str | None, finish: str | None = None, usage=None) -> dict[str, Any]:
        if self.kind == CHAT:
            delta: dict[str, Any] = {} if text is None else {"content": text}
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            kind = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish}
            kind = "text_completion"
        chunk = {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        if usage is not None:
            chunk["usage"] = usage
        return chunk

    def first(self) -> dict[str, Any]:
        chunk = self.chunk("")
        if self.kind == CHAT:
            chunk["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        return chunk

    def last(self, c: Completion) -> dict[str, Any]:
        usage = {
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens,
        }
        return self.chunk(self.deltas.rest(c.text), c.finish_reason, usage)


def open_stream(python_model, body: Any, progress) -> OpenStream:
    """Validate `body`, wait for its model, queue its one row (in a request thread: the pool and
    the batcher block). Raises MlflowException with the status `/invocations` would answer."""
    if not isinstance(body, dict):
        raise bad_request("expected a JSON object with 'messages' (chat) or 'prompt'")
    params = {k: body[k] for k in PARAM_FIELDS if body.get(k) is not None}
    request = {k: v for k, v in body.items() if k not in PARAM_FIELDS and k != "stream"}
    parsed = parse_model_input(request, params)
    if len(parsed.requests) != 1:
        raise bad_request("a streamed completion takes one prompt")
    settings = python_model.settings
    deadline = time.monotonic() + settings.request_timeout_s
    hold = ExitStack()
    try:
        generator = hold.enter_context(python_model.pool.use(parsed.model, deadline))
        (job,) = generator.submit(parsed.requests, deadline, progress)
    except BaseException:
        hold.close()
        raise
    model = parsed.model or python_model.pool.default
    return OpenStream(job, generator.text_deltas(job.payload), parsed.requests[0].kind, model, hold)


async def events(stream: OpenStream, tokens: asyncio.Queue) -> AsyncIterator[bytes]:
    """The stream's events: a first chunk, one per step that shows new text, the last one."""
    try:
        yield event(stream.first())
        while True:
            new_ids = await tokens.get()
            if new_ids is None:  # the row has its answer (or its error)
                break
            if text := stream.deltas.push(new_ids):
                yield event(stream.chunk(text))
        try:
            completion = stream.job.future.result()
        except DeadlineExceeded as e:
            error = timed_out(stream.job.deadline - stream.job.submitted, e)
            yield error_event(504, error.message)
        except Exception as e:  # noqa: BLE001 - the stream already said 200: an error event
            logger.exception("a streamed generation failed")
            yield error_event(500, f"generation failed: {e}")
        else:
            if stream.deltas.diverged:
                logger.warning("the streamed text differs from the answer's; ends with the answer")
            yield event(stream.last(completion))
            yield DONE
    finally:
        stream.close()


class StreamRoute:
    """The scoring app with `POST /stream` in front of it."""

    def __init__(self, app, python_model):
        self.app = app
        self.python_model = python_model

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != STREAM_PATH:
            return await self.app(scope, receive, send)
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import Request
        from starlette.responses import Response, StreamingResponse

        request = Request(scope, receive)
        if request.method != "POST":
            return await Response(status_code=405, headers={"Allow": "POST"})(scope, receive, send)
        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue = asyncio.Queue()

        def tell(item: list[int] | None) -> None:  # from the batcher's thread
            try:
                loop.call_soon_threadsafe(tokens.put_nowait, item)
            except RuntimeError:  # the server's loop has closed: nobody reads any more
                pass

        def progress(new_ids: list[int]) -> None:
            tell(list(new_ids))

        try:
            try:
                body = json.loads(await request.body())
            except ValueError as e:
                raise bad_request(f"the body is not JSON: {e}") from None
            stream = await run_in_threadpool(open_stream, self.python_model, body, progress)
        except MlflowException as e:
            answer = {"error_code": e.error_code, "message": e.message}
            return await Response(
                json.dumps(answer, ensure_ascii=False),
                status_code=e.get_http_status_code(),
                media_type="application/json",
            )(scope, receive, send)
        stream.job.future.add_done_callback(lambda _: tell(None))
        response = StreamingResponse(
            events(stream, tokens),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
        try:
            await response(scope, receive, send)
        finally:
            stream.close()  # a reader gone while an event was sent: drop the row now
