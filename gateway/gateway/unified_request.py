"""What our providers send an engine for a gateway request: MLflow's unified LLM shape, which is
also OpenAI's, cut down to what the Prompt Engineering UI uses.

Both the pyfunc model server and OpenAI-compatible servers take `{"messages": [...], ...}` for
chat and `{"prompt": ..., ...}` for completions, with the sampling fields below.
"""

from __future__ import annotations

from typing import Any

from fastapi.encoders import jsonable_encoder
from mlflow.gateway.schemas import chat, completions

# Request fields passed on; the rest (n, stream, tools, logprobs, ...) is not forwarded.
FORWARDED_PARAMS = ("temperature", "max_tokens", "top_p", "stop")


def flatten_content(content: Any) -> Any:
    """OpenAI clients may send content as a list of parts; the engines take plain text."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content


def _params(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in FORWARDED_PARAMS if body.get(k) is not None}


def chat_body(payload: chat.RequestPayload) -> dict[str, Any]:
    body = jsonable_encoder(payload, exclude_none=True)
    messages = [
        {"role": m["role"], "content": flatten_content(m.get("content", ""))}
        for m in body["messages"]
    ]
    return {"messages": messages, **_params(body)}


def completions_body(payload: completions.RequestPayload) -> dict[str, Any]:
    body = jsonable_encoder(payload, exclude_none=True)
    return {"prompt": body["prompt"], **_params(body)}
