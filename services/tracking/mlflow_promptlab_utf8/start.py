"""Tracking server entrypoint: read the settings, set up basic auth if asked, exec `mlflow server`.

SQLite and artifacts live on the named volumes under /mlflow; `--serve-artifacts` lets the UI read
artifacts through this server. `server_command` and `server_environment` are what the container
runs; the benchmark and the tests run the same.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from promptlab_stack.settings import SettingsError

from mlflow_promptlab_utf8.settings import TrackingSettings

DB_DIR = Path("/mlflow/db")
ARTIFACTS_DIR = Path("/mlflow/artifacts")
AUTH_CONFIG_PATH = Path.home() / "basic_auth.ini"
PORT = 5000


def server_command(settings: TrackingSettings, *, db_dir: Path = DB_DIR,
                   artifacts_dir: Path = ARTIFACTS_DIR, host: str = "0.0.0.0",
                   port: int = PORT) -> list[str]:
    command = [
        "mlflow", "server", "--host", host, "--port", str(port),
        "--workers", str(settings.mlflow_workers),
        "--backend-store-uri", f"sqlite:///{db_dir}/mlflow.db",
        "--artifacts-destination", str(artifacts_dir),
        "--serve-artifacts",
        "--app-name", "promptlab-utf8",
        # uvicorn's supervisor kills a worker that does not answer its ping within 5 s by
        # default; on a small CPU busy generating, that dropped requests in flight (load test).
        "--uvicorn-opts", "--timeout-worker-healthcheck 60",
    ]
    if settings.mlflow_allowed_hosts:
        command += ["--allowed-hosts", settings.mlflow_allowed_hosts]
    return command


def basic_auth_ini(settings: TrackingSettings, db_dir: Path = DB_DIR) -> str:
    """MLflow's basic-auth config; users live beside the tracking database, so they survive
    restarts."""
    return (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{db_dir}/basic_auth.db\n"
        f"admin_username = {settings.mlflow_auth_admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )


def flask_secret_key(settings: TrackingSettings, db_dir: Path = DB_DIR) -> str:
    """The CSRF key every worker shares: the setting, else one generated once and kept on the
    database volume, so that sessions survive restarts."""
    if settings.mlflow_flask_server_secret_key:
        return settings.mlflow_flask_server_secret_key
    path = db_dir / ".flask_secret_key"
    if not path.is_file() or not path.read_text().strip():
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()


def server_environment(settings: TrackingSettings, *, db_dir: Path = DB_DIR,
                       auth_config_path: Path = AUTH_CONFIG_PATH) -> dict[str, str]:
    """What `mlflow server` and its workers read; with basic auth, writes its config file."""
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": str(settings.mlflow_server_enable_job_execution).lower()}
    if settings.basic_auth:
        auth_config_path.write_text(basic_auth_ini(settings, db_dir))
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config_path)
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = flask_secret_key(settings, db_dir)
    return env


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
        print(f"tracking settings error: {e}", file=sys.stderr)
        return 2
    os.environ.update(server_environment(settings))
    if settings.basic_auth:
        bootstrap_basic_auth()
    command = server_command(settings)
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
