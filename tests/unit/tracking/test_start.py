"""The tracking container's start (services/tracking/tracking/start.py): the server command, its
environment and its guards, checked on a real `mlflow server` run as the image runs it
(tests/tracking_server.py), on loopback with a fresh database."""

from __future__ import annotations

import requests
from tracking_server import tracking_server

from tracking.settings import TrackingSettings
from tracking.start import auth_dropped, server_command, server_environment


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
