"""What the gateway says when an engine refuses a request (gateway/engine_http.py): the engine's
own message where its error body has one, else which server answered which status."""

from __future__ import annotations

import pytest

from gateway.engine_http import error_message

SERVER = "The model server (service pyfunc)"


@pytest.mark.parametrize(
    "answer, message",
    [
        # MLflow's scoring server: the stack trace stays out.
        (
            {
                "error_code": "BAD_REQUEST",
                "message": "the context is 512 tokens",
                "stack_trace": "Traceback ...",
            },
            "the context is 512 tokens",
        ),
        # OpenAI-compatible servers (vLLM, SGLang, llama.cpp; TGI and Ollama; FastAPI).
        (
            {"error": {"message": "prompt too long", "type": "invalid_request_error"}},
            "prompt too long",
        ),
        ({"error": "Input validation error", "error_type": "validation"}, "Input validation error"),
        ({"detail": "Not Found"}, "Not Found"),
        ({"message": "", "error": "busy"}, "busy"),
        # Nothing readable: which server answered which status, nothing else.
        ({"error": {"type": "internal"}}, f"{SERVER} answered HTTP 500"),
        ({"trace": "http://pyfunc:8080/invocations failed"}, f"{SERVER} answered HTTP 500"),
        (None, f"{SERVER} answered HTTP 500"),  # not JSON: an HTML error page, a stack trace
        (["not", "an", "object"], f"{SERVER} answered HTTP 500"),
        ("a JSON string", f"{SERVER} answered HTTP 500"),
    ],
)
def test_an_engines_error_keeps_its_message_and_nothing_else(answer, message):
    assert error_message(answer, SERVER, 500) == message
