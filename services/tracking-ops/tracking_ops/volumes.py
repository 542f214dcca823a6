"""What a backup holds: the tracking server's databases and the keys kept beside them on the
mlflow-db volume, and the artifacts on the mlflow-artifacts volume (promptlab_stack.topology's
TRACKING_DB_DIR and TRACKING_ARTIFACTS_DIR); and why data kept elsewhere is not in it.

A full backup: every database, key and artifact. A keys-only backup (`promptlab-backup
--keys-only`): what stays on the mlflow-db volume when the runs are in a team's PostgreSQL, and
that PostgreSQL's own dump does not hold: the basic-auth users and the kept secrets.

The keys (the CSRF key, the AI Gateway's secrets passphrase) are in a backup too: treat the file
like a password. They are restored owner-only (0600), as the tracking server keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass

RUNS_DATABASE = "mlflow.db"
USERS_DATABASE = "basic_auth.db"
DATABASES = (RUNS_DATABASE, USERS_DATABASE)
# Every secret the tracking server keeps on the volume (services/tracking/tracking/start.py).
KEYS = (".flask_secret_key", ".kek_passphrase")
KEYS_ONLY = (USERS_DATABASE, *KEYS)
# The last member of a backup: its kind and each file's size and SHA-256, so that a backup cut
# short or damaged is known before anything is replaced.
MANIFEST = "promptlab-backup.json"
MANIFEST_FORMAT = 1
FULL, KEYS_ONLY_KIND = "full", "keys-only"
# Backup snapshots and restore staging live on the volumes themselves (a rename then swaps a file
# in; /tmp is memory-backed in the containers), in hidden folders a backup skips.
STAGING_PREFIX = ".promptlab-"


@dataclass(frozen=True)
class Elsewhere:
    """Why part of the data is not on the volumes (None: it is there)."""

    runs: str | None = None
    artifacts: str | None = None


def elsewhere() -> Elsewhere:
    """Runs in a team's PostgreSQL, artifacts in a bucket. Raises SettingsError."""
    from tracking.settings import TrackingSettings

    settings = TrackingSettings.from_env()
    return Elsewhere(
        runs=(
            "the runs are in BACKEND_STORE_URI's database, not on the volume: back them up with "
            "that database's own tools (PostgreSQL: pg_dump, see docs/operations.md), and what "
            "its dump does not hold (the basic-auth users, the AI Gateway's passphrase, the CSRF "
            "key) with: promptlab-backup --keys-only"
            if settings.backend_store_uri
            else None
        ),
        artifacts=(
            "the artifacts are in ARTIFACTS_DESTINATION, not on the volume: back the bucket up "
            "with its own tools (versioning, replication)"
            if settings.artifacts_destination
            else None
        ),
    )
