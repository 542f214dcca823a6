"""The gateway app as its container serves it (gateway/app.py), on the config our renderer makes for
a pyfunc model server, for tests that run it in process."""

from __future__ import annotations


def gateway_app(model_server_url: str):
    """MLflow's gateway app with our providers and middleware, for the tiny model's endpoints on
    the model server at `model_server_url`."""
    from mlflow.gateway.app import create_app_from_config

    from gateway.app import as_served
    from gateway.render_config import BACKEND_URLS, render, validate
    from gateway.settings import GatewaySettings

    settings = GatewaySettings(model_id="/models/tiny-ja", model_backend="pyfunc")
    config = validate(render(settings, {**BACKEND_URLS, "pyfunc": model_server_url}))
    return as_served(create_app_from_config(config), settings)
