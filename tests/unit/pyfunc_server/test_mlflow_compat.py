"""What the model server assumes about MLflow's scoring server (pyfunc_server/mlflow_compat.py), one
test each: when an MLflow upgrade changes one, the test says which."""

from __future__ import annotations

import mlflow.pyfunc
from fastapi.testclient import TestClient

UPGRADE = (
    "MLflow changed {name}, which model/pyfunc_server/mlflow_compat.py relies on: mend it there "
    "(or use a public API now)"
)


class _WidensItsPool(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        from pyfunc_server.python_compat import widen_thread_pool

        return [widen_thread_pool(64)]


def test_the_scoring_server_reads_its_request_timeout_from_the_variable_we_set():
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

    from pyfunc_server.mlflow_compat import REQUEST_TIMEOUT_ENV

    assert MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.name == REQUEST_TIMEOUT_ENV, UPGRADE.format(
        name="mlflow.environment_variables.MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"
    )


def test_the_scoring_server_runs_predict_in_a_thread_pool_the_model_can_widen(tmp_path):
    from pyfunc_server.mlflow_compat import scoring_server_app

    mlflow.pyfunc.save_model(path=str(tmp_path / "model"), python_model=_WidensItsPool())
    client = TestClient(scoring_server_app(mlflow.pyfunc.load_model(str(tmp_path / "model"))))
    r = client.post("/invocations", json={"inputs": ["x"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [True]}, UPGRADE.format(
        name="mlflow.pyfunc.scoring_server's /invocations (predict no longer runs in the "
        "event loop's thread pool, asyncio.to_thread)"
    )
