"""The endpoint-sync service's command: read the settings, then sync the tracking server's built-in
AI Gateway endpoints with our gateway's models forever (sync.py).

The tracking server is reached by its name on the compose network (promptlab_stack.topology);
compose starts this once the server is healthy and restarts it with the server. Without
MLFLOW_DEPLOYMENTS_TARGET there is no gateway to follow: the service idles, healthy, so that
`docker compose up --wait` is not held up.

Usage (docker-compose.yml): python -m endpoint_sync.start
"""

from __future__ import annotations

import logging
import sys
import time

from endpoint_sync.health import beat
from endpoint_sync.settings import EndpointSyncSettings
from endpoint_sync.sync import SYNC_INTERVAL_S, EndpointSync
from promptlab_stack.settings import SettingsError
from promptlab_stack.stop import stop_service
from promptlab_stack.topology import TRACKING

_logger = logging.getLogger("ai-gateway-endpoints")


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        settings = EndpointSyncSettings.from_env()
    except SettingsError as e:
        return stop_service("endpoint-sync", e)
    if not settings.mlflow_deployments_target:
        _logger.info(
            "no MLFLOW_DEPLOYMENTS_TARGET: no gateway to follow, "
            "the AI Gateway endpoints are left as they are"
        )
        while True:
            beat("off: no MLFLOW_DEPLOYMENTS_TARGET")
            time.sleep(SYNC_INTERVAL_S)
    sync = EndpointSync(settings, TRACKING.url)
    while True:
        time.sleep(sync.step())


if __name__ == "__main__":
    sys.exit(main())
