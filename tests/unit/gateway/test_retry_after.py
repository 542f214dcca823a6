"""The model server's 429 when its queue is full reaches the client through the gateway with a
Retry-After header (gateway/retry_after.py)."""

from __future__ import annotations


def test_a_busy_model_server_is_a_429_through_the_gateway_with_retry_after():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from starlette.responses import JSONResponse

    from gateway.retry_after import RetryAfterOn429

    app = FastAPI()
    app.get("/busy")(lambda: JSONResponse({"detail": "the model server is busy"}, status_code=429))
    app.get("/fine")(lambda: {"ok": True})
    client = TestClient(RetryAfterOn429(app))
    assert client.get("/busy").headers["retry-after"] == "1"
    assert "retry-after" not in client.get("/fine").headers
