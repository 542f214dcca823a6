"""How the blind comparison lives in MLflow, written and read back.

A battle is two traces in the chosen experiment, one per side, tagged with the battle's id and the
side ("A" or "B"); each has one CHAT_MODEL span with the messages sent and the answer, and its
metadata say which endpoint answered, with which settings, how fast, and any error. A vote is one
`arena_preference` feedback on each of the two traces ("win", "loss", "tie" or "both_bad"), whose
source is the human voter (their user name) or the LLM judge (its endpoint). `promptlab-eval
--pairwise-judge` writes the same records; the leaderboard reads only these.
"""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from dataclasses import dataclass, field

ARENA_TAG = "promptlab.arena"  # = "battle" on every arena trace: what the leaderboard searches
BATTLE_TAG = "promptlab.arena.battle"
SIDE_TAG = "promptlab.arena.side"
TRACE_NAME = "arena"
PREFERENCE = "arena_preference"
META = "promptlab.arena."
ENDPOINT_KEY = META + "endpoint"
ERROR_KEY = META + "error"
SIDES = ("A", "B")
# A vote's value on side A's trace and on side B's.
VALUES = {
    "A": ("win", "loss"),
    "B": ("loss", "win"),
    "tie": ("tie", "tie"),
    "both_bad": ("both_bad", "both_bad"),
}
# A's share of the game for the value on A's trace.
SHARES = {"win": 1.0, "loss": 0.0, "tie": 0.5, "both_bad": 0.5}
HUMAN = "HUMAN"
LLM_JUDGE = "LLM_JUDGE"
PREVIEW_CHARS = 1000


def new_battle_id() -> str:
    return secrets.token_hex(16)


def new_trace_id() -> tuple[str, int]:
    """(MLflow's trace id, the OpenTelemetry trace id it wraps)."""
    otel = secrets.randbits(128) or 1
    return f"tr-{otel:032x}", otel


@dataclass
class Side:
    """One side of a battle: who answered and what, as it was generated."""

    side: str
    endpoint: str
    trace_id: str
    started_ns: int
    text: str = ""
    first_token_ns: int | None = None
    ended_ns: int | None = None
    usage: dict = field(default_factory=dict)
    finish_reason: str | None = None
    error: str | None = None

    @property
    def latency_ms(self) -> float:
        return ((self.ended_ns or self.started_ns) - self.started_ns) / 1e6

    @property
    def first_token_ms(self) -> float:
        return ((self.first_token_ns or self.ended_ns or self.started_ns) - self.started_ns) / 1e6

    @property
    def completion_tokens(self) -> int | None:
        tokens = self.usage.get("completion_tokens")
        return tokens if isinstance(tokens, int) else None

    @property
    def tokens_per_s(self) -> float | None:
        tokens = self.completion_tokens
        decoding_ms = self.latency_ms - self.first_token_ms
        if not tokens or tokens < 2 or decoding_ms <= 0:
            return None
        return (tokens - 1) / (decoding_ms / 1000)


@dataclass
class Battle:
    battle_id: str
    experiment_id: str
    messages: list[dict]
    template: str
    variables: dict[str, str]
    prompt_uri: str
    temperature: float
    max_tokens: int
    sides: list[Side]

    @property
    def votable(self) -> bool:
        return all(s.error is None and s.ended_ns is not None for s in self.sides)


def request_of(battle: Battle) -> dict:
    """What each side was asked: the span's inputs."""
    return {
        "messages": battle.messages,
        "temperature": battle.temperature,
        "max_tokens": battle.max_tokens,
    }


def trace_metadata(battle: Battle, side: Side) -> dict[str, str]:
    meta = {
        ENDPOINT_KEY: side.endpoint,
        META + "temperature": str(battle.temperature),
        META + "max_tokens": str(battle.max_tokens),
        META + "template": battle.template[:PREVIEW_CHARS],
        META + "variables": json.dumps(battle.variables, ensure_ascii=False)[:PREVIEW_CHARS],
    }
    if battle.prompt_uri:
        meta[META + "prompt_uri"] = battle.prompt_uri
    if side.ended_ns is not None:
        meta[META + "latency_ms"] = f"{side.latency_ms:.1f}"
        meta[META + "first_token_ms"] = f"{side.first_token_ms:.1f}"
    if side.completion_tokens is not None:
        meta[META + "completion_tokens"] = str(side.completion_tokens)
    if (prompt_tokens := side.usage.get("prompt_tokens")) is not None:
        meta[META + "prompt_tokens"] = str(prompt_tokens)
    if side.tokens_per_s is not None:
        meta[META + "tokens_per_s"] = f"{side.tokens_per_s:.2f}"
    if side.error:
        meta[ERROR_KEY] = side.error[:PREVIEW_CHARS]
    return meta


def trace_info(battle: Battle, side: Side, *, finished: bool):
    """The side's TraceInfo: IN_PROGRESS when the battle starts (which also checks that the user
    may write to the experiment), OK or ERROR when it is over."""
    from mlflow.entities import TraceInfo, TraceLocation, TraceState

    if not finished:
        state = TraceState.IN_PROGRESS
    else:
        state = TraceState.ERROR if side.error else TraceState.OK
    return TraceInfo(
        trace_id=side.trace_id,
        trace_location=TraceLocation.from_experiment_id(battle.experiment_id),
        request_time=side.started_ns // 1_000_000,
        state=state,
        execution_duration=round(side.latency_ms) if finished else None,
        request_preview=json.dumps(request_of(battle), ensure_ascii=False)[:PREVIEW_CHARS],
        response_preview=(side.text or side.error or "")[:PREVIEW_CHARS] if finished else None,
        trace_metadata=trace_metadata(battle, side),
        tags={
            ARENA_TAG: "battle",
            BATTLE_TAG: battle.battle_id,
            SIDE_TAG: side.side,
            "mlflow.traceName": TRACE_NAME,
        },
    )


def span(battle: Battle, side: Side):
    """The side's one span: the request sent and the answer, in OpenAI's chat shape."""
    from mlflow.entities.span import Span
    from mlflow.tracing.constant import SpanAttributeKey

    outputs = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": side.text},
                "finish_reason": side.finish_reason,
            }
        ],
        "usage": side.usage,
    }
    return Span.from_dict(
        {
            # MLflow's own id ("tr-" + hex): Span.from_dict would read bare hex as base64.
            "trace_id": side.trace_id,
            "span_id": f"{secrets.randbits(64) or 1:016x}",
            "parent_span_id": None,
            "name": side.endpoint,
            "start_time_unix_nano": side.started_ns,
            "end_time_unix_nano": side.ended_ns or side.started_ns,
            "status": {
                "code": "STATUS_CODE_ERROR" if side.error else "STATUS_CODE_OK",
                "message": side.error or "",
            },
            "attributes": {
                SpanAttributeKey.REQUEST_ID: json.dumps(side.trace_id),
                SpanAttributeKey.SPAN_TYPE: json.dumps("CHAT_MODEL"),
                SpanAttributeKey.INPUTS: json.dumps(request_of(battle), ensure_ascii=False),
                SpanAttributeKey.OUTPUTS: json.dumps(outputs, ensure_ascii=False),
            },
            "events": [],
        }
    )


def feedback(
    trace_id: str, value: str, battle_id: str, source_type: str, source_id: str, rationale: str = ""
):
    from mlflow.entities import AssessmentSource, Feedback

    return Feedback(
        name=PREFERENCE,
        value=value,
        source=AssessmentSource(source_type=source_type, source_id=source_id),
        trace_id=trace_id,
        rationale=rationale or None,
        metadata={BATTLE_TAG: battle_id},
    )


# -- reading back -------------------------------------------------------------------------------
@dataclass
class StoredSide:
    trace_id: str
    endpoint: str
    ok: bool
    error: str
    latency_ms: float | None
    tokens_per_s: float | None
    # source type -> the values of arena_preference feedback on this trace
    votes: dict[str, list[str]]


def stored_side(info) -> StoredSide:
    meta = info.trace_metadata or {}
    votes: dict[str, list[str]] = defaultdict(list)
    for assessment in info.assessments or []:
        if assessment.name != PREFERENCE or getattr(assessment, "valid", True) is False:
            continue
        value = getattr(assessment, "value", None)
        if value in SHARES:
            votes[str(assessment.source.source_type)].append(value)

    def number(key: str) -> float | None:
        try:
            return float(meta[META + key])
        except (KeyError, ValueError):
            return None

    return StoredSide(
        trace_id=info.trace_id,
        endpoint=meta.get(ENDPOINT_KEY, "?"),
        ok=str(getattr(info.state, "value", info.state)) == "OK",
        error=meta.get(ERROR_KEY, ""),
        latency_ms=number("latency_ms"),
        tokens_per_s=number("tokens_per_s"),
        votes=dict(votes),
    )


def sides_by_battle(infos) -> dict[str, dict[str, StoredSide]]:
    """{battle id: {"A": side, "B": side}} of the arena traces `infos` (a battle missing a side
    keeps the one it has)."""
    battles: dict[str, dict[str, StoredSide]] = defaultdict(dict)
    for info in infos:
        tags = info.tags or {}
        battle_id, side = tags.get(BATTLE_TAG), tags.get(SIDE_TAG)
        if battle_id and side in SIDES:
            battles[battle_id][side] = stored_side(info)
    return dict(battles)


def game_of(sides: dict[str, StoredSide], source_type: str):
    """The battle's game by voters of `source_type` as (A's endpoint, B's endpoint, A's share), or
    None when it has no such vote or cannot count (a side missing or failed)."""
    a, b = sides.get("A"), sides.get("B")
    if a is None or b is None or not (a.ok and b.ok):
        return None
    values = a.votes.get(source_type) or []
    if not values:
        return None
    return (a.endpoint, b.endpoint, SHARES[values[0]])
