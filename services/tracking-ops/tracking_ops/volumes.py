"""What a backup holds: the tracking server's databases and the keys kept beside them on the
mlflow-db volume, and the artifacts on the mlflow-artifacts volume (promptlab_stack.topology's
TRACKING_DB_DIR and TRACKING_ARTIFACTS_DIR); and why data kept elsewhere is not in it.

The keys (the CSRF key, the AI Gateway's secrets passphrase) are in a backup too: treat the file
like a password.
"""

from __future__ import annotations

DATABASES = ("mlflow.db", "basic_auth.db")
KEYS = (".flask_secret_key", ".kek_passphrase")


def outside_the_volumes() -> str | None:
    """Why a backup would miss data: runs in a team's PostgreSQL, artifacts in a bucket."""
    from tracking.settings import TrackingSettings

    settings = TrackingSettings.from_env()
    if settings.backend_store_uri:
        return (
            "the runs are in BACKEND_STORE_URI's database, not on the volume: back it up with its "
            "own tools (PostgreSQL: pg_dump; see the README's Team setup)"
        )
    if settings.artifacts_destination:
        return (
            "the artifacts are in ARTIFACTS_DESTINATION, not on the volume: back the bucket up "
            "with its own tools (versioning, replication)"
        )
    return None
