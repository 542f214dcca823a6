"""`promptlab-eval --pairwise-judge ENDPOINT`: the blind comparison's votes from an LLM judge.

For each row of the data and each pair of `--endpoint`s, both answer the row's prompt (as the UI
asks them: streamed through the tracking server's gateway proxy), the two answers are recorded as
one battle, exactly as the arena page records them (tracking/arena/records.py: two traces), and
the judge's verdict is recorded as feedback on both, from source LLM_JUDGE (the judge's endpoint),
apart from human votes on the leaderboard. Which endpoint is "A" alternates, and the judge sees
the answers in the order B, A on every other battle: a judge that prefers the first position then
prefers neither endpoint. The leaderboard is logged as a run at the end.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from promptlab_eval.prompt_template import render, row_values
from promptlab_eval.tracking_client import TrackingClient, TrackingError


@dataclass(frozen=True)
class Pairing:
    row: int
    a: str  # the endpoint on side A
    b: str
    swapped: bool  # the judge sees B's answer first


@dataclass
class Outcome:
    pairing: Pairing
    vote: str = ""  # A, B or tie; "" when not counted
    problem: str = ""


def pairings(rows: int, endpoints: list[str]) -> list[Pairing]:
    """Every pair of endpoints on every row; sides and the judge's order alternate."""
    found: list[Pairing] = []
    for row in range(rows):
        for a, b in itertools.combinations(endpoints, 2):
            k = len(found)
            if k % 2:
                a, b = b, a
            found.append(Pairing(row, a, b, swapped=(k // 2) % 2 == 1))
    return found


def vote_of(verdict: str, swapped: bool) -> str:
    """The side the judge preferred: "yes" means the first answer it saw."""
    if verdict == "tie":
        return "tie"
    first_better = verdict == "yes"
    return "A" if first_better != swapped else "B"


class PairwiseJudgeRun:
    def __init__(
        self,
        client: TrackingClient,
        store,  # tracking.arena.tracking_store.ArenaStore
        experiment_id: str,
        template: str,
        rows: list[dict[str, str]],
        endpoints: list[str],
        judge_endpoint: str,
        judge,
        temperature: float,
        max_tokens: int | None,
        concurrency: int,
    ):
        self.client, self.store, self.experiment_id = client, store, experiment_id
        self.template, self.rows, self.endpoints = template, rows, endpoints
        self.judge_endpoint, self.judge = judge_endpoint, judge
        self.temperature, self.max_tokens, self.concurrency = temperature, max_tokens, concurrency

    def _answer(self, side, messages: list[dict]) -> None:
        payload: dict = {"messages": messages, "temperature": self.temperature}
        if self.max_tokens:
            payload["max_tokens"] = self.max_tokens
        side.started_ns = time.time_ns()
        try:
            answer = self.client.invoke(side.endpoint, payload)
        except (TrackingError, OSError) as e:
            side.error = str(e) or type(e).__name__
            side.ended_ns = time.time_ns()
            return
        side.text, side.usage, side.finish_reason = answer.text, answer.usage, "stop"
        side.first_token_ns = side.started_ns + int(answer.first_token_ms * 1e6)
        side.ended_ns = side.started_ns + int(answer.latency_ms * 1e6)

    def one(self, pairing: Pairing) -> Outcome:
        from tracking.arena import records

        prompt = render(self.template, row_values(self.template, self.rows[pairing.row]))
        messages = [{"role": "user", "content": prompt}]
        now = time.time_ns()
        battle = records.Battle(
            battle_id=records.new_battle_id(),
            experiment_id=self.experiment_id,
            messages=messages,
            template=self.template,
            variables=row_values(self.template, self.rows[pairing.row]),
            prompt_uri="",
            temperature=self.temperature,
            max_tokens=self.max_tokens or 0,
            sides=[
                records.Side("A", pairing.a, records.new_trace_id()[0], now),
                records.Side("B", pairing.b, records.new_trace_id()[0], now),
            ],
        )
        outcome = Outcome(pairing)
        self.store.start(battle)
        for side in battle.sides:
            self._answer(side, messages)
        self.store.finish(battle)
        if not battle.votable:
            failed = [f"{s.endpoint}: {s.error}" for s in battle.sides if s.error]
            outcome.problem = "; ".join(failed)
            return outcome
        a, b = battle.sides
        first, second = (b, a) if pairing.swapped else (a, b)
        feedback = self.judge(
            inputs={"request": prompt}, outputs={"first": first.text, "second": second.text}
        )
        verdict = str(feedback.value).strip().lower() if feedback.value is not None else ""
        if feedback.error or verdict not in ("yes", "no", "tie"):
            error = getattr(feedback.error, "error_message", None) or feedback.error
            outcome.problem = f"the judge gave no verdict ({error or verdict or 'empty'})"
            return outcome
        outcome.vote = vote_of(verdict, pairing.swapped)
        self.store.vote(
            self.experiment_id,
            battle.battle_id,
            {s.side: s.trace_id for s in battle.sides},
            outcome.vote,
            records.LLM_JUDGE,
            self.judge_endpoint,
            feedback.rationale or "",
        )
        return outcome

    def run(self) -> list[Outcome]:
        from tracking.arena.protocol import ArenaRequestError

        def safe(pairing: Pairing) -> Outcome:
            try:
                return self.one(pairing)
            except ArenaRequestError as e:
                return Outcome(pairing, problem=e.message)

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(safe, pairings(len(self.rows), self.endpoints)))


def board_table(board: dict) -> str:
    lines = ["endpoint | score | 95% interval | games | win rate", "--- | --- | --- | --- | ---"]
    for s in board["judge"]["scores"]:
        lines.append(
            f"{s['endpoint']} | {s['score']:.0f} | {s['low']:.0f}-{s['high']:.0f} | "
            f"{s['games']} | {s['win_rate']:.0%}"
        )
    return "\n".join(lines)
