"""Bradley–Terry scores of the blind comparison's votes (tracking's arena page and
`promptlab-eval --pairwise-judge`), on the Elo scale people know from Chatbot Arena.

Each vote is a game between two endpoints: a win, a loss or a tie (a tie, "both bad" included,
counts half a win to each). The strengths are the maximum-likelihood fit of
P(i beats j) = p_i / (p_i + p_j), found with Hunter's MM iteration, with a weak prior (every pair
that met also drew `prior` games) so that an endpoint that never lost keeps a finite score. Scores
are 1000 + 400·log10(p_i / geometric mean); the 95% intervals come from a seeded bootstrap over
the votes, so the same votes always give the same board.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

# A vote: (first endpoint, second endpoint, first's share of the game: 1, 0 or 0.5).
Game = tuple[str, str, float]

BASE = 1000.0
SCALE = 400.0
PRIOR_GAMES = 0.5
BOOTSTRAP_ROUNDS = 200
ITERATIONS = 1000
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Score:
    endpoint: str
    score: float
    low: float  # the 95% interval's ends
    high: float
    games: int
    wins: float  # ties count half


def strengths(games: Sequence[Game], prior: float = PRIOR_GAMES) -> dict[str, float]:
    """Each endpoint's strength p_i (geometric mean 1) fitted to `games`."""
    names = sorted({n for a, b, _ in games for n in (a, b)})
    if not names:
        return {}
    wins: dict[str, float] = defaultdict(float)
    met: dict[tuple[str, str], float] = defaultdict(float)
    for a, b, share in games:
        if a == b:
            continue
        wins[a] += share
        wins[b] += 1 - share
        met[(a, b)] += 1
        met[(b, a)] += 1
    for a, b in list(met):
        if a < b and prior:  # the prior's drawn games, half a win each way
            wins[a] += prior / 2
            wins[b] += prior / 2
            met[(a, b)] += prior
            met[(b, a)] += prior
    opponents: dict[str, list[str]] = defaultdict(list)
    for a, b in met:
        opponents[a].append(b)
    p = dict.fromkeys(names, 1.0)
    for _ in range(ITERATIONS):
        new = {}
        for i in names:
            denominator = sum(met[(i, j)] / (p[i] + p[j]) for j in opponents[i])
            new[i] = wins[i] / denominator if denominator and wins[i] > 0 else 1e-12
        mean = math.exp(sum(math.log(v) for v in new.values()) / len(new))
        new = {i: v / mean for i, v in new.items()}
        change = max(abs(math.log(new[i]) - math.log(p[i])) for i in names)
        p = new
        if change < TOLERANCE:
            break
    return p


def elo(strength: float) -> float:
    return BASE + SCALE * math.log10(strength)


def leaderboard(
    games: Sequence[Game],
    prior: float = PRIOR_GAMES,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
) -> list[Score]:
    """The endpoints best first, each with its score, 95% interval, games and wins."""
    fitted = strengths(games, prior)
    if not fitted:
        return []
    rng = random.Random(seed)
    samples: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        resampled = [games[rng.randrange(len(games))] for _ in games]
        for name, value in strengths(resampled, prior).items():
            samples[name].append(elo(value))
    played: dict[str, int] = defaultdict(int)
    won: dict[str, float] = defaultdict(float)
    for a, b, share in games:
        played[a] += 1
        played[b] += 1
        won[a] += share
        won[b] += 1 - share
    board = []
    for name, value in fitted.items():
        drawn = sorted(samples[name]) or [elo(value)]
        board.append(
            Score(
                endpoint=name,
                score=elo(value),
                low=drawn[int(0.025 * (len(drawn) - 1))],
                high=drawn[math.ceil(0.975 * (len(drawn) - 1))],
                games=played[name],
                wins=won[name],
            )
        )
    return sorted(board, key=lambda s: (-s.score, s.endpoint))


def pair_win_rates(games: Sequence[Game]) -> dict[tuple[str, str], tuple[float, int]]:
    """For each pair (a, b) that met, a before b alphabetically: a's share of their games and how
    many they played."""
    shares: dict[tuple[str, str], list[float]] = defaultdict(list)
    for a, b, share in games:
        if a > b:
            a, b, share = b, a, 1 - share
        shares[(a, b)].append(share)
    return {pair: (sum(s) / len(s), len(s)) for pair, s in sorted(shares.items())}
