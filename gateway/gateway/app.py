"""The gateway app the container serves: MLflow's gateway app on our rendered config
(`MLFLOW_GATEWAY_CONFIG`, as `mlflow gateway start` runs it), with streamed answers that keep
their errors' status (answer_stream.py), `Retry-After` on its 429s (retry_after.py), and request
bodies bounded by MAX_REQUEST_MB (promptlab_stack/body_limit.py)."""

from __future__ import annotations

from mlflow.gateway.app import create_app_from_env

from gateway.answer_stream import StreamedAnswers
from gateway.engine_http import close_pooled_session
from gateway.retry_after import RetryAfterOn429
from gateway.settings import GatewaySettings
from promptlab_stack.body_limit import BodyLimit


def create_app(settings: GatewaySettings | None = None):
    # Each gunicorn worker reads the same environment start.py validated.
    settings = settings or GatewaySettings.from_env()
    return as_served(create_app_from_env(), settings)


def as_served(gateway, settings: GatewaySettings):
    """MLflow's gateway app `gateway`, wrapped as the container serves it."""
    # The worker's pooled connections to the engines are closed when it stops.
    gateway.router.on_shutdown.append(close_pooled_session)
    app = RetryAfterOn429(StreamedAnswers(gateway))
    return BodyLimit(app, settings.max_request_bytes, "the MLflow AI Gateway")
