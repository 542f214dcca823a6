"""Server-sent events in OpenAI's shape, as every hop of the stack writes and reads them: the model
server's stream route, the gateway, the UI's gateway proxy, `promptlab-eval` and the benchmark."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
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


def whole_events(pending: bytes) -> tuple[bytes, bytes]:
    """`pending` split after its last whole event (a blank line ends one): what can be passed on
    as it is, and the start of the next event, kept until the rest of it comes. A hop that passes
    a stream on in whole events can always end it with an event of its own on a fresh line."""
    ends = [
        at + len(blank) for blank in (b"\n\n", b"\r\n\r\n") if (at := pending.rfind(blank)) >= 0
    ]
    end = max(ends, default=0)
    return pending[:end], pending[end:]


_DONE = object()


def _event_of(line: bytes):
    """The JSON object one line carries; None for a line that carries none (a blank line between
    events, a comment, an event name); _DONE for `[DONE]`."""
    if not line.startswith(b"data:"):
        return None
    data = line[len(b"data:") :].strip()
    if data == b"[DONE]":
        return _DONE
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
    return found


def events(lines: Iterable[bytes]) -> Iterator[dict]:
    """Each event's JSON object from the lines of a stream, as they come, until `[DONE]` or the
    end. Raises StreamError for an `error` event, ValueError for data that is not a JSON object."""
    for line in lines:
        found = _event_of(line)
        if found is _DONE:
            return
        if found is not None:
            yield found


def _complete(lines: list[bytes]) -> tuple[list[dict], bool]:
    """The events of whole `lines`, and whether they reached `[DONE]`."""
    found: list[dict] = []
    for line in lines:
        event_of = _event_of(line)
        if event_of is _DONE:
            return found, True
        if event_of is not None:
            found.append(event_of)
    return found, False


async def events_of_pieces(pieces: AsyncIterable[bytes]) -> AsyncIterator[dict]:
    """`events` for a stream read in pieces of any size (an HTTP client's chunks), as they come."""
    pending = b""
    async for piece in pieces:
        pending += piece
        *lines, pending = pending.split(b"\n")
        found, done = _complete(lines)
        for each in found:
            yield each
        if done:
            return
    for each in _complete([pending])[0]:
        yield each
