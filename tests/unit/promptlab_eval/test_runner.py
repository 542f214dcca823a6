"""One endpoint's run of promptlab-eval (services/promptlab-eval/promptlab_eval/runner.py)."""

from __future__ import annotations

from promptlab_eval.runner import readable_error


def test_a_failed_rows_error_keeps_the_models_own_message():
    wrapped = (
        "HTTP 400: Failed to predict data '{'messages': [" + "長い" * 400 + "]}'. \n"
        "Error: the prompt is 801 tokens long, but the model's context is 512 tokens"
    )
    assert (
        readable_error(wrapped)
        == "HTTP 400: the prompt is 801 tokens long, but the model's context is 512 tokens"
    )
    assert (
        readable_error("HTTP 503: x" * 100).endswith("…") and len(readable_error("y" * 900)) == 500
    )
