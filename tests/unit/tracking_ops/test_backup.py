"""promptlab-backup (services/tracking-ops/tracking_ops/backup.py) on real SQLite databases in WAL
mode, as the tracking server keeps them (its start.py's use_wal), restored by promptlab-restore
(restore.py); the compose test (test_reliability.py) does backup, `down -v`, restore on the running
stack. The volumes and helpers: conftest.py."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import tarfile

import pytest

from tracking_ops import backup, restore


def members(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def test_a_backup_taken_while_a_writer_is_busy_restores_every_row_key_and_artifact(
    volumes, empty_volumes, kit, no_tmp
):
    db_dir, artifacts_dir = volumes
    (artifacts_dir / ".promptlab-restore-left-over").mkdir()  # a restore's staging: not data
    (artifacts_dir / ".promptlab-restore-left-over" / "x").write_text("x")
    writer = sqlite3.connect(db_dir / "mlflow.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the server in the middle of a write
    writer.execute("INSERT INTO runs VALUES ('r3', 'ぶどう')")
    out = io.BytesIO()
    written = backup.backup(out, db_dir, artifacts_dir)
    writer.execute("COMMIT")
    writer.close()
    files = [f"artifacts/{name}" for name in sorted(kit.ARTIFACTS)]
    expected = ["db/mlflow.db", "db/basic_auth.db", "db/.flask_secret_key", "db/.kek_passphrase"]
    assert written.names == expected + files and written.changed == []
    # The snapshots were staged on the volume, not in /tmp (no_tmp), and are gone.
    assert not [p for p in db_dir.iterdir() if p.name.startswith(".promptlab-")]
    # The manifest comes last: a backup cut short lacks it.
    assert members(out.getvalue())[-1] == "promptlab-backup.json"
    manifest = json.loads(
        tarfile.open(fileobj=io.BytesIO(out.getvalue())).extractfile("promptlab-backup.json").read()
    )
    assert manifest["kind"] == "full" and list(manifest["files"]) == written.names

    new_db, new_artifacts = empty_volumes
    restored = restore.restore(io.BytesIO(out.getvalue()), new_db, new_artifacts)
    assert sorted(restored.files) == sorted(written.names) and restored.manifest
    # The snapshot: the write in flight is not half in it.
    assert kit.rows(new_db / "mlflow.db") == kit.RUNS
    assert kit.rows(new_db / "basic_auth.db", "users") == [("admin",)]
    for name, value in kit.KEKS.items():
        assert (new_db / name).read_text() == value
    for name, text in kit.ARTIFACTS.items():
        assert (new_artifacts / name).read_text(encoding="utf-8") == text
    assert not any(p.name.startswith(".promptlab-") for p in new_artifacts.iterdir())


def test_a_file_renamed_over_while_it_is_read_is_backed_up_whole_as_it_was(
    volumes, empty_volumes, kit, monkeypatch
):
    """The stack rewrites a Prompt Engineering artifact by renaming a new file over it: the one
    open handle keeps reading the old file, whole, with the size it had."""
    db_dir, artifacts_dir = volumes
    name = "1/r1/eval_results_table.json"
    target = artifacts_dir / name
    opened = backup.open_once

    def open_then_replace(path):
        f = opened(path)
        if path == target:
            new = target.with_name("new.tmp")
            new.write_text(
                '{"x": "りんご", "rewritten": "' + "長い" * 5000 + '"}', encoding="utf-8"
            )
            new.replace(target)
        return f

    monkeypatch.setattr(backup, "open_once", open_then_replace)
    out = io.BytesIO()
    written = backup.backup(out, db_dir, artifacts_dir)
    assert written.changed == []
    restore.restore(io.BytesIO(out.getvalue()), *empty_volumes)
    assert (empty_volumes[1] / name).read_text(encoding="utf-8") == kit.ARTIFACTS[name]


class RewrittenWhileRead:
    """A file handle whose reads rewrite the file in place (shorter, or longer), as a writer that
    does not rename would: `times` reads do it."""

    def __init__(self, f, path, contents):
        self.f, self.path, self.contents = f, path, contents

    def read(self, n=-1):
        if self.contents:
            with open(self.path, "r+b") as w:
                w.truncate(0)
                w.write(self.contents.pop(0))
        return self.f.read(n)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_file_rewritten_in_place_while_it_is_read_never_tears_the_backup(
    volumes, empty_volumes, kit, monkeypatch
):
    """Read again until it holds still; the tar stays whole either way (no "unexpected end of
    data" half through a member)."""
    db_dir, artifacts_dir = volumes
    name = "1/r1/eval_results_table.json"
    target = artifacts_dir / name
    rewrites = [b"short"]  # the first read finds it cut short; the second attempt reads it whole
    opened = backup.open_once
    monkeypatch.setattr(
        backup,
        "open_once",
        lambda path: RewrittenWhileRead(opened(path), path, rewrites if path == target else []),
    )
    out = io.BytesIO()
    written = backup.backup(out, db_dir, artifacts_dir)
    assert written.changed == [] and members(out.getvalue()).count(f"artifacts/{name}") == 2
    restore.restore(io.BytesIO(out.getvalue()), *empty_volumes)
    assert (empty_volumes[1] / name).read_bytes() == b"short"


def test_a_file_that_keeps_changing_is_reported_and_left_out_of_the_restore(
    volumes, empty_volumes, kit, monkeypatch, capsys
):
    db_dir, artifacts_dir = volumes
    name = "1/r1/eval_results_table.json"
    target = artifacts_dir / name
    rewrites = [b"x" * (1 + i % 2 * 50_000) for i in range(1000)]  # on every read
    opened = backup.open_once
    monkeypatch.setattr(
        backup,
        "open_once",
        lambda path: RewrittenWhileRead(opened(path), path, rewrites if path == target else []),
    )
    out = io.BytesIO()
    written = backup.backup(out, db_dir, artifacts_dir)
    assert written.changed == [f"artifacts/{name}"]
    restored = restore.restore(io.BytesIO(out.getvalue()), *empty_volumes)  # a whole tar
    assert restored.skipped == [f"artifacts/{name}"]
    assert not (empty_volumes[1] / name).exists()
    other = "1/r2/artifacts/プロンプト.txt"
    assert (empty_volumes[1] / other).read_text(encoding="utf-8") == kit.ARTIFACTS[other]

    rewrites[:] = [b"x" * (1 + i % 2 * 50_000) for i in range(1000)]
    monkeypatch.setattr("sys.stdout", kit.Stdio())
    assert backup.main([], db_dir=db_dir, artifacts_dir=artifacts_dir) == 1
    assert "kept changing while they were read" in capsys.readouterr().err


def test_the_keys_only_backup_holds_what_a_postgresql_dump_does_not(
    volumes, empty_volumes, kit, monkeypatch, capsys, nothing_running
):
    """With the runs in PostgreSQL, a full backup refuses (pg_dump holds the runs) and names
    --keys-only: the basic-auth users and the kept keys, restored owner-only."""
    db_dir, artifacts_dir = volumes
    monkeypatch.setenv("BACKEND_STORE_URI", "postgresql://mlflow@postgres:5432/mlflow")
    stdout = kit.Stdio()
    monkeypatch.setattr("sys.stdout", stdout)
    assert backup.main([], db_dir=db_dir, artifacts_dir=artifacts_dir) == 2
    err = capsys.readouterr().err
    assert "pg_dump" in err and "promptlab-backup --keys-only" in err
    assert stdout.buffer.getvalue() == b""

    assert backup.main(["--keys-only"], db_dir=db_dir, artifacts_dir=artifacts_dir) == 0
    data = stdout.buffer.getvalue()
    assert members(data) == [
        "db/basic_auth.db",
        "db/.flask_secret_key",
        "db/.kek_passphrase",
        "promptlab-backup.json",
    ]
    assert "3 files (the basic-auth users and keys)" in capsys.readouterr().err

    new_db, new_artifacts = empty_volumes
    monkeypatch.setattr("sys.stdin", kit.Stdio(data))
    assert restore.main([], db_dir=new_db, artifacts_dir=new_artifacts) == 0
    assert "from a keys-only backup" in capsys.readouterr().err
    assert kit.rows(new_db / "basic_auth.db", "users") == [("admin",)]
    for name, value in kit.KEKS.items():
        assert (new_db / name).read_text() == value
        assert oct((new_db / name).stat().st_mode & 0o777) == oct(0o600)
    assert not (new_db / "mlflow.db").exists() and list(new_artifacts.iterdir()) == []


@pytest.mark.parametrize(
    "settings",
    [
        {"BACKEND_STORE_URI": "postgresql://mlflow@postgres:5432/mlflow"},
        {"ARTIFACTS_DESTINATION": "s3://bucket/mlflow"},
    ],
)
def test_a_full_backup_refuses_when_the_data_is_not_on_the_volumes(
    settings, monkeypatch, capsys, volumes, empty_volumes, kit, nothing_running
):
    full = io.BytesIO()
    backup.backup(full, *volumes)
    for knob, value in settings.items():
        monkeypatch.setenv(knob, value)
    monkeypatch.setattr("sys.stdout", kit.Stdio())
    assert backup.main([], db_dir=volumes[0], artifacts_dir=volumes[1]) == 2
    err = capsys.readouterr().err
    assert ("pg_dump" in err) if "BACKEND_STORE_URI" in settings else ("bucket" in err)
    # Nor is a full backup restored there: its runs or artifacts would not be the server's.
    monkeypatch.setattr("sys.stdin", kit.Stdio(full.getvalue()))
    assert restore.main([], db_dir=empty_volumes[0], artifacts_dir=empty_volumes[1]) == 1
    err = capsys.readouterr().err
    assert "--keys-only" in err and "nothing was changed" in err
    assert kit.contents(*empty_volumes) == {}


def test_the_backup_refuses_a_terminal_on_standard_output(monkeypatch, capsys, volumes, kit):
    class Terminal(kit.Stdio):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdout", Terminal())
    assert backup.main([], db_dir=volumes[0], artifacts_dir=volumes[1]) == 2
    assert "exec -T" in capsys.readouterr().err


def test_the_keys_keep_their_owner_only_mode_in_the_tar(volumes):
    db_dir, artifacts_dir = volumes
    out = io.BytesIO()
    backup.backup(out, db_dir, artifacts_dir, keys_only=True)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        key = tar.getmember("db/.kek_passphrase")
        assert key.mode == 0o600 and key.uid == 0 and key.uname == ""
    assert os.stat(db_dir / ".kek_passphrase").st_mode & 0o777 == 0o600
