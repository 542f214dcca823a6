"""Who is asking, for the routes this plugin serves itself (MLflow's auth middleware does not
check them): the login check MLflow's basic auth runs, and the Basic login a browser sends."""

from __future__ import annotations

import base64
import binascii


async def refused(authenticate, request):
    """None when the request may go on (basic auth off, or a known user), else the response to
    send instead: the auth function's own (a login challenge) or a 401."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import PlainTextResponse, Response

    if authenticate is None:
        return None
    user = await run_in_threadpool(authenticate, request)
    if isinstance(user, Response):
        return user
    if user is None:
        return PlainTextResponse(
            "You are not authenticated: this MLflow server needs a username and password.",
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="mlflow"'},
        )
    return None


def basic_login(request) -> tuple[str, str] | None:
    """(user, password) of the request's Basic Authorization header, or None."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None
