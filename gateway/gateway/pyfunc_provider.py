"""`pyfunc`: an MLflow gateway provider for our pyfunc model server.

MLflow's built-in `mlflow-model-serving` provider forwards only the first chat message's text and
always reports null token usage (the Prompt Engineering UI then shows NaN). This provider sends
the whole request in MLflow's unified LLM shape (`{"messages": [...], "temperature": ...}` or
`{"prompt": ...}`) to `/invocations`, with `"model"` naming which of the server's models answers
(the endpoint's model name), and the model answers in OpenAI's shape with real usage. A streamed
request goes to `/stream`, which answers as the tokens are generated.
"""

from __future__ import annotations

import logging
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

logger = logging.getLogger(__name__)


class PyfuncConfig(ConfigModel):
    model_server_url: str

    # pydantic warns about fields starting with "model_" unless this namespace is freed.
    model_config = pydantic.ConfigDict(protected_namespaces=())


class PyfuncProvider(BaseProvider):
    DISPLAY_NAME = "Hugging Face pyfunc"
    CONFIG_TYPE = PyfuncConfig
    SUPPORTED_ROUTE_TYPES = ("llm/v1/chat", "llm/v1/completions")

    def __init__(self, config: EndpointConfig, enable_tracing: bool = False) -> None:
        super().__init__(config, enable_tracing=enable_tracing)
        if not isinstance(config.model.config, PyfuncConfig):
            raise TypeError(f"Invalid config type {config.model.config}")
        self.server_url = config.model.config.model_server_url
        self.invocations_url = f"{self.server_url.rstrip('/')}/invocations"
        self.stream_url = f"{self.server_url.rstrip('/')}/stream"
        # Named by its compose service (the URL's host), never by its URL: messages reach the
        # browser.
        self.server = f"The model server (service {urlparse(self.server_url).hostname})"
        self.state_path = STATE_PATH  # the model-state volume, read-only here

    def _with_model(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "model": self.config.model.name} if self.config.model.name else body

    def _stopped(self, e: AIGatewayException) -> AIGatewayException:
        return with_stop_reason(e, self.config.model.name or None, self.state_path)

    async def _invoke(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await call("POST", self.invocations_url, self.server, self._with_model(body))
        except AIGatewayException as e:
            raise self._stopped(e) from e

    async def _stream(self, schema, body: dict[str, Any]) -> AsyncIterator[Any]:
        """The model server's `/stream` (model/pyfunc_server/stream_route.py), chunk by chunk."""
        try:
            async for event in stream_events(self.stream_url, self.server, self._with_model(body)):
                yield self._answer(schema, event)
        except AIGatewayException as e:
            raise self._stopped(e) from e

    def _answer(self, schema, resp: dict[str, Any]):
        try:
            return schema(**{**resp, "model": self.config.model.name or resp["model"]})
        except (pydantic.ValidationError, KeyError, TypeError) as e:
            logger.warning("unexpected answer from %s: %s", self.invocations_url, e)
            raise AIGatewayException(502, f"{self.server} answered in an unexpected shape") from e

    async def _chat(self, payload: chat.RequestPayload) -> chat.ResponsePayload:
        return self._answer(chat.ResponsePayload, await self._invoke(chat_body(payload)))

    async def _completions(
        self, payload: completions.RequestPayload
    ) -> completions.ResponsePayload:
        return self._answer(
            completions.ResponsePayload, await self._invoke(completions_body(payload))
        )

    # MLflow declares these as coroutines (its base raises 501); its own providers, like these,
    # are async generators, which its gateway app iterates.
    async def _chat_stream(  # type: ignore[override]
        self, payload: chat.RequestPayload
    ) -> AsyncIterable[chat.StreamResponsePayload]:
        async for chunk in self._stream(chat.StreamResponsePayload, chat_body(payload)):
            yield chunk

    async def _completions_stream(  # type: ignore[override]
        self, payload: completions.RequestPayload
    ) -> AsyncIterable[completions.StreamResponsePayload]:
        async for chunk in self._stream(
            completions.StreamResponsePayload, completions_body(payload)
        ):
            yield chunk
