"""The blind comparison's scores: a Bradley–Terry fit checked against its closed form and its
likelihood equations, ties, the prior, and the bootstrap's intervals."""

from __future__ import annotations

import math

import pytest

from promptlab_stack.bradley_terry import elo, leaderboard, pair_win_rates, strengths


def test_two_endpoints_fit_the_closed_form():
    # 3 wins, 1 loss: the maximum-likelihood strength ratio is exactly 3.
    games = [("a", "b", 1.0)] * 3 + [("a", "b", 0.0)]
    p = strengths(games, prior=0)
    assert p["a"] / p["b"] == pytest.approx(3.0)
    assert elo(p["a"]) - elo(p["b"]) == pytest.approx(400 * math.log10(3))


def test_three_endpoints_satisfy_the_likelihood_equations():
    games = (
        [("a", "b", 1.0)] * 7
        + [("a", "b", 0.0)] * 3
        + [("b", "c", 1.0)] * 6
        + [("b", "c", 0.0)] * 4
        + [("a", "c", 1.0)] * 8
        + [("c", "a", 1.0)] * 2
        + [("a", "c", 0.5)] * 2
    )
    p = strengths(games, prior=0)
    # At the maximum, each endpoint's wins equal its expected wins: sum_j n_ij p_i / (p_i + p_j).
    wins = {n: 0.0 for n in p}
    expected = {n: 0.0 for n in p}
    for a, b, share in games:
        wins[a] += share
        wins[b] += 1 - share
        expected[a] += p[a] / (p[a] + p[b])
        expected[b] += p[b] / (p[a] + p[b])
    for name in p:
        assert expected[name] == pytest.approx(wins[name], rel=1e-6)
    assert math.prod(p.values()) == pytest.approx(1.0)  # geometric mean 1: scores centre on 1000
    assert p["a"] > p["b"] > p["c"]


def test_a_tie_is_half_a_win_each_and_an_unbeaten_endpoint_stays_finite():
    assert strengths([("a", "b", 0.5)] * 4, prior=0) == pytest.approx({"a": 1.0, "b": 1.0})
    p = strengths([("a", "b", 1.0)] * 5)  # never lost: the prior keeps it finite
    assert math.isfinite(elo(p["a"])) and p["a"] > p["b"]


def test_the_board_is_sorted_with_intervals_around_the_scores_and_reproducible():
    games = [("a", "b", 1.0)] * 8 + [("a", "b", 0.0)] * 2 + [("b", "c", 1.0)] * 5
    board = leaderboard(games)
    assert [s.endpoint for s in board] == ["a", "b", "c"]
    for s in board:
        assert s.low <= s.score <= s.high
    assert board == leaderboard(games)  # seeded bootstrap
    assert board[0].games == 10 and board[0].wins == 8
    assert leaderboard([]) == []


def test_win_rates_per_pair_are_read_from_either_order():
    rates = pair_win_rates([("b", "a", 1.0), ("a", "b", 1.0), ("a", "b", 0.5)])
    assert rates == {("a", "b"): (pytest.approx(0.5), 3)}
