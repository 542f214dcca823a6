"""Gateway container entrypoint: render and validate the config, then exec `mlflow gateway start`."""

from __future__ import annotations

import os
import re
import sys

from local_llm_gateway.render_config import main as render_main


def grace_period_seconds(value: str) -> int:
    """Compose durations as used for STOP_GRACE_PERIOD: "90", "90s", "2m", "1m30s"."""
    match = re.fullmatch(r"\s*(?:(\d+)m)?\s*(?:(\d+)s?)?\s*", value or "")
    if not match or not any(match.groups()):
        raise SystemExit(f"STOP_GRACE_PERIOD must be a duration like 60s or 2m, got {value!r}")
    minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return minutes * 60 + seconds


def server_environment(environ) -> dict[str, str]:
    """The environment variables `mlflow gateway start` (gunicorn + uvicorn workers) runs with,
    from the container's settings."""
    env = {
        # `$OPENAI_API_KEY` in the config is resolved from this environment, not stored in the file.
        "MLFLOW_GATEWAY_RESOLVE_API_KEY_FROM_ENV": environ.get(
            "MLFLOW_GATEWAY_RESOLVE_API_KEY_FROM_ENV", "true"),
        # Nested timeouts: model server T < gateway route T+5 < tracking proxy T+10, so the
        # innermost component reports a timeout, with its own message.
        "MLFLOW_GATEWAY_ROUTE_TIMEOUT_SECONDS": str(
            int(environ.get("GENERATION_TIMEOUT_SECONDS", "300")) + 5),
    }
    # gunicorn's graceful shutdown stops waiting for requests in flight after 30 s: give them the
    # container's whole stop grace period instead. Idle keep-alive connections stay open longer
    # than the tracking server's gateway proxy keeps them in its pool (30 s), so the proxy never
    # reuses a connection the gateway is closing.
    grace = max(1, grace_period_seconds(environ.get("STOP_GRACE_PERIOD", "60s")) - 5)
    env["GUNICORN_CMD_ARGS"] = environ.get(
        "GUNICORN_CMD_ARGS", f"--graceful-timeout {grace} --keep-alive 75")
    return env


def main() -> int:
    config_path = os.environ.get("GATEWAY_CONFIG_PATH", "/tmp/gateway.yaml")
    status = render_main(["--output", config_path])
    if status != 0:
        return status  # the renderer already said which setting is wrong
    os.environ.update(server_environment(os.environ))
    port = os.environ.get("GATEWAY_PORT", "7000")
    workers = os.environ.get("GATEWAY_WORKERS", "2")
    os.execvp(
        "mlflow",
        ["mlflow", "gateway", "start", "--config-path", config_path,
         "--host", "0.0.0.0", "--port", port, "--workers", workers],
    )


if __name__ == "__main__":
    sys.exit(main())
