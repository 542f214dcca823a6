"""The REST calls `promptlab-eval` makes, the same the Prompt Engineering UI makes: the gateway
proxy for answers, create-promptlab-run for a run, upload-artifact for its table. One keep-alive
session per thread.

Unlike the UI, it asks for answers as a stream (the proxy passes the gateway's stream through), so
that each row's time to its first token is measured where the user would see it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import requests

from promptlab_eval.settings import EvalSettings
from promptlab_stack.sse import StreamError, events

TABLE = "eval_results_table.json"
PROXY = "ajax-api/2.0/mlflow/gateway-proxy"


class TrackingError(RuntimeError):
    """The tracking server refused a call; the message is its own."""


@dataclass
class Answer:
    """An endpoint's answer: its text, usage, and the times the client saw, in ms."""

    text: str
    usage: dict[str, Any] = field(default_factory=dict)
    latency_ms: float = 0.0
    first_token_ms: float = 0.0


def checked(resp: requests.Response) -> Any:
    """The JSON (or text) body of an answer, or TrackingError with its status and message."""
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    if resp.status_code != 200:
        message = body.get("message", body) if isinstance(body, dict) else body
        raise TrackingError(f"HTTP {resp.status_code}: {message}")
    return body


def first_choice(event: dict) -> dict:
    """The first choice of one streamed chunk; empty when the chunk carries none."""
    choices = event.get("choices") or [{}]
    return choices[0] if isinstance(choices[0], dict) else {}


def piece_of(event: dict) -> str:
    """The text of one streamed chunk (chat: the delta's content; completions: the text)."""
    choice = first_choice(event)
    delta = choice.get("delta")
    content = delta.get("content") if isinstance(delta, dict) else None
    return content or choice.get("text") or ""


def read_stream(lines: Iterable[bytes], started: float) -> Answer:
    """An answer from the lines of its stream, read as they come: its text and usage, and the ms
    from `started` (`time.perf_counter()`) to its first piece of text and to its end. An `error`
    event raises TrackingError with its status and message."""
    answer = Answer("")
    pieces: list[str] = []
    try:
        for event in events(lines):
            if (piece := piece_of(event)) and not answer.first_token_ms:
                answer.first_token_ms = (time.perf_counter() - started) * 1000
            pieces.append(piece)
            answer.usage = event.get("usage") or answer.usage
    except StreamError as e:
        raise TrackingError(str(e)) from None
    answer.text = "".join(pieces)
    answer.latency_ms = (time.perf_counter() - started) * 1000
    if not answer.first_token_ms:  # an empty answer: its first token is its end
        answer.first_token_ms = answer.latency_ms
    return answer


def whole_text(body: dict) -> str:
    """The text of an unstreamed answer (chat or completions)."""
    choice = body["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]


class TrackingClient:
    def __init__(self, url: str, settings: EvalSettings, timeout_s: float):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        # Inside the tracking container: with basic auth on, act as its admin.
        self.auth = (
            (settings.mlflow_auth_admin_username, settings.mlflow_auth_admin_password)
            if settings.basic_auth
            else None
        )
        self._local = threading.local()
        self._version: str | None = None

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.auth = self.auth
        return session

    def call(
        self, method: str, path: str, *, json_body=None, params=None, data: bytes | None = None
    ) -> Any:
        resp = self._session().request(
            method,
            f"{self.url}/{path}",
            json=json_body,
            params=params,
            data=data,
            timeout=self.timeout_s,
        )
        return checked(resp)

    def server_version(self) -> str:
        """The MLflow version of the server (its /version), which the UI puts in the runs it
        makes."""
        if self._version is None:
            resp = self._session().get(f"{self.url}/version", timeout=self.timeout_s)
            if resp.status_code != 200:
                raise TrackingError(f"HTTP {resp.status_code} reading the server's /version")
            self._version = resp.text.strip()
        return self._version

    # -- the gateway, through the UI's proxy -------------------------------------------------
    def endpoints(self) -> dict[str, str]:
        """{endpoint name: endpoint type} of the gateway."""
        body = self.call("GET", PROXY, params={"gateway_path": "api/2.0/endpoints/"})
        return {e["name"]: e["endpoint_type"] for e in body.get("endpoints", [])}

    def invoke(self, endpoint: str, payload: dict) -> Answer:
        """The endpoint's answer, streamed: its text and usage, its latency and its time to the
        first piece of text in ms. An error before the first token raises TrackingError with the
        gateway's status and message; one after it (an `error` event) too."""
        started = time.perf_counter()
        resp = self._session().post(
            f"{self.url}/{PROXY}",
            json={
                "gateway_path": f"gateway/{endpoint}/invocations",
                "json_data": {**payload, "stream": True},
            },
            timeout=self.timeout_s,
            stream=True,
        )
        with resp:
            if not resp.headers.get("content-type", "").startswith("text/event-stream"):
                body = checked(resp)
                elapsed = (time.perf_counter() - started) * 1000
                return Answer(whole_text(body), body.get("usage") or {}, elapsed, elapsed)
            return read_stream(resp.iter_lines(), started)

    # -- runs ----------------------------------------------------------------------------------
    def experiment_id(self, name: str) -> str:
        try:
            return self.call(
                "GET", "api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name}
            )["experiment"]["experiment_id"]
        except TrackingError as e:
            if "RESOURCE_DOES_NOT_EXIST" not in str(e) and "404" not in str(e):
                raise
        return self.call("POST", "api/2.0/mlflow/experiments/create", json_body={"name": name})[
            "experiment_id"
        ]

    def find_run(self, experiment_id: str, tag: str, value: str) -> str | None:
        body = self.call(
            "POST",
            "api/2.0/mlflow/runs/search",
            json_body={
                "experiment_ids": [experiment_id],
                "filter": f"tags.`{tag}` = '{value}'",
                "max_results": 1,
            },
        )
        runs = body.get("runs", [])
        return runs[0]["info"]["run_id"] if runs else None

    def create_promptlab_run(self, payload: dict) -> str:
        return self.call(
            "POST", "ajax-api/2.0/mlflow/runs/create-promptlab-run", json_body=payload
        )["run"]["info"]["run_id"]

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.call(
            "POST",
            "api/2.0/mlflow/runs/set-tag",
            json_body={"run_id": run_id, "key": key, "value": value},
        )

    def log_metric(self, run_id: str, key: str, value: float) -> None:
        self.call(
            "POST",
            "api/2.0/mlflow/runs/log-metric",
            json_body={
                "run_id": run_id,
                "key": key,
                "value": value,
                "timestamp": int(time.time() * 1000),
                "step": 0,
            },
        )

    def read_table(self, run_id: str) -> dict:
        resp = self._session().get(
            f"{self.url}/get-artifact",
            params={"path": TABLE, "run_uuid": run_id},
            timeout=self.timeout_s,
        )
        if resp.status_code != 200:
            raise TrackingError(f"HTTP {resp.status_code} reading {TABLE} of run {run_id}")
        return json.loads(resp.content.decode("utf-8"))

    def write_table(self, run_id: str, table: dict) -> None:
        """Replace the run's table, as the evaluation view's Save does."""
        self.call(
            "POST",
            "ajax-api/2.0/mlflow/upload-artifact",
            params={"run_uuid": run_id, "path": TABLE},
            data=json.dumps(table, ensure_ascii=False).encode("utf-8"),
        )
