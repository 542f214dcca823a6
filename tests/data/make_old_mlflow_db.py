"""Make `mlflow-2.16.2.db`: a tracking database written by an older MLflow release, for the
schema-upgrade test (tests/unit/tracking_ops/, tests/integration/test_team_setup.py). Run once,
with that release:

    python3 -m venv /tmp/old
    /tmp/old/bin/pip install mlflow-skinny==2.16.2 "sqlalchemy<2.1" alembic
    /tmp/old/bin/python tests/data/make_old_mlflow_db.py tests/data/mlflow-2.16.2.db

(MLflow's own repository keeps such files for its migration tests too: tests/resources/db/.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
from mlflow import MlflowClient

EXPERIMENT = "2.16 の実験"
RUNS = {
    "古い実行 1": {"temperature": "0.0", "prompt": "りんごは何色ですか？"},
    "古い実行 2": {"temperature": "0.7", "prompt": "東京の天気は？"},
}


def main(path: Path) -> None:
    path.unlink(missing_ok=True)
    client = MlflowClient(tracking_uri=f"sqlite:///{path.resolve()}")
    experiment = client.create_experiment(
        EXPERIMENT, artifact_location="mlflow-artifacts:/old-experiment"
    )
    for name, params in RUNS.items():
        run = client.create_run(experiment, run_name=name)
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value)
        client.log_metric(run.info.run_id, "answer_length", len(params["prompt"]))
        client.set_terminated(run.info.run_id)
    print(f"{path}: MLflow {mlflow.__version__}, experiment {EXPERIMENT!r}, {len(RUNS)} runs")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
