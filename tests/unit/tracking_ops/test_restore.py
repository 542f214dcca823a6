"""promptlab-restore (services/tracking-ops/tracking_ops/restore.py): nothing on the volumes changes
until the whole backup has been read and checked; then the files are swapped in, the keys
owner-only. The round trips are in test_backup.py; the volumes and helpers: conftest.py."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import tarfile
from contextlib import closing

import pytest

from tracking_ops import backup, restore, running
from tracking_ops.restore import NotRestored


def a_backup(volumes) -> bytes:
    out = io.BytesIO()
    backup.backup(out, *volumes)
    return out.getvalue()


def member_ends(data: bytes) -> dict[str, int]:
    """Where each member's data ends in the tar (a cut there leaves whole members only)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {
            m.name: m.offset_data + -(-m.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            for m in tar.getmembers()
        }


def member_middles(data: bytes) -> dict[str, int]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m.offset_data + m.size // 2 for m in tar.getmembers()}


@pytest.fixture
def old_and_new(tmp_path, kit):
    """A backup of other data (`new`), to restore over the volumes as they are (`old`)."""
    old = (tmp_path / "db", tmp_path / "artifacts")
    kit.make_volumes(*old)
    newer = (tmp_path / "b-db", tmp_path / "b-artifacts")
    kit.make_volumes(*newer)
    with closing(sqlite3.connect(newer[0] / "mlflow.db")) as db:
        db.execute("INSERT INTO runs VALUES ('r9', 'もも')")
        db.commit()
    (newer[1] / "2" / "r9").mkdir(parents=True)
    (newer[1] / "2" / "r9" / "answer.txt").write_text("もも", encoding="utf-8")
    return old, a_backup(newer)


def cuts(data: bytes) -> dict[str, int]:
    ends, middles = member_ends(data), member_middles(data)
    return {
        "in the runs database": middles["db/mlflow.db"],
        "at the end of the runs database": ends["db/mlflow.db"],
        "in an artifact, after every database and key": middles["artifacts/2/r9/answer.txt"],
        "before the manifest": ends["artifacts/2/r9/answer.txt"],
        "in the manifest": middles["promptlab-backup.json"],
        "before the end of the archive": ends["promptlab-backup.json"],
    }


@pytest.mark.parametrize(
    "where",
    [
        "in the runs database",
        "at the end of the runs database",
        "in an artifact, after every database and key",
        "before the manifest",
        "in the manifest",
        "before the end of the archive",
    ],
)
def test_a_truncated_backup_changes_nothing_and_says_so(
    where, old_and_new, kit, monkeypatch, capsys, nothing_running, no_tmp
):
    old, data = old_and_new
    before = kit.contents(*old)
    monkeypatch.setattr("sys.stdin", kit.Stdio(data[: cuts(data)[where]]))
    assert restore.main([], db_dir=old[0], artifacts_dir=old[1]) == 1
    err = capsys.readouterr().err
    assert "incomplete" in err and "nothing was changed" in err, err
    assert kit.contents(*old) == before  # no file replaced, no staging folder left behind
    assert kit.rows(old[0] / "mlflow.db") == kit.RUNS


def test_the_same_backup_whole_restores_over_the_old_data(old_and_new, kit, no_tmp):
    old, data = old_and_new
    restored = restore.restore(io.BytesIO(data), *old)
    assert restored.kind == "full" and restored.manifest and not restored.skipped
    assert kit.rows(old[0] / "mlflow.db") == [*kit.RUNS, ("r9", "もも")]
    assert (old[1] / "2" / "r9" / "answer.txt").read_text(encoding="utf-8") == "もも"
    assert not [p for d in old for p in d.iterdir() if p.name.startswith(".promptlab-")]


def damaged_database(path) -> bytes:
    """A real SQLite database whose table pages are overwritten: a valid header, a bad body."""
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE runs (id TEXT, name TEXT)")
        db.executemany("INSERT INTO runs VALUES (?, ?)", [(str(i), "x" * 500) for i in range(200)])
        db.commit()
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page + 100 : 3 * page] = os.urandom(3 * page - page - 100)
    return bytes(data)


def tar_of(files: dict[str, bytes], manifest: bool) -> bytes:
    """A backup made of these files, with a manifest that matches them (as promptlab-backup would
    write it for a database damaged before it was backed up) or without one (an older backup)."""
    out = io.BytesIO()
    written = backup.Written("full")
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [*files.items(), *([("manifest", b"")] if manifest else [])]:
            if name == "manifest":
                name, data = "promptlab-backup.json", written.manifest()
            else:
                written.files[name] = {
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.parametrize("manifest", [True, False], ids=["with-manifest", "older-backup"])
def test_a_corrupt_database_in_a_backup_changes_nothing_and_says_so(
    manifest, volumes, kit, tmp_path, monkeypatch, capsys, nothing_running
):
    before = kit.contents(*volumes)
    bad = damaged_database(tmp_path / "bad.db")
    data = tar_of({"db/.kek_passphrase": b"other", "db/mlflow.db": bad}, manifest)
    monkeypatch.setattr("sys.stdin", kit.Stdio(data))
    assert restore.main([], db_dir=volumes[0], artifacts_dir=volumes[1]) == 1
    err = capsys.readouterr().err
    assert "db/mlflow.db in the backup is not a sound SQLite database" in err, err
    assert "nothing was changed" in err
    assert kit.contents(*volumes) == before

    not_a_database = tar_of({"db/mlflow.db": b"not a database" * 100}, manifest)
    with pytest.raises(NotRestored, match="not a sound SQLite database"):
        restore.restore(io.BytesIO(not_a_database), *volumes)
    assert kit.contents(*volumes) == before


def test_a_file_damaged_after_the_backup_was_made_changes_nothing(old_and_new, kit):
    old, data = old_and_new
    before = kit.contents(*old)
    at = member_ends(data)["artifacts/2/r9/answer.txt"] - tarfile.BLOCKSIZE
    flipped = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
    with pytest.raises(NotRestored, match="differ from the size and SHA-256"):
        restore.restore(io.BytesIO(flipped), *old)
    assert kit.contents(*old) == before


def test_keys_and_databases_are_restored_owner_only_whatever_the_umask(volumes, empty_volumes, kit):
    for name in kit.KEKS:
        (volumes[0] / name).chmod(0o644)  # as an older promptlab-restore left them
    data = a_backup(volumes)
    previous = os.umask(0o000)
    try:
        restore.restore(io.BytesIO(data), *empty_volumes)
    finally:
        os.umask(previous)
    for name in [*kit.KEKS, "mlflow.db", "basic_auth.db"]:
        assert oct(os.stat(empty_volumes[0] / name).st_mode & 0o777) == oct(0o600), name


def test_the_old_databases_log_does_not_outlive_it(old_and_new, kit):
    """A write-ahead log left by the replaced database must not be replayed into the new one."""
    old, data = old_and_new
    db_dir = old[0]
    server = sqlite3.connect(db_dir / "mlflow.db", isolation_level=None)
    server.execute("PRAGMA wal_autocheckpoint=0")
    server.execute("INSERT INTO runs VALUES ('r7', 'old only')")
    wal = (db_dir / "mlflow.db-wal").read_bytes()
    server.close()
    (db_dir / "mlflow.db-wal").write_bytes(wal)  # as a killed server leaves it
    restore.restore(io.BytesIO(data), *old)
    assert kit.rows(db_dir / "mlflow.db") == [*kit.RUNS, ("r9", "もも")]


def test_restore_refuses_a_file_that_is_not_a_backup(volumes, kit):
    before = kit.contents(*volumes)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("artifacts/../../etc/passwd")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(NotRestored, match="not part of a promptlab-backup file"):
        restore.restore(io.BytesIO(out.getvalue()), *volumes)
    with pytest.raises(NotRestored, match="incomplete or damaged"):
        restore.restore(io.BytesIO(b"this is not a tar file" * 100), *volumes)
    assert kit.contents(*volumes) == before


def test_restore_refuses_while_the_server_answers_by_its_name(volumes, kit, monkeypatch, capsys):
    """From a one-off `docker compose run` container nothing listens on loopback: the server is
    found by its compose name (here `localhost`, pointing at a stand-in server)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        monkeypatch.setattr(running, "HEALTH_URLS", (f"http://localhost:{port}/health",))
        stdin = kit.Stdio(a_backup(volumes))
        before = kit.contents(*volumes)
        monkeypatch.setattr("sys.stdin", stdin)
        assert restore.main([], db_dir=volumes[0], artifacts_dir=volumes[1]) == 2
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert "stop it first" in err and f"http://localhost:{port}/health" in err
    assert stdin.buffer.tell() == 0 and kit.contents(*volumes) == before
