"""The stack's timeouts and keep-alive times, derived in one place so that they nest.

A prompt from the UI crosses three hops: tracking server (the UI's gateway proxy) -> gateway ->
model server. Each hop waits a little longer than the one it calls, so that the innermost one
reports a timeout, with its own, more precise message:

    model server  T  <  gateway route  T + 5  <  UI proxy  T + 10  <  TLS proxy  T + 15
                                                           (T: GENERATION_TIMEOUT_SECONDS)

A client must drop an idle pooled connection before the server closes it, or it may send a request
down a connection that is being closed:

    gateway provider's pool  3 s  <  model server (uvicorn's default keep-alive)  5 s
    UI proxy's pool         30 s  <  gateway (gunicorn --keep-alive)             75 s

Docker's stop grace period (STOP_GRACE_PERIOD) bounds a drain; gunicorn, which would stop waiting
for requests in flight after 30 s, gets the whole period less 5 s to exit cleanly before Docker's
SIGKILL.
"""

from __future__ import annotations

import math

# Seconds an idle keep-alive connection is kept, by whom (see the module's docstring).
MODEL_SERVER_KEEPALIVE_S = 5  # uvicorn's default; `mlflow models serve` does not change it
GATEWAY_POOL_KEEPALIVE_S = 3.0
GATEWAY_KEEPALIVE_S = 75
UI_PROXY_POOL_KEEPALIVE_S = 30.0

# How long the gateway looks for its engine's compose service at start (MODEL_BACKEND=auto): compose
# starts the gateway and the engine's container at once, and a container's name resolves on the
# network only once it runs. Within the gateway healthcheck's grace (30 s start period).
ENGINE_DISCOVERY_S = 20.0


def model_server_timeout(generation_timeout_s: float) -> float:
    """The model server's request timeout (MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT): the deadline
    after which the batcher stops the request's generation."""
    return generation_timeout_s


def gateway_route_timeout(generation_timeout_s: float) -> int:
    """The gateway's MLFLOW_GATEWAY_ROUTE_TIMEOUT_SECONDS (MLflow reads it as an integer)."""
    return math.ceil(generation_timeout_s) + 5


def ui_proxy_timeout(generation_timeout_s: float) -> float:
    """The tracking server's gateway proxy, the outermost hop."""
    return generation_timeout_s + 10


def tls_proxy_timeout(generation_timeout_s: float) -> int:
    """How long the `tls` profile's nginx waits for the tracking server's answer."""
    return math.ceil(ui_proxy_timeout(generation_timeout_s)) + 5


def gateway_graceful_timeout(stop_grace_period_s: float) -> int:
    """gunicorn's --graceful-timeout in the gateway: the grace period less 5 s, at least 1 s."""
    return max(1, int(stop_grace_period_s) - 5)
