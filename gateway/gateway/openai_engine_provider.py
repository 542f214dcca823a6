"""`openai-compatible`: an MLflow gateway provider for any server with OpenAI's API under /v1
(vLLM, SGLang, TGI, llama.cpp's server, Ollama, LM Studio, an engine fleet's router).

Named apart from MLflow's own `OpenAICompatibleProvider` (the base of its DeepSeek, xAI, ...
providers), which it is not.

Why not MLflow's `openai` provider: it needs the served model's name when the gateway starts,
sends completions through /chat/completions, and answers a server that is down with a bare 500
or 502. This one asks the server's /v1/models for the model when none is configured (the first
time it is needed, so a server that starts after the gateway is fine), calls /v1/completions for
completions endpoints, and answers a server that is down with a 503 naming it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any
from urllib.parse import urlparse

import pydantic
from mlflow.gateway.config import ConfigModel, EndpointConfig
from mlflow.gateway.exceptions import AIGatewayException
from mlflow.gateway.providers.base import BaseProvider
from mlflow.gateway.schemas import chat, completions

from gateway.engine_http import call, stream_events
from gateway.stopped_engine import with_stop_reason
from gateway.unified_request import chat_body, completions_body
from promptlab_stack.model_state import STATE_PATH
from promptlab_stack.text import drop_incomplete_utf8_tail

logger = logging.getLogger(__name__)


class OpenAIEngineConfig(ConfigModel):
    base_url: str  # ends in /v1
    # The environment variable holding the API key, if the server wants one (never the key itself).
    api_key_env: str = ""
    # The stack's own llamacpp engine: when it has stopped, the model-state file says why.
    local_engine: bool = False


class OpenAIEngineProvider(BaseProvider):
    DISPLAY_NAME = "OpenAI-compatible server"
    CONFIG_TYPE = OpenAIEngineConfig
    SUPPORTED_ROUTE_TYPES = ("llm/v1/chat", "llm/v1/completions")

    def __init__(self, config: EndpointConfig, enable_tracing: bool = False) -> None:
        super().__init__(config, enable_tracing=enable_tracing)
        if not isinstance(config.model.config, OpenAIEngineConfig):
            raise TypeError(f"Invalid config type {config.model.config}")
        self.base_url = config.model.config.base_url.rstrip("/")
        # Named by the endpoint that reaches it, never by its URL: messages reach the browser.
        self.local_engine = config.model.config.local_engine
        self.server = (
            f"The llamacpp engine (service {urlparse(self.base_url).hostname})"
            if self.local_engine
            else f"The OpenAI-compatible server of endpoint {config.name!r}"
        )
        key_env = config.model.config.api_key_env
        key = os.environ.get(key_env, "") if key_env else ""
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._model = config.model.name or None
        self.state_path = STATE_PATH  # the model-state volume, read-only here

    def _stopped(self, e: AIGatewayException) -> AIGatewayException:
        return with_stop_reason(e, self._model, self.state_path) if self.local_engine else e

    async def served_model(self) -> str:
        """The configured model, else the first one the server lists at /v1/models."""
        if self._model is None:
            listing = await call(
                "GET", f"{self.base_url}/models", self.server, headers=self.headers
            )
            models = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)]
            if not models or not models[0]:
                raise AIGatewayException(
                    502,
                    f"{self.server} lists no model at /v1/models; name one as endpoint=url#model",
                )
            self._model = models[0]
        return self._model

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "model": await self.served_model()}
        try:
            return await call("POST", f"{self.base_url}{path}", self.server, body, self.headers)
        except AIGatewayException as e:
            raise self._stopped(e) from e

    def _answer(self, schema, resp: dict[str, Any]):
        # An answer never ends in a broken character, whatever the engine (promptlab_stack/text.py).
        for choice in resp.get("choices") or []:
            if isinstance(choice, dict):
                message = choice.get("message")
                if isinstance(message, dict) and isinstance(message.get("content"), str):
                    message["content"] = drop_incomplete_utf8_tail(message["content"])
                if isinstance(choice.get("text"), str):
                    choice["text"] = drop_incomplete_utf8_tail(choice["text"])
        try:
            return schema(**resp)
        except (pydantic.ValidationError, TypeError) as e:
            logger.warning("unexpected answer from %s: %s", self.base_url, e)
            raise AIGatewayException(502, f"{self.server} answered in an unexpected shape") from e

    async def _chat(self, payload: chat.RequestPayload) -> chat.ResponsePayload:
        return self._answer(
            chat.ResponsePayload, await self._post("/chat/completions", chat_body(payload))
        )

    async def _completions(
        self, payload: completions.RequestPayload
    ) -> completions.ResponsePayload:
        return self._answer(
            completions.ResponsePayload, await self._post("/completions", completions_body(payload))
        )

    async def _stream(self, path: str, schema, body: dict[str, Any]) -> AsyncIterator[Any]:
        """The engine's own stream, chunk by chunk, the token usage asked for in the last one."""
        body = {
            **body,
            "model": await self.served_model(),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        events = stream_events(f"{self.base_url}{path}", self.server, body, self.headers)
        try:
            async for event in events:
                try:
                    yield schema(**event)
                except (pydantic.ValidationError, TypeError) as e:
                    logger.warning("unexpected chunk from %s: %s", self.base_url, e)
                    raise AIGatewayException(
                        502, f"{self.server} streamed an unexpected shape"
                    ) from e
        except AIGatewayException as e:
            raise self._stopped(e) from e

    # MLflow declares these as coroutines (its base raises 501); its own providers, like these,
    # are async generators, which its gateway app iterates.
    async def _chat_stream(  # type: ignore[override]
        self, payload: chat.RequestPayload
    ) -> AsyncIterable[chat.StreamResponsePayload]:
        async for chunk in self._stream(
            "/chat/completions", chat.StreamResponsePayload, chat_body(payload)
        ):
            yield chunk

    async def _completions_stream(  # type: ignore[override]
        self, payload: completions.RequestPayload
    ) -> AsyncIterable[completions.StreamResponsePayload]:
        async for chunk in self._stream(
            "/completions", completions.StreamResponsePayload, completions_body(payload)
        ):
            yield chunk
