"""The REST calls of promptlab-eval (services/promptlab-eval/promptlab_eval/tracking_client.py)
against a real `mlflow server` run as the tracking image runs it (tests/tracking_server.py); the
whole command, on the stack's models, is in the compose tests (test_promptlab_eval.py)."""

from __future__ import annotations

from tracking_server import tracking_server

from promptlab_eval.settings import EvalSettings
from promptlab_eval.tracking_client import TrackingClient


def test_runs_record_the_mlflow_version_of_the_server_as_the_uis_do(tmp_path):
    import mlflow

    with tracking_server(tmp_path) as (_, url):
        client = TrackingClient(url, EvalSettings(), timeout_s=10)
        assert client.server_version() == mlflow.__version__
        experiment_id = client.experiment_id("バージョン")
        assert client.experiment_id("バージョン") == experiment_id  # found, not created twice
