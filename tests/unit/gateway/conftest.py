"""The gateway's fixtures: MLflow's real gateway app on the config our renderer produces, in front
of the model server's app (MLflow's scoring server and our stream route) serving the tiny model.

No Docker: the scoring server runs with uvicorn on a loopback port in this process, and the
gateway app is built from the rendered config exactly as `mlflow gateway start` builds it.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from loopback import serving
from model_server import model_server_app


@pytest.fixture(scope="session")
def model_server(pyfunc_dir):
    """The model server's app as the container serves it (scoring_app.create_app)."""
    with serving(model_server_app(pyfunc_dir)) as url:
        yield url


@contextmanager
def _gateway_for(url: str):
    """MLflow's gateway app on our rendered config for the pyfunc model server at `url`, wrapped
    as the container serves it (gateway/app.py), on one event loop; its pool closed after."""
    from mlflow.gateway.app import create_app_from_config

    from gateway.answer_stream import StreamedAnswers
    from gateway.engine_http import close_pooled_session
    from gateway.render_config import BACKEND_URLS, render, validate
    from gateway.settings import GatewaySettings

    settings = GatewaySettings(model_id="/models/tiny-ja", model_backend="pyfunc")
    config = validate(render(settings, {**BACKEND_URLS, "pyfunc": url}))
    with TestClient(StreamedAnswers(create_app_from_config(config))) as client:
        yield client
        client.portal.call(close_pooled_session)


@pytest.fixture(scope="session")
def gateway_for():
    """`with gateway_for(url) as client:` a gateway for the model server at `url`."""
    return _gateway_for


@pytest.fixture(scope="module")
def gateway(model_server):
    with _gateway_for(model_server) as client:
        yield client
