"""The llamacpp engine's port: what the gateway talks to, in front of llama-server.

- While the models are prepared (downloaded, converted, checked), every request gets a 503 whose
  message says what its model is doing, with a Retry-After (the gateway passes it on).
- Then chat and completions requests of a model with a Hugging Face tokenizer go to llama-server
  as token ids that this tokenizer made (prompts.py), on llama-server's OpenAI completions route;
  a chat answer comes back as OpenAI's chat answer, whole or streamed as llama-server streams it
  (chat_answers.py). llama-server holds back a broken UTF-8 character and a possible stop string
  itself, and stops decoding a request whose client has gone.
- Anything else (a published GGUF's requests, /v1/models, /models, /metrics) is passed through.

Why this front and not llama-server alone: llama-server renders the chat template and tokenizes
its text with its own code, which can differ from Hugging Face's by a token (prompts.py says how),
and it has no port while the weights are being converted. The front is one local hop of a few
milliseconds per request (docs/performance.md measures the UI's path against llama-server
called directly).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
from aiohttp import web

from llamacpp.chat_answers import chat_answer, chat_chunk, completions_request
from llamacpp.prompts import PromptError, Prompts
from llamacpp.states import RETRY_AFTER_S, States
from promptlab_stack import sse

logger = logging.getLogger(__name__)

# Request headers passed on to llama-server, and answer headers passed back.
HOP_HEADERS = {"content-type", "retry-after"}


def passed_headers(resp: aiohttp.ClientResponse) -> dict[str, str]:
    """The headers of llama-server's answer that go back with it."""
    return {k: v for k, v in resp.headers.items() if k.lower() in HOP_HEADERS}


def error(status: int, message: str, **headers: str) -> web.Response:
    body = {"error": {"code": status, "message": message, "type": "invalid_request_error"}}
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def llama_server_errors(request: web.Request, handler) -> web.StreamResponse:
    """llama-server not answering (it exited: the container restarts) is a 503 that says so."""
    try:
        return await handler(request)
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as e:
        logger.warning("%s %s: llama-server did not answer: %r", request.method, request.path, e)
        return error(
            503,
            "llama-server did not answer: it is starting again; try again in a moment",
            **{"Retry-After": str(RETRY_AFTER_S)},
        )


class Front:
    def __init__(self, states: States, max_request_bytes: int) -> None:
        self.states = states
        self.max_request_bytes = max_request_bytes
        self.backend: str | None = None  # llama-server's URL, once it runs
        self.prompts: Prompts | None = None
        self.session: aiohttp.ClientSession | None = None

    def serve(self, backend: str, prompts: Prompts) -> None:
        self.backend, self.prompts = backend, prompts

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.max_request_bytes, middlewares=[llama_server_errors]
        )
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_route("*", "/{path:.*}", self.passed_through)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            # No overall timeout: a generation takes as long as the gateway's route allows.
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        return self.session

    def _preparing(self, model: Any = None) -> web.Response:
        return error(
            503,
            self.states.message(model if isinstance(model, str) else None),
            **{"Retry-After": str(RETRY_AFTER_S)},
        )

    async def _json(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except web.HTTPRequestEntityTooLarge:
            raise
        except ValueError as e:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": {"code": 400, "message": "the body is not JSON"}}),
                content_type="application/json",
            ) from e
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(
                text=json.dumps({"error": {"code": 400, "message": "the body is not an object"}}),
                content_type="application/json",
            )
        return body

    # -- routes ------------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        if self.backend is None or self.prompts is None:
            return self._preparing(body.get("model"))
        model = body.get("model")
        if not isinstance(model, str) or not self.prompts.has_tokenizer(model):
            return await self._forward(request, "/v1/chat/completions", body)
        try:
            ids = await asyncio.to_thread(self.prompts.chat_ids, model, body.get("messages"))
        except PromptError as e:
            return error(400, str(e))
        upstream = completions_request(body, ids)
        if body.get("stream") is True:
            return await self._stream_as_chat(request, upstream)
        status, answer, headers = await self._post("/v1/completions", upstream)
        if status != 200 or not isinstance(answer, dict):
            return web.Response(status=status, body=json.dumps(answer), headers=headers)
        return web.json_response(chat_answer(answer))

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        if self.backend is None or self.prompts is None:
            return self._preparing(body.get("model"))
        model = body.get("model")
        if isinstance(model, str) and self.prompts.has_tokenizer(model):
            try:
                ids = await asyncio.to_thread(
                    self.prompts.completion_ids, model, body.get("prompt")
                )
            except PromptError as e:
                return error(400, str(e))
            body = {**body, "prompt": ids}
        return await self._forward(request, "/v1/completions", body)

    async def passed_through(self, request: web.Request) -> web.StreamResponse:
        if self.backend is None:
            if request.can_read_body:
                await request.read()
            return self._preparing()
        data = await request.read() if request.can_read_body else None
        return await self._relay(request, request.method, request.path_qs, data)

    # -- talking to llama-server ---------------------------------------------------------------
    async def _post(self, path: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        async with self._session().post(f"{self.backend}{path}", json=body) as resp:
            raw = await resp.read()
            headers = passed_headers(resp)
            try:
                return resp.status, json.loads(raw), headers
            except ValueError:
                return resp.status, raw.decode("utf-8", "replace"), headers

    async def _forward(self, request: web.Request, path: str, body: dict) -> web.StreamResponse:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        return await self._relay(request, "POST", path, data, "application/json")

    async def _relay(
        self,
        request: web.Request,
        method: str,
        path: str,
        data: bytes | None,
        content_type: str | None = None,
    ) -> web.StreamResponse:
        """llama-server's answer to this request, as it comes (a stream stays a stream)."""
        headers = {"Content-Type": content_type} if content_type else {}
        async with self._session().request(
            method, f"{self.backend}{path}", data=data, headers=headers
        ) as resp:
            out = web.StreamResponse(
                status=resp.status,
                headers=passed_headers(resp),
            )
            await out.prepare(request)
            async for piece in resp.content.iter_any():
                await out.write(piece)
            await out.write_eof()
            return out

    async def _stream_as_chat(
        self, request: web.Request, upstream: dict[str, Any]
    ) -> web.StreamResponse:
        async with self._session().post(f"{self.backend}/v1/completions", json=upstream) as resp:
            if resp.status != 200:
                return web.Response(
                    status=resp.status,
                    body=await resp.read(),
                    headers=passed_headers(resp),
                )
            out = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await out.prepare(request)
            first = True
            async for line in resp.content:
                if not line.startswith(b"data:"):
                    continue
                data = line[len(b"data:") :].strip()
                if data == b"[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    chunk = None
                if not isinstance(chunk, dict) or "error" in (chunk or {}):
                    await out.write(data and b"data: " + data + b"\n\n")
                    continue
                await out.write(sse.event(chat_chunk(chunk, first)))
                first = False
            await out.write(sse.DONE)
            await out.write_eof()
            return out
