"""The tracking server's settings, read once at start (start.py) and by each worker's app."""

from __future__ import annotations

from pydantic import Field

from promptlab_stack.settings import GenerationTimeout, RequestLimit
from promptlab_stack.timings import ui_proxy_timeout


class TrackingSettings(GenerationTimeout, RequestLimit):
    mlflow_workers: int = Field(2, ge=1, description="a whole number of worker processes, at least 1")
    # MLflow's background job runner (scheduled trace scoring, prompt optimization): the Prompt
    # Engineering UI does not use it, and its idle queue consumers take ~60% of a CPU core.
    mlflow_server_enable_job_execution: bool = Field(False, description="true or false")
    # Host headers accepted besides MLflow's defaults (localhost and private IPs).
    mlflow_allowed_hosts: str = Field("", description="comma-separated host names")
    # Basic auth for the UI and API is on when an admin password is set. Once it has been on, the
    # server refuses to start without it unless MLFLOW_AUTH_DISABLE says so (start.py).
    mlflow_auth_admin_username: str = "admin"
    mlflow_auth_admin_password: str = ""
    mlflow_auth_disable: bool = Field(False, description="true or false")
    # CSRF key shared by the workers; generated once and kept on the database volume when empty.
    mlflow_flask_server_secret_key: str = ""
    # Encrypts the built-in AI Gateway's secrets in the database; generated once and kept on the
    # database volume when empty.
    mlflow_crypto_kek_passphrase: str = ""
    # Where the UI's gateway proxy sends prompts (docker-compose.yml wires it to the gateway).
    mlflow_deployments_target: str = Field("", description="the gateway's http(s) URL")

    @property
    def basic_auth(self) -> bool:
        return bool(self.mlflow_auth_admin_password)

    @property
    def ui_proxy_timeout_s(self) -> float:
        return ui_proxy_timeout(self.generation_timeout_seconds)
