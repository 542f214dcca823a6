"""A side of a battle whose gateway or endpoint fails says why, and its pair cannot be voted on
(tracking/arena/generation.py), against the gateway as served (tests/gateway_server.py) with its
model server down, and against no gateway at all."""

from __future__ import annotations

import asyncio
import time

import pytest
from gateway_server import gateway_app
from loopback import free_port, serving

from tracking.arena import records
from tracking.arena.generation import generate_side
from tracking.gateway_proxy import GatewayClient


def battle() -> records.Battle:
    now = time.time_ns()
    return records.Battle(
        records.new_battle_id(),
        "1",
        [{"role": "user", "content": "りんごは？"}],
        "りんごは？",
        {},
        "",
        0.0,
        4,
        [records.Side("A", "tiny-ja", records.new_trace_id()[0], now)],
    )


def side_after(target: str, endpoint: str = "tiny-ja") -> tuple[records.Side, list]:
    async def go():
        client = GatewayClient(timeout_s=30)
        b = battle()
        b.sides[0].endpoint = endpoint
        queue: asyncio.Queue = asyncio.Queue()
        try:
            await generate_side(client, target, b, b.sides[0], queue)
        finally:
            await client.close()
        items = []
        while not queue.empty():
            items.append(queue.get_nowait())
        return b.sides[0], items

    return asyncio.run(go())


@pytest.fixture(scope="module")
def gateway_url():
    with serving(gateway_app(f"http://127.0.0.1:{free_port()}")) as url:
        yield url


def test_a_gateway_that_is_down_is_named():
    side, items = side_after(f"http://127.0.0.1:{free_port()}")
    assert side.error and "unreachable" in side.error and "service gateway" in side.error
    assert items == [("end", "A", None)] and side.ended_ns is not None


def test_an_engine_that_is_down_keeps_the_gateways_message(gateway_url):
    side, _ = side_after(gateway_url)
    assert side.error and "The model server" in side.error and "unreachable" in side.error
    b = battle()
    b.sides = [side, side]
    assert not b.votable


def test_an_unknown_endpoint_is_named(gateway_url):
    side, _ = side_after(gateway_url, "nope")
    assert side.error == "The gateway has no endpoint named 'nope'"
