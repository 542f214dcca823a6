"""Reading a stream in pieces of any size (an HTTP client's chunks) gives the same events."""

from __future__ import annotations

import asyncio

import pytest

from promptlab_stack.sse import (
    DONE,
    StreamError,
    error_event,
    event,
    events,
    events_of_pieces,
    whole_events,
)


async def collect(pieces):
    async def source():
        for piece in pieces:
            yield piece

    return [e async for e in events_of_pieces(source())]


def test_events_split_anywhere_read_the_same_as_whole_lines():
    stream = event({"a": "りんご"}) + b": a comment\n\n" + event({"b": 2}) + DONE + event({"c": 3})
    whole = list(events(stream.splitlines()))
    assert whole == [{"a": "りんご"}, {"b": 2}]
    for size in (1, 2, 3, 7, len(stream)):
        assert (
            asyncio.run(collect([stream[i : i + size] for i in range(0, len(stream), size)]))
            == whole
        )


def test_an_error_event_in_pieces_raises_with_its_status():
    with pytest.raises(StreamError) as e:
        asyncio.run(collect([error_event(503, "loading")[:5], error_event(503, "loading")[5:]]))
    assert e.value.status == 503 and e.value.message == "loading"


def test_whole_events_keep_a_half_written_event_back():
    stream = event({"a": "りんご"}) + b'data: {"b": 2}\r\n\r\n' + event({"c": 3})
    for cut in range(len(stream) + 1):
        whole, rest = whole_events(stream[:cut])
        assert whole + rest == stream[:cut]
        assert whole in (
            b"",
            stream[: len(event({"a": "りんご"}))],
            stream[: stream.rfind(b"data")],
            stream,
        )
        # What is passed on always ends where an event ends: another can follow on a fresh line.
        assert not whole or whole.endswith((b"\n\n", b"\r\n\r\n"))
    assert whole_events(stream) == (stream, b"")
