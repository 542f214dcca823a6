"""`hf-pyfunc`: an MLflow gateway provider for our pyfunc model server.

MLflow's built-in `mlflow-model-serving` provider forwards only the first chat message's text and
always reports null token usage (the Prompt Engineering UI then shows NaN). This provider sends
the whole request in MLflow's unified LLM shape (`{"messages": [...], "temperature": ...}` or
`{"prompt": ...}`) to `/invocations`, and the model answers in OpenAI's shape with real usage.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from typing import Any

import pydantic
from fastapi.encoders import jsonable_encoder

from mlflow.environment_variables import MLFLOW_GATEWAY_ROUTE_TIMEOUT_SECONDS
from mlflow.gateway.config import ConfigModel, EndpointConfig
from mlflow.gateway.exceptions import AIGatewayException
from mlflow.gateway.providers.base import BaseProvider
from mlflow.gateway.schemas import chat, completions
from promptlab_stack.timings import GATEWAY_POOL_KEEPALIVE_S

# Request fields the model server understands; the rest (n, stream, ...) is not forwarded.
FORWARDED_PARAMS = ("temperature", "max_tokens", "top_p", "stop")

# One pool of keep-alive connections per event loop (a gateway worker has one). MLflow's
# `send_request` opens a new session, connector and TCP connection for every call instead.
_sessions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _pooled_session():
    import aiohttp

    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        session = aiohttp.ClientSession(
            # Shorter than the model server keeps idle connections (promptlab_stack/timings.py).
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=GATEWAY_POOL_KEEPALIVE_S),
        )
        _sessions[loop] = session
    return session


async def close_pooled_session() -> None:
    """Close the running event loop's pool (for embedders and tests; a gateway worker keeps its
    pool until the process exits)."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()


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
        self.invocations_url = f"{self.server_url.rstrip('/')}/invocations"

    async def _invoke(self, body: dict[str, Any]) -> dict[str, Any]:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=MLFLOW_GATEWAY_ROUTE_TIMEOUT_SECONDS.get())
        try:
            async with _pooled_session().post(self.invocations_url, json=body,
                                              timeout=timeout) as resp:
                raw = await resp.read()
                status = resp.status
        except (asyncio.TimeoutError, TimeoutError) as e:
            raise AIGatewayException(
                status_code=504,
                detail=f"The model server at {self.server_url} did not answer in time",
            ) from e
        except (aiohttp.ClientConnectionError, OSError) as e:
            raise AIGatewayException(
                status_code=503,
                detail=f"The model server at {self.server_url} is unreachable "
                f"(still starting, or down): {e}",
            ) from e
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if status != 200:
            # The scoring server's errors are {"error_code": ..., "message": ...}: keep the
            # status (400 for bad input) and pass the human-readable message on.
            detail = answer.get("message", answer) if isinstance(answer, dict) else None
            text = raw.decode("utf-8", "replace").strip()
            raise AIGatewayException(status_code=status, detail=str(detail or text or f"HTTP {status}"))
        if not isinstance(answer, dict):
            raise AIGatewayException(502, f"Unexpected answer from the model server: {raw[:200]!r}")
        return answer

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
