"""`promptlab-restore`: a `promptlab-backup` file, from standard input, back onto the volumes.

    docker compose stop tracking
    docker compose run --rm -T --no-deps tracking promptlab-restore < backup.tar
    docker compose up -d

Refuses to run while this container's tracking server answers; replaces the databases and keys
and adds the artifacts.
"""

from __future__ import annotations

import io
import sys
import tarfile
import urllib.request
from pathlib import Path

from promptlab_stack.topology import TRACKING, TRACKING_ARTIFACTS_DIR, TRACKING_DB_DIR
from tracking_ops.volumes import DATABASES, KEYS, outside_the_volumes


def server_answers(port: int = TRACKING.port) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        return True
    except OSError:
        return False


def restore(
    stream, db_dir: Path = TRACKING_DB_DIR, artifacts_dir: Path = TRACKING_ARTIFACTS_DIR
) -> int:
    """Unpack a backup from the binary stream; returns how many files it wrote."""
    count = 0
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            top, _, rest = member.name.partition("/")
            if top == "db" and rest in DATABASES + KEYS:
                target = db_dir / rest
            elif (
                top == "artifacts"
                and rest
                and ".." not in Path(rest).parts
                and not rest.startswith("/")
            ):
                target = artifacts_dir / rest
            else:
                raise SystemExit(
                    f"promptlab-restore: {member.name!r} is not part of a promptlab-backup file"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:  # not a regular file's data (isfile above: never)
                continue
            data = source.read()
            tmp = target.with_name(f".{target.name}.restoring")
            tmp.write_bytes(data)
            tmp.replace(target)
            if top == "db":
                for suffix in ("-wal", "-shm"):  # the old database's journal must not outlive it
                    target.with_name(target.name + suffix).unlink(missing_ok=True)
            count += 1
    return count


def main() -> int:
    if problem := outside_the_volumes():
        print(f"promptlab-restore: {problem}", file=sys.stderr)
        return 2
    if server_answers():
        print(
            "promptlab-restore: the tracking server is running; stop it first (docker compose stop "
            "tracking), then: "
            "docker compose run --rm -T --no-deps tracking promptlab-restore < backup.tar",
            file=sys.stderr,
        )
        return 2
    count = restore(io.BufferedReader(sys.stdin.buffer))
    print(
        f"promptlab-restore: {count} files restored; start the server: docker compose up -d",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
