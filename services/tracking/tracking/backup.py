"""`promptlab-backup` and `promptlab-restore`: every experiment, run and artifact, as one tar file.

    docker compose exec -T tracking promptlab-backup > backup.tar          # while the stack runs
    docker compose stop tracking
    docker compose run --rm -T --no-deps tracking promptlab-restore < backup.tar
    docker compose up -d

The backup is consistent while the server writes: each SQLite database (runs, users) is copied
with SQLite's online backup API (a snapshot, not a file copy that can tear), and the artifacts
are copied after it, so every run in the snapshot finds the artifacts it had (a run created in
between may bring its files along, harmlessly). The keys kept beside the database (the CSRF key,
the AI Gateway's secrets passphrase) are in it too: treat the file like a password.

Restore refuses to run while this container's tracking server answers, and replaces the
databases and keys and adds the artifacts.
"""

from __future__ import annotations

import io
import sqlite3
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from tracking.start import ARTIFACTS_DIR, DB_DIR, PORT

DATABASES = ("mlflow.db", "basic_auth.db")
KEYS = (".flask_secret_key", ".kek_passphrase")


def backup(out, db_dir: Path = DB_DIR, artifacts_dir: Path = ARTIFACTS_DIR) -> list[str]:
    """Write the tar to the binary stream `out`; returns its member names."""
    names = []
    with tarfile.open(fileobj=out, mode="w|") as tar, tempfile.TemporaryDirectory() as tmp:
        for name in DATABASES:
            source = db_dir / name
            if not source.is_file():
                continue
            snapshot = Path(tmp) / name
            with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(snapshot) as dst:
                src.backup(dst)
            tar.add(snapshot, arcname=f"db/{name}")
            names.append(f"db/{name}")
        for name in KEYS:
            if (db_dir / name).is_file():
                tar.add(db_dir / name, arcname=f"db/{name}")
                names.append(f"db/{name}")
        for path in sorted(artifacts_dir.rglob("*")):
            if path.is_file():
                arcname = f"artifacts/{path.relative_to(artifacts_dir)}"
                tar.add(path, arcname=arcname)
                names.append(arcname)
    return names


def server_answers(port: int = PORT) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        return True
    except OSError:
        return False


def restore(stream, db_dir: Path = DB_DIR, artifacts_dir: Path = ARTIFACTS_DIR) -> int:
    """Unpack a backup from the binary stream; returns how many files it wrote."""
    count = 0
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            top, _, rest = member.name.partition("/")
            if top == "db" and rest in DATABASES + KEYS:
                target = db_dir / rest
            elif top == "artifacts" and rest and ".." not in Path(rest).parts and not rest.startswith("/"):
                target = artifacts_dir / rest
            else:
                raise SystemExit(f"promptlab-restore: {member.name!r} is not part of a promptlab-backup file")
            target.parent.mkdir(parents=True, exist_ok=True)
            data = tar.extractfile(member).read()
            tmp = target.with_name(f".{target.name}.restoring")
            tmp.write_bytes(data)
            tmp.replace(target)
            if top == "db":
                for suffix in ("-wal", "-shm"):  # the old database's journal must not outlive it
                    target.with_name(target.name + suffix).unlink(missing_ok=True)
            count += 1
    return count


def outside_the_volumes() -> str | None:
    """Why this backup would miss data: runs in a team's PostgreSQL, artifacts in a bucket."""
    from tracking.settings import TrackingSettings

    settings = TrackingSettings.from_env()
    if settings.backend_store_uri:
        return ("the runs are in BACKEND_STORE_URI's database, not on the volume: back it up with its "
                "own tools (PostgreSQL: pg_dump; see the README's Team setup)")
    if settings.artifacts_destination:
        return ("the artifacts are in ARTIFACTS_DESTINATION, not on the volume: back the bucket up with "
                "its own tools (versioning, replication)")
    return None


def backup_main() -> int:
    if problem := outside_the_volumes():
        print(f"promptlab-backup: {problem}", file=sys.stderr)
        return 2
    names = backup(sys.stdout.buffer)
    print(f"promptlab-backup: {len(names)} files (databases, keys, artifacts)", file=sys.stderr)
    return 0


def restore_main() -> int:
    if problem := outside_the_volumes():
        print(f"promptlab-restore: {problem}", file=sys.stderr)
        return 2
    if server_answers():
        print("promptlab-restore: the tracking server is running; stop it first (docker compose stop "
              "tracking), then: docker compose run --rm -T --no-deps tracking promptlab-restore < backup.tar",
              file=sys.stderr)
        return 2
    count = restore(io.BufferedReader(sys.stdin.buffer))
    print(f"promptlab-restore: {count} files restored; start the server: docker compose up -d", file=sys.stderr)
    return 0
