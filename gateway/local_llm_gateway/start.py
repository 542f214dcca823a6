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


def main() -> int:
    config_path = os.environ.get("GATEWAY_CONFIG_PATH", "/tmp/gateway.yaml")
    status = render_main(["--output", config_path])
    if status != 0:
        return status  # the renderer already said which setting is wrong
    # `$OPENAI_API_KEY` in the config is resolved from this environment, not stored in the file.
    os.environ.setdefault("MLFLOW_GATEWAY_RESOLVE_API_KEY_FROM_ENV", "true")
    # Nested timeouts: model server T < gateway route T+5 < tracking proxy T+10, so the
    # innermost component reports a timeout, with its own message.
    timeout = int(os.environ.get("GENERATION_TIMEOUT_SECONDS", "300")) + 5
    os.environ["MLFLOW_GATEWAY_ROUTE_TIMEOUT_SECONDS"] = str(timeout)
    # `mlflow gateway start` runs gunicorn, whose graceful shutdown stops waiting for requests
    # in flight after 30 s: give them the container's whole stop grace period instead.
    grace = max(1, grace_period_seconds(os.environ.get("STOP_GRACE_PERIOD", "60s")) - 5)
    os.environ.setdefault("GUNICORN_CMD_ARGS", f"--graceful-timeout {grace}")
    port = os.environ.get("GATEWAY_PORT", "7000")
    workers = os.environ.get("GATEWAY_WORKERS", "2")
    os.execvp(
        "mlflow",
        ["mlflow", "gateway", "start", "--config-path", config_path,
         "--host", "0.0.0.0", "--port", port, "--workers", workers],
    )


if __name__ == "__main__":
    sys.exit(main())
