"""One pool of keep-alive connections per event loop, for the services that call another over HTTP
(the gateway calls the engines, the tracking server's UI proxy calls the gateway).

A new aiohttp session per call would open a new connector and TCP connection each time. A pool
must drop an idle connection before the server it calls closes it, or a request may go down a
connection that is being closed: each caller passes its keep-alive from timings.py.

Redirects are not followed (a 307 would send the prompt, and any key, to another server), and an
answer is read up to `max_answer_bytes`, no further.

Needs aiohttp, which the gateway and tracking images install (the TLS image does not): nothing
else in promptlab_stack imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator

import aiohttp

# The largest answer read from another service: a generated text and its usage are kilobytes;
# past this the server is broken or not ours.
MAX_ANSWER_BYTES = 16 * 2**20


class AnswerTooLarge(Exception):
    """The server's answer is longer than the pool reads."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the answer is larger than {max_bytes:,} bytes")
        self.max_bytes = max_bytes


class SessionPool:
    """One aiohttp session per event loop (a gateway or uvicorn worker has one), made on first use.

    `limit`: the most connections open at once (0: no limit); `keepalive_s`: how long an idle
    connection is kept; `max_answer_bytes`: the longest answer read.
    """

    def __init__(
        self, *, keepalive_s: float, limit: int = 0, max_answer_bytes: int = MAX_ANSWER_BYTES
    ) -> None:
        self.keepalive_s = keepalive_s
        self.limit = limit
        self.max_answer_bytes = max_answer_bytes
        self._sessions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.limit, keepalive_timeout=self.keepalive_s
                ),
            )
            self._sessions[loop] = session
        return session

    @contextlib.asynccontextmanager
    async def open(
        self,
        method: str,
        url: str,
        *,
        timeout_s: float,
        json=None,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """`method url` with a JSON body, its response open to be read as it comes (a streamed
        answer); a redirect is answered as it is, not followed. `timeout_s` bounds the whole
        exchange, reading included."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self.session().request(
            method, url, json=json, headers=headers, timeout=timeout, allow_redirects=False
        ) as resp:
            yield resp

    async def read(self, resp: aiohttp.ClientResponse) -> bytes:
        """The whole body of `resp`, or AnswerTooLarge past `max_answer_bytes`."""
        if (resp.content_length or 0) > self.max_answer_bytes:
            raise AnswerTooLarge(self.max_answer_bytes)
        body = await resp.content.read(self.max_answer_bytes + 1)
        while len(body) <= self.max_answer_bytes and not resp.content.at_eof():
            body += await resp.content.read(self.max_answer_bytes + 1 - len(body))
        if len(body) > self.max_answer_bytes:
            raise AnswerTooLarge(self.max_answer_bytes)
        return body

    async def request(
        self,
        method: str,
        url: str,
        *,
        timeout_s: float,
        json=None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """`method url` with a JSON body; the status and the whole body (a redirect is answered
        as it is, not followed). Raises asyncio's TimeoutError after `timeout_s`, aiohttp's errors
        when there is no answer, AnswerTooLarge past `max_answer_bytes`."""
        async with self.open(method, url, timeout_s=timeout_s, json=json, headers=headers) as resp:
            return resp.status, await self.read(resp)

    async def close(self) -> None:
        """Close the running event loop's session (at an app's shutdown, and in tests)."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None and not session.closed:
            await session.close()
