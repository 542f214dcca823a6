"""``mlflow server --app-name promptlab``: MLflow's server app with our two changes wired in.

- Prompt Engineering runs get readable UTF-8 artifacts (promptlab_artifacts.py, mlflow#14785).
- The UI's gateway proxy keeps the gateway's status and message, on the event loop
  (gateway_proxy.py).
- The built-in AI Gateway may call the stack's own gateway, and no other private upstream
  (the endpoint-sync service registers the endpoints, services/endpoint-sync).
- The blind comparison page, /promptlab/arena (tracking/arena), beside the UI.
- With an admin password set, MLflow's own basic auth guards every route, ours included.
"""

from __future__ import annotations

import logging

from tracking.arena.api import install_arena
from tracking.gateway_proxy import GatewayClient, install_gateway_proxy
from tracking.mlflow_compat import (
    fastapi_basic_auth,
    served_by_uvicorn,
    trust_stack_gateway,
)
from tracking.promptlab_artifacts import wrap_promptlab_views
from tracking.settings import TrackingSettings

_logger = logging.getLogger(__name__)


def create_app(app=None):
    """App factory for the ``mlflow.app`` entry point ``promptlab``.

    Wraps the create-promptlab-run view(s) of MLflow's Flask ``app`` (``mlflow.server.app`` by
    default) and, like ``mlflow.server.auth.create_app``, returns the FastAPI app when ``mlflow
    server`` runs under uvicorn (its default, and the stack's), with our gateway proxy in it, and
    the Flask app otherwise. Each worker process builds it once, with the settings start.py
    already checked.
    """
    if app is None:
        from mlflow.server import app

    settings = TrackingSettings.from_env()
    wrap_promptlab_views(app)
    if settings.mlflow_deployments_target:
        trust_stack_gateway(settings.gateway_api_base)
    authenticate = None
    if settings.basic_auth:
        # `--app-name` takes one app, so basic auth is chained here: MLflow's own auth factory
        # adds its login checks to the same Flask app and returns the app the server runs.
        from mlflow.server.auth import create_app as create_basic_auth_app

        served = create_basic_auth_app(app)
        authenticate = fastapi_basic_auth()
    elif served_by_uvicorn():
        from mlflow.server.fastapi_app import create_fastapi_app

        served = create_fastapi_app(app)
    else:
        served = app
    if served_by_uvicorn():
        client = GatewayClient(settings.ui_proxy_timeout_s)
        install_gateway_proxy(
            served,
            app,
            target=settings.mlflow_deployments_target,
            timeout_s=settings.ui_proxy_timeout_s,
            authenticate=authenticate,
            max_body_bytes=settings.max_request_bytes,
            client=client,
        )
        install_arena(
            served,
            client,
            target=settings.mlflow_deployments_target,
            authenticate=authenticate,
            max_body_bytes=settings.max_request_bytes,
        )
    else:
        _logger.info(
            "promptlab: not under uvicorn; the UI's gateway proxy stays MLflow's own, "
            "which answers every gateway error with a 500"
        )
    return served
