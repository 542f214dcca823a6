"""`hf-pyfunc`: an MLflow gateway provider for our pyfunc model server.

MLflow's built-in `mlflow-model-serving` provider forwards only the first chat message's text and
always reports null token usage (the Prompt Engineering UI then shows NaN). This provider sends
the whole request in MLflow's unified LLM shape (`{"messages": [...], "temperature": ...}` or
`{"prompt": ...}`) to `/invocations`, and the model answers in OpenAI's shape with real usage.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pydantic
from fastapi import HTTPException
from fastapi.encoders import jsonable_encoder

from mlflow.gateway.config import ConfigModel, EndpointConfig
from mlflow.gateway.exceptions import AIGatewayException
from mlflow.gateway.providers.base import BaseProvider
from mlflow.gateway.providers.utils import send_request
from mlflow.gateway.schemas import chat, completions

# Request fields the model server understands; the rest (n, stream, ...) is not forwarded.
FORWARDED_PARAMS = ("temperature", "max_tokens", "top_p", "stop")


class HFPyfuncConfig(ConfigModel):
    model_server_url: str

    # pydantic warns about fields starting with "model_" unless this namespace is freed.
    model_config = pydantic.ConfigDict(protected_namespaces=())


def _flatten_content(content: Any) -> Any:
    """OpenAI clients may send content as a list of parts; the model takes plain text."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content


class HFPyfuncProvider(BaseProvider):
    DISPLAY_NAME = "Hugging Face pyfunc"
    CONFIG_TYPE = HFPyfuncConfig
    SUPPORTED_ROUTE_TYPES = ("llm/v1/chat", "llm/v1/completions")

    def __init__(self, config: EndpointConfig, enable_tracing: bool = False) -> None:
        super().__init__(config, enable_tracing=enable_tracing)
        if not isinstance(config.model.config, HFPyfuncConfig):
            raise TypeError(f"Invalid config type {config.model.config}")
        self.server_url = config.model.config.model_server_url

    async def _invoke(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await send_request(
                headers={"Content-Type": "application/json"},
                base_url=self.server_url,
                path="invocations",
                payload=body,
            )
        except HTTPException as e:
            # The scoring server's errors are {"error_code": ..., "message": ...}: keep the
            # status (400 for bad input) and pass the human-readable message on.
            detail = e.detail.get("message", e.detail) if isinstance(e.detail, dict) else e.detail
            raise AIGatewayException(status_code=e.status_code, detail=str(detail)) from e
        except (asyncio.TimeoutError, TimeoutError) as e:
            raise AIGatewayException(
                status_code=504,
                detail=f"The model server at {self.server_url} did not answer in time",
            ) from e
        except OSError as e:  # aiohttp's connection errors are OSErrors
            raise AIGatewayException(
                status_code=503,
                detail=f"The model server at {self.server_url} is unreachable "
                f"(still starting, or down): {e}",
            ) from e

    @staticmethod
    def _params(payload: dict[str, Any]) -> dict[str, Any]:
        return {k: payload[k] for k in FORWARDED_PARAMS if payload.get(k) is not None}

    async def _chat(self, payload: chat.RequestPayload) -> chat.ResponsePayload:
        body = jsonable_encoder(payload, exclude_none=True)
        messages = [
            {"role": m["role"], "content": _flatten_content(m.get("content", ""))}
            for m in body["messages"]
        ]
        resp = await self._invoke({"messages": messages, **self._params(body)})
        try:
            return chat.ResponsePayload(**{**resp, "model": self.config.model.name or resp["model"]})
        except (pydantic.ValidationError, KeyError, TypeError) as e:
            raise AIGatewayException(502, f"Unexpected answer from the model server: {e}") from e

    async def _completions(self, payload: completions.RequestPayload) -> completions.ResponsePayload:
        body = jsonable_encoder(payload, exclude_none=True)
        resp = await self._invoke({"prompt": body["prompt"], **self._params(body)})
        try:
            return completions.ResponsePayload(
                **{**resp, "model": self.config.model.name or resp["model"]}
            )
        except (pydantic.ValidationError, KeyError, TypeError) as e:
            raise AIGatewayException(502, f"Unexpected answer from the model server: {e}") from e
