"""Gateway entrypoint: read the settings, render and check the config, exec gunicorn on our app
(app.py: MLflow's gateway app, as `mlflow gateway start` serves it, plus whole-answer streaming).

`write_config`, `server_command` and `server_environment` are what the container runs; the
benchmark and the tests run the same.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from gateway.endpoint_keys import MissingKey, key_warnings
from gateway.render_config import BACKEND_URLS, ConfigError, render, to_yaml, validate
from gateway.settings import GatewaySettings
from promptlab_stack.settings import SettingsError
from promptlab_stack.stop import stop_service
from promptlab_stack.timings import (
    ENGINE_DISCOVERY_S,
    GATEWAY_KEEPALIVE_S,
    gateway_graceful_timeout,
    gateway_route_timeout,
)
from promptlab_stack.topology import GATEWAY

CONFIG_PATH = Path("/tmp/gateway.yaml")
WORKERS = 2


def write_config(
    settings: GatewaySettings,
    path: Path,
    urls: Mapping[str, str] = BACKEND_URLS,
    wait_s: float = 0.0,
) -> dict:
    """Render the config, check it with MLflow's loader, write it to `path`; raise ConfigError.
    `wait_s`: how long MODEL_BACKEND=auto looks for the engine's service."""
    config = render(settings, urls, wait_s=wait_s)
    validate(config)
    path.write_text(to_yaml(config), encoding="utf-8")
    return config


def server_command(
    config_path: Path, *, host: str = "0.0.0.0", port: int = GATEWAY.port, workers: int = WORKERS
) -> list[str]:
    """What `mlflow gateway start` runs (gunicorn, uvicorn workers, the config in
    MLFLOW_GATEWAY_CONFIG), on our app factory instead of MLflow's, and without its config watcher:
    the config is rendered once per container start."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "uvicorn.workers.UvicornWorker",
        "--env",
        f"MLFLOW_GATEWAY_CONFIG={config_path}",
        "gateway.app:create_app()",
    ]


def server_environment(settings: GatewaySettings) -> dict[str, str]:
    """What `mlflow gateway start` (gunicorn + uvicorn workers) reads, derived from the settings
    (promptlab_stack/timings.py says why these values)."""
    graceful = gateway_graceful_timeout(settings.stop_grace_period)
    return {
        # `$OPENAI_API_KEY` in the config is resolved from this environment, not stored in the file.
        "MLFLOW_GATEWAY_RESOLVE_API_KEY_FROM_ENV": "true",
        "MLFLOW_GATEWAY_ROUTE_TIMEOUT_SECONDS": str(
            gateway_route_timeout(settings.generation_timeout_seconds)
        ),
        "GUNICORN_CMD_ARGS": f"--graceful-timeout {graceful} --keep-alive {GATEWAY_KEEPALIVE_S}",
    }


def main(
    environ: Mapping[str, str] | None = None, engine_wait_s: float = ENGINE_DISCOVERY_S
) -> int:
    """Exec the gateway; on a bad setting, return the status to stop with
    (promptlab_stack/stop.py). `engine_wait_s`: how long to look for the engine's service (the
    container's start: ENGINE_DISCOVERY_S)."""
    environ = os.environ if environ is None else environ
    try:
        settings = GatewaySettings.from_env(environ)
        warnings = key_warnings(settings, environ)
        config = write_config(settings, CONFIG_PATH, wait_s=engine_wait_s)
    except (SettingsError, ConfigError, MissingKey) as e:
        return stop_service("gateway", f"config error: {e}")
    for warning in warnings:
        print(f"gateway: warning: {warning}", file=sys.stderr)
    for endpoint in config["endpoints"]:
        print(
            f"endpoint {endpoint['name']} ({endpoint['endpoint_type']})"
            f" -> {endpoint['model']['provider']}",
            file=sys.stderr,
        )
    os.environ.update(server_environment(settings))
    command = server_command(CONFIG_PATH)
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
