"""The arena's routes on the tracking server, native FastAPI routes ahead of MLflow's Flask app,
behind the same login as the UI.

- GET  /promptlab/arena                      the page
- GET  /promptlab/arena/api/endpoints        the gateway's chat endpoints
- POST /promptlab/arena/api/battles          draw two endpoints, stream both answers (SSE), record
- POST /promptlab/arena/api/votes            record a vote, reveal the names
- GET  /promptlab/arena/api/leaderboard      the board of an experiment (?experiment_id=)
- POST /promptlab/arena/api/leaderboard/runs log the board as a run of the experiment
- POST /promptlab/arena/api/dataset          a CSV or JSON Lines file's rows (CP932, BOM)
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from importlib import resources

from promptlab_stack.json_nesting import too_deep
from promptlab_stack.sse import DONE, error_event, event
from tracking.arena import records
from tracking.arena.board import leaderboard_of
from tracking.arena.generation import generate_side
from tracking.arena.protocol import (
    ArenaRequestError,
    BattleRequest,
    LeaderboardRunRequest,
    VoteRequest,
    parse,
)
from tracking.arena.records import Battle, Side
from tracking.arena.tracking_store import ArenaStore
from tracking.gateway_proxy import STREAM_HEADERS, GatewayClient, ProxyError, read_body
from tracking.login import basic_login, refused
from tracking.mlflow_compat import add_route_before_flask

PAGE = "/promptlab/arena"
API = PAGE + "/api"
BATTLE_ID = re.compile(r"^[0-9a-f]{32}$")
CHAT = "llm/v1/chat"
MAX_DATASET_ROWS = 1000


def self_url(request) -> str:
    """This server as its own REST client reaches it: the port this request came in on."""
    return f"http://127.0.0.1:{request.scope['server'][1]}"


def store_for(request) -> ArenaStore:
    return ArenaStore(self_url(request), basic_login(request))


def messages_of(req: BattleRequest) -> tuple[list[dict], str]:
    """The chat messages and the rendered prompt; a template variable without a value is a 400."""
    from promptlab_eval.prompt_template import render, variables

    if not req.prompt.strip():
        raise ArenaRequestError(400, "prompt: the prompt is empty")
    values = {k.lower(): v for k, v in req.variables.items()}
    if missing := [v for v in variables(req.prompt) if v not in values]:
        raise ArenaRequestError(
            400,
            "variables: the template needs a value for "
            + ", ".join(f"{{{{ {v} }}}}" for v in missing),
        )
    text = render(req.prompt, values)
    messages = [{"role": "system", "content": req.system}] if req.system.strip() else []
    return messages + [{"role": "user", "content": text}], text


def finish_quietly(store: ArenaStore, battle: Battle) -> None:
    """Record a battle the page left before it was over (its unfinished sides say so)."""
    for side in battle.sides:
        if side.error is None and (side.ended_ns is None or side.finish_reason is None):
            side.error = "The page was closed before the answer was complete"
        side.ended_ns = side.ended_ns or time.time_ns()
    try:
        store.finish(battle)
    except ArenaRequestError:
        pass  # nobody is left to tell


def make_routes(client: GatewayClient, target: str, authenticate, max_body_bytes: int):
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse

    page_html = resources.files("tracking.arena").joinpath("page.html").read_text("utf-8")

    def problem(status: int, message: str):
        return JSONResponse({"message": message}, status_code=status)

    async def limited_body(request) -> bytes:
        """The body, or a 413 naming MAX_REQUEST_MB once it is larger (gateway_proxy.read_body)."""
        try:
            return await read_body(request, max_body_bytes)
        except ProxyError as e:
            raise ArenaRequestError(
                e.status, e.message.replace("UI's gateway proxy", "arena")
            ) from None

    async def json_body(request):
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise ArenaRequestError(
                415, f"The arena takes application/json, not {media_type or 'no Content-Type'}"
            )
        body = await limited_body(request)
        if too_deep(body, "the arena"):
            raise ArenaRequestError(400, "The request body is nested too deeply")
        try:
            return json.loads(body)
        except ValueError:
            raise ArenaRequestError(400, "The request body is not JSON") from None

    def guarded(handler):
        async def route(request):
            if (refusal := await refused(authenticate, request)) is not None:
                return refusal
            try:
                return await handler(request)
            except ArenaRequestError as e:
                return problem(e.status, e.message)

        return route

    async def chat_endpoints() -> list[str]:
        if not target:
            raise ArenaRequestError(503, "No gateway is configured (MLFLOW_DEPLOYMENTS_TARGET)")
        try:
            status, body = await client.request(
                "GET", f"{target.rstrip('/')}/api/2.0/endpoints/", None
            )
        except Exception:  # noqa: BLE001 - any failure to reach it says the same
            raise ArenaRequestError(
                503,
                "The MLflow AI Gateway (service gateway) is unreachable: it is starting or down",
            ) from None
        if status != 200:
            raise ArenaRequestError(503, f"The MLflow AI Gateway answered HTTP {status}")
        found = json.loads(body).get("endpoints") or []
        return sorted(e["name"] for e in found if e.get("endpoint_type") == CHAT)

    async def page(request):
        return HTMLResponse(page_html, headers={"Cache-Control": "no-cache"})

    async def endpoints(request):
        return JSONResponse({"endpoints": await chat_endpoints()})

    async def battles(request):
        req = parse(BattleRequest, await json_body(request))
        messages, text = messages_of(req)
        available = await chat_endpoints()
        chosen = list(dict.fromkeys(req.endpoints)) or available
        if unknown := [e for e in chosen if e not in available]:
            raise ArenaRequestError(
                400,
                f"endpoints: the gateway has no chat endpoint named {', '.join(unknown)} "
                f"(it has {', '.join(available) or 'none'})",
            )
        if len(chosen) < 2:
            raise ArenaRequestError(400, "endpoints: a comparison needs at least two endpoints")
        drawn = random.sample(chosen, 2)
        now = time.time_ns()
        battle = Battle(
            battle_id=records.new_battle_id(),
            experiment_id=req.experiment_id,
            messages=messages,
            template=req.prompt,
            variables=req.variables,
            prompt_uri=req.prompt_uri,
            temperature=req.temperature,
            max_tokens=req.max_tokens,
            sides=[
                Side(side=s, endpoint=e, trace_id=records.new_trace_id()[0], started_ns=now)
                for s, e in zip(records.SIDES, drawn, strict=True)
            ],
        )
        store = store_for(request)
        await run_in_threadpool(store.start, battle)
        return StreamingResponse(
            battle_events(battle, store, text),
            media_type="text/event-stream",
            headers=STREAM_HEADERS,
        )

    async def battle_events(battle: Battle, store: ArenaStore, text: str):
        queue: asyncio.Queue = asyncio.Queue()
        tasks = [
            asyncio.create_task(generate_side(client, target, battle, side, queue))
            for side in battle.sides
        ]
        by_name = {s.side: s for s in battle.sides}
        finishing = False
        try:
            yield event({"battle_id": battle.battle_id, "prompt": text, "sides": list(by_name)})
            ended = 0
            while ended < len(tasks):
                kind, name, piece = await queue.get()
                if kind == "delta":
                    yield event({"side": name, "delta": piece})
                    continue
                ended += 1
                side = by_name[name]
                yield event(
                    {
                        "side": name,
                        "done": True,
                        # not "error": that key ends a stream (promptlab_stack/sse.py)
                        "failure": side.error,
                        "latency_ms": round(side.latency_ms),
                        "completion_tokens": side.completion_tokens,
                        "tokens_per_s": side.tokens_per_s,
                    }
                )
            finishing = True
            try:
                await run_in_threadpool(store.finish, battle)
            except ArenaRequestError as e:
                yield error_event(e.status, e.message)
            else:
                yield event({"recorded": True, "votable": battle.votable})
            yield DONE
        finally:
            for task in tasks:
                task.cancel()
            if not finishing:  # the page went away: the traces say so rather than stay open
                asyncio.get_running_loop().run_in_executor(None, finish_quietly, store, battle)

    async def votes(request):
        req = parse(VoteRequest, await json_body(request))
        if not BATTLE_ID.match(req.battle_id):
            raise ArenaRequestError(404, f"There is no battle {req.battle_id!r}")
        store = store_for(request)
        sides = await run_in_threadpool(store.battle, req.experiment_id, req.battle_id)
        if set(sides) != set(records.SIDES):
            raise ArenaRequestError(
                404,
                f"There is no battle {req.battle_id} in experiment {req.experiment_id}",
            )
        if failed := [f"{n} ({s.error or 'not finished'})" for n, s in sides.items() if not s.ok]:
            raise ArenaRequestError(
                409, "This pair cannot be voted on: side " + "; side ".join(failed)
            )
        if any(s.votes.get(records.HUMAN) for s in sides.values()):
            raise ArenaRequestError(409, "This pair has already been voted on")
        login = basic_login(request)
        voter = login[0] if login and authenticate is not None else "anonymous"
        await run_in_threadpool(
            store.vote,
            req.experiment_id,
            req.battle_id,
            {name: side.trace_id for name, side in sides.items()},
            req.vote,
            records.HUMAN,
            voter,
        )
        return JSONResponse(
            {
                "battle_id": req.battle_id,
                "vote": req.vote,
                "voter": voter,
                "A": {"endpoint": sides["A"].endpoint, "trace_id": sides["A"].trace_id},
                "B": {"endpoint": sides["B"].endpoint, "trace_id": sides["B"].trace_id},
            }
        )

    async def leaderboard(request):
        experiment_id = request.query_params.get("experiment_id", "").strip()
        if not experiment_id:
            raise ArenaRequestError(400, "experiment_id: pick an experiment")
        store = store_for(request)
        battles_found = await run_in_threadpool(store.battles, experiment_id)
        return JSONResponse(leaderboard_of(experiment_id, battles_found))

    async def leaderboard_run(request):
        req = parse(LeaderboardRunRequest, await json_body(request))
        store = store_for(request)
        run_id, board = await run_in_threadpool(store.log_board, req.experiment_id)
        return JSONResponse({"run_id": run_id, "leaderboard": board})

    async def dataset(request):
        from promptlab_eval.dataset import DatasetError, read_dataset

        name = request.query_params.get("name") or "the file"
        data = await limited_body(request)
        try:
            rows, encoding = read_dataset(data, name)
        except DatasetError as e:
            raise ArenaRequestError(400, str(e)) from None
        if len(rows) > MAX_DATASET_ROWS:
            raise ArenaRequestError(
                400, f"{name} has {len(rows):,} rows; the arena takes {MAX_DATASET_ROWS:,} at most"
            )
        return JSONResponse({"rows": rows, "encoding": encoding, "columns": list(rows[0])})

    return [
        (PAGE, guarded(page), ["GET"]),
        (API + "/endpoints", guarded(endpoints), ["GET"]),
        (API + "/battles", guarded(battles), ["POST"]),
        (API + "/votes", guarded(votes), ["POST"]),
        (API + "/leaderboard", guarded(leaderboard), ["GET"]),
        (API + "/leaderboard/runs", guarded(leaderboard_run), ["POST"]),
        (API + "/dataset", guarded(dataset), ["POST"]),
    ]


def install_arena(
    fastapi_app, client: GatewayClient, *, target: str, authenticate, max_body_bytes: int
) -> list[str]:
    routes = make_routes(client, target, authenticate, max_body_bytes)
    for path, endpoint, methods in routes:
        add_route_before_flask(fastapi_app, path, endpoint, methods)
    return [path for path, _, _ in routes]
