"""`promptlab-eval`: a Japanese CSV of inputs on both of the stack's models, from the tracking
container (`docker compose exec -T tracking promptlab-eval ...`), into Prompt Engineering runs."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import threading
import time
import urllib.error
import uuid

import pytest
from constants import CHAT_ENDPOINT as CHAT
from constants import JUDGE_MODEL_NAME as JUDGE
from constants import SECOND_MODEL_NAME as SECOND
from reference import greedy_chat

TEMPLATE = "{{ object }}は何色ですか？{{ note }}"
ROWS = [
    {"object": "りんご", "note": "短く。", "expected": ""},
    {"object": "バナナ", "note": 'カンマ, と "引用"', "expected": ""},
    {"object": "ぶどう", "note": "改行\nあり", "expected": ""},
    {"object": "ｶﾀｶﾅ", "note": "全角：？！", "expected": ""},
    {"object": "もも", "note": "", "expected": ""},
]
MAX_TOKENS = 8


def csv_bytes(rows: list[dict], encoding: str) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode(encoding)


def prompt_of(row: dict) -> str:
    return TEMPLATE.replace("{{ object }}", row["object"]).replace("{{ note }}", row["note"])


def evaluate(
    stack, experiment: str, data: bytes, *args: str, endpoints=(CHAT, SECOND)
) -> subprocess.CompletedProcess:
    command = [
        "promptlab-eval",
        "--experiment",
        experiment,
        "--template",
        TEMPLATE,
        "--data",
        "-",
        "--max-tokens",
        str(MAX_TOKENS),
        *args,
    ]
    for endpoint in endpoints:
        command += ["--endpoint", endpoint]
    return stack.exec_tracking(*command, stdin=data)


def runs_of(stack, experiment: str) -> dict[str, dict]:
    status, body = stack.request(
        "GET", "ajax-api/2.0/mlflow/experiments/get-by-name", query={"experiment_name": experiment}
    )
    if status != 200:
        return {}
    experiment_id = body["experiment"]["experiment_id"]
    status, body = stack.request(
        "POST", "ajax-api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]}
    )
    assert status == 200, body
    return {r["info"]["run_name"]: r for r in body.get("runs", [])}


def table_of(stack, run_id: str) -> list[dict]:
    table = json.loads(stack.artifact_bytes(run_id, "eval_results_table.json"))
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


@pytest.fixture(scope="module")
def five_rows_on_two_models(stack):
    experiment = f"データセット {uuid.uuid4().hex[:6]}"
    out = evaluate(stack, experiment, csv_bytes(ROWS, "cp932"), "--run-name", "果物")
    return experiment, out


def test_five_rows_on_two_endpoints_make_two_runs_of_five_rows_equal_to_greedy(
    stack, five_rows_on_two_models, stack_reference_model, stack_reference_model_b
):
    experiment, out = five_rows_on_two_models
    assert out.returncode == 0, out.stderr.decode()
    runs = runs_of(stack, experiment)
    assert set(runs) == {f"果物 ({CHAT})", f"果物 ({SECOND})"}
    for endpoint, reference in ((CHAT, stack_reference_model), (SECOND, stack_reference_model_b)):
        run = runs[f"果物 ({endpoint})"]
        rows = table_of(stack, run["info"]["run_id"])
        assert [r["object"] for r in rows] == [r["object"] for r in ROWS]
        for got, row in zip(rows, ROWS, strict=True):
            assert got["prompt"] == prompt_of(row)
            messages = [{"role": "user", "content": prompt_of(row)}]
            assert got["output"] == greedy_chat(*reference, messages, MAX_TOKENS), endpoint
            assert int(got["MLFLOW_total_tokens"]) > MAX_TOKENS and float(got["MLFLOW_latency"]) > 0
            # Streamed: the first piece came, and not after the end (on the tiny model a whole
            # answer can arrive in one read, within the 0.1 ms the table keeps).
            assert 0 < float(got["MLFLOW_time_to_first_token"]) <= float(got["MLFLOW_latency"])
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        slowest = max(float(r["MLFLOW_latency"]) for r in rows)
        assert 0 < metrics["median_time_to_first_token_ms"] < slowest
        # As the UI makes them: what the evaluation view, "Duplicate run" and "Evaluate all" read.
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert tags["mlflow.runSourceType"] == "PROMPT_ENGINEERING"
        assert json.loads(tags["mlflow.loggedArtifacts"]) == [
            {"path": "eval_results_table.json", "type": "table"}
        ]
        assert params["prompt_template"] == TEMPLATE and params["model_route"] == endpoint
        assert params["route_type"] == "mlflow_deployment_endpoint" and params["max_tokens"] == str(
            MAX_TOKENS
        )
        raw = stack.artifact_bytes(run["info"]["run_id"], "eval_results_table.json").decode("utf-8")
        # Readable UTF-8: JSON escapes only control characters (the random model writes some).
        assert not [e for e in re.findall(r"\\u[0-9a-fA-F]{4}", raw) if int(e[2:], 16) >= 0x20]
        assert "ｶﾀｶﾅ" in raw
    summary = out.stdout.decode()
    assert CHAT in summary and SECOND in summary and "mean latency ms" in summary
    assert "median first token ms" in summary


def test_the_same_command_again_redoes_nothing(stack, five_rows_on_two_models):
    experiment, _ = five_rows_on_two_models
    before = {
        name: table_of(stack, r["info"]["run_id"]) for name, r in runs_of(stack, experiment).items()
    }
    out = evaluate(stack, experiment, csv_bytes(ROWS, "utf-8-sig"), "--run-name", "果物")
    assert out.returncode == 0, out.stderr.decode()
    after = runs_of(stack, experiment)
    assert set(after) == set(before)  # no new run
    assert {name: table_of(stack, r["info"]["run_id"]) for name, r in after.items()} == before
    # The summary says every row was reused.
    lines = [line.split(" | ") for line in out.stdout.decode().splitlines()[2:]]
    assert [(cells[0], cells[1], cells[3]) for cells in lines] == [
        (CHAT, "5", "5"),
        (SECOND, "5", "5"),
    ]


def test_an_interrupted_run_resumes_where_it_stopped(stack, stack_reference_model):
    experiment = f"中断 {uuid.uuid4().hex[:6]}"
    # Long enough (one row at a time, about 20 s on a fast machine) to be stopped in the middle.
    rows = [{"object": f"果物{i}", "note": "", "expected": ""} for i in range(200)]
    data = csv_bytes(rows, "utf-8")
    args = ("--run-name", "長い", "--concurrency", "1", "--max-tokens", "64")
    first = threading.Thread(
        target=lambda: evaluate(stack, experiment, data, *args, endpoints=(CHAT,))
    )
    first.start()
    deadline = time.monotonic() + 120
    while True:  # until some answers are saved
        runs = runs_of(stack, experiment)
        try:
            saved = (
                [r for r in table_of(stack, runs["長い"]["info"]["run_id"]) if r["output"]]
                if runs
                else []
            )
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise
            saved = []  # the run is made; its table is first saved a few seconds later
        if len(saved) >= 3:
            break
        assert time.monotonic() < deadline, "no answers were saved"
        time.sleep(0.5)
    # Ctrl-C in the terminal of `docker compose exec`: SIGINT to the command.
    kill = (
        "import os, signal\nfor p in os.listdir('/proc'):\n if p.isdigit():\n"
        "  try: cmd = open(f'/proc/{p}/cmdline', 'rb').read()\n  except OSError: continue\n"
        "  if b'promptlab-eval' in cmd and b'python' in cmd: os.kill(int(p), signal.SIGINT)\n"
    )
    stack.exec_tracking("python", "-c", kill)
    first.join(60)
    run_id = runs_of(stack, experiment)["長い"]["info"]["run_id"]
    answered = [r for r in table_of(stack, run_id) if r["output"]]
    assert 3 <= len(answered) < len(rows), len(answered)
    out = evaluate(stack, experiment, data, *args, endpoints=(CHAT,))
    assert out.returncode == 0, out.stderr.decode()
    summary = out.stdout.decode().splitlines()[2].split(" | ")
    assert int(summary[3]) >= len(answered), summary  # reused, not asked again
    final = table_of(stack, run_id)
    assert [r["object"] for r in final] == [r["object"] for r in rows]
    assert all(r["output"] for r in final)
    assert [r["output"] for r in final[: len(answered)]] == [r["output"] for r in answered]
    assert list(runs_of(stack, experiment)) == ["長い"]
    messages = [{"role": "user", "content": prompt_of(rows[-1])}]
    assert final[-1]["output"] == greedy_chat(*stack_reference_model, messages, 64)


def test_a_failing_row_is_recorded_and_the_others_are_answered(stack):
    experiment = f"失敗 {uuid.uuid4().hex[:6]}"
    rows = [ROWS[0], {"object": "長い" * 400, "note": "", "expected": ""}, ROWS[1]]
    out = evaluate(
        stack, experiment, csv_bytes(rows, "utf-8"), "--run-name", "一部失敗", endpoints=(CHAT,)
    )
    assert out.returncode == 1, out.stderr.decode()
    table = table_of(stack, runs_of(stack, experiment)["一部失敗"]["info"]["run_id"])
    assert table[0]["output"] and table[2]["output"]
    assert table[1]["output"] == "" and "context is 512 tokens" in table[1]["MLFLOW_error"]
    assert "| 3 | 1 |" in out.stdout.decode()


@pytest.mark.parametrize(
    "data, args, words",
    [
        (csv_bytes([{"fruit": "りんご", "note": ""}], "utf-8"), (), "{{ object }} has no column"),
        (b"", (), "is empty"),
        (b"\x00\x01\x02binary", (), "looks binary"),
        (csv_bytes(ROWS, "utf-8"), ("--expect", "answer"), "--expect answer"),
        (
            csv_bytes(ROWS, "utf-8"),
            ("--endpoint", "no-such-endpoint"),
            "no endpoint no-such-endpoint",
        ),
    ],
)
def test_bad_input_is_refused_before_any_model_is_called_and_nothing_is_created(
    stack, data, args, words
):
    experiment = f"不正 {uuid.uuid4().hex[:6]}"
    out = evaluate(stack, experiment, data, *args, endpoints=(CHAT,))
    assert out.returncode == 2, out.stderr.decode()
    assert words in out.stderr.decode().strip().splitlines()[-1]
    assert runs_of(stack, experiment) == {}


def test_expected_answers_are_scored(stack, stack_reference_model):
    experiment = f"採点 {uuid.uuid4().hex[:6]}"
    rows = [dict(r) for r in ROWS[:4]]
    for row in rows[:2]:  # two right answers, two wrong ones
        row["expected"] = greedy_chat(
            *stack_reference_model, [{"role": "user", "content": prompt_of(row)}], MAX_TOKENS
        )
    rows[2]["expected"] = "違う答え"
    rows[3]["expected"] = "x"
    out = evaluate(
        stack,
        experiment,
        csv_bytes(rows, "utf-8"),
        "--expect",
        "expected",
        "--run-name",
        "採点",
        endpoints=(CHAT,),
    )
    assert out.returncode == 0, out.stderr.decode()
    run = runs_of(stack, experiment)["採点"]
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["exact_match"] == 0.5 and metrics["rows"] == 4 and metrics["failed_rows"] == 0
    table = table_of(stack, run["info"]["run_id"])
    assert [r["exact_match"] for r in table] == ["1", "1", "0", "0"]


def test_an_mlflow_judge_on_a_local_endpoint_scores_every_row(stack):
    experiment = f"審査 {uuid.uuid4().hex[:6]}"
    out = evaluate(
        stack,
        experiment,
        csv_bytes(ROWS[:3], "utf-8"),
        "--run-name",
        "審査",
        "--judge",
        JUDGE,
        "--criteria",
        "答えは丁寧な日本語ですか？",
        endpoints=(CHAT,),
    )
    assert out.returncode == 0, out.stderr.decode()
    run = runs_of(stack, experiment)["審査"]
    table = table_of(stack, run["info"]["run_id"])
    # The judge model's own verdict, through MLflow's judge and the stack's gateway, per row.
    assert [(r["judge"], r["judge_rationale"]) for r in table] == [
        ("yes", "The answer follows the criteria.")
    ] * 3
    assert all(r["output"] for r in table)
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["judge_pass"] == 1.0
    assert "judge_pass" in out.stdout.decode()


def test_a_judge_needs_its_criteria_and_a_chat_endpoint(stack):
    for args, words in (
        (("--judge", JUDGE), "--judge and --criteria go together"),
        (("--judge", f"{JUDGE}-completions", "--criteria", "x"), "needs a chat endpoint"),
    ):
        out = evaluate(
            stack,
            f"審査不正 {uuid.uuid4().hex[:6]}",
            csv_bytes(ROWS, "utf-8"),
            *args,
            endpoints=(CHAT,),
        )
        assert out.returncode == 2 and words in out.stderr.decode(), out.stderr.decode()


def test_a_pairwise_judge_votes_blind_between_two_endpoints_into_the_arena_board(stack):
    """`--pairwise-judge`: 4 rows, one pair: 4 battles recorded as the arena page records them,
    each voted by the judge (feedback from LLM_JUDGE), apart from human votes. The tiny judge
    always says the first answer it sees is better: with the order swapped on half the battles,
    each endpoint wins exactly half."""
    from arena_client import arena_traces, leaderboard

    experiment = f"一対比較 {uuid.uuid4().hex[:6]}"
    out = evaluate(stack, experiment, csv_bytes(ROWS[:4], "utf-8"), "--pairwise-judge", JUDGE)
    assert out.returncode == 0, out.stderr.decode()
    assert "4 of 4 battles voted by judge" in out.stderr.decode(), out.stderr.decode()
    runs = runs_of(stack, experiment)
    assert list(runs) == ["arena-leaderboard"], list(runs)
    experiment_id = runs["arena-leaderboard"]["info"]["experiment_id"]
    board = leaderboard(stack, experiment_id)
    assert board["human"]["votes"] == 0 and board["judge"]["votes"] == 4, board
    assert {s["endpoint"]: s["wins"] for s in board["judge"]["scores"]} == {CHAT: 2, SECOND: 2}
    traces = arena_traces(stack, experiment_id)
    assert len(traces) == 8
    sources = {
        (a["source"]["source_type"], a["source"]["source_id"])
        for t in traces
        for a in t.get("assessments", [])
    }
    assert sources == {("LLM_JUDGE", JUDGE)}, sources
    # Each battle's request is its row's prompt, as for the runs.
    prompts = {json.loads(t["request_preview"])["messages"][0]["content"] for t in traces}
    assert prompts == {prompt_of(r) for r in ROWS[:4]}
