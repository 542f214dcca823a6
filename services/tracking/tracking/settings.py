"""The tracking server's settings, read once at start (start.py) and by each worker's app; the
operations commands (tracking_ops) read the stores from them too."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlparse

from pydantic import Field

from promptlab_stack.settings import (
    AdminLogin,
    GenerationTimeout,
    RequestLimit,
    StackGateway,
    TlsAddress,
    checked_by,
    comma_list,
)
from promptlab_stack.timings import ui_proxy_timeout

# The database URIs this image has a driver for (SQLAlchemy's names).
STORE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")


def check_store_uri(uri: str) -> None:
    scheme = urlparse(uri).scheme
    if scheme not in STORE_SCHEMES:
        raise ValueError(
            f"{uri.split('://')[0]!r} is not a database this image has a driver for "
            f"(use one of {', '.join(STORE_SCHEMES)})"
        )
    if scheme.startswith("postgresql") and urlparse(uri).password:
        raise ValueError(
            "put the password in POSTGRES_PASSWORD, not in the URI (the URI is logged)"
        )


def check_artifacts_destination(value: str) -> None:
    scheme = urlparse(value).scheme
    if scheme not in ("", "file", "s3"):
        raise ValueError(
            f"{scheme!r} artifacts are not supported here (use a path or s3://bucket/path)"
        )
    if scheme == "s3" and not urlparse(value).netloc:
        raise ValueError("an s3:// destination needs a bucket: s3://bucket/path")


class TrackingSettings(GenerationTimeout, RequestLimit, AdminLogin, StackGateway, TlsAddress):
    mlflow_workers: int = Field(
        2, ge=1, description="a whole number of worker processes, at least 1"
    )
    # MLflow's background job runner (scheduled trace scoring, prompt optimization): the Prompt
    # Engineering UI does not use it, and its idle queue consumers take ~60% of a CPU core.
    mlflow_server_enable_job_execution: bool = Field(False, description="true or false")
    # Host headers accepted besides MLflow's defaults (localhost and private IPs) and the tls
    # proxy's names (TlsAddress).
    mlflow_allowed_hosts: str = Field("", description="comma-separated host names")
    # Origins whose POSTs a browser may send besides localhost and the tls proxy's https:// ones:
    # the UI behind a reverse proxy of your own.
    mlflow_cors_allowed_origins: str = Field(
        "", description="comma-separated origins such as https://mlflow.example.com"
    )
    # Basic auth for the UI and API is on when an admin password is set (AdminLogin). Once it has
    # been on, the server refuses to start without it unless MLFLOW_AUTH_DISABLE says so (start.py).
    mlflow_auth_disable: bool = Field(False, description="true or false")
    # CSRF key shared by the workers; generated once and kept on the database volume when empty.
    mlflow_flask_server_secret_key: str = ""
    # Encrypts the built-in AI Gateway's secrets in the database; generated once and kept on the
    # database volume when empty.
    mlflow_crypto_kek_passphrase: str = ""
    # The passphrase's version: raised by MLflow's `mlflow crypto rotate-kek` (docs/operations.md).
    mlflow_crypto_kek_version: int = Field(
        1, ge=1, description="a whole number of at least 1 (the version rotate-kek printed)"
    )
    # Where runs, parameters and metrics live: empty for SQLite on the mlflow-db volume; a team's
    # PostgreSQL as postgresql://user@host:5432/db (the password comes from POSTGRES_PASSWORD).
    backend_store_uri: Annotated[str, checked_by(check_store_uri)] = Field(
        "", description="a sqlite:// or postgresql:// URI without a password, or empty"
    )
    # Where the artifacts the server proxies live: empty for the mlflow-artifacts volume, or an
    # S3-compatible bucket (s3://bucket/path, with MLFLOW_S3_ENDPOINT_URL and AWS_* credentials).
    artifacts_destination: Annotated[str, checked_by(check_artifacts_destination)] = Field(
        "", description="a folder path or s3://bucket/path, or empty"
    )

    def store_uri(self, db_dir) -> str:
        return self.backend_store_uri or f"sqlite:///{db_dir}/mlflow.db"

    def artifacts_location(self, artifacts_dir) -> str:
        return self.artifacts_destination or str(artifacts_dir)

    @property
    def ui_proxy_timeout_s(self) -> float:
        return ui_proxy_timeout(self.generation_timeout_seconds)

    @property
    def cors_allowed_origins(self) -> list[str]:
        """The origins a browser may POST from besides localhost's, which MLflow always allows."""
        extra = comma_list(self.mlflow_cors_allowed_origins)
        return list(dict.fromkeys(self.tls_origins + extra))
