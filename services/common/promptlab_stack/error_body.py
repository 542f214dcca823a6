"""The readable message of an HTTP error body, for messages that reach the browser.

The bodies the stack relays: MLflow's scoring server says `{"error_code", "message",
"stack_trace"}`; OpenAI-compatible servers `{"error": {"message": ...}}`, `{"error": "..."}` or
`{"detail": ...}`; FastAPI (the gateway) `{"detail": "..."}`, a list of request validation errors
`{"detail": [{"loc": [...], "msg": ...}]}`, or an engine's own body nested inside (`{"detail":
{"error": {"message": ...}}}`). Only the message is passed on: a stack trace beside it, or an
object of any other shape (which may hold internal URLs or an exception's text), is not.
"""

from __future__ import annotations

from typing import Any

# Where a message may be, in this order; the first that holds one wins.
MESSAGE_KEYS = ("message", "detail", "error")


def readable_message(data: Any) -> str:
    """The message in a decoded JSON error body, "" when it holds none."""
    if isinstance(data, dict):
        for key in MESSAGE_KEYS:
            message = readable_message(data.get(key))
            if message:
                return message
        return ""
    if isinstance(data, list):  # request validation errors: [{"loc": [...], "msg": ...}]
        return "; ".join(filter(None, (_validation_error(e) for e in data)))
    return "" if data is None else str(data)


def _validation_error(error: Any) -> str:
    if isinstance(error, dict) and "msg" in error:
        loc = ".".join(str(p) for p in error.get("loc", []) if p != "body")
        return f"{loc}: {error['msg']}" if loc else str(error["msg"])
    return readable_message(error)
