"""Evaluate one template over many rows on one endpoint, into one Prompt Engineering run.

The run is made as the UI makes it (create-promptlab-run, then the evaluation view's Save, which
re-uploads eval_results_table.json), so the evaluation view, "Duplicate run" and "Evaluate all"
treat it like any other. Rows are sent concurrently through the UI's gateway proxy, so the model
server batches them. A failed row keeps an empty output (the UI's "Evaluate" can retry it) and its
error in the hidden MLFLOW_error column; it never stops the others. The table is saved every few
seconds and when interrupted; the same command run again on the same data finds its run by a tag
(a hash of the settings and the rows as read) and only sends the rows that have no answer yet; an
edited file makes a new run and leaves the earlier one's table as it was.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from promptlab_eval.dataset import data_digest
from promptlab_eval.prompt_template import render, row_values, variables
from promptlab_eval.tracking_client import TrackingClient, TrackingError

# The metadata columns the UI writes after "output" (it shows latency and total tokens).
METADATA_COLUMNS = [
    "MLFLOW_total_tokens",
    "MLFLOW_output_tokens",
    "MLFLOW_input_tokens",
    "MLFLOW_latency",
    # Ours, hidden by the UI as its own are: when the first piece of the answer arrived (ms).
    "MLFLOW_time_to_first_token",
]
ERROR_COLUMN = "MLFLOW_error"
SCORE_COLUMNS = ["exact_match", "contains"]
JUDGE_COLUMNS = ["judge", "judge_rationale"]
JUDGE_PASS = {"yes", "true", "pass", "1"}
SIGNATURE_TAG = "promptlab_eval.signature"
SAVE_EVERY_S = 2.0


@dataclass(frozen=True)
class Evaluation:
    """What to run: the same for every endpoint of one command."""

    template: str
    rows: list[dict[str, str]]
    run_name: str
    temperature: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    expect: str | None = None  # the column holding each row's expected answer
    judge: Callable[..., Any] | None = None  # an MLflow judge (judge.py) scoring every answer


@dataclass
class RowResult:
    values: dict[str, str]
    prompt: str
    output: str = ""
    input_tokens: str = ""
    output_tokens: str = ""
    total_tokens: str = ""
    latency_ms: str = ""
    first_token_ms: str = ""
    error: str = ""
    expected: str | None = None
    verdict: str = ""
    rationale: str = ""

    @property
    def answered(self) -> bool:
        return bool(self.output) and not self.error

    def scores(self) -> list[str]:
        if self.expected is None or not self.answered:
            return ["", ""]
        answer, expected = self.output.strip(), self.expected.strip()
        return [str(int(answer == expected)), str(int(expected in answer))]


@dataclass
class Summary:
    endpoint: str
    run_id: str
    rows: int
    failures: int
    reused: int
    mean_latency_ms: float | None
    tokens: int
    scores: dict[str, float] = field(default_factory=dict)
    median_first_token_ms: float | None = None


def payload(endpoint_type: str, prompt: str, evaluation: Evaluation) -> dict:
    """What the UI sends on Evaluate for this endpoint type."""
    body: dict = (
        {"messages": [{"role": "user", "content": prompt}]}
        if endpoint_type == "llm/v1/chat"
        else {"prompt": prompt}
    )
    if evaluation.temperature is not None:
        body["temperature"] = evaluation.temperature
    if evaluation.max_tokens is not None:
        body["max_tokens"] = evaluation.max_tokens
    if evaluation.stop:
        body["stop"] = list(evaluation.stop)
    return body


def readable_error(message: str, limit: int = 500) -> str:
    """The part of an error a person needs: MLflow's scoring server wraps the model's message as
    "Failed to predict data '<the whole input>'. Error: <message>", so keep what follows
    "Error:"."""
    status, _, rest = message.partition(": Failed to predict data ")
    if rest and "Error: " in rest:
        message = f"{status}: {rest.rsplit('Error: ', 1)[1].strip()}"
    return message if len(message) <= limit else message[: limit - 1] + "…"


class Progress:
    """Rows done, failures, tokens/s and time left, on one line of standard error."""

    def __init__(self, label: str, total: int, stream=sys.stderr):
        self.label, self.total, self.stream = label, total, stream
        self.done = self.failed = self.tokens = 0
        self.started = time.monotonic()
        self._last = 0.0
        self.tty = stream.isatty()

    def update(self, result: RowResult, force: bool = False) -> None:
        self.done += 1
        self.failed += bool(result.error)
        self.tokens += int(result.output_tokens or 0)
        self.show(force)

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and not self.tty and now - self._last < 5 and self.done < self.total:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        left = (self.total - self.done) * elapsed / self.done if self.done else float("nan")
        line = (
            f"{self.label}: {self.done}/{self.total} rows, {self.failed} failed, "
            f"{self.tokens / elapsed:.1f} tokens/s, ETA {left:.0f} s"
        )
        self.stream.write(("\r" + line.ljust(79)) if self.tty else line + "\n")
        if self.tty and self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


class EndpointRun:
    def __init__(
        self,
        client: TrackingClient,
        experiment_id: str,
        evaluation: Evaluation,
        endpoint: str,
        endpoint_type: str,
        concurrency: int,
        stream=sys.stderr,
    ):
        self.client, self.experiment_id, self.evaluation = client, experiment_id, evaluation
        self.endpoint, self.endpoint_type, self.concurrency = endpoint, endpoint_type, concurrency
        self.stream = stream
        self.variables = variables(evaluation.template)
        self.results: list[RowResult | None] = [None] * len(evaluation.rows)
        self.run_id: str | None = None

    # -- the run -------------------------------------------------------------------------------
    def signature(self) -> str:
        e = self.evaluation
        key = [
            data_digest(e.rows),  # an edited file is another evaluation, in a run of its own
            e.template,
            self.endpoint,
            e.temperature,
            e.max_tokens,
            list(e.stop),
            e.run_name,
            e.expect,
        ]
        return hashlib.sha256(json.dumps(key, ensure_ascii=False).encode()).hexdigest()[:20]

    @property
    def expect_column(self) -> list[str]:
        """The expected-answer column, when it is not already a template variable's column."""
        expect = self.evaluation.expect
        return [expect] if expect and expect.lower() not in self.variables else []

    def columns(self) -> list[str]:
        extra = self.expect_column + (SCORE_COLUMNS if self.evaluation.expect else [])
        judge = JUDGE_COLUMNS if self.evaluation.judge is not None else []
        return [
            *self.variables,
            "prompt",
            "output",
            *extra,
            *judge,
            *METADATA_COLUMNS,
            ERROR_COLUMN,
        ]

    def table(self) -> dict:
        data = []
        for r in self.results:
            if r is None:
                continue
            extra = ([r.expected] if self.expect_column else []) + (
                r.scores() if self.evaluation.expect else []
            )
            judge = [r.verdict, r.rationale] if self.evaluation.judge is not None else []
            data.append(
                [
                    *(r.values[v] for v in self.variables),
                    r.prompt,
                    r.output,
                    *extra,
                    *judge,
                    r.total_tokens,
                    r.output_tokens,
                    r.input_tokens,
                    r.latency_ms,
                    r.first_token_ms,
                    r.error,
                ]
            )
        return {"columns": self.columns(), "data": data}

    def _new_result(self, row: dict[str, str]) -> RowResult:
        values = row_values(self.evaluation.template, row)
        expected = row.get(self.evaluation.expect) if self.evaluation.expect else None
        return RowResult(values, render(self.evaluation.template, values), expected=expected)

    def _reuse_answers(self) -> int:
        """Fill in the rows an earlier run of the same command answered; return how many."""
        self.run_id = self.client.find_run(self.experiment_id, SIGNATURE_TAG, self.signature())
        if self.run_id is None:
            return 0
        table = self.client.read_table(self.run_id)
        columns = table.get("columns", [])
        answered: dict[str, list[dict]] = {}
        for values in table.get("data", []):
            cell = dict(zip(columns, values, strict=False))
            if cell.get("output") and not cell.get(ERROR_COLUMN):
                answered.setdefault(cell.get("prompt", ""), []).append(cell)
        reused = 0
        for i, row in enumerate(self.evaluation.rows):
            result = self._new_result(row)
            earlier = answered.get(result.prompt)
            if earlier:
                cell = earlier.pop(0)
                result.output = cell["output"]
                (
                    result.total_tokens,
                    result.output_tokens,
                    result.input_tokens,
                    result.latency_ms,
                    result.first_token_ms,
                ) = (str(cell.get(c, "")) for c in METADATA_COLUMNS)
                result.verdict, result.rationale = (str(cell.get(c, "")) for c in JUDGE_COLUMNS)
                self.results[i] = result
                reused += 1
        return reused

    def _create_run(self) -> str:
        e, first = self.evaluation, self._new_result(self.evaluation.rows[0])
        parameters: list[dict[str, object]] = [
            {"key": "route_type", "value": "mlflow_deployment_endpoint"}
        ]
        if e.temperature is not None:
            parameters.append({"key": "temperature", "value": e.temperature})
        if e.max_tokens is not None:
            parameters.append({"key": "max_tokens", "value": e.max_tokens})
        if e.stop:
            parameters.append({"key": "stop", "value": "[" + ", ".join(e.stop) + "]"})
        run_id = self.run_id = self.client.create_promptlab_run(
            {
                "experiment_id": self.experiment_id,
                "run_name": e.run_name,
                "tags": [],  # MLflow 3.17.2 fails on any tag here (HTTP 500); set below instead
                "prompt_template": e.template,
                "prompt_parameters": [{"key": k, "value": v} for k, v in first.values.items()],
                "model_route": self.endpoint,
                "model_parameters": parameters,
                "model_input": first.prompt,
                "model_output": "",
                "model_output_parameters": [],
                "mlflow_version": self.client.server_version(),  # as the UI sends its server's
            }
        )
        self.client.set_tag(run_id, SIGNATURE_TAG, self.signature())
        return run_id

    def _evaluate(self, result: RowResult) -> RowResult:
        try:
            answer = self.client.invoke(
                self.endpoint, payload(self.endpoint_type, result.prompt, self.evaluation)
            )
            result.output = answer.text
            usage = answer.usage
            result.input_tokens = str(usage.get("prompt_tokens") or "")
            result.output_tokens = str(usage.get("completion_tokens") or "")
            result.total_tokens = str(usage.get("total_tokens") or "")
            result.latency_ms = f"{answer.latency_ms:.1f}"
            result.first_token_ms = f"{answer.first_token_ms:.1f}"
        except (TrackingError, OSError, KeyError, IndexError, TypeError, ValueError) as e:
            result.error = readable_error(str(e) or type(e).__name__)
            return result
        return self._judge(result)

    def _judge(self, result: RowResult) -> RowResult:
        """The judge's verdict on an answer; a judge that fails leaves the answer standing."""
        if self.evaluation.judge is None or result.verdict:
            return result
        try:
            feedback = self.evaluation.judge(
                inputs={"prompt": result.prompt}, outputs=result.output
            )
            if feedback.error:
                raise RuntimeError(
                    getattr(feedback.error, "error_message", None) or str(feedback.error)
                )
            result.verdict = (
                str(feedback.value).lower()
                if isinstance(feedback.value, bool)
                else str(feedback.value)
            )
            result.rationale = feedback.rationale or ""
        except Exception as e:  # noqa: BLE001 - recorded with the row, like a failed answer
            result.rationale = f"the judge failed: {readable_error(str(e) or type(e).__name__)}"
        return result

    def run(self) -> Summary:
        reused = self._reuse_answers()
        run_id = self.run_id or self._create_run()
        pending = [i for i, r in enumerate(self.results) if r is None]
        unjudged = [
            (i, r)
            for i, r in enumerate(self.results)
            if r is not None and self.evaluation.judge is not None and not r.verdict
        ]
        progress = Progress(
            f"{self.endpoint} ({self.evaluation.run_name})", len(self.results), self.stream
        )
        progress.done = reused
        last_save = time.monotonic()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="promptlab-eval")
        try:
            futures = {
                pool.submit(self._evaluate, self._new_result(self.evaluation.rows[i])): i
                for i in pending
            }
            # Answers reused from an earlier run that the judge has not scored yet.
            futures.update({pool.submit(self._judge, r): i for i, r in unjudged})
            while futures:
                done, _ = wait(futures, timeout=SAVE_EVERY_S, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    index = futures.pop(future)
                    if self.results[index] is None:
                        progress.update(result)
                    self.results[index] = result
                if time.monotonic() - last_save >= SAVE_EVERY_S:
                    self.client.write_table(run_id, self.table())
                    last_save = time.monotonic()
        finally:
            # Interrupted or not, the rows answered so far are kept for the next run.
            pool.shutdown(wait=False, cancel_futures=True)
            self.client.write_table(run_id, self.table())
        if not pending:
            progress.show(force=True)  # every row was answered before: say so once
        return self._summarize(reused, run_id)

    def _summarize(self, reused: int, run_id: str) -> Summary:
        results = [r for r in self.results if r is not None]
        answered = [r for r in results if r.answered]
        latencies = [float(r.latency_ms) for r in answered if r.latency_ms]
        scores = {}
        if self.evaluation.expect and answered:
            for n, name in enumerate(SCORE_COLUMNS):
                scores[name] = sum(int(r.scores()[n]) for r in answered) / len(answered)
        judged = [r for r in answered if r.verdict]
        if judged:
            scores["judge_pass"] = sum(
                r.verdict.strip().lower() in JUDGE_PASS for r in judged
            ) / len(judged)
        metrics = {"rows": len(results), "failed_rows": len(results) - len(answered), **scores}
        if latencies:
            metrics["mean_latency_ms"] = sum(latencies) / len(latencies)
        # Rows reused from a run made before this column existed have none.
        first_tokens = sorted(float(r.first_token_ms) for r in answered if r.first_token_ms)
        if first_tokens:
            metrics["mean_time_to_first_token_ms"] = sum(first_tokens) / len(first_tokens)
            metrics["median_time_to_first_token_ms"] = statistics.median(first_tokens)
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, value)
        return Summary(
            self.endpoint,
            run_id,
            len(results),
            len(results) - len(answered),
            reused,
            metrics.get("mean_latency_ms"),
            sum(int(r.total_tokens or 0) for r in answered),
            scores,
            metrics.get("median_time_to_first_token_ms"),
        )
