"""The endpoint sync's settings, read once at start (start.py)."""

from __future__ import annotations

from promptlab_stack.settings import AdminLogin, StackGateway


class EndpointSyncSettings(AdminLogin, StackGateway):
    """Our gateway (MLFLOW_DEPLOYMENTS_TARGET): its endpoint list, and where the built-in AI
    Gateway's endpoints send their calls; empty turns the sync off (the service idles). With basic
    auth on the tracking server, the sync logs in as its admin."""
