"""`promptlab-db-upgrade` (the one-shot db-upgrade service, services/tracking-ops/tracking_ops/
db_upgrade.py) on real SQLite databases: one written by MLflow 2.16.2 (tests/data/mlflow-2.16.2.db,
made by tests/data/make_old_mlflow_db.py), an empty one, and a current one."""

from __future__ import annotations

import shutil

from constants import REPO
from loopback import free_port, serving

OLD_DB = REPO / "tests" / "data" / "mlflow-2.16.2.db"
NOBODY = f"http://127.0.0.1:{free_port()}/health"  # no tracking server answers here


def revisions(uri):
    from tracking_ops.mlflow_compat import schema_revisions

    return schema_revisions(uri)


def test_a_database_of_an_older_mlflow_is_upgraded_and_its_runs_read_back(tmp_path, capfd):
    from mlflow import MlflowClient

    from tracking_ops.db_upgrade import upgrade

    shutil.copy(OLD_DB, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    old, head = revisions(uri)
    assert old != head
    assert upgrade(uri, NOBODY) == 0
    assert f"upgrading the schema from {old} to {head}" in capfd.readouterr().err
    assert revisions(uri) == (head, head)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("2.16 の実験")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.run_name"])
    assert [(r.info.run_name, r.data.params["prompt"]) for r in runs] == [
        ("古い実行 1", "りんごは何色ですか？"),
        ("古い実行 2", "東京の天気は？"),
    ]
    # Every later start: nothing to do.
    assert upgrade(uri, NOBODY) == 0
    assert f"is current ({head}" in capfd.readouterr().err


def test_a_new_database_gets_its_tables_from_the_one_shot_service(tmp_path, capfd):
    from tracking_ops.db_upgrade import upgrade

    uri = f"sqlite:///{tmp_path}/db/mlflow.db"
    assert upgrade(uri, NOBODY) == 0
    assert "creating the tables of a new database" in capfd.readouterr().err
    current, head = revisions(uri)
    assert current == head


def test_no_migration_while_a_tracking_server_still_writes(tmp_path, capfd):
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from tracking_ops.db_upgrade import upgrade

    shutil.copy(OLD_DB, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    before = revisions(uri)
    running = Starlette(routes=[Route("/health", lambda request: PlainTextResponse("OK"))])
    with serving(running) as url:
        assert upgrade(uri, f"{url}/health") == 1
    assert "docker compose stop tracking" in capfd.readouterr().err
    assert revisions(uri) == before  # untouched


def test_a_database_that_cannot_be_reached_is_one_line_naming_the_knob(capfd, monkeypatch):
    import mlflow.store.db.utils

    from tracking_ops.db_upgrade import upgrade

    # MLflow retries a connection 10 times with backoff (100 s in all): once is enough here.
    monkeypatch.setattr(mlflow.store.db.utils, "MAX_RETRY_COUNT", 1)

    assert upgrade(f"postgresql://mlflow@127.0.0.1:{free_port()}/mlflow", NOBODY) == 1
    err = capfd.readouterr().err
    assert (
        "cannot read the schema of postgresql://mlflow@127.0.0.1" in err
        and "BACKEND_STORE_URI" in err
    )
    assert "Traceback" not in err
