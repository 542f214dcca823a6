"""Both sides of a battle, asked of the gateway at once and streamed as they come.

Each side is one streamed chat request to the gateway's endpoint (the engines stream natively); a
side whose engine answers whole is shown whole. A side that fails keeps the gateway's own message
(the model loading, the queue full, the prompt too long), and its battle cannot be voted on.
"""

from __future__ import annotations

import asyncio
import json
import time

from promptlab_eval.tracking_client import first_choice, piece_of, whole_text
from promptlab_stack.sse import StreamError, events_of_pieces
from tracking.arena.records import Battle, Side
from tracking.gateway_proxy import GatewayClient, gateway_error_message

GATEWAY = "The MLflow AI Gateway (service gateway)"


def request_body(battle: Battle) -> dict:
    return {
        "messages": battle.messages,
        "temperature": battle.temperature,
        "max_tokens": battle.max_tokens,
        "stream": True,
    }


async def generate_side(
    client: GatewayClient, target: str, battle: Battle, side: Side, out: asyncio.Queue
) -> None:
    """Fill `side` from its endpoint's stream; put ("delta", side, text) on `out` for each piece
    and ("end", side, None) when it is over, however it ended."""
    import aiohttp

    url = f"{target.rstrip('/')}/gateway/{side.endpoint}/invocations"
    try:
        answered = await client.stream(url, request_body(battle))
        if isinstance(answered, tuple):
            status, body = answered
            if status != 200:
                side.error = gateway_error_message(body, status)
                if status == 404:
                    side.error = f"The gateway has no endpoint named {side.endpoint!r}"
            else:  # a whole answer
                data = json.loads(body)
                side.text = whole_text(data) or ""
                side.usage = data.get("usage") or {}
                side.finish_reason = data["choices"][0].get("finish_reason")
                side.first_token_ns = time.time_ns()
                await out.put(("delta", side.side, side.text))
        else:
            try:
                async for event in events_of_pieces(answered):
                    if piece := piece_of(event):
                        if side.first_token_ns is None:
                            side.first_token_ns = time.time_ns()
                        side.text += piece
                        await out.put(("delta", side.side, piece))
                    side.usage = event.get("usage") or side.usage
                    finish_reason = first_choice(event).get("finish_reason")
                    side.finish_reason = finish_reason or side.finish_reason
            finally:
                await answered.aclose()  # type: ignore[attr-defined]
    except StreamError as e:
        side.error = e.message
    except TimeoutError:
        side.error = f"{GATEWAY} did not answer in time"
    except aiohttp.ClientConnectionError:
        side.error = f"{GATEWAY} is unreachable: it is starting or down"
    except (ValueError, KeyError, IndexError, TypeError):
        side.error = f"{GATEWAY} answered something that is not a chat answer"
    except asyncio.CancelledError:
        side.error = "The page was closed before the answer was complete"
        raise
    finally:
        side.ended_ns = time.time_ns()
        out.put_nowait(("end", side.side, None))
