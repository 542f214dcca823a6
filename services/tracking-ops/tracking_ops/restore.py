"""`promptlab-restore`: a `promptlab-backup` file, from standard input, back onto the volumes.

    docker compose stop tracking
    docker compose run --rm -T --no-deps tracking promptlab-restore < backup.tar \
      || echo "NOT RESTORED (see above): nothing was changed"
    docker compose up -d

Refuses while a tracking server runs (asked on loopback and by its compose name: running.py), so
from `run` as from `exec`. Nothing is replaced until the whole backup has been read and checked:
it is first staged on the volumes themselves, beside the data (one hidden folder on each volume,
STAGING_PREFIX), then checked (the tar read to its end; every file against the manifest's size and
SHA-256; `PRAGMA integrity_check` on each SQLite database; the keys not empty), and only then
swapped in, file by file, with a rename. A backup cut short or damaged changes nothing and says
why. The databases and the kept keys are written owner-only (0600), as the server keeps them; the
artifacts are added to those on the volume (a file of the same name is replaced).

A backup made before promptlab-backup wrote a manifest is checked without it (the tar's end, the
databases). A keys-only backup (`promptlab-backup --keys-only`) brings back the basic-auth users
and the keys only, and is the only kind restored when the runs are in BACKEND_STORE_URI's database.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import tarfile
import tempfile
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from promptlab_stack.settings import SettingsError
from promptlab_stack.topology import TRACKING_ARTIFACTS_DIR, TRACKING_DB_DIR
from tracking_ops.running import answering
from tracking_ops.volumes import (
    DATABASES,
    FULL,
    KEYS,
    KEYS_ONLY_KIND,
    MANIFEST,
    MANIFEST_FORMAT,
    RUNS_DATABASE,
    STAGING_PREFIX,
    Elsewhere,
    elsewhere,
)

CHUNK = 1024 * 1024
MAX_MANIFEST_BYTES = 512 * 1024 * 1024
END_OF_ARCHIVE = b"\0" * tarfile.BLOCKSIZE
TAIL_BYTES = 4 * CHUNK
OWNER_ONLY = 0o600
KEY_NAMES = tuple(f"db/{name}" for name in KEYS)
RESTORE_COMMAND = "docker compose run --rm -T --no-deps tracking promptlab-restore < backup.tar"


class NotRestored(Exception):
    """Why a backup was not restored; nothing on the volumes was changed."""


@dataclass
class Restored:
    kind: str
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    manifest: bool = True


class TailReader:
    """The backup stream, keeping its last bytes and how many were read: tarfile ends its loop
    silently on a missing header after the first, so a backup cut at a member's end (or damaged
    there) reads like a whole one. A whole tar has a block of zeros where the next header would
    be (tarfile's `offset` after the loop); that is checked on the bytes read, whatever the
    Python version's tarfile does inside."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.total = 0
        self.tail = bytearray()

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.total += len(data)
        self.tail += data
        del self.tail[:-TAIL_BYTES]
        return data

    def ends_whole(self, end_of_members: int) -> bool:
        """Whether the bytes at `end_of_members` are the end-of-archive block of zeros (the rest
        of the stream, a record's padding, is read first)."""
        for _ in range(TAIL_BYTES // CHUNK + 1):
            if not self.read(CHUNK):
                break
        start = end_of_members - (self.total - len(self.tail))
        if start < 0:
            return False  # more padding than a tar writes: not a promptlab-backup file
        return bytes(self.tail[start : start + tarfile.BLOCKSIZE]) == END_OF_ARCHIVE


def artifact_path(rest: str) -> PurePosixPath | None:
    """The artifact's path under the artifacts folder, or None for one that would leave it."""
    path = PurePosixPath(rest)
    if (
        not rest
        or path.is_absolute()
        or any(part in ("", ".", "..") for part in rest.split("/"))
        or path.parts[0].startswith(STAGING_PREFIX)
    ):
        return None
    return path


def stage_member(source: IO[bytes], target: Path, mode: int) -> str:
    """Copy a member's data into the staging folder (flushed to disk); returns its SHA-256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(target, mode)  # whatever the umask
    return digest.hexdigest()


def integrity_problem(path: Path) -> str | None:
    """SQLite's own check of a staged database: None when it is whole."""
    try:
        with closing(sqlite3.connect(path)) as db:
            rows = db.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as e:
        return str(e)
    return None if rows == [("ok",)] else "; ".join(str(r[0]) for r in rows[:3])


def retire_database(target: Path) -> None:
    """Before a database is replaced: its write-ahead log folded in and removed, so that the old
    log can never be replayed into the new file (and the old file is whole until the rename)."""
    if target.is_file():
        try:
            with closing(sqlite3.connect(target)) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # a damaged database is being replaced anyway
    for suffix in ("-wal", "-shm"):
        target.with_name(target.name + suffix).unlink(missing_ok=True)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Staging:
    """The backup's files staged on the volumes: db/ names in a hidden folder on the mlflow-db
    volume, artifacts in one on the mlflow-artifacts volume (a rename cannot cross volumes)."""

    def __init__(self, db_dir: Path, artifacts_dir: Path):
        self.db_dir, self.artifacts_dir = db_dir, artifacts_dir
        self.folders: dict[Path, Path] = {}
        self.paths: dict[str, tuple[Path, Path]] = {}  # name -> (staged file, its target)
        self.sha256: dict[str, str] = {}

    def folder(self, volume: Path) -> Path:
        if volume not in self.folders:
            self.folders[volume] = Path(
                tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}restore-", dir=volume)
            )
        return self.folders[volume]

    def target(self, name: str) -> tuple[Path, Path, int]:
        """Where a member is staged and where it goes; refuses a name no backup holds."""
        top, _, rest = name.partition("/")
        if top == "db" and rest in (*DATABASES, *KEYS):
            return self.folder(self.db_dir) / rest, self.db_dir / rest, OWNER_ONLY
        if top == "artifacts" and (path := artifact_path(rest)) is not None:
            return self.folder(self.artifacts_dir) / path, self.artifacts_dir / path, 0o644
        raise NotRestored(f"{name!r} is not part of a promptlab-backup file")

    def add(self, name: str, source: IO[bytes]) -> None:
        staged, target, mode = self.target(name)
        self.sha256[name] = stage_member(source, staged, mode)
        self.paths[name] = (staged, target)

    def remove(self) -> None:
        for folder in self.folders.values():
            shutil.rmtree(folder, ignore_errors=True)


def read_backup(stream: BinaryIO, staging: Staging) -> dict | None:
    """Stage every file of the tar; returns its manifest (None for a backup made without one)."""
    reader = TailReader(stream)
    manifest = None
    whole = False
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                if member.isdir():
                    continue
                if manifest is not None:
                    raise NotRestored(
                        f"{member.name!r} comes after the manifest: not a promptlab-backup file"
                    )
                if not member.isfile():
                    raise NotRestored(f"{member.name!r} is not part of a promptlab-backup file")
                source = tar.extractfile(member)
                if source is None:  # not a regular file's data (isfile above: never)
                    continue
                if member.name == MANIFEST:
                    if member.size > MAX_MANIFEST_BYTES:
                        raise NotRestored("its manifest is too large: not a promptlab-backup file")
                    manifest = json.loads(source.read())
                    continue
                staging.add(member.name, source)
            whole = reader.ends_whole(tar.offset)
    except (tarfile.TarError, EOFError, ValueError, UnicodeDecodeError) as e:
        raise NotRestored(f"the backup is incomplete or damaged ({e})") from None
    except OSError as e:
        raise NotRestored(f"cannot stage the backup on the volumes ({e})") from None
    if not whole:
        raise NotRestored(
            "the backup is incomplete: the tar stops before its end (cut short while it was "
            "copied?)"
        )
    if manifest is not None and not isinstance(manifest, dict):
        raise NotRestored("its manifest is damaged")
    return manifest


def check(staging: Staging, manifest: dict | None, where: Elsewhere) -> list[str]:
    """Refuse a backup that is not whole or does not belong here; returns the files the backup
    marks as changing while they were read (not restored)."""
    names = set(staging.paths)
    changed: list[str] = []
    if manifest is not None:
        if manifest.get("format") != MANIFEST_FORMAT:
            raise NotRestored(
                f"its manifest is of format {manifest.get('format')!r}, not "
                f"{MANIFEST_FORMAT}: made by another promptlab-backup"
            )
        files = manifest.get("files")
        changed = list(manifest.get("changed") or [])
        if not isinstance(files, dict):
            raise NotRestored("its manifest is damaged")
        if missing := sorted(set(files) - names):
            raise NotRestored(
                f"the backup is incomplete: {len(missing)} files its manifest lists are not in "
                f"it ({', '.join(missing[:3])})"
            )
        if extra := sorted(names - set(files)):
            raise NotRestored(f"files not in its manifest: {', '.join(extra[:3])}")
        damaged = [
            name
            for name, entry in sorted(files.items())
            if not isinstance(entry, dict)
            or staging.sha256[name] != entry.get("sha256")
            or staging.paths[name][0].stat().st_size != entry.get("size")
        ]
        if damaged:
            raise NotRestored(
                f"the backup is damaged: {len(damaged)} files differ from the size and SHA-256 "
                f"its manifest lists ({', '.join(damaged[:3])})"
            )
        if keys := [n for n in changed if n.startswith("db/")]:
            raise NotRestored(
                f"the backup marks {', '.join(keys)} as changing while it was read: take a new "
                "backup"
            )
    if not names:
        raise NotRestored("the backup holds no file")
    for name in DATABASES:
        if f"db/{name}" in names and (problem := integrity_problem(staging.paths[f"db/{name}"][0])):
            raise NotRestored(f"db/{name} in the backup is not a sound SQLite database: {problem}")
    for name in KEYS:
        if f"db/{name}" in names and not staging.paths[f"db/{name}"][0].read_bytes().strip():
            raise NotRestored(f"db/{name} in the backup is empty")
    if where.runs and f"db/{RUNS_DATABASE}" in names:
        raise NotRestored(
            "this is a full backup (it holds runs), but the runs are in BACKEND_STORE_URI's "
            "database: restore them with that database's own tools (pg_restore), and the users "
            "and keys from a backup made with promptlab-backup --keys-only"
        )
    if where.artifacts and any(n.startswith("artifacts/") for n in names):
        raise NotRestored(
            "this backup holds artifacts, but they are in ARTIFACTS_DESTINATION: restore the "
            "bucket with its own tools, and the users and keys from a backup made with "
            "promptlab-backup --keys-only"
        )
    for name, (_, target) in staging.paths.items():
        if name.startswith("artifacts/") and path_taken(target, staging.artifacts_dir):
            raise NotRestored(f"{name} cannot be put in place: its path is taken on the volume")
    return changed


def path_taken(target: Path, root: Path) -> bool:
    """Whether a file cannot be renamed to `target`: a folder or a link there, or a file or a
    link where one of its folders would be."""
    folders = [root / p for p in target.relative_to(root).parents if p != Path(".")]
    return (
        target.is_dir()
        or target.is_symlink()
        or any(p.is_symlink() or (p.exists() and not p.is_dir()) for p in folders)
    )


def swap_in(staging: Staging, changed: list[str]) -> list[str]:
    """Rename each staged file over its target: the artifacts first, the databases, the keys
    last. Returns what was restored."""
    order = sorted(staging.paths, key=lambda n: (not n.startswith("artifacts/"), n in KEY_NAMES))
    restored = []
    for name in order:
        if name in changed:
            continue
        staged, target = staging.paths[name]
        target.parent.mkdir(parents=True, exist_ok=True)
        if name.startswith("db/") and name.removeprefix("db/") in DATABASES:
            retire_database(target)
        os.replace(staged, target)
        restored.append(name)
    fsync_dir(staging.db_dir)
    return restored


def restore(
    stream: BinaryIO,
    db_dir: Path = TRACKING_DB_DIR,
    artifacts_dir: Path = TRACKING_ARTIFACTS_DIR,
    *,
    where: Elsewhere | None = None,
) -> Restored:
    """Stage, check, then swap in a backup read from the binary stream. Raises NotRestored (and
    then nothing was changed). `where`: what is not on the volumes (volumes.elsewhere())."""
    staging = Staging(db_dir, artifacts_dir)
    try:
        manifest = read_backup(stream, staging)
        changed = check(staging, manifest, where or Elsewhere())
        names = set(staging.paths)
        full = f"db/{RUNS_DATABASE}" in names or any(n.startswith("artifacts/") for n in names)
        kind = str(manifest.get("kind")) if manifest else (FULL if full else KEYS_ONLY_KIND)
        restored = swap_in(staging, changed)
    finally:
        staging.remove()
    return Restored(
        kind,
        restored,
        [n for n in changed if n in names],
        manifest is not None,
    )


def main(
    argv: list[str] | None = None,
    *,
    db_dir: Path = TRACKING_DB_DIR,
    artifacts_dir: Path = TRACKING_ARTIFACTS_DIR,
) -> int:
    argparse.ArgumentParser(
        prog="promptlab-restore",
        description="A promptlab-backup file, from standard input, back onto the tracking "
        f"volumes, with the tracking server stopped: {RESTORE_COMMAND}. Checked whole before "
        "anything is replaced.",
    ).parse_args(argv)
    try:
        where = elsewhere()
    except SettingsError as e:
        print(f"promptlab-restore settings error: {e}", file=sys.stderr)
        return 2
    if running := answering():
        print(
            f"promptlab-restore: the tracking server is running (it answers at {running}); stop "
            f"it first (docker compose stop tracking), then: {RESTORE_COMMAND}",
            file=sys.stderr,
        )
        return 2
    if sys.stdin.isatty():
        print(
            f"promptlab-restore: give it the backup file on standard input: {RESTORE_COMMAND}",
            file=sys.stderr,
        )
        return 2
    try:
        restored = restore(sys.stdin.buffer, db_dir, artifacts_dir, where=where)
    except NotRestored as e:
        print(f"promptlab-restore: {e}; nothing was changed", file=sys.stderr)
        return 1
    checked = (
        "checked against its manifest"
        if restored.manifest
        else "made without a manifest: checked the tar's end and the databases"
    )
    print(
        f"promptlab-restore: {len(restored.files)} files restored from a {restored.kind} backup "
        f"({checked}); start the server: docker compose up -d",
        file=sys.stderr,
    )
    if restored.skipped:
        print(
            f"promptlab-restore: {len(restored.skipped)} files were changing while the backup "
            f"read them and were left out: {', '.join(restored.skipped[:10])}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
