"""How our gateway providers talk to an engine: one keep-alive pool per event loop, and every
failure turned into an AIGatewayException whose status and message say which server failed and
why, in words: the message reaches the browser, so it names the service, never its internal URL
or an exception's text (those go to the gateway's log).

MLflow's `send_request` opens a new session, connector and TCP connection for every call, and a
server that is down surfaces as a 500 or a bare 502; the UI then shows nothing useful.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
from mlflow.environment_variables import MLFLOW_GATEWAY_ROUTE_TIMEOUT_SECONDS
from mlflow.gateway.exceptions import AIGatewayException

from promptlab_stack.error_body import readable_message
from promptlab_stack.http_pool import AnswerTooLarge, SessionPool
from promptlab_stack.timings import GATEWAY_POOL_KEEPALIVE_S

logger = logging.getLogger(__name__)

# Shorter than the engines keep idle connections (promptlab_stack/timings.py); no limit on the
# connections open at once (the engines queue and refuse what they cannot take).
POOL = SessionPool(keepalive_s=GATEWAY_POOL_KEEPALIVE_S, limit=0)


def pooled_session() -> aiohttp.ClientSession:
    """The running event loop's pool (a gateway worker has one loop)."""
    return POOL.session()


async def close_pooled_session() -> None:
    """Close the running event loop's pool (for embedders and tests; a gateway worker keeps its
    pool until the process exits)."""
    await POOL.close()


async def call(
    method: str,
    url: str,
    server: str,
    body: dict | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`method url` with a JSON body; the JSON object answered, or AIGatewayException: 503 when
    `server` (its name in messages) cannot be reached, 504 when it does not answer in time, its
    own status and message when it refuses, 502 when the answer is not a JSON object."""
    try:
        status, raw = await POOL.request(
            method,
            url,
            json=body,
            headers=headers,
            timeout_s=MLFLOW_GATEWAY_ROUTE_TIMEOUT_SECONDS.get(),
        )
    except TimeoutError as e:
        raise AIGatewayException(status_code=504, detail=f"{server} did not answer in time") from e
    except AnswerTooLarge as e:
        logger.warning("%s %s: %s", method, url, e)
        raise AIGatewayException(502, f"{server} answered more than {e.max_bytes:,} bytes") from e
    except (aiohttp.ClientConnectionError, OSError) as e:
        logger.warning("%s %s failed: %r", method, url, e)
        raise AIGatewayException(
            status_code=503,
            detail=f"{server} is unreachable ({connection_failure(e)}): "
            "it is still starting, or down",
        ) from e
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if 300 <= status < 400:
        logger.warning("%s %s redirected (HTTP %s): not followed", method, url, status)
        raise AIGatewayException(
            502, f"{server} answered with a redirect (HTTP {status}), which is not followed"
        )
    if status != 200:
        raise AIGatewayException(status_code=status, detail=error_message(answer, server, status))
    if not isinstance(answer, dict):
        logger.warning(
            "%s %s answered something other than a JSON object: %r", method, url, raw[:200]
        )
        raise AIGatewayException(502, f"{server} answered something other than a JSON object")
    return answer


def connection_failure(error: BaseException) -> str:
    """Why a connection failed, in words a user can act on."""
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return "its host name does not resolve"
    if isinstance(error, aiohttp.ClientConnectorError):
        return (
            "connection refused"
            if isinstance(error.os_error, ConnectionRefusedError)
            else "no connection"
        )
    if isinstance(
        error, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | ConnectionResetError
    ):
        return "it closed the connection"
    return "no connection"


def error_message(answer: Any, server: str, status: int) -> str:
    """The readable part of an engine's error object (promptlab_stack/error_body.py). A body that
    is not a JSON object (an HTML error page, a stack trace) is not passed on."""
    message = readable_message(answer) if isinstance(answer, dict) else ""
    return message or f"{server} answered HTTP {status}"
