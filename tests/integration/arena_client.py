"""The arena page's REST calls, as its JavaScript makes them (tracking/arena/api.py), for the
compose tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from promptlab_stack.sse import events

API = "promptlab/arena/api"


def battle(stack, body: dict, headers: dict | None = None) -> tuple[int, list[dict] | dict]:
    """POST a battle; (200, its events) or (status, the error body)."""
    req = urllib.request.Request(
        f"{stack.url}/{API}/battles",
        data=json.dumps(body, ensure_ascii=False).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            **(stack.login if headers is None else headers),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, list(events(resp))
    except urllib.error.HTTPError as e:
        raw = e.read().decode("utf-8", "replace")
        try:
            return e.code, json.loads(raw)
        except ValueError:  # a login challenge's text
            return e.code, {"message": raw}


def answers(found: list[dict]) -> tuple[str, dict[str, str], dict[str, dict]]:
    """(battle id, each side's text, each side's done event) of a battle's events."""
    battle_id = found[0]["battle_id"]
    texts = {"A": "", "B": ""}
    done = {}
    for e in found:
        if "delta" in e:
            texts[e["side"]] += e["delta"]
        if e.get("done"):
            done[e["side"]] = e
    return battle_id, texts, done


def vote(stack, experiment_id: str, battle_id: str, choice: str):
    return stack.request(
        "POST",
        f"{API}/votes",
        {"experiment_id": experiment_id, "battle_id": battle_id, "vote": choice},
    )


def leaderboard(stack, experiment_id: str) -> dict:
    status, body = stack.request(
        "GET", f"{API}/leaderboard", query={"experiment_id": experiment_id}
    )
    assert status == 200, body
    return body


def arena_traces(stack, experiment_id: str) -> list[dict]:
    status, body = stack.request(
        "POST",
        "ajax-api/3.0/mlflow/traces/search",
        {
            "locations": [
                {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}
            ],
            "filter": "tag.`promptlab.arena` = 'battle'",
            "max_results": 100,
        },
    )
    assert status == 200, body
    return body.get("traces", [])
