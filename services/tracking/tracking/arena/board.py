"""The leaderboard of an experiment's blind comparisons: Bradley–Terry scores of the human votes
and, apart, of the LLM judge's (promptlab_stack/bradley_terry.py), win rates per pair, and each
endpoint's median latency and tokens/s; as the page shows it and as a run's metrics and note."""

from __future__ import annotations

import statistics

from tracking.arena import records

BOARD_RUN_NAME = "arena-leaderboard"


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def board_of(battles: dict[str, dict[str, records.StoredSide]], source_type: str) -> dict:
    from promptlab_stack.bradley_terry import leaderboard, pair_win_rates

    games = [g for sides in battles.values() if (g := records.game_of(sides, source_type))]
    return {
        "votes": len(games),
        "scores": [
            {
                "endpoint": s.endpoint,
                "score": round(s.score, 1),
                "low": round(s.low, 1),
                "high": round(s.high, 1),
                "games": s.games,
                "wins": s.wins,
                "win_rate": round(s.wins / s.games, 3) if s.games else None,
            }
            for s in leaderboard(games)
        ],
        "pairs": [
            {"a": a, "b": b, "a_share": round(share, 3), "games": n}
            for (a, b), (share, n) in pair_win_rates(games).items()
        ],
    }


def leaderboard_of(experiment_id: str, battles: dict) -> dict:
    speed: dict[str, dict[str, list]] = {}
    for sides in battles.values():
        for side in sides.values():
            if side.ok:
                entry = speed.setdefault(side.endpoint, {"latency": [], "tps": []})
                entry["latency"].append(side.latency_ms)
                entry["tps"].append(side.tokens_per_s)
    return {
        "experiment_id": experiment_id,
        "battles": len(battles),
        "human": board_of(battles, records.HUMAN),
        "judge": board_of(battles, records.LLM_JUDGE),
        "speed": {
            name: {
                "median_latency_ms": median(v["latency"]),
                "median_tokens_per_s": median(v["tps"]),
            }
            for name, v in sorted(speed.items())
        },
    }


def leaderboard_note(board: dict, experiment_name: str) -> str:
    lines = [
        f"# Blind comparison leaderboard of {experiment_name}",
        "",
        "| | endpoint | score | 95% interval | games | win rate |",
        "|-|-|-|-|-|-|",
    ]
    for kind in ("human", "judge"):
        for s in board[kind]["scores"]:
            lines.append(
                f"| {kind} | {s['endpoint']} | {s['score']:.0f} | {s['low']:.0f}–{s['high']:.0f} "
                f"| {s['games']} | {s['win_rate']:.0%} |"
            )
    return "\n".join(lines)


def leaderboard_metrics(board: dict) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for kind in ("human", "judge"):
        for s in board[kind]["scores"]:
            prefix = f"{kind}.{s['endpoint']}"
            metrics[f"{prefix}.score"] = s["score"]
            metrics[f"{prefix}.score_low"] = s["low"]
            metrics[f"{prefix}.score_high"] = s["high"]
            metrics[f"{prefix}.games"] = s["games"]
        metrics[f"{kind}.votes"] = board[kind]["votes"]
    for name, v in board["speed"].items():
        for key, value in v.items():
            if value is not None:
                metrics[f"{name}.{key}"] = round(value, 3)
    return metrics


def leaderboard_params(board: dict) -> dict:
    return {
        "battles": board["battles"],
        "human_votes": board["human"]["votes"],
        "judge_votes": board["judge"]["votes"],
    }
