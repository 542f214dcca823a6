"""`hf-pyfunc`: an MLflow gateway provider for our pyfunc model server.

MLflow's built-in `mlflow-model-serving` provider forwards only the first chat message's text and
always reports null token usage (the Prompt Engineering UI then shows NaN). This provider sends
the whole request in MLflow's unified LLM shape (`{"messages": [...], "temperature": ...}` or
`{"prompt": ...}`) to `/invocations`, with `"model"` naming which of the server's models answers
(the endpoint's model name), and the model answers in OpenAI's shape with real usage.
"""

from __future__ import annotations

from typing import Any

import pydantic
from mlflow.gateway.config import ConfigModel, EndpointConfig
from mlflow.gateway.exceptions import AIGatewayException
from mlflow.gateway.providers.base import BaseProvider
from mlflow.gateway.schemas import chat, completions

from local_llm_gateway.engine_http import call
from local_llm_gateway.unified_request import chat_body, completions_body

class HFPyfuncConfig(ConfigModel):
    model_server_url: str

    # pydantic warns about fields starting with "model_" unless this namespace is freed.
    model_config = pydantic.ConfigDict(protected_namespaces=())


class HFPyfuncProvider(BaseProvider):
    DISPLAY_NAME = "Hugging Face pyfunc"
    CONFIG_TYPE = HFPyfuncConfig
    SUPPORTED_ROUTE_TYPES = ("llm/v1/chat", "llm/v1/completions")

    def __init__(self, config: EndpointConfig, enable_tracing: bool = False) -> None:
        super().__init__(config, enable_tracing=enable_tracing)
        if not isinstance(config.model.config, HFPyfuncConfig):
            raise TypeError(f"Invalid config type {config.model.config}")
        self.server_url = config.model.config.model_server_url
        self.invocations_url = f"{self.server_url.rstrip('/')}/invocations"

    async def _invoke(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.config.model.name:
            body = {**body, "model": self.config.model.name}
        return await call("POST", self.invocations_url, f"The model server at {self.server_url}", body)

    def _answer(self, schema, resp: dict[str, Any]):
        try:
            return schema(**{**resp, "model": self.config.model.name or resp["model"]})
        except (pydantic.ValidationError, KeyError, TypeError) as e:
            raise AIGatewayException(502, f"Unexpected answer from the model server: {e}") from e

    async def _chat(self, payload: chat.RequestPayload) -> chat.ResponsePayload:
        return self._answer(chat.ResponsePayload, await self._invoke(chat_body(payload)))

    async def _completions(self, payload: completions.RequestPayload) -> completions.ResponsePayload:
        return self._answer(completions.ResponsePayload, await self._invoke(completions_body(payload)))
