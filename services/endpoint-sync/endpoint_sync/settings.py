"""The endpoint sync's settings, read once at start (start.py)."""

from __future__ import annotations

from pydantic import Field

from promptlab_stack.settings import Settings


class EndpointSyncSettings(Settings):
    # Our gateway (docker-compose.yml wires it): its endpoint list, and where the built-in AI
    # Gateway's endpoints send their calls. Empty: the sync is off (the service idles).
    mlflow_deployments_target: str = Field("", description="the gateway's http(s) URL")
    # With basic auth on the tracking server (an admin password set), the sync logs in as its admin.
    mlflow_auth_admin_username: str = "admin"
    mlflow_auth_admin_password: str = ""

    @property
    def basic_auth(self) -> bool:
        return bool(self.mlflow_auth_admin_password)

    @property
    def gateway_api_base(self) -> str:
        """Where the built-in gateway sends the stack's endpoints: our gateway's OpenAI API. The
        tracking server trusts exactly this upstream (tracking.settings.stack_gateway_api_base)."""
        return self.mlflow_deployments_target.rstrip("/") + "/v1"
