#!/bin/sh
# Start the tracking server + UI. SQLite and artifacts live on the named volumes under /mlflow;
# --serve-artifacts lets the UI read artifacts through this server. MLFLOW_DEPLOYMENTS_TARGET
# (set by docker-compose.yml) points the Prompt Engineering UI at the gateway.
set -eu
set -- mlflow server \
  --host 0.0.0.0 --port 5000 \
  --workers "${MLFLOW_WORKERS:-2}" \
  --backend-store-uri "sqlite:////mlflow/db/mlflow.db" \
  --artifacts-destination /mlflow/artifacts \
  --serve-artifacts \
  --app-name promptlab-utf8
# Host headers the UI may be reached under (default: localhost and private IPs).
if [ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]; then
  set -- "$@" --allowed-hosts "$MLFLOW_ALLOWED_HOSTS"
fi
exec "$@"
