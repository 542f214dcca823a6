"""`pyfunc`: an MLflow gateway provider for our pyfunc model server.

MLflow's built-in `mlflow-model-serving` provider forwards only the first chat message's text and
always reports null token usage (the Prompt Engineering UI then shows NaN). This provider sends
the whole request in MLflow's unified LLM shape (`{"messages": [...], "temperature": ...}` or
`{"prompt": ...}`) to `/invocations`, with `"model"` naming which of the server's models answers
(the endpoint's model name), and the model answers in OpenAI's shape with real usage.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlparse

import pydantic
from mlflow.gateway.config import ConfigModel, EndpointConfig
from mlflow.gateway.exceptions import AIGatewayException
from mlflow.gateway.providers.base import BaseProvider
from mlflow.gateway.schemas import chat, completions

from gateway.engine_http import call
from gateway.unified_request import chat_body, completions_body
from promptlab_stack.model_state import STATE_PATH, failure_of

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
        # Named by its compose service (the URL's host), never by its URL: messages reach the
        # browser.
        self.server = f"The model server (service {urlparse(self.server_url).hostname})"
        self.state_path = STATE_PATH  # the model-state volume, read-only here

    async def _invoke(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.config.model.name:
            body = {**body, "model": self.config.model.name}
        try:
            return await call("POST", self.invocations_url, self.server, body)
        except AIGatewayException as e:
            # A model server that stopped on an error waiting cannot fix left the reason behind.
            failure = (
                failure_of(self.config.model.name or None, self.state_path)
                if e.status_code == 503
                else None
            )
            if failure:
                raise AIGatewayException(
                    503,
                    f"{failure} (the model server has stopped; after the fix, "
                    "run docker compose up -d again)",
                ) from e
            raise

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
