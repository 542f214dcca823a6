"""A chat request as llama-server's OpenAI completions request on token ids, and its answer (whole
or streamed) back as OpenAI's chat answer.

Only what both routes mean the same way is passed on; the sampling and stop rules are
llama-server's own (max_tokens, temperature, top_p, stop, seed and the penalties).
"""

from __future__ import annotations

import time
from typing import Any

# What a chat request says that means the same in a completions request.
PASSED_ON = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "stream",
    "stream_options",
)


def completions_request(chat: dict[str, Any], ids: list[int]) -> dict[str, Any]:
    body = {k: chat[k] for k in PASSED_ON if k in chat}
    if "max_completion_tokens" in chat and "max_tokens" not in chat:
        body["max_tokens"] = chat["max_completion_tokens"]
    return {**body, "model": chat["model"], "prompt": ids}


def chat_answer(completion: dict[str, Any]) -> dict[str, Any]:
    """llama-server's whole completion as a chat completion."""
    return {
        "id": completion.get("id", ""),
        "object": "chat.completion",
        "created": completion.get("created", int(time.time())),
        "model": completion.get("model", ""),
        "choices": [
            {
                "index": choice.get("index", 0),
                "message": {"role": "assistant", "content": choice.get("text", "")},
                "finish_reason": choice.get("finish_reason"),
            }
            for choice in completion.get("choices", [])
        ],
        "usage": completion.get("usage"),
    }


def chat_chunk(chunk: dict[str, Any], first: bool) -> dict[str, Any]:
    """One streamed completion chunk as a chat chunk; the first carries the role."""
    choices = []
    for choice in chunk.get("choices", []):
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if choice.get("text"):
            delta["content"] = choice["text"]
        choices.append(
            {
                "index": choice.get("index", 0),
                "delta": delta,
                "finish_reason": choice.get("finish_reason"),
            }
        )
    answer = {
        "id": chunk.get("id", ""),
        "object": "chat.completion.chunk",
        "created": chunk.get("created", int(time.time())),
        "model": chunk.get("model", ""),
        "choices": choices,
    }
    if chunk.get("usage") is not None:
        answer["usage"] = chunk["usage"]
    return answer
