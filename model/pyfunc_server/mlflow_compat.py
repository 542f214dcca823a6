"""Every assumption about MLflow's scoring server (the app `mlflow models serve` runs) that the
model server relies on, in one place.

tests/unit/pyfunc_server/test_mlflow_compat.py exercises each of them and fails with a message
naming it when an MLflow upgrade moves or changes one; nothing else in this package reaches into
the scoring server.
"""

from __future__ import annotations

# The scoring server's request timeout, as `mlflow models serve` sets it
# (mlflow.environment_variables.MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT).
REQUEST_TIMEOUT_ENV = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"


def scoring_server_app(model):
    """MLflow's scoring server app on a loaded pyfunc model: what `mlflow models serve` runs
    (`mlflow.pyfunc.scoring_server.app` builds it the same way from an environment variable).

    Why an assumption: `mlflow.pyfunc.scoring_server` is not documented API, and the model server
    relies on how its /invocations route runs `predict`: in the event loop's default thread pool
    (`asyncio.to_thread`), one thread per request, which python_compat.widen_thread_pool widens so
    that a whole batch of requests can wait at once.
    """
    from mlflow.pyfunc import scoring_server

    return scoring_server.init(model)
