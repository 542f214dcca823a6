"""The pairwise judge's battles: every pair on every row, sides and the judge's order alternating
so that a judge that always prefers the first answer it sees prefers neither endpoint."""

from __future__ import annotations

import argparse

import pytest

from promptlab_eval.cli import UsageError, load_inputs, parser
from promptlab_eval.pairwise import pairings, vote_of


def test_every_pair_meets_on_every_row_with_sides_and_order_balanced():
    found = pairings(4, ["x", "y", "z"])
    assert len(found) == 12
    for row in range(4):
        met = {frozenset((p.a, p.b)) for p in found if p.row == row}
        assert met == {frozenset("xy"), frozenset("xz"), frozenset("yz")}
    assert sum(p.swapped for p in found) == 6
    assert sum(p.a == "x" for p in found) == sum(p.b == "x" for p in found)


def test_a_judge_that_always_says_the_first_is_better_wins_each_side_half_the_time():
    found = pairings(4, ["x", "y"])
    votes = [vote_of("yes", p.swapped) for p in found]
    assert votes.count("A") == votes.count("B") == 2
    winners = [p.a if v == "A" else p.b for p, v in zip(found, votes, strict=True)]
    assert winners.count("x") == winners.count("y") == 2
    assert vote_of("tie", True) == vote_of("tie", False) == "tie"
    assert vote_of("no", False) == "B" and vote_of("no", True) == "A"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--endpoint", "a", "--pairwise-judge", "j"], "two different"),
        (["--endpoint", "a", "--endpoint", "a", "--pairwise-judge", "j"], "two different"),
        (["--endpoint", "a", "--endpoint", "b", "--pairwise-judge", "j", "--judge", "j"], "one or"),
        (
            ["--endpoint", "a", "--endpoint", "b", "--pairwise-judge", "j", "--expect", "fruit"],
            "one or",
        ),
    ],
)
def test_pairwise_usage_problems_are_named_before_anything_runs(tmp_path, extra, words):
    data = tmp_path / "d.csv"
    data.write_text("fruit\nりんご\n", encoding="utf-8")
    args = parser().parse_args(
        ["--experiment", "e", "--template", "{{ fruit }}は？", "--data", str(data), *extra]
    )
    assert isinstance(args, argparse.Namespace)
    with pytest.raises(UsageError, match=words):
        load_inputs(args)
