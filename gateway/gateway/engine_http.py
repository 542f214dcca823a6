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
from collections.abc import AsyncIterator
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
    if status != 200:
        raise refusal(method, url, server, status, answer)
    if not isinstance(answer, dict):
        logger.warning(
            "%s %s answered something other than a JSON object: %r", method, url, raw[:200]
        )
        raise AIGatewayException(502, f"{server} answered something other than a JSON object")
    return answer


def refusal(method: str, url: str, server: str, status: int, answer: Any) -> AIGatewayException:
    """What the gateway answers for an engine's answer other than 200 (a redirect: a 502)."""
    if 300 <= status < 400:
        logger.warning("%s %s redirected (HTTP %s): not followed", method, url, status)
        return AIGatewayException(
            502, f"{server} answered with a redirect (HTTP {status}), which is not followed"
        )
    return AIGatewayException(status_code=status, detail=error_message(answer, server, status))


async def stream_events(
    url: str, server: str, body: dict, headers: dict[str, str] | None = None
) -> AsyncIterator[dict[str, Any]]:
    """POST `url` for a stream of server-sent events; yields each event's JSON object until
    `[DONE]` or the end. Before the first event, the same AIGatewayExceptions as `call` (the
    engine's own status when it refuses); after it, a 502 for an answer that breaks off, is not
    JSON or grows past the pool's bound, and the engine's status for an `error` event."""
    read = 0
    try:
        async with POOL.open(
            "POST",
            url,
            json=body,
            headers=headers,
            timeout_s=MLFLOW_GATEWAY_ROUTE_TIMEOUT_SECONDS.get(),
        ) as resp:
            if resp.status != 200:
                raw = await resp.content.read(POOL.max_answer_bytes)
                try:
                    answer = json.loads(raw)
                except ValueError:
                    answer = None
                raise refusal("POST", url, server, resp.status, answer)
            async for line in resp.content:
                read += len(line)
                if read > POOL.max_answer_bytes:
                    raise AIGatewayException(
                        502, f"{server} streamed more than {POOL.max_answer_bytes:,} bytes"
                    )
                if not line.startswith(b"data:"):
                    continue  # a blank line between events, a comment, an event name
                data = line[len(b"data:") :].strip()
                if data == b"[DONE]":
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    event = None
                if not isinstance(event, dict):
                    logger.warning(
                        "POST %s streamed something other than JSON: %r", url, data[:200]
                    )
                    raise AIGatewayException(502, f"{server} streamed something other than JSON")
                if "error" in event:
                    error = event["error"] if isinstance(event["error"], dict) else {}
                    code = error.get("code")
                    raise AIGatewayException(
                        code if isinstance(code, int) and 400 <= code < 600 else 502,
                        error_message(event, server, 502),
                    )
                yield event
    except TimeoutError as e:
        raise AIGatewayException(status_code=504, detail=f"{server} did not answer in time") from e
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as e:
        logger.warning("POST %s failed: %r", url, e)
        raise AIGatewayException(
            status_code=503 if read == 0 else 502,
            detail=f"{server} is unreachable ({connection_failure(e)}): "
            "it is still starting, or down"
            if read == 0
            else f"{server} broke off its answer ({connection_failure(e)})",
        ) from e


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
