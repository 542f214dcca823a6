"""`promptlab-eval`: one Prompt Engineering template over a dataset of inputs, on several endpoints.

    docker compose exec -T tracking promptlab-eval --experiment 果物 \\
        --template '{{ object }}は何色ですか？' --data - --endpoint A --endpoint B < inputs.csv

With --pairwise-judge, every pair of endpoints answers every row instead, and an LLM judge votes
between them blind, as people do on the arena page (pairwise.py).

Every input problem (an unreadable file, a variable without a column, an unknown endpoint) is
reported before any model is called, and nothing is created. Each endpoint gets one run, made as
the UI makes them (runner.py); a summary table ends the output.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from promptlab_eval.dataset import DatasetError, read_dataset
from promptlab_eval.judge import make_judge
from promptlab_eval.prompt_template import missing_columns, variables
from promptlab_eval.runner import EndpointRun, Evaluation, Summary
from promptlab_eval.settings import EvalSettings
from promptlab_eval.tracking_client import TrackingClient, TrackingError
from promptlab_stack.settings import SettingsError
from promptlab_stack.topology import TRACKING


class UsageError(ValueError):
    """Bad arguments or inputs: reported with exit status 2, before anything is created."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="promptlab-eval", description=__doc__.splitlines()[0])
    p.add_argument("--experiment", required=True, help="experiment name (created if missing)")
    template = p.add_mutually_exclusive_group(required=True)
    template.add_argument("--template", help="the prompt template, with {{ variables }}")
    template.add_argument("--template-file", type=Path, help="a UTF-8 file holding the template")
    p.add_argument(
        "--data", required=True, help="a CSV or JSON Lines file, or - for standard input"
    )
    p.add_argument(
        "--endpoint", action="append", required=True, help="a gateway endpoint (repeat for several)"
    )
    p.add_argument("--temperature", type=float, default=0.0, help="default 0 (greedy)")
    p.add_argument("--max-tokens", type=int, help="new tokens at most (default: the endpoint's)")
    p.add_argument(
        "--stop", action="append", default=[], help="a stop sequence (repeat for several)"
    )
    p.add_argument(
        "--run-name", help="default: the data file's name; the endpoint is added when several"
    )
    p.add_argument(
        "--encoding", help="the data's encoding (default: detect UTF-8, UTF-8 with BOM, CP932)"
    )
    p.add_argument(
        "--format",
        choices=["csv", "jsonl"],
        help="default: from the file (JSON Lines if it starts with {)",
    )
    p.add_argument(
        "--expect", metavar="COLUMN", help="score answers against this column (exact and contains)"
    )
    p.add_argument(
        "--judge",
        metavar="ENDPOINT",
        help="score every answer with an MLflow judge on this chat endpoint",
    )
    p.add_argument(
        "--criteria",
        help="what the judge checks (with --judge), e.g. 'Is the answer polite Japanese?'",
    )
    p.add_argument(
        "--pairwise-judge",
        metavar="ENDPOINT",
        help="instead of runs: blind comparisons of every pair of --endpoint on every row, voted "
        "by an LLM judge on this chat endpoint, into the arena's leaderboard (optional --criteria)",
    )
    p.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight per endpoint (default 8)"
    )
    p.add_argument(
        "--tracking-uri",
        default=f"http://127.0.0.1:{TRACKING.port}",
        help="the tracking server (default: this container's)",
    )
    return p


def load_inputs(
    args, settings: EvalSettings | None = None
) -> tuple[str, list[dict[str, str]], str]:
    """(template, rows, data name); raises UsageError or DatasetError."""
    settings = settings or EvalSettings.from_env({})  # the defaults
    if args.template_file:
        try:
            template = args.template_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--template-file {args.template_file}: {e}") from None
    else:
        template = args.template
    if not template.strip():
        raise UsageError("the template is empty")
    if args.data == "-":
        data, name = sys.stdin.buffer.read(), "standard input"
    else:
        try:
            data, name = Path(args.data).read_bytes(), args.data
        except OSError as e:
            raise UsageError(f"--data {args.data}: {e.strerror}") from None
    rows, _ = read_dataset(
        data, name, encoding=args.encoding, fmt=args.format, max_field=settings.max_request_bytes
    )
    missing = missing_columns(template, list(rows[0]))
    if missing:
        raise UsageError(
            f"the template's {', '.join('{{ ' + m + ' }}' for m in missing)} has no column in "
            f"{name} (its columns: {', '.join(rows[0])})"
        )
    if args.expect and args.expect not in rows[0]:
        raise UsageError(
            f"--expect {args.expect}: no such column in {name} (its columns: {', '.join(rows[0])})"
        )
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    criteria = bool(args.criteria and args.criteria.strip())
    if args.pairwise_judge:
        if args.judge or args.expect:
            raise UsageError(
                "--pairwise-judge compares endpoints in battles; --judge and --expect score the "
                "runs of the other mode: use one or the other"
            )
        if len(set(args.endpoint)) < 2:
            raise UsageError("--pairwise-judge needs at least two different --endpoint")
    elif bool(args.judge) != criteria:
        raise UsageError(
            "--judge and --criteria go together: the judge's endpoint and what it checks"
        )
    return template, rows, name


def summary_table(summaries: list[Summary]) -> str:
    names = sorted({k for s in summaries for k in s.scores})
    head = ["endpoint", "rows", "failed", "reused", "mean latency ms", "median first token ms"]
    head += ["tokens", *names, "run"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for s in summaries:
        latency = f"{s.mean_latency_ms:.0f}" if s.mean_latency_ms is not None else "-"
        first = f"{s.median_first_token_ms:.0f}" if s.median_first_token_ms is not None else "-"
        cells = [
            s.endpoint,
            str(s.rows),
            str(s.failures),
            str(s.reused),
            latency,
            first,
            str(s.tokens),
            *(f"{s.scores[n]:.2f}" if n in s.scores else "-" for n in names),
            s.run_id,
        ]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def pairwise(args, settings: EvalSettings, client, experiment_id: str, template: str, rows) -> int:
    """--pairwise-judge: battles voted by the judge (pairwise.py), then the board as a run."""
    from promptlab_eval.judge import make_pairwise_judge
    from promptlab_eval.pairwise import PairwiseJudgeRun, board_table
    from tracking.arena.tracking_store import ArenaStore

    login = (
        (settings.mlflow_auth_admin_username, settings.mlflow_auth_admin_password)
        if settings.basic_auth
        else None
    )
    store = ArenaStore(args.tracking_uri, login)
    judge = make_pairwise_judge(
        args.pairwise_judge, args.criteria, settings.mlflow_deployments_target
    )
    endpoints = list(dict.fromkeys(args.endpoint))
    try:
        outcomes = PairwiseJudgeRun(
            client,
            store,
            experiment_id,
            template,
            rows,
            endpoints,
            args.pairwise_judge,
            judge,
            args.temperature,
            args.max_tokens,
            args.concurrency,
        ).run()
    except KeyboardInterrupt:
        print("\npromptlab-eval: interrupted; the battles voted so far are saved", file=sys.stderr)
        return 130
    problems = [o for o in outcomes if o.problem]
    for o in problems[:20]:
        p = o.pairing
        print(f"row {p.row + 1}, {p.a} vs {p.b}: not counted: {o.problem}", file=sys.stderr)
    run_id, board = store.log_board(experiment_id)
    print(
        f"{len(outcomes) - len(problems)} of {len(outcomes)} battles voted by "
        f"{args.pairwise_judge}; leaderboard logged as run {run_id}",
        file=sys.stderr,
    )
    print(board_table(board))
    return 1 if problems else 0


def interrupt(signum, frame):
    raise KeyboardInterrupt  # docker stop / kill: save what is answered, as for Ctrl-C


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, interrupt)
    args = parser().parse_args(argv)
    try:
        settings = EvalSettings.from_env()
        template, rows, name = load_inputs(args, settings)
        client = TrackingClient(
            args.tracking_uri, settings, timeout_s=settings.ui_proxy_timeout_s + 5
        )
        endpoints = client.endpoints()
        judges = [j for j in (args.judge, args.pairwise_judge) if j]
        unknown = [e for e in [*args.endpoint, *judges] if e not in endpoints]
        if unknown:
            raise UsageError(
                f"the gateway has no endpoint {', '.join(unknown)} (it has: {', '.join(endpoints)})"
            )
        for flag, judge_endpoint in (
            ("--judge", args.judge),
            ("--pairwise-judge", args.pairwise_judge),
        ):
            if judge_endpoint and endpoints[judge_endpoint] != "llm/v1/chat":
                raise UsageError(
                    f"{flag} {judge_endpoint} is a {endpoints[judge_endpoint]} endpoint; "
                    "a judge needs a chat endpoint"
                )
        if args.pairwise_judge and (
            not_chat := [e for e in args.endpoint if endpoints[e] != "llm/v1/chat"]
        ):
            raise UsageError(
                f"--pairwise-judge compares chat endpoints; {', '.join(not_chat)} is not one"
            )
        judge = (
            make_judge(args.judge, args.criteria, settings.mlflow_deployments_target)
            if args.judge
            else None
        )
    except (UsageError, DatasetError, SettingsError) as e:
        print(f"promptlab-eval: {e}", file=sys.stderr)
        return 2
    except (TrackingError, OSError) as e:
        print(
            f"promptlab-eval: the tracking server at {args.tracking_uri} did not answer: {e}",
            file=sys.stderr,
        )
        return 2
    base_name = args.run_name or (Path(args.data).stem if args.data != "-" else "promptlab-eval")
    print(
        f"{len(rows)} rows from {name}, variables {', '.join(variables(template)) or '(none)'}, "
        f"on {', '.join(args.endpoint)}",
        file=sys.stderr,
    )
    experiment_id = client.experiment_id(args.experiment)
    if args.pairwise_judge:
        return pairwise(args, settings, client, experiment_id, template, rows)
    summaries = []
    try:
        for endpoint in args.endpoint:
            run_name = f"{base_name} ({endpoint})" if len(args.endpoint) > 1 else base_name
            evaluation = Evaluation(
                template,
                rows,
                run_name,
                args.temperature,
                args.max_tokens,
                tuple(args.stop),
                args.expect,
                judge,
            )
            summaries.append(
                EndpointRun(
                    client,
                    experiment_id,
                    evaluation,
                    endpoint,
                    endpoints[endpoint],
                    args.concurrency,
                ).run()
            )
    except KeyboardInterrupt:
        print(
            "\npromptlab-eval: interrupted; the answers so far are saved: "
            "run the same command again to finish",
            file=sys.stderr,
        )
        return 130
    print(summary_table(summaries))
    return 1 if any(s.failures for s in summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
