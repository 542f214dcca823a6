"""The gateway's fixtures: MLflow's real gateway app on the config our renderer produces, in front
of the model server's app (MLflow's scoring server and our stream route) serving the tiny model
(tests/conftest.py's `model_server`).

No Docker: the scoring server runs with uvicorn on a loopback port in this process, and the
gateway app is built from the rendered config exactly as `mlflow gateway start` builds it.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from gateway_server import gateway_app


@contextmanager
def _gateway_for(url: str):
    """The gateway as the container serves it (tests/gateway_server.py) for the pyfunc model server
    at `url`, on one event loop; its lifespan closes its pooled connections at the end."""
    with TestClient(gateway_app(url)) as client:
        yield client


@pytest.fixture(scope="session")
def gateway_for():
    """`with gateway_for(url) as client:` a gateway for the model server at `url`."""
    return _gateway_for


@pytest.fixture(scope="module")
def gateway(model_server):
    with _gateway_for(model_server) as client:
        yield client
