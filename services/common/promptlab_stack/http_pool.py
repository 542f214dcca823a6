"""One pool of keep-alive connections per event loop, for the services that call another over HTTP
(the gateway calls the engines, the tracking server's UI proxy calls the gateway).

A new aiohttp session per call would open a new connector and TCP connection each time. A pool
must drop an idle connection before the server it calls closes it, or a request may go down a
connection that is being closed: each caller passes its keep-alive from timings.py.

Needs aiohttp, which the gateway and tracking images install (the TLS image does not): nothing
else in promptlab_stack imports this module.
"""

from __future__ import annotations

import asyncio
import weakref

import aiohttp


class SessionPool:
    """One aiohttp session per event loop (a gateway or uvicorn worker has one), made on first use.

    `limit`: the most connections open at once (0: no limit); `keepalive_s`: how long an idle
    connection is kept.
    """

    def __init__(self, *, keepalive_s: float, limit: int = 0) -> None:
        self.keepalive_s = keepalive_s
        self.limit = limit
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

    async def request(
        self,
        method: str,
        url: str,
        *,
        timeout_s: float,
        json=None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """`method url` with a JSON body; the status and the whole body. Raises asyncio's
        TimeoutError after `timeout_s`, aiohttp's errors when there is no answer."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self.session().request(
            method, url, json=json, headers=headers, timeout=timeout
        ) as resp:
            return resp.status, await resp.read()

    async def close(self) -> None:
        """Close the running event loop's session (at an app's shutdown, and in tests)."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None and not session.closed:
            await session.close()
