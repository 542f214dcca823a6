"""The tracking volumes as the server leaves them, for promptlab-backup and promptlab-restore
(test_backup.py, test_restore.py): real SQLite databases in WAL mode (start.py's use_wal), the kept
keys, artifacts in folders per experiment and run. The helpers come as the `kit` fixture (the tests'
`conftest` module name is taken by tests/conftest.py)."""

from __future__ import annotations

import io
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import pytest
from loopback import free_port

from tracking_ops import running

RUNS = [("r1", "りんご"), ("r2", "バナナ")]
ARTIFACTS = {
    "1/r1/eval_results_table.json": '{"x": "りんご"}',
    "1/r2/artifacts/プロンプト.txt": "バナナは何色ですか？",
}
KEKS = {".kek_passphrase": "kek-secret", ".flask_secret_key": "flask-secret"}


def make_volumes(db_dir: Path, artifacts_dir: Path) -> None:
    db_dir.mkdir()
    artifacts_dir.mkdir()
    with closing(sqlite3.connect(db_dir / "mlflow.db")) as db:
        db.execute("PRAGMA journal_mode=WAL")  # as the tracking server keeps it
        db.execute("CREATE TABLE runs (id TEXT, name TEXT)")
        db.executemany("INSERT INTO runs VALUES (?, ?)", RUNS)
        db.commit()
    with closing(sqlite3.connect(db_dir / "basic_auth.db")) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE users (username TEXT)")
        db.execute("INSERT INTO users VALUES ('admin')")
        db.commit()
    for name, value in KEKS.items():
        (db_dir / name).write_text(value)
        (db_dir / name).chmod(0o600)
    for name, text in ARTIFACTS.items():
        (artifacts_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (artifacts_dir / name).write_text(text, encoding="utf-8")


def rows(path: Path, table: str = "runs") -> list[tuple]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()


def contents(*folders: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under the folders (hidden ones too) with its bytes and mode: what "untouched"
    compares, staging folders left behind included."""
    found = {}
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                path = Path(root) / name
                found[str(path)] = (path.read_bytes(), path.stat().st_mode & 0o777)
    return found


class Stdio:
    """sys.stdin / sys.stdout for a command's main(): bytes in .buffer, not a terminal."""

    def __init__(self, data: bytes = b""):
        self.buffer = io.BytesIO(data)

    def isatty(self) -> bool:
        return False


@pytest.fixture
def kit() -> SimpleNamespace:
    return SimpleNamespace(
        RUNS=RUNS,
        ARTIFACTS=ARTIFACTS,
        KEKS=KEKS,
        make_volumes=make_volumes,
        rows=rows,
        contents=contents,
        Stdio=Stdio,
    )


@pytest.fixture
def volumes(tmp_path) -> tuple[Path, Path]:
    db_dir, artifacts_dir = tmp_path / "db", tmp_path / "artifacts"
    make_volumes(db_dir, artifacts_dir)
    return db_dir, artifacts_dir


@pytest.fixture
def empty_volumes(tmp_path) -> tuple[Path, Path]:
    db_dir, artifacts_dir = tmp_path / "new-db", tmp_path / "new-artifacts"
    db_dir.mkdir()
    artifacts_dir.mkdir()
    return db_dir, artifacts_dir


@pytest.fixture
def nothing_running(monkeypatch):
    """No tracking server: nothing listens where the running check asks."""
    monkeypatch.setattr(running, "HEALTH_URLS", (f"http://127.0.0.1:{free_port()}/health",))


@pytest.fixture
def no_tmp(monkeypatch, tmp_path):
    """/tmp is memory-backed in the containers: nothing may be staged there."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-tmp-here"))
