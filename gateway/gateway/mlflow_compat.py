"""Every private MLflow name the gateway image uses, in one place.

tests/unit/gateway/test_mlflow_compat.py imports each of them and fails with a message naming it
when an MLflow upgrade moves or changes one; nothing else in this package imports a private
MLflow name.
"""

from __future__ import annotations

from pathlib import Path


def load_gateway_config(path: Path):
    """Load a gateway YAML exactly as `mlflow gateway start` does, or raise.

    Why private: MLflow has no public loader. `mlflow.gateway.config._load_gateway_config` runs
    the deprecated-field and endpoint-name-collision checks on top of the public `GatewayConfig`
    model, and the rendered config is worth checking with exactly what the gateway will run, so
    that a bad setting stops the container with our message instead of a traceback. Upstream:
    the gateway's config loading has no public API (mlflow/mlflow, `mlflow/gateway/config.py`).
    """
    from mlflow.gateway.config import _load_gateway_config

    return _load_gateway_config(path)
