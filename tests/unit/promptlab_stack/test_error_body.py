"""The readable message of an HTTP error body (promptlab_stack/error_body.py)."""

from __future__ import annotations

import pytest

from promptlab_stack.error_body import readable_message


@pytest.mark.parametrize(
    "data, message",
    [
        # MLflow's scoring server, OpenAI-compatible servers, FastAPI.
        (
            {"error_code": "BAD_REQUEST", "message": "too long", "stack_trace": "Traceback ..."},
            "too long",
        ),
        ({"error": {"message": "prompt too long", "type": "invalid"}}, "prompt too long"),
        ({"error": "busy"}, "busy"),
        ({"detail": "Not Found"}, "Not Found"),
        # An engine's body nested in the gateway's.
        ({"detail": {"detail": "Server is pinned to m"}}, "Server is pinned to m"),
        (
            {"detail": {"error": {"message": "prompt too long", "type": "invalid"}}},
            "prompt too long",
        ),
        # Request validation errors, without the "body" prefix of their location.
        (
            {
                "detail": [
                    {"loc": ["body", "temperature"], "msg": "too big"},
                    {"loc": ["body"], "msg": "bad"},
                ]
            },
            "temperature: too big; bad",
        ),
        # The first key that holds a message wins: message, then detail, then error.
        ({"message": "", "error": "busy"}, "busy"),
        ({"detail": "d", "error": "e"}, "d"),
        (["a", "b"], "a; b"),
        ("plain", "plain"),
        (404, "404"),
        # No message: nothing (the caller says which server answered which status).
        ({"error": {"type": "internal"}}, ""),
        ({"trace": "http://internal:8080/ failed"}, ""),
        ({"detail": None}, ""),
        (None, ""),
    ],
)
def test_the_message_and_nothing_else_is_read(data, message):
    assert readable_message(data) == message
