"""The UI's gateway proxy as a native async route of MLflow's FastAPI app (uvicorn, the default).

MLflow serves its Flask app under uvicorn through a WSGI bridge: every request to the Flask
gateway-proxy view takes a worker thread and a new HTTP connection to the gateway for its whole
generation. Measured on the tiny model (bench/), that added 15-17 ms per call and capped the
Prompt Engineering UI at 2.9x with eight prompts in flight. This route answers the same URLs
before the Flask mount, on the event loop, with one pooled keep-alive connection set per worker
process; what it answers is decided by gateway_proxy.py, shared with the Flask view.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from mlflow_promptlab_utf8.gateway_proxy import (
    NO_GATEWAY_ANSWER,
    ProxyError,
    error_body,
    gateway_answer,
    gateway_proxy_rules,
    gateway_request,
    gateway_target,
    proxy_timeout_seconds,
    timeout_error,
    unreachable_error,
)

# Idle connections to the gateway are kept this long. Our gateway keeps them longer
# (--keep-alive in gateway/local_llm_gateway/start.py), so the server never closes a connection
# the proxy is about to reuse.
POOL_KEEPALIVE_SECONDS = 30
POOL_MAX_CONNECTIONS = 256


class GatewayClient:
    """One aiohttp session per event loop (a uvicorn worker has one), created on first use."""

    def __init__(self):
        self._session = None
        self._loop = None

    def session(self):
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._loop = loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=POOL_MAX_CONNECTIONS,
                                               keepalive_timeout=POOL_KEEPALIVE_SECONDS),
            )
        return self._session

    async def request(self, method: str, url: str, json_data) -> tuple[int, bytes]:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=proxy_timeout_seconds())
        async with self.session().request(method, url, json=json_data, timeout=timeout) as resp:
            return resp.status, await resp.read()

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


def make_gateway_proxy_endpoint(client: GatewayClient, authenticate=None):
    """The route's endpoint. `authenticate(request)`, given when MLflow's basic auth is on, returns
    the user, None, or a response to send instead (a login challenge). MLflow's auth middleware
    only checks the native routes it knows of, so this route checks the caller itself, as
    Flask's before-request hook does for the Flask view."""
    import aiohttp
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import PlainTextResponse, Response

    def answer(status: int, body: bytes) -> Response:
        return Response(body, status_code=status, media_type="application/json")

    async def gateway_proxy(request):
        if authenticate is not None:
            user = await run_in_threadpool(authenticate, request)
            if isinstance(user, Response):  # the auth function's own answer (a 401 challenge)
                return user
            if user is None:
                return PlainTextResponse(
                    "You are not authenticated: this MLflow server needs a username and password.",
                    status_code=401, headers={"WWW-Authenticate": 'Basic realm="mlflow"'},
                )
        target = gateway_target()
        if not target:
            return answer(200, NO_GATEWAY_ANSWER)
        method = request.method
        try:
            if method == "GET":
                args = dict(request.query_params)
            else:
                try:
                    args = await request.json()
                except ValueError:
                    args = None  # refused by gateway_request as "not a JSON object"
            gateway_path, url, json_data = gateway_request(target, method, args)
            try:
                status, body = await client.request(method, url, json_data)
            except asyncio.TimeoutError:
                raise timeout_error(target) from None
            except aiohttp.ClientConnectionError:
                raise unreachable_error(target) from None
        except ProxyError as e:
            return answer(e.status, error_body(e.status, e.message))
        return answer(*gateway_answer(method, gateway_path, status, body))

    return gateway_proxy


def install_async_gateway_proxy(fastapi_app, flask_app, authenticate=None) -> list[str]:
    """Serve the Flask app's gateway-proxy URLs with the async route, ahead of the Flask mount
    (routes match in order, and MLflow mounts Flask last, at "/"). Returns the paths."""
    client = GatewayClient()
    endpoint = make_gateway_proxy_endpoint(client, authenticate)
    paths = sorted({rule.rule for rule in gateway_proxy_rules(flask_app)})
    for path in paths:
        # A plain Starlette route: the endpoint takes the request itself.
        fastapi_app.router.add_route(path, endpoint, methods=["GET", "POST"],
                                     include_in_schema=False)
        fastapi_app.router.routes.insert(0, fastapi_app.router.routes.pop())

    inner_lifespan = fastapi_app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app):
        try:
            async with inner_lifespan(app) as state:
                yield state
        finally:
            await client.close()

    fastapi_app.router.lifespan_context = lifespan
    return paths
