"""Tracking server entrypoint: read the settings, set up basic auth if asked, exec `mlflow server`.

SQLite and artifacts live on the named volumes under /mlflow unless BACKEND_STORE_URI (a team's
PostgreSQL) and ARTIFACTS_DESTINATION (an S3-compatible bucket) say otherwise; the basic-auth
users and the kept secrets stay on the mlflow-db volume either way. `--serve-artifacts` lets the UI
read artifacts through this server. The one-shot db-upgrade service (tracking_ops/db_upgrade.py)
has brought the schema up to date before this starts; the endpoint-sync service
(services/endpoint-sync) keeps the built-in AI Gateway's endpoints equal to the models the stack
serves, through this server's REST API. `server_command` and `server_environment` are what the
container runs; the benchmark and the tests run the same.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from promptlab_stack.settings import SettingsError
from promptlab_stack.stop import stop_service
from promptlab_stack.topology import TRACKING, TRACKING_ARTIFACTS_DIR, TRACKING_DB_DIR
from tracking.settings import TrackingSettings

AUTH_CONFIG_PATH = Path.home() / "basic_auth.ini"


def server_command(
    settings: TrackingSettings,
    *,
    db_dir: Path = TRACKING_DB_DIR,
    artifacts_dir: Path = TRACKING_ARTIFACTS_DIR,
    host: str = "0.0.0.0",
    port: int = TRACKING.port,
) -> list[str]:
    return [
        "mlflow",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(settings.mlflow_workers),
        "--backend-store-uri",
        settings.store_uri(db_dir),
        "--artifacts-destination",
        settings.artifacts_location(artifacts_dir),
        "--serve-artifacts",
        "--app-name",
        "promptlab",
        # uvicorn's supervisor kills a worker that does not answer its ping within 5 s by
        # default; on a small CPU busy generating, that dropped requests in flight (load test).
        "--uvicorn-opts",
        "--timeout-worker-healthcheck 60",
        "--allowed-hosts",
        ",".join(allowed_hosts(settings)),
    ]


def allowed_hosts(settings: TrackingSettings) -> list[str]:
    """MLflow's default Host headers (localhost, private addresses), this server's name on the
    compose network (the endpoint-sync service calls it there), and MLFLOW_ALLOWED_HOSTS:
    `--allowed-hosts` alone would replace the defaults, and 127.0.0.1 would then get a 403."""
    from mlflow.server.security_utils import get_default_allowed_hosts

    extra = [TRACKING.name, f"{TRACKING.name}:*"]
    extra += [h.strip() for h in settings.mlflow_allowed_hosts.split(",") if h.strip()]
    defaults = get_default_allowed_hosts()
    return defaults + [h for h in dict.fromkeys(extra) if h not in defaults]


def basic_auth_ini(settings: TrackingSettings, db_dir: Path = TRACKING_DB_DIR) -> str:
    """MLflow's basic-auth config; users live beside the tracking database, so they survive
    restarts."""
    return (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{db_dir}/basic_auth.db\n"
        f"admin_username = {settings.mlflow_auth_admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )


def kept_secret(value: str, path: Path) -> str:
    """`value` when set, else a random one generated once and kept in `path` (owner-only), so that
    it survives restarts."""
    if value:
        return value
    if not path.is_file() or not path.read_text().strip():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def flask_secret_key(settings: TrackingSettings, db_dir: Path = TRACKING_DB_DIR) -> str:
    """The CSRF key every worker shares, so that sessions survive restarts."""
    return kept_secret(settings.mlflow_flask_server_secret_key, db_dir / ".flask_secret_key")


def kek_passphrase(settings: TrackingSettings, db_dir: Path = TRACKING_DB_DIR) -> str:
    """The passphrase that encrypts the built-in AI Gateway's secrets. MLflow falls back to a
    passphrase shared by every installation; the secrets it encrypts live in this database, so the
    passphrase lives beside it (and must move with it: a different one cannot decrypt them)."""
    return kept_secret(settings.mlflow_crypto_kek_passphrase, db_dir / ".kek_passphrase")


def server_environment(
    settings: TrackingSettings,
    *,
    db_dir: Path = TRACKING_DB_DIR,
    auth_config_path: Path = AUTH_CONFIG_PATH,
) -> dict[str, str]:
    """What `mlflow server` and its workers read; with basic auth, writes its config file."""
    env = {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": str(
            settings.mlflow_server_enable_job_execution
        ).lower(),
        "MLFLOW_CRYPTO_KEK_PASSPHRASE": kek_passphrase(settings, db_dir),
    }
    if settings.basic_auth:
        auth_config_path.write_text(basic_auth_ini(settings, db_dir))
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config_path)
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = flask_secret_key(settings, db_dir)
    return env


def auth_dropped(settings: TrackingSettings, db_dir: Path = TRACKING_DB_DIR) -> str | None:
    """Why the server must not start: basic auth was on for this database (its users are on the
    volume) and the password is gone from the settings, which would open every route. None when
    auth is on, was never on, or MLFLOW_AUTH_DISABLE turns it off on purpose."""
    users = db_dir / "basic_auth.db"
    if settings.basic_auth or settings.mlflow_auth_disable or not users.is_file():
        return None
    return (
        f"basic auth was turned on for this database (its users are in {users}) but "
        "MLFLOW_AUTH_ADMIN_PASSWORD is empty, so the server stays down rather than start with "
        "every route open. Set MLFLOW_AUTH_ADMIN_PASSWORD (the admin's current password, if it was "
        "changed in the UI or the API), or set MLFLOW_AUTH_DISABLE=true to turn basic auth off on "
        "purpose"
    )


def use_wal(db_dir: Path = TRACKING_DB_DIR, tracking_db: bool = True) -> None:
    """SQLite in write-ahead-log mode (kept in the file): readers no longer block the writer, so
    the UI stays responsive while runs are written, and a backup (tracking_ops/backup.py) reads a
    snapshot while the server writes. An empty database file is fine: MLflow creates its tables in
    it. `tracking_db`: the runs are in SQLite on the volume (not in BACKEND_STORE_URI's
    database)."""
    import sqlite3

    for name in ("mlflow.db", "basic_auth.db"):
        path = db_dir / name
        if (name == "mlflow.db" and tracking_db) or (name == "basic_auth.db" and path.is_file()):
            with sqlite3.connect(path) as db:
                db.execute("PRAGMA journal_mode=WAL")


def bootstrap_basic_auth() -> None:
    """What `mlflow server --app-name basic-auth` does before starting workers: one clear error for
    a bad setup, and the admin user created once rather than by racing workers."""
    from mlflow.server.auth import bootstrap_admin_user, get_flask_server_secret_key

    get_flask_server_secret_key()
    bootstrap_admin_user()


def main() -> int:
    try:
        settings = TrackingSettings.from_env()
    except SettingsError as e:
        return stop_service("tracking", e)
    if problem := auth_dropped(settings):
        return stop_service("tracking", problem)
    os.environ.update(server_environment(settings))
    use_wal(tracking_db=not settings.backend_store_uri)
    if settings.basic_auth:
        if not settings.mlflow_auth_admin_password.isascii():
            # tests/unit/endpoint_sync/test_sync.py holds the canary for this MLflow limitation.
            print(
                "tracking: MLFLOW_AUTH_ADMIN_PASSWORD has non-ASCII characters: MLflow's AI "
                "Gateway routes (the Playground's chat, judges on gateway:/ endpoints) decode "
                "logins as ASCII and will refuse it; the rest of the UI accepts it. Use an ASCII "
                "password for those.",
                file=sys.stderr,
            )
        bootstrap_basic_auth()
        use_wal(tracking_db=not settings.backend_store_uri)
    command = server_command(settings)
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
