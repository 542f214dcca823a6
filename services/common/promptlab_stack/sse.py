"""Server-sent events in OpenAI's shape, as every hop of the stack writes and reads them: the model
server's stream route, the gateway, the UI's gateway proxy, `promptlab-eval` and the benchmark."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

DONE = b"data: [DONE]\n\n"


class StreamError(Exception):
    """A stream ended with an `error` event: its status (502 when it gives none) and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def event(data: Any) -> bytes:
    """One event: a JSON value, or a string (`[DONE]`) as it is."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


def error_event(status: int, message: str) -> bytes:
    """The event that ends a stream that broke off after its first piece (OpenAI's `error`)."""
    return event({"error": {"message": message, "code": status}})


def events(lines: Iterable[bytes]) -> Iterator[dict]:
    """Each event's JSON object from the lines of a stream, as they come, until `[DONE]` or the
    end. Raises StreamError for an `error` event, ValueError for data that is not a JSON object."""
    for line in lines:
        if not line.startswith(b"data:"):
            continue  # a blank line between events, a comment, an event name
        data = line[len(b"data:") :].strip()
        if data == b"[DONE]":
            return
        found = json.loads(data)
        if not isinstance(found, dict):
            raise ValueError("the stream carried something other than a JSON object")
        if "error" in found:
            error = found["error"] if isinstance(found["error"], dict) else {}
            code = error.get("code")
            raise StreamError(
                code if isinstance(code, int) and 400 <= code < 600 else 502,
                str(error.get("message", found["error"])),
            )
        yield found
