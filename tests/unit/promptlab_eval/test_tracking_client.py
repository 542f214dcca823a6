"""The REST calls of promptlab-eval (services/promptlab-eval/promptlab_eval/tracking_client.py)
against a real `mlflow server` run as the tracking image runs it (tests/tracking_server.py); the
whole command, on the stack's models, is in the compose tests (test_promptlab_eval.py)."""

from __future__ import annotations

import pytest
from constants import QUESTION
from gateway_server import gateway_app
from loopback import serving
from reference import greedy_chat
from tracking_server import tracking_server

from promptlab_eval.settings import EvalSettings
from promptlab_eval.tracking_client import TrackingClient, TrackingError


def test_runs_record_the_mlflow_version_of_the_server_as_the_uis_do(tmp_path):
    import mlflow

    with tracking_server(tmp_path) as (_, url):
        client = TrackingClient(url, EvalSettings(), timeout_s=10)
        assert client.server_version() == mlflow.__version__
        experiment_id = client.experiment_id("バージョン")
        assert client.experiment_id("バージョン") == experiment_id  # found, not created twice


def test_answers_stream_through_the_uis_proxy_with_their_time_to_first_token(
    tmp_path, model_server, reference_model
):
    """A real tracking server whose proxy calls the gateway as served, on the tiny model."""
    with (
        serving(gateway_app(model_server)) as gateway_url,
        tracking_server(tmp_path, MLFLOW_DEPLOYMENTS_TARGET=gateway_url) as (_, url),
    ):
        client = TrackingClient(url, EvalSettings(), timeout_s=60)
        messages = [{"role": "user", "content": QUESTION}]
        chat = client.invoke("tiny-ja", {"messages": messages, "temperature": 0, "max_tokens": 8})
        completion = client.invoke(
            "tiny-ja-completions", {"prompt": "東京は", "temperature": 0, "max_tokens": 6}
        )
        with pytest.raises(TrackingError, match="HTTP 400: .*context is 512 tokens"):
            client.invoke("tiny-ja", {"messages": [{"role": "user", "content": "りんご " * 600}]})
    assert chat.text == greedy_chat(*reference_model, messages, 8)
    assert chat.usage["completion_tokens"] == 8
    assert 0 < chat.first_token_ms < chat.latency_ms
    assert completion.text and completion.usage["completion_tokens"] == 6
    assert 0 < completion.first_token_ms < completion.latency_ms
