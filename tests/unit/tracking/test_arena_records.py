"""How a battle and its vote are written to MLflow and read back (tracking/arena/records.py), and
the page's requests checked (protocol.py): MLflow's own entities, no server."""

from __future__ import annotations

import time

import pytest

from tracking.arena import records
from tracking.arena.protocol import ArenaRequestError, BattleRequest, VoteRequest, parse


def battle(error: str | None = None) -> records.Battle:
    now = time.time_ns()
    sides = [
        records.Side("A", "tiny-ja", records.new_trace_id()[0], now),
        records.Side("B", "tiny-b", records.new_trace_id()[0], now),
    ]
    for side in sides:
        side.text, side.first_token_ns, side.ended_ns = "赤です", now + 10**8, now + 10**9
        side.usage = {"prompt_tokens": 5, "completion_tokens": 10}
        side.finish_reason = "length"
    sides[1].error = error
    return records.Battle(
        records.new_battle_id(),
        "7",
        [{"role": "user", "content": "りんごは？"}],
        "{{ x }}は？",
        {"x": "りんご"},
        "prompts:/p/1",
        0.0,
        10,
        sides,
    )


def test_a_side_is_a_trace_with_one_chat_span_that_holds_the_request_and_the_answer():
    b = battle()
    side = b.sides[0]
    info = records.trace_info(b, side, finished=True)
    assert str(info.state.value) == "OK" and info.execution_duration == 1000
    assert info.tags[records.BATTLE_TAG] == b.battle_id and info.tags[records.SIDE_TAG] == "A"
    meta = info.trace_metadata
    assert (
        meta[records.ENDPOINT_KEY] == "tiny-ja"
        and meta["promptlab.arena.prompt_uri"] == "prompts:/p/1"
    )
    assert float(meta["promptlab.arena.tokens_per_s"]) == pytest.approx(9 / 0.9)
    span = records.span(b, side)
    assert span.trace_id == side.trace_id and span.parent_id is None
    assert span.inputs["messages"] == b.messages
    assert span.outputs["choices"][0]["message"]["content"] == "赤です"
    assert str(records.trace_info(b, side, finished=False).state.value) == "IN_PROGRESS"


def test_a_failed_side_is_an_error_trace_and_its_battle_cannot_be_voted_on():
    b = battle(error="The model is loading")
    info = records.trace_info(b, b.sides[1], finished=True)
    assert (
        str(info.state.value) == "ERROR"
        and info.trace_metadata[records.ERROR_KEY] == "The model is loading"
    )
    assert not b.votable and battle().votable


def test_a_vote_reads_back_as_one_game_per_kind_of_voter():
    b = battle()
    infos = []
    for side, value in zip(b.sides, records.VALUES["B"], strict=True):
        info = records.trace_info(b, side, finished=True)
        info.assessments = [
            records.feedback(side.trace_id, value, b.battle_id, records.HUMAN, "alice")
        ]
        infos.append(info)
    sides = records.sides_by_battle(infos)[b.battle_id]
    assert records.game_of(sides, records.HUMAN) == ("tiny-ja", "tiny-b", 0.0)
    assert records.game_of(sides, records.LLM_JUDGE) is None


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"prompt": "x"}, "experiment_id"),
        ({"experiment_id": " ", "prompt": "x"}, "pick an experiment"),
        ({"experiment_id": "1", "prompt": "x", "temperature": 3}, "temperature"),
        ({"experiment_id": "1", "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"experiment_id": "1", "prompt": "x", "colour": "red"}, "colour"),
    ],
)
def test_a_bad_battle_request_is_a_400_naming_the_field(body, words):
    with pytest.raises(ArenaRequestError) as e:
        parse(BattleRequest, body)
    assert e.value.status == 400 and words in e.value.message


def test_a_vote_is_one_of_four():
    assert (
        parse(VoteRequest, {"experiment_id": "1", "battle_id": "ab", "vote": "tie"}).vote == "tie"
    )
    with pytest.raises(ArenaRequestError, match="vote"):
        parse(VoteRequest, {"experiment_id": "1", "battle_id": "ab", "vote": "C"})
    with pytest.raises(ArenaRequestError, match="JSON object"):
        parse(VoteRequest, ["not", "an", "object"])


def test_the_board_keeps_human_and_judge_votes_apart_and_skips_failed_pairs():
    from tracking.arena.board import leaderboard_metrics, leaderboard_of

    def side(endpoint, ok=True, votes=None):
        return records.StoredSide(f"tr-{endpoint}", endpoint, ok, "", 100.0, 50.0, votes or {})

    battles = {
        "1": {"A": side("x", votes={"HUMAN": ["win"]}), "B": side("y", votes={"HUMAN": ["loss"]})},
        "2": {
            "A": side("y", votes={"LLM_JUDGE": ["tie"]}),
            "B": side("x", votes={"LLM_JUDGE": ["tie"]}),
        },
        "3": {"A": side("x", votes={"HUMAN": ["win"]}), "B": side("y", ok=False)},
        "4": {"A": side("x")},
    }
    board = leaderboard_of("7", battles)
    assert board["battles"] == 4
    assert board["human"]["votes"] == 1 and board["judge"]["votes"] == 1
    assert [s["endpoint"] for s in board["human"]["scores"]] == ["x", "y"]
    assert board["judge"]["scores"][0]["score"] == board["judge"]["scores"][1]["score"] == 1000
    metrics = leaderboard_metrics(board)
    assert metrics["human.x.score"] > metrics["human.y.score"] and metrics["judge.votes"] == 1
    assert metrics["x.median_latency_ms"] == 100.0
