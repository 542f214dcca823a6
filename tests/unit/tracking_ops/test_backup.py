"""promptlab-backup and promptlab-restore (services/tracking-ops/tracking_ops: backup.py,
restore.py) on real SQLite databases in WAL mode, as the tracking server keeps them (its start.py's
use_wal); the compose test (test_reliability.py) does backup, `down -v`, restore on the running
stack."""

from __future__ import annotations

import io
import sqlite3

import pytest

from tracking_ops import backup, restore


def make_store(db_dir, artifacts_dir):
    db_dir.mkdir()
    artifacts_dir.mkdir()
    with sqlite3.connect(db_dir / "mlflow.db") as db:
        db.execute("PRAGMA journal_mode=WAL")  # as the tracking server keeps it
        db.execute("CREATE TABLE runs (id TEXT, name TEXT)")
        db.executemany("INSERT INTO runs VALUES (?, ?)", [("r1", "りんご"), ("r2", "バナナ")])
    (db_dir / ".kek_passphrase").write_text("secret")
    (artifacts_dir / "1" / "r1").mkdir(parents=True)
    (artifacts_dir / "1" / "r1" / "eval_results_table.json").write_text(
        '{"x": "りんご"}', encoding="utf-8"
    )


def test_a_backup_taken_while_a_writer_is_busy_restores_every_row_key_and_artifact(tmp_path):
    db_dir, artifacts_dir = tmp_path / "db", tmp_path / "artifacts"
    make_store(db_dir, artifacts_dir)
    assert (
        sqlite3.connect(db_dir / "mlflow.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    )
    writer = sqlite3.connect(db_dir / "mlflow.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the server in the middle of a write
    writer.execute("INSERT INTO runs VALUES ('r3', 'ぶどう')")
    out = io.BytesIO()
    names = backup.backup(out, db_dir, artifacts_dir)
    writer.execute("COMMIT")
    assert names == ["db/mlflow.db", "db/.kek_passphrase", "artifacts/1/r1/eval_results_table.json"]

    new_db, new_artifacts = tmp_path / "new-db", tmp_path / "new-artifacts"
    new_db.mkdir()
    new_artifacts.mkdir()
    assert restore.restore(io.BytesIO(out.getvalue()), new_db, new_artifacts) == 3
    rows = (
        sqlite3.connect(new_db / "mlflow.db")
        .execute("SELECT id, name FROM runs ORDER BY id")
        .fetchall()
    )
    assert rows == [
        ("r1", "りんご"),
        ("r2", "バナナ"),
    ]  # the snapshot: the write in flight is not half in it
    assert (new_db / ".kek_passphrase").read_text() == "secret"
    assert (new_artifacts / "1" / "r1" / "eval_results_table.json").read_text(
        encoding="utf-8"
    ) == '{"x": "りんご"}'


@pytest.mark.parametrize(
    "settings",
    [
        {"BACKEND_STORE_URI": "postgresql://mlflow@postgres:5432/mlflow"},
        {"ARTIFACTS_DESTINATION": "s3://bucket/mlflow"},
    ],
)
def test_backup_refuses_when_the_data_is_not_on_the_volumes(settings, monkeypatch, capsys):
    for knob, value in settings.items():
        monkeypatch.setenv(knob, value)
    assert backup.main() == 2 and restore.main() == 2
    err = capsys.readouterr().err
    assert ("pg_dump" in err) if "BACKEND_STORE_URI" in settings else ("bucket" in err)
