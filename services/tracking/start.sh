#!/bin/sh
# Start the tracking server + UI. SQLite and artifacts live on the named volumes under /mlflow;
# --serve-artifacts lets the UI read artifacts through this server. MLFLOW_DEPLOYMENTS_TARGET
# (set by docker-compose.yml) points the Prompt Engineering UI at the gateway.
set -eu

if [ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]; then
  # Optional basic auth (MLflow's own, chained in by our app plugin). Users live next to the
  # tracking database, so they survive restarts.
  export MLFLOW_AUTH_CONFIG_PATH=/home/app/basic_auth.ini
  cat > "$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = READ
database_uri = sqlite:////mlflow/db/basic_auth.db
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
  if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
    # CSRF protection needs one key shared by every worker and kept across restarts.
    [ -s /mlflow/db/.flask_secret_key ] || python -c "import secrets; print(secrets.token_hex(32))" > /mlflow/db/.flask_secret_key
    MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat /mlflow/db/.flask_secret_key)
    export MLFLOW_FLASK_SERVER_SECRET_KEY
  fi
  # What `mlflow server --app-name basic-auth` does before starting workers: one clear error
  # for a bad setup, and the admin user created once rather than by racing workers.
  python -c "from mlflow.server.auth import bootstrap_admin_user, get_flask_server_secret_key; get_flask_server_secret_key(); bootstrap_admin_user()"
fi

# MLflow's background job runner (docker-compose.yml says why it is off unless asked for).
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"

set -- mlflow server \
  --host 0.0.0.0 --port 5000 \
  --workers "${MLFLOW_WORKERS:-2}" \
  --backend-store-uri "sqlite:////mlflow/db/mlflow.db" \
  --artifacts-destination /mlflow/artifacts \
  --serve-artifacts \
  --app-name promptlab-utf8 \
  --uvicorn-opts "--timeout-worker-healthcheck 60"
# uvicorn's supervisor kills a worker that does not answer its ping within 5 s by default; on a
# small CPU busy generating, that dropped requests in flight (seen in the load test).
# Host headers the UI may be reached under (default: localhost and private IPs).
if [ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]; then
  set -- "$@" --allowed-hosts "$MLFLOW_ALLOWED_HOSTS"
fi
exec "$@"
