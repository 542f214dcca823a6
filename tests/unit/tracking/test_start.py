"""The tracking container's start (services/tracking/tracking/start.py): the server command, its
environment and its guards, checked on a real `mlflow server` run as the image runs it
(tests/tracking_server.py), on loopback with a fresh database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from unittest import mock

import pytest
import requests
import tracking_server as tracking_server_program
from tracking_server import tracking_server

from promptlab_stack.settings import SettingsError
from tracking import start
from tracking.settings import TrackingSettings
from tracking.start import (
    KeyProblem,
    auth_dropped,
    password_problem,
    server_command,
    server_environment,
)


def test_the_secrets_passphrase_is_generated_once_and_kept_beside_the_database(tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    settings = TrackingSettings.from_env({})
    first = server_environment(settings, db_dir=db, auth_config_path=tmp_path / "auth.ini")
    kept = (db / ".kek_passphrase").read_text().strip()
    assert len(kept) >= 32 and oct((db / ".kek_passphrase").stat().st_mode)[-3:] == "600"
    assert first["MLFLOW_CRYPTO_KEK_PASSPHRASE"] == kept
    env = server_environment(settings, db_dir=db, auth_config_path=tmp_path / "auth.ini")
    assert env["MLFLOW_CRYPTO_KEK_PASSPHRASE"] == kept
    chosen = TrackingSettings.from_env({"MLFLOW_CRYPTO_KEK_PASSPHRASE": "from-dot-env"})
    assert (
        server_environment(chosen, db_dir=tmp_path, auth_config_path=tmp_path / "a.ini")[
            "MLFLOW_CRYPTO_KEK_PASSPHRASE"
        ]
        == "from-dot-env"
    )


def test_allowed_hosts_add_to_mlflows_defaults(tmp_path):
    """MLFLOW_ALLOWED_HOSTS is documented as extra hosts: 127.0.0.1 and localhost keep working, and
    so does the server's name on the compose network, where the endpoint-sync service calls it."""
    with tracking_server(tmp_path, MLFLOW_ALLOWED_HOSTS="mlflow.example.com") as (_, url):

        def status(host: str) -> int:
            return requests.get(
                f"{url}/api/2.0/mlflow/experiments/search?max_results=1",
                headers={"Host": host},
                timeout=10,
            ).status_code

        assert status("mlflow.example.com") == 200
        assert status(url.removeprefix("http://")) == 200
        assert status("localhost:5000") == 200
        assert status("tracking:5000") == 200
        assert status("evil.example.net") == 403


def test_auth_fails_closed_and_a_rotated_password_is_the_one_that_works(tmp_path):
    """Basic auth once on stays on: a restart without the password does not open the server; a
    password changed through MLflow's API works after a restart with it, the old one does not."""
    old, new = "first-password-1", "second-password-2"
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    with tracking_server(tmp_path, MLFLOW_AUTH_ADMIN_PASSWORD=old) as (_, url):
        r = requests.patch(
            f"{url}/api/2.0/mlflow/users/update-password",
            auth=("admin", old),
            timeout=10,
            json={"username": "admin", "password": new, "current_password": old},
        )
        assert r.status_code == 200, r.text

    for env in ({}, {"MLFLOW_AUTH_ADMIN_PASSWORD": ""}):
        problem = auth_dropped(TrackingSettings.from_env(env), db_dir=tmp_path)
        assert problem and "stays down rather than start with every route open" in problem
        assert "MLFLOW_AUTH_DISABLE=true" in problem
    assert (
        auth_dropped(TrackingSettings.from_env({"MLFLOW_AUTH_DISABLE": "true"}), db_dir=tmp_path)
        is None
    )
    assert auth_dropped(TrackingSettings.from_env({}), db_dir=tmp_path / "never-had-auth") is None

    (tmp_path / "artifacts").rename(tmp_path / "artifacts-1")
    with tracking_server(tmp_path, MLFLOW_AUTH_ADMIN_PASSWORD=new) as (_, url):
        assert requests.get(url + search, auth=("admin", new), timeout=10).status_code == 200
        assert requests.get(url + search, auth=("admin", old), timeout=10).status_code == 401
        assert requests.get(url + search, timeout=10).status_code == 401


def test_the_server_uses_the_team_stores_when_set():
    default = server_command(TrackingSettings())
    assert default[default.index("--backend-store-uri") + 1] == "sqlite:////mlflow/db/mlflow.db"
    assert default[default.index("--artifacts-destination") + 1] == "/mlflow/artifacts"
    team = server_command(
        TrackingSettings(
            backend_store_uri="postgresql://mlflow@postgres:5432/mlflow",
            artifacts_destination="s3://bucket/mlflow",
        )
    )
    assert team[team.index("--backend-store-uri") + 1] == "postgresql://mlflow@postgres:5432/mlflow"
    assert team[team.index("--artifacts-destination") + 1] == "s3://bucket/mlflow"


def test_sqlite_is_kept_in_write_ahead_log_mode(tmp_path):
    """So that the UI stays responsive while runs are written and a backup reads a snapshot
    (tracking_ops/backup.py); the users' database only once basic auth made it."""
    import sqlite3

    from tracking.start import use_wal

    def mode(name):
        return sqlite3.connect(tmp_path / name).execute("PRAGMA journal_mode").fetchone()[0]

    use_wal(tmp_path, tracking_db=False)  # the runs in BACKEND_STORE_URI's database
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    use_wal(tmp_path)
    assert mode("mlflow.db") == "wal" and not (tmp_path / "basic_auth.db").exists()
    sqlite3.connect(tmp_path / "basic_auth.db").close()
    use_wal(tmp_path)
    assert mode("basic_auth.db") == "wal"


def test_with_only_a_password_set_as_documented_the_admin_is_admin(tmp_path):
    """compose passes an unset MLFLOW_AUTH_ADMIN_USERNAME as "", which MLflow would take over the
    config file (and stop: "needs a username for the admin user")."""
    password = "team-password-1234"
    env = {"MLFLOW_AUTH_ADMIN_USERNAME": "", "MLFLOW_AUTH_ADMIN_PASSWORD": password}
    with tracking_server(tmp_path, **env) as (_, url):
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert requests.get(search, auth=("admin", password), timeout=10).status_code == 200
        assert requests.get(search, timeout=10).status_code == 401


def test_a_password_mlflow_refuses_stops_the_server_with_mlflows_reason_not_a_traceback(tmp_path):
    settings = TrackingSettings.from_env({"MLFLOW_AUTH_ADMIN_PASSWORD": "short"})
    env = {
        **os.environ,
        "MLFLOW_AUTH_ADMIN_PASSWORD": "short",
        **server_environment(settings, db_dir=tmp_path, auth_config_path=tmp_path / "auth.ini"),
    }
    # What start.py runs before the server, in its own process (MLflow reads its auth config once).
    out = subprocess.run(
        [sys.executable, tracking_server_program.__file__],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "at least 12 characters" in out.stdout and "MLFLOW_AUTH_ADMIN_PASSWORD" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


def test_a_non_ascii_password_is_refused_without_repeating_it():
    password = "パスワード-1234-abcd"
    problem = password_problem(TrackingSettings.from_env({"MLFLOW_AUTH_ADMIN_PASSWORD": password}))
    assert problem and "MLFLOW_AUTH_ADMIN_PASSWORD has non-ASCII characters" in problem
    assert password not in problem
    assert (
        password_problem(
            TrackingSettings.from_env({"MLFLOW_AUTH_ADMIN_PASSWORD": "ascii-1234-abcd"})
        )
        is None
    )


def test_a_browser_on_the_tls_proxys_names_may_post_and_other_origins_may_not(tmp_path):
    """What the browser sends through the tls proxy (which passes its Host on): the Host and
    Origin of https://<TLS_HOSTNAMES>:<TLS_PORT>; MLflow refuses both from names it does not
    know."""
    env = {"TLS_HOSTNAMES": "mlflow.example.com,192.0.2.7", "TLS_PORT": "9443"}
    with tracking_server(tmp_path, **env) as (settings, url):
        assert settings.cors_allowed_origins == [
            "https://mlflow.example.com:9443",
            "https://192.0.2.7:9443",
        ]

        def create(name: str, host: str, origin: str) -> int:
            return requests.post(
                f"{url}/ajax-api/2.0/mlflow/experiments/create",
                json={"name": name},
                headers={"Host": host, "Origin": origin},
                timeout=10,
            ).status_code

        assert create("a", "mlflow.example.com", "https://mlflow.example.com:9443") == 200
        assert create("b", "192.0.2.7", "https://192.0.2.7:9443") == 200
        assert create("c", "mlflow.example.com", "https://evil.example.com") == 403
        assert create("d", "mlflow.example.com", "https://mlflow.example.com:8443") == 403
        assert create("e", "evil.example.com", "https://mlflow.example.com:9443") == 403


# -- the AI Gateway's passphrase is never replaced while the database holds secrets ---------------
OLD, NEW = "old-passphrase-" + "x" * 20, "new-passphrase-" + "y" * 20


@pytest.fixture(scope="module")
def database_with_a_secret(tmp_path_factory):
    """A tracking database made by MLflow, holding one AI Gateway secret encrypted with OLD (KEK
    version 1), as the endpoint-sync service leaves it."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("secret-db")
    env = {"MLFLOW_CRYPTO_KEK_PASSPHRASE": OLD, "MLFLOW_CRYPTO_KEK_VERSION": "1"}
    with mock.patch.dict(os.environ, env):
        store = SqlAlchemyStore(f"sqlite:///{folder}/mlflow.db", str(folder / "artifacts"))
        store.create_gateway_secret("promptlab-stack-gateway", {"api_key": "unused"})
        store.engine.dispose()
    return folder / "mlflow.db"


@pytest.fixture
def db(tmp_path, database_with_a_secret):
    folder = tmp_path / "db"
    folder.mkdir()
    shutil.copy(database_with_a_secret, folder / "mlflow.db")
    return folder


def environment(db, tmp_path, version="", **knobs):
    return server_environment(
        TrackingSettings.from_env({**knobs, "MLFLOW_CRYPTO_KEK_VERSION": version}),
        db_dir=db,
        auth_config_path=tmp_path / "auth.ini",
    )


def test_a_lost_passphrase_is_not_made_anew_while_the_database_holds_secrets(
    db, tmp_path, monkeypatch, capsys
):
    with pytest.raises(KeyProblem) as refused:
        environment(db, tmp_path)
    problem = str(refused.value)
    assert "holds 1 encrypted AI Gateway secret (promptlab-stack-gateway)" in problem
    assert f"{db / '.kek_passphrase'} is missing" in problem
    assert "restore .kek_passphrase" in problem and "set MLFLOW_CRYPTO_KEK_PASSPHRASE" in problem
    assert not (db / ".kek_passphrase").exists()  # no new passphrase was kept

    # The container's start stops the service (status 0: not restarted into the same problem).
    for knob in ("MLFLOW_CRYPTO_KEK_PASSPHRASE", "MLFLOW_CRYPTO_KEK_VERSION", "BACKEND_STORE_URI"):
        monkeypatch.delenv(knob, raising=False)
    monkeypatch.setattr(start, "TRACKING_DB_DIR", db)
    monkeypatch.setattr(os, "execvp", mock.Mock(side_effect=AssertionError("started")))
    assert start.main() == 0
    assert capsys.readouterr().err.startswith("tracking stopped: the database holds 1 encrypted")

    # Either fix works: the passphrase back in its file (a restore, here owner-readable only
    # after the fact), or set in .env.
    (db / ".kek_passphrase").write_text(OLD + "\n")
    (db / ".kek_passphrase").chmod(0o644)
    assert environment(db, tmp_path)["MLFLOW_CRYPTO_KEK_PASSPHRASE"] == OLD
    assert oct((db / ".kek_passphrase").stat().st_mode & 0o777) == oct(0o600)
    (db / ".kek_passphrase").unlink()
    env = environment(db, tmp_path, MLFLOW_CRYPTO_KEK_PASSPHRASE=OLD)
    assert env["MLFLOW_CRYPTO_KEK_PASSPHRASE"] == OLD and env["MLFLOW_CRYPTO_KEK_VERSION"] == "1"


def test_a_passphrase_that_does_not_decrypt_the_secrets_is_refused(db, tmp_path):
    """Setting MLFLOW_CRYPTO_KEK_PASSPHRASE later, or keeping another database's passphrase,
    would leave the secrets unreadable."""
    (db / ".kek_passphrase").write_text(OLD)
    with pytest.raises(KeyProblem) as refused:
        environment(db, tmp_path, MLFLOW_CRYPTO_KEK_PASSPHRASE=NEW)
    problem = str(refused.value)
    assert "MLFLOW_CRYPTO_KEK_PASSPHRASE does not decrypt them" in problem
    assert f"the passphrase kept in {db / '.kek_passphrase'} does" in problem
    assert "remove MLFLOW_CRYPTO_KEK_PASSPHRASE" in problem and "rotate-kek" in problem
    assert (db / ".kek_passphrase").read_text() == OLD

    (db / ".kek_passphrase").write_text(NEW)  # e.g. keys restored from another backup
    with pytest.raises(KeyProblem, match="kept in .* does not decrypt them"):
        environment(db, tmp_path)
    assert (db / ".kek_passphrase").read_text() == NEW


def test_after_mlflows_rotation_the_new_passphrase_and_version_start_the_server(db, tmp_path):
    from click.testing import CliRunner
    from mlflow.cli.crypto import rotate_kek

    (db / ".kek_passphrase").write_text(OLD)
    rotated = CliRunner().invoke(
        rotate_kek,
        ["--yes", "--new-passphrase", NEW, "--backend-store-uri", f"sqlite:///{db}/mlflow.db"],
        # MLflow's test-only guard (PYTEST_CURRENT_TEST) rejects the rotation's write, made on a
        # session it opens read-only; outside a test run the command writes as documented.
        env={
            "MLFLOW_CRYPTO_KEK_PASSPHRASE": OLD,
            "MLFLOW_CRYPTO_KEK_VERSION": "1",
            "PYTEST_CURRENT_TEST": None,
        },
    )
    assert rotated.exit_code == 0, rotated.output
    assert "MLFLOW_CRYPTO_KEK_VERSION='2'" in rotated.output

    # Half done: the new passphrase without the new version (compose passes an unset one as "").
    with pytest.raises(KeyProblem, match="wrapped with KEK version 2, but MLFLOW_CRYPTO_KEK_VER"):
        environment(db, tmp_path, MLFLOW_CRYPTO_KEK_PASSPHRASE=NEW)
    env = environment(db, tmp_path, version="2", MLFLOW_CRYPTO_KEK_PASSPHRASE=NEW)
    assert env["MLFLOW_CRYPTO_KEK_PASSPHRASE"] == NEW and env["MLFLOW_CRYPTO_KEK_VERSION"] == "2"
    with pytest.raises(KeyProblem, match="kept in .* does not decrypt them"):
        environment(db, tmp_path, version="2")  # the old passphrase, still kept, no longer does
    with pytest.raises(SettingsError, match="MLFLOW_CRYPTO_KEK_VERSION='two'"):
        environment(db, tmp_path, version="two", MLFLOW_CRYPTO_KEK_PASSPHRASE=NEW)


def test_without_secrets_a_passphrase_is_kept_or_set_as_before(tmp_path):
    """A new database, or one whose schema has no secrets yet: nothing to lose."""
    db = tmp_path / "db"
    db.mkdir()
    env = environment(db, tmp_path, MLFLOW_CRYPTO_KEK_PASSPHRASE=NEW)
    assert env["MLFLOW_CRYPTO_KEK_PASSPHRASE"] == NEW and not (db / ".kek_passphrase").exists()
    import sqlite3

    sqlite3.connect(db / "mlflow.db").close()  # an empty database: no secrets table
    kept = environment(db, tmp_path)["MLFLOW_CRYPTO_KEK_PASSPHRASE"]
    assert kept == (db / ".kek_passphrase").read_text()
