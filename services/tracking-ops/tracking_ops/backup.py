"""`promptlab-backup`: every experiment, run and artifact, as one tar file on standard output.

    docker compose exec -T tracking promptlab-backup > backup.tar          # while the stack runs

The backup is consistent while the server writes: each SQLite database (runs, users) is copied
with SQLite's online backup API (a snapshot, not a file copy that can tear), and the artifacts
are copied after it, so every run in the snapshot finds the artifacts it had (a run created in
between may bring its files along, harmlessly). restore.py brings it back.
"""

from __future__ import annotations

import sqlite3
import sys
import tarfile
import tempfile
from pathlib import Path

from promptlab_stack.topology import TRACKING_ARTIFACTS_DIR, TRACKING_DB_DIR
from tracking_ops.volumes import DATABASES, KEYS, outside_the_volumes


def backup(
    out, db_dir: Path = TRACKING_DB_DIR, artifacts_dir: Path = TRACKING_ARTIFACTS_DIR
) -> list[str]:
    """Write the tar to the binary stream `out`; returns its member names."""
    names = []
    with tarfile.open(fileobj=out, mode="w|") as tar, tempfile.TemporaryDirectory() as tmp:
        for name in DATABASES:
            source = db_dir / name
            if not source.is_file():
                continue
            snapshot = Path(tmp) / name
            with (
                sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src,
                sqlite3.connect(snapshot) as dst,
            ):
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


def main() -> int:
    if problem := outside_the_volumes():
        print(f"promptlab-backup: {problem}", file=sys.stderr)
        return 2
    names = backup(sys.stdout.buffer)
    print(f"promptlab-backup: {len(names)} files (databases, keys, artifacts)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
