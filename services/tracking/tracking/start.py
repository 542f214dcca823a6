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
from dataclasses import dataclass
from pathlib import Path

from promptlab_stack.settings import SettingsError
from promptlab_stack.stop import stop_service
from promptlab_stack.topology import TRACKING, TRACKING_ARTIFACTS_DIR, TRACKING_DB_DIR
from tracking import mlflow_compat
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
        # A browser's POST from any other origin gets MLflow's 403 "Cross-origin request blocked".
        "--cors-allowed-origins",
        ",".join(settings.cors_allowed_origins),
    ]


def allowed_hosts(settings: TrackingSettings) -> list[str]:
    """MLflow's default Host headers (localhost, private addresses), this server's name on the
    compose network (the endpoint-sync service calls it there), the tls proxy's names
    (TLS_HOSTNAMES: the proxy passes the browser's Host on) and MLFLOW_ALLOWED_HOSTS:
    `--allowed-hosts` alone would replace the defaults, and 127.0.0.1 would then get a 403."""
    from mlflow.server.security_utils import get_default_allowed_hosts

    extra = [TRACKING.name, f"{TRACKING.name}:*"]
    for name in settings.hostnames:
        host = f"[{name}]" if ":" in name else name
        extra += [host, f"{host}:*"]
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
    if kept := read_kept(path):
        return kept
    write_owner_only(path, secrets.token_hex(32))
    return read_kept(path)


def read_kept(path: Path) -> str:
    """The secret kept in `path` ("" when there is none), its file made owner-only if it was not
    (a key restored by an older promptlab-restore)."""
    if not path.is_file():
        return ""
    if path.stat().st_mode & 0o077:
        try:
            path.chmod(0o600)
        except PermissionError:
            pass  # not ours to change; the secret still reads
    return path.read_text().strip()


def write_owner_only(path: Path, text: str) -> None:
    """Write a kept secret whole (a rename) and owner-only from its first byte."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.chmod(0o600)
    tmp.replace(path)


def flask_secret_key(settings: TrackingSettings, db_dir: Path = TRACKING_DB_DIR) -> str:
    """The CSRF key every worker shares, so that sessions survive restarts."""
    return kept_secret(settings.mlflow_flask_server_secret_key, db_dir / ".flask_secret_key")


# MLflow derives the key-encryption key from the passphrase and this version (default 1), and
# `mlflow crypto rotate-kek` moves every secret to the next version: the server must then run with
# the new passphrase and the new version.
KEK_VERSION_VARIABLE = "MLFLOW_CRYPTO_KEK_VERSION"
KEK_ROTATION = (
    "to change the passphrase, rotate the secrets to the new one first with MLflow's "
    "`mlflow crypto rotate-kek`, then set MLFLOW_CRYPTO_KEK_PASSPHRASE and "
    "MLFLOW_CRYPTO_KEK_VERSION to what it printed (docs/operations.md, Rotating the AI Gateway's "
    "passphrase)"
)


class KeyProblem(Exception):
    """Why the server must not start with the AI Gateway's passphrase it has: it would not decrypt
    the secrets in the database (a restart cannot fix that)."""


class SecretsUnreadable(Exception):
    """The tracking database could not be asked for its AI Gateway secrets (PostgreSQL down)."""


@dataclass(frozen=True)
class StoredSecret:
    name: str
    wrapped_dek: bytes
    kek_version: int


def encrypted_secrets(store_uri: str) -> list[StoredSecret]:
    """The built-in AI Gateway's encrypted secrets in the tracking database (SQLite on the volume
    or BACKEND_STORE_URI's PostgreSQL); [] for a database or a schema that has none yet. Raises
    SecretsUnreadable. The table is MLflow's own model, as `mlflow crypto rotate-kek` reads it."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    url = sqlalchemy.engine.make_url(store_uri)
    backend = url.get_backend_name()
    if backend == "sqlite" and not (url.database and Path(url.database).is_file()):
        return []
    table = mlflow_compat.gateway_secrets_table()
    connect_args = {"connect_timeout": 10} if backend == "postgresql" else {}
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            if not sqlalchemy.inspect(connection).has_table(table.name):
                return []
            rows = connection.execute(
                sqlalchemy.select(table.c.secret_name, table.c.wrapped_dek, table.c.kek_version)
            ).all()
    except sqlalchemy.exc.SQLAlchemyError as e:
        cause = (str(getattr(e, "orig", None) or e).strip().splitlines() or [type(e).__name__])[0]
        raise SecretsUnreadable(
            f"cannot read the AI Gateway's secrets in {store_uri.split('?')[0]}: {cause}"
        ) from e
    finally:
        engine.dispose()
    return [StoredSecret(str(n), bytes(w), int(v)) for n, w, v in rows]


def unwraps(passphrase: str, version: int, stored: list[StoredSecret]) -> bool:
    """Whether the key-encryption key MLflow derives from `passphrase` and `version` unwraps every
    secret's data key (AES-GCM: a wrong key fails its tag)."""
    unwrap = mlflow_compat.data_key_unwrapper(passphrase, version)
    return all(unwrap(secret.wrapped_dek) for secret in stored)


def kek_problem(
    stored: list[StoredSecret], chosen: str, kept: str, version: int, kept_path: Path
) -> str | None:
    """Why the passphrase set (`chosen`, MLFLOW_CRYPTO_KEK_PASSPHRASE) or else the one `kept` on
    the volume cannot serve the secrets `stored` in the database; None when it decrypts them."""
    names = ", ".join(sorted(s.name for s in stored)[:3]) + (", ..." if len(stored) > 3 else "")
    holds = (
        f"the database holds {len(stored)} encrypted AI Gateway "
        f"secret{'s' if len(stored) > 1 else ''} ({names})"
    )
    passphrase = chosen or kept
    if not passphrase:
        return (
            f"{holds}, but the passphrase that encrypts them is gone: {kept_path} is missing or "
            "empty and MLFLOW_CRYPTO_KEK_PASSPHRASE is not set. A new passphrase could not decrypt "
            "them, so the server stays down rather than make one. Put the passphrase back: "
            f"restore {kept_path.name} from a backup (promptlab-restore; with PostgreSQL, a "
            "backup made with promptlab-backup --keys-only), or set MLFLOW_CRYPTO_KEK_PASSPHRASE "
            "in .env to the passphrase they were encrypted with"
        )
    versions = sorted({s.kek_version for s in stored})
    if versions != [version]:
        return (
            f"{holds}, wrapped with KEK version {', '.join(map(str, versions))}, but "
            f"{KEK_VERSION_VARIABLE} is {version}: after `mlflow crypto rotate-kek`, set "
            f"{KEK_VERSION_VARIABLE} to the version it printed and MLFLOW_CRYPTO_KEK_PASSPHRASE to "
            "the passphrase it rotated to"
        )
    if unwraps(passphrase, version, stored):
        return None
    if chosen and kept and kept != chosen and unwraps(kept, version, stored):
        return (
            f"{holds}, and MLFLOW_CRYPTO_KEK_PASSPHRASE does not decrypt them: the passphrase kept "
            f"in {kept_path} does. The server stays down rather than replace it. To keep it, "
            f"remove MLFLOW_CRYPTO_KEK_PASSPHRASE from .env; {KEK_ROTATION}"
        )
    which = "MLFLOW_CRYPTO_KEK_PASSPHRASE" if chosen else f"the passphrase kept in {kept_path}"
    return (
        f"{holds}, and {which} does not decrypt them (KEK version {version}): they were encrypted "
        "with another one, and the server stays down rather than start without them. Set "
        "MLFLOW_CRYPTO_KEK_PASSPHRASE to the passphrase they were encrypted with, or restore the "
        f"{kept_path.name} that belongs with this database (promptlab-restore of its backup); "
        f"{KEK_ROTATION}"
    )


def kek_passphrase(
    settings: TrackingSettings, db_dir: Path = TRACKING_DB_DIR, version: int = 1
) -> str:
    """The passphrase that encrypts the built-in AI Gateway's secrets. MLflow falls back to a
    passphrase shared by every installation; the secrets it encrypts live in this database, so the
    passphrase lives beside it (and must move with it: a different one cannot decrypt them).

    It is never replaced while the database holds secrets: a missing kept passphrase is not
    generated anew, and one set in MLFLOW_CRYPTO_KEK_PASSPHRASE must decrypt them (as it does
    after MLflow's rotation); otherwise KeyProblem says why and how to fix it. SecretsUnreadable:
    the database could not be asked and no passphrase is kept or set."""
    kept_path = db_dir / ".kek_passphrase"
    chosen = settings.mlflow_crypto_kek_passphrase
    try:
        stored = encrypted_secrets(settings.store_uri(db_dir))
    except SecretsUnreadable as e:
        if chosen or read_kept(kept_path):  # nothing is replaced: start with it, unchecked
            print(f"tracking: {e}; starting with the passphrase unchecked", file=sys.stderr)
            return kept_secret(chosen, kept_path)
        raise
    if not stored:
        return kept_secret(chosen, kept_path)
    if problem := kek_problem(stored, chosen, read_kept(kept_path), version, kept_path):
        raise KeyProblem(problem)
    return chosen or read_kept(kept_path)


def server_environment(
    settings: TrackingSettings,
    *,
    db_dir: Path = TRACKING_DB_DIR,
    auth_config_path: Path = AUTH_CONFIG_PATH,
) -> dict[str, str]:
    """What `mlflow server` and its workers read; with basic auth, writes its config file.
    Raises KeyProblem and SecretsUnreadable (kek_passphrase)."""
    version = settings.mlflow_crypto_kek_version
    env = {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": str(
            settings.mlflow_server_enable_job_execution
        ).lower(),
        "MLFLOW_CRYPTO_KEK_PASSPHRASE": kek_passphrase(settings, db_dir, version),
        KEK_VERSION_VARIABLE: str(version),
    }
    if settings.basic_auth:
        auth_config_path.write_text(basic_auth_ini(settings, db_dir))
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config_path)
        # MLflow prefers its variables over the config file even when they are empty, and compose
        # passes an unset MLFLOW_AUTH_ADMIN_USERNAME as "": the name the settings resolved wins.
        env["MLFLOW_AUTH_ADMIN_USERNAME"] = settings.mlflow_auth_admin_username
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


def password_problem(settings: TrackingSettings) -> str | None:
    """Why the admin password cannot work everywhere, without repeating it (logs are read by
    others). MLflow itself refuses a short one at bootstrap (bootstrap_basic_auth)."""
    if not settings.mlflow_auth_admin_password.isascii():
        # tests/unit/endpoint_sync/test_sync.py holds the canary for this MLflow limitation.
        return (
            "MLFLOW_AUTH_ADMIN_PASSWORD has non-ASCII characters: MLflow's AI Gateway routes (the "
            "Playground's chat, judges on gateway:/ endpoints) decode logins as ASCII and would "
            "refuse the admin there. Use an ASCII password"
        )
    return None


def bootstrap_basic_auth() -> str | None:
    """What `mlflow server --app-name basic-auth` does before starting workers: the admin user
    created once rather than by racing workers. Returns why the server must not start (MLflow's
    own message, naming the setting: an empty or too short password), or None."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth import bootstrap_admin_user, get_flask_server_secret_key

    try:
        get_flask_server_secret_key()
        bootstrap_admin_user()
    except MlflowException as e:
        return e.message
    return None


def main() -> int:
    try:
        settings = TrackingSettings.from_env()
    except SettingsError as e:
        return stop_service("tracking", e)
    if problem := auth_dropped(settings):
        return stop_service("tracking", problem)
    try:
        environment = server_environment(settings, db_dir=TRACKING_DB_DIR)
    except KeyProblem as e:
        return stop_service("tracking", e)
    except SecretsUnreadable as e:  # the database is not up yet: a crash, so compose restarts it
        print(f"tracking: {e}", file=sys.stderr, flush=True)
        return 1
    os.environ.update(environment)
    use_wal(tracking_db=not settings.backend_store_uri)
    if settings.basic_auth:
        if problem := password_problem(settings) or bootstrap_basic_auth():
            return stop_service("tracking", problem)
        use_wal(tracking_db=not settings.backend_store_uri)
    command = server_command(settings)
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
