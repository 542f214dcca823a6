"""`promptlab-backup`: every experiment, run and artifact, as one tar file on standard output.

    docker compose exec -T tracking promptlab-backup > backup.tar          # while the stack runs
    docker compose exec -T tracking promptlab-backup --keys-only > keys.tar  # PostgreSQL setup

The backup is consistent while the server writes: each SQLite database (runs, users) is copied
with SQLite's online backup API (a snapshot, not a file copy that can tear), staged on the mlflow-db
volume itself (/tmp is memory-backed), and the artifacts are copied after it, so every run in the
snapshot finds the artifacts it had (a run created in between may bring its files along,
harmlessly). Each file is read once, through one open handle, with the size that handle had when
it was opened: a file replaced meanwhile (the stack renames a rewritten artifact over the old one)
is read whole as it was, and one rewritten in place is read again; a file that keeps changing is
reported, marked in the manifest (restore.py skips it) and the command exits 1. The last member,
the manifest (volumes.MANIFEST), lists every file with its size and SHA-256: restore.py checks the
whole backup against it before it replaces anything.

`--keys-only`, for the PostgreSQL setup (BACKEND_STORE_URI), where a full backup refuses: what
PostgreSQL's own dump does not hold (volumes.KEYS_ONLY: the basic-auth users, the AI Gateway's
passphrase, the CSRF key).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sqlite3
import stat
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from promptlab_stack.settings import SettingsError
from promptlab_stack.topology import TRACKING_ARTIFACTS_DIR, TRACKING_DB_DIR
from tracking_ops.volumes import (
    DATABASES,
    FULL,
    KEYS,
    KEYS_ONLY,
    KEYS_ONLY_KIND,
    MANIFEST,
    MANIFEST_FORMAT,
    STAGING_PREFIX,
    elsewhere,
)

# A file rewritten in place while it is read is read again, this many times in all.
ATTEMPTS = 3
CHUNK = 1024 * 1024


@dataclass
class Written:
    """What a backup holds: its kind, each file's size and SHA-256 (the manifest), and the files
    that kept changing while they were read."""

    kind: str
    files: dict[str, dict[str, int | str]] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return list(self.files)

    def manifest(self) -> bytes:
        return json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "kind": self.kind,
                "files": self.files,
                "changed": self.changed,
            },
            ensure_ascii=False,
            indent=1,
        ).encode()


class Exactly:
    """`size` bytes of a file, as tarfile copies them: a file that shrank while it was read is
    padded (the tar stays whole; the caller reads it again), one that grew is cut at `size`."""

    def __init__(self, f: BinaryIO, size: int):
        self.f, self.left, self.short = f, size, False
        self.sha256 = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        want = self.left if n < 0 else min(n, self.left)
        chunks, got = [], 0
        while got < want:
            chunk = self.f.read(want - got)
            if not chunk:
                self.short = True
                chunks.append(b"\0" * (want - got))
                break
            chunks.append(chunk)
            got += len(chunk)
        data = b"".join(chunks)
        self.left -= len(data)
        self.sha256.update(data)
        return data


def open_once(path: Path) -> BinaryIO:
    """The one handle a file is read through (a symlink is not followed)."""
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")


def add_file(tar: tarfile.TarFile, path: Path, arcname: str) -> tuple[dict, bool] | None:
    """Copy `path` into the tar from one open handle; its entry for the manifest and whether it
    changed while it was read. None when it is gone or not a regular file."""
    try:
        f = open_once(path)
    except (FileNotFoundError, OSError):
        return None  # deleted meanwhile (a run deleted), or a symlink: not the server's data
    with f:
        before = os.fstat(f.fileno())
        if not stat.S_ISREG(before.st_mode):
            return None
        info = tar.gettarinfo(arcname=arcname, fileobj=f)  # from fstat: the size this handle has
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        reader = Exactly(f, info.size)
        tar.addfile(info, reader)  # read() is all tarfile uses
        after = os.fstat(f.fileno())
    changed = reader.short or (after.st_size, after.st_mtime_ns) != (
        before.st_size,
        before.st_mtime_ns,
    )
    return {"size": info.size, "sha256": reader.sha256.hexdigest()}, changed


def artifact_files(artifacts_dir: Path) -> Iterator[tuple[Path, str]]:
    """Every regular file under the artifacts folder, in a stable order, with its name in the tar;
    a restore's staging folder (STAGING_PREFIX) is not data."""
    for root, dirs, files in os.walk(artifacts_dir):
        here = Path(root)
        if here == artifacts_dir:
            dirs[:] = [d for d in dirs if not d.startswith(STAGING_PREFIX)]
        dirs.sort()
        for name in sorted(files):
            path = here / name
            if path.is_file() and not path.is_symlink():
                yield path, f"artifacts/{path.relative_to(artifacts_dir).as_posix()}"


def snapshot(source: Path, target: Path) -> None:
    """SQLite's online backup of `source` into `target`: a consistent copy while the server
    writes."""
    with (
        closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src,
        closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


def backup(
    out: BinaryIO,
    db_dir: Path = TRACKING_DB_DIR,
    artifacts_dir: Path = TRACKING_ARTIFACTS_DIR,
    *,
    keys_only: bool = False,
) -> Written:
    """Write the tar to the binary stream `out`."""
    written = Written(KEYS_ONLY_KIND if keys_only else FULL)
    wanted = KEYS_ONLY if keys_only else (*DATABASES, *KEYS)

    def add(path: Path, arcname: str, attempts: int = 1) -> None:
        for _ in range(attempts):
            entry = add_file(tar, path, arcname)
            if entry is None:
                return
            written.files[arcname], changed = entry
            if not changed:
                return
        written.changed.append(arcname)

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}backup-", dir=db_dir))
        try:
            for name in DATABASES:
                if name in wanted and (db_dir / name).is_file():
                    snapshot(db_dir / name, staging / name)
                    add(staging / name, f"db/{name}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for name in KEYS:
            if name in wanted:
                add(db_dir / name, f"db/{name}", ATTEMPTS)
        if not keys_only:
            for path, arcname in artifact_files(artifacts_dir):
                add(path, arcname, ATTEMPTS)
        data = written.manifest()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        info.mode = 0o600
        tar.addfile(info, io.BytesIO(data))
    return written


def main(
    argv: list[str] | None = None,
    *,
    db_dir: Path = TRACKING_DB_DIR,
    artifacts_dir: Path = TRACKING_ARTIFACTS_DIR,
) -> int:
    parser = argparse.ArgumentParser(
        prog="promptlab-backup",
        description="Every experiment, run, artifact and kept key on the tracking volumes, as "
        "one tar file on standard output: docker compose exec -T tracking promptlab-backup > "
        "backup.tar",
    )
    parser.add_argument(
        "--keys-only",
        action="store_true",
        help="only what PostgreSQL's own dump does not hold (BACKEND_STORE_URI): the basic-auth "
        "users, the AI Gateway's passphrase, the CSRF key",
    )
    args = parser.parse_args(argv)
    try:
        where = elsewhere()
    except SettingsError as e:
        print(f"promptlab-backup settings error: {e}", file=sys.stderr)
        return 2
    if not args.keys_only and (problem := where.runs or where.artifacts):
        print(f"promptlab-backup: {problem}", file=sys.stderr)
        return 2
    if sys.stdout.isatty():
        print(
            "promptlab-backup: standard output is a terminal; send it to a file (and give exec "
            "-T, or the terminal mangles the bytes): docker compose exec -T tracking "
            "promptlab-backup > backup.tar",
            file=sys.stderr,
        )
        return 2
    written = backup(sys.stdout.buffer, db_dir, artifacts_dir, keys_only=args.keys_only)
    sys.stdout.buffer.flush()
    what = "the basic-auth users and keys" if args.keys_only else "databases, keys, artifacts"
    print(f"promptlab-backup: {len(written.files)} files ({what})", file=sys.stderr)
    if written.changed:
        print(
            f"promptlab-backup: {len(written.changed)} files kept changing while they were read "
            f"and are marked in the backup, which restores without them: "
            f"{', '.join(written.changed[:10])}{' ...' if len(written.changed) > 10 else ''}. "
            "Take the backup again when they are done changing",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
