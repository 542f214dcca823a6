"""`Retry-After` on the gateway's 429s.

The model server refuses a prompt with a 429 when its queue is full (MAX_QUEUED_REQUESTS), within
milliseconds; MLflow's gateway app keeps the status and message but has no way to add a header to
a provider's error. This ASGI middleware adds `Retry-After: 1` to every 429 the app sends, so a
client (the UI proxy, promptlab-eval, any HTTP client) knows it may simply try again shortly.
"""

from __future__ import annotations

RETRY_AFTER_S = 1


class RetryAfterOn429:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_retry_after(message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 429:
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"retry-after"
                ]
                message = {
                    **message,
                    "headers": [*headers, (b"retry-after", str(RETRY_AFTER_S).encode())],
                }
            await send(message)

        await self.app(scope, receive, send_with_retry_after)
