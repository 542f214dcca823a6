"""The engine's port while its models are prepared: a 503 per model saying what it is doing."""

from __future__ import annotations

import asyncio
import json

from aiohttp.test_utils import TestClient, TestServer

from llamacpp.front import Front
from llamacpp.states import States
from promptlab_stack.model_state import CONVERTING, QUEUED, read_state


def states(tmp_path) -> States:
    return States(
        {
            name: {
                "model_id": f"/models/{name}",
                "state": QUEUED,
                "at_start": True,
                "message": f"{name}: queued",
            }
            for name in ("a", "b")
        },
        tmp_path / "state.json",
    )


def test_while_preparing_every_request_gets_a_503_saying_what_its_model_does(tmp_path):
    prepared = states(tmp_path)

    async def scenario():
        async with TestClient(TestServer(Front(prepared, 1 << 20).app())) as client:
            prepared.set("a", CONVERTING, "a: converting to Q8_0: 40%")
            chat = {"model": "a", "messages": [{"role": "user", "content": "x"}]}
            r = await client.post("/v1/chat/completions", json=chat)
            assert r.status == 503 and r.headers["Retry-After"] == "10"
            assert (await r.json())["error"]["message"] == "a: converting to Q8_0: 40%"
            r = await client.post("/v1/completions", json={"model": "b", "prompt": "x"})
            assert (await r.json())["error"]["message"] == "b: queued"
            # Without a model (the healthcheck's /models): every model.
            r = await client.get("/models")
            assert r.status == 503
            assert (await r.json())["error"]["message"] == "a: converting to Q8_0: 40%; b: queued"
            # Bad input is a 400 that says so, a body past MAX_REQUEST_MB a 413.
            r = await client.post("/v1/chat/completions", data=b"\xff not json")
            assert r.status == 400 and "not JSON" in (await r.text())
            r = await client.post("/v1/chat/completions", data=json.dumps(["x"]))
            assert r.status == 400
            r = await client.post("/v1/chat/completions", data=b"x" * (2 << 20))
            assert r.status == 413

    asyncio.run(scenario())
    assert read_state(tmp_path / "state.json")["models"]["a"]["state"] == CONVERTING


def test_llama_server_not_answering_is_a_503_that_says_so(tmp_path):
    from loopback import free_port

    from llamacpp.prompts import Prompts

    front = Front(states(tmp_path), 1 << 20)
    front.serve(f"http://127.0.0.1:{free_port()}", Prompts({}))  # nothing listens there

    async def scenario():
        async with TestClient(TestServer(front.app())) as client:
            for r in (
                await client.get("/models"),
                await client.post("/v1/chat/completions", json={"model": "a", "messages": []}),
            ):
                assert r.status == 503 and r.headers["Retry-After"] == "10"
                assert "llama-server did not answer" in (await r.json())["error"]["message"]

    asyncio.run(scenario())
