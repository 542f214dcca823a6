"""The model server's app: MLflow's own scoring server (what `mlflow models serve` runs) on our
saved pyfunc model, with request bodies bounded by MAX_REQUEST_MB.

MLflow's scoring server reads every request body whole and parses it before the model sees it,
and `mlflow models serve` offers no way to wrap its app. So the container runs uvicorn on this
factory: the same app, the same single worker and the same request timeout that `mlflow models
serve` would give (`server_command` in start.py), behind `BodyLimit`
(promptlab_stack/body_limit.py), with `POST /stream` beside it (stream_route.py).
"""

from __future__ import annotations

import os

from promptlab_stack.body_limit import BodyLimit, mlflow_error_body
from pyfunc_server.mlflow_compat import scoring_server_app
from pyfunc_server.settings import ModelServerSettings
from pyfunc_server.stream_route import StreamRoute

MODEL_PATH_ENV = "PYFUNC_MODEL_PATH"  # the saved model's folder (start.py sets it)


def create_app():
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(os.environ[MODEL_PATH_ENV])
    # The settings the server was started with, as recorded in the MLmodel file (settings.py).
    settings = ModelServerSettings.model_validate(model.model_config or {})
    app = StreamRoute(scoring_server_app(model), model.unwrap_python_model())
    return BodyLimit(app, settings.max_request_bytes, "the model server", mlflow_error_body)
