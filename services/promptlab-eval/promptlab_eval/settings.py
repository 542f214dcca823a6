"""The knobs `promptlab-eval` reads from its environment (in the tracking container: the tracking
server's own), read once per command (cli.py)."""

from __future__ import annotations

from pydantic import Field

from promptlab_stack.settings import GenerationTimeout
from promptlab_stack.timings import ui_proxy_timeout


class EvalSettings(GenerationTimeout):
    # With basic auth on the tracking server (an admin password set), the command acts as its admin.
    mlflow_auth_admin_username: str = "admin"
    mlflow_auth_admin_password: str = ""
    # Our gateway: where --judge's MLflow judge sends its questions (its OpenAI API).
    mlflow_deployments_target: str = Field("", description="the gateway's http(s) URL")

    @property
    def basic_auth(self) -> bool:
        return bool(self.mlflow_auth_admin_password)

    @property
    def ui_proxy_timeout_s(self) -> float:
        """How long the tracking server's gateway proxy waits for an answer."""
        return ui_proxy_timeout(self.generation_timeout_seconds)
