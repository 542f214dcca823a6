"""One aiohttp keep-alive pool per event loop (promptlab_stack/http_pool.py), against a real
server on a loopback port."""

from __future__ import annotations

import asyncio
import json

import pytest
from loopback import free_port, serving

from promptlab_stack.http_pool import MAX_ANSWER_BYTES, AnswerTooLarge, SessionPool


@pytest.fixture(scope="module")
def echo_url():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def echo(request):
        return JSONResponse(
            {"body": await request.json(), "auth": request.headers.get("authorization")}
        )

    async def slow(request):
        await asyncio.sleep(2)
        return JSONResponse({})

    async def redirect(request):
        return RedirectResponse("/echo", status_code=307)

    async def big(request):
        size = int(request.query_params["bytes"])

        async def chunks():
            for _ in range(size // 65536):
                yield b"x" * 65536
            yield b"x" * (size % 65536)

        if request.query_params.get("declared"):
            return Response(b"x" * size)
        return StreamingResponse(chunks())  # chunked: no Content-Length

    app = Starlette(
        routes=[
            Route("/echo", echo, methods=["POST"]),
            Route("/slow", slow),
            Route("/redirect", redirect, methods=["POST"]),
            Route("/big", big),
        ]
    )
    with serving(app) as url:
        yield url


def test_each_pool_keeps_its_own_keepalive_and_limit():
    async def connector_of(pool: SessionPool):
        try:
            return pool.session().connector
        finally:
            await pool.close()

    gateway = asyncio.run(connector_of(SessionPool(keepalive_s=3.0)))
    proxy = asyncio.run(connector_of(SessionPool(keepalive_s=30.0, limit=256)))
    assert (gateway._keepalive_timeout, gateway.limit) == (3.0, 0)
    assert (proxy._keepalive_timeout, proxy.limit) == (30.0, 256)


def test_one_session_per_event_loop_until_it_is_closed(echo_url):
    pool = SessionPool(keepalive_s=3.0)

    async def use():
        first = pool.session()
        status, body = await pool.request(
            "POST",
            f"{echo_url}/echo",
            json={"x": "りんご"},
            timeout_s=10,
            headers={"Authorization": "Bearer k"},
        )
        assert (status, pool.session()) == (200, first)
        await pool.close()
        assert first.closed and pool.session() is not first
        await pool.close()
        return body

    assert json.loads(asyncio.run(use())) == {"body": {"x": "りんご"}, "auth": "Bearer k"}
    # Another event loop (another worker) gets its own session.
    sessions = []

    async def remember():
        sessions.append(pool.session())
        await pool.close()

    asyncio.run(remember())
    asyncio.run(remember())
    assert sessions[0] is not sessions[1]


def test_timeouts_and_refused_connections_are_raised_to_the_caller(echo_url):
    import aiohttp

    pool = SessionPool(keepalive_s=3.0)

    async def ask(url: str):
        try:
            return await pool.request("GET", url, timeout_s=0.5)
        finally:
            await pool.close()

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(ask(f"{echo_url}/slow"))
    with pytest.raises(aiohttp.ClientConnectionError):
        asyncio.run(ask(f"http://127.0.0.1:{free_port()}/"))


def test_a_redirect_is_answered_as_it_is_not_followed(echo_url):
    """A 307 would re-send the prompt (and any API key) to wherever it points."""
    pool = SessionPool(keepalive_s=3.0)

    async def ask():
        try:
            return await pool.request("POST", f"{echo_url}/redirect", json={"x": 1}, timeout_s=10)
        finally:
            await pool.close()

    status, _ = asyncio.run(ask())
    assert status == 307


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
def test_an_answer_is_read_up_to_the_default_bound_and_no_further(echo_url, declared):
    pool = SessionPool(keepalive_s=3.0)
    query = "&declared=1" if declared else ""

    async def ask(size: int):
        try:
            return await pool.request("GET", f"{echo_url}/big?bytes={size}{query}", timeout_s=60)
        finally:
            await pool.close()

    status, body = asyncio.run(ask(MAX_ANSWER_BYTES))
    assert status == 200 and len(body) == MAX_ANSWER_BYTES
    with pytest.raises(AnswerTooLarge, match="larger than 16,777,216 bytes"):
        asyncio.run(ask(MAX_ANSWER_BYTES + 1))
