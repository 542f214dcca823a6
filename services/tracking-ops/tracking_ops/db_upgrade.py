"""`promptlab-db-upgrade`: bring the tracking database's schema up to date, before the tracking
server starts, with one writer at a time (the compose file's one-shot `db-upgrade` service).

A new MLflow release may change the schema, and `mlflow server` then refuses to start until
`mlflow db upgrade` has run with every writer stopped. So the stack runs this first, every `up`:
it does nothing when the schema is current (a second), creates the tables of an empty database,
and otherwise migrates with MLflow's own `mlflow db upgrade`, logging from which revision to which.
It refuses to migrate while a tracking server still answers (an old container that `up` has not
replaced yet): stop it, then `up` again.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request

from promptlab_stack.settings import SettingsError
from promptlab_stack.topology import TRACKING, TRACKING_DB_DIR
from tracking.settings import TrackingSettings
from tracking_ops.mlflow_compat import schema_revisions

TRACKING_HEALTH_URL = f"{TRACKING.url}/health"


def tracking_answers(url: str = TRACKING_HEALTH_URL) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3):
            return True
    except OSError:
        return False


def redacted(uri: str) -> str:
    return uri.split("?")[0]


def upgrade(store_uri: str, health_url: str = TRACKING_HEALTH_URL) -> int:
    import mlflow

    try:  # MLflow's engine creates a SQLite file's folder itself
        current, head = schema_revisions(store_uri)
    except Exception as e:  # noqa: BLE001 - the message names the cause; the server would fail the same way
        cause = (str(getattr(e, "orig", None) or e).strip().splitlines() or [type(e).__name__])[0]
        print(
            f"db-upgrade: cannot read the schema of {redacted(store_uri)} (BACKEND_STORE_URI): "
            f"{cause}",
            file=sys.stderr,
        )
        return 1
    if current == head:
        print(
            f"db-upgrade: the schema of {redacted(store_uri)} is current "
            f"({head}, MLflow {mlflow.__version__})",
            file=sys.stderr,
        )
        return 0
    if current is not None and tracking_answers(health_url):
        print(
            f"db-upgrade: the schema is at {current} and MLflow {mlflow.__version__} needs {head}, "
            "but a tracking server is still running on the database; MLflow migrates with every "
            "writer stopped. Run: docker compose stop tracking, then docker compose up -d again",
            file=sys.stderr,
        )
        return 1
    what = (
        "creating the tables of a new database"
        if current is None
        else f"upgrading the schema from {current}"
    )
    print(
        f"db-upgrade: {what} to {head} (MLflow {mlflow.__version__}) in {redacted(store_uri)}",
        file=sys.stderr,
    )
    done = subprocess.run(["mlflow", "db", "upgrade", store_uri])
    if done.returncode == 0:
        print(f"db-upgrade: done; the schema is at {head}", file=sys.stderr)
    else:
        print(
            "db-upgrade: `mlflow db upgrade` failed (see above); restore your backup before "
            "trying again with an older image",
            file=sys.stderr,
        )
    return done.returncode


def main() -> int:
    try:
        settings = TrackingSettings.from_env()
    except SettingsError as e:
        print(f"db-upgrade settings error: {e}", file=sys.stderr)
        return 2
    return upgrade(settings.store_uri(TRACKING_DB_DIR))


if __name__ == "__main__":
    sys.exit(main())
