"""The gateway app the container serves: MLflow's gateway app on our rendered config
(`MLFLOW_GATEWAY_CONFIG`, as `mlflow gateway start` runs it), with streamed chat requests answered
whole (answer_stream.py says why) and `Retry-After` on its 429s (retry_after.py)."""

from __future__ import annotations

from mlflow.gateway.app import create_app_from_env

from local_llm_gateway.answer_stream import StreamWholeAnswers
from local_llm_gateway.retry_after import RetryAfterOn429


def create_app():
    return RetryAfterOn429(StreamWholeAnswers(create_app_from_env()))
