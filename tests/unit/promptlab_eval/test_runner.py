"""One endpoint's run of promptlab-eval (services/promptlab-eval/promptlab_eval/runner.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from gateway_server import gateway_app
from loopback import free_port, serving
from tracking_server import tracking_server

from promptlab_eval.runner import readable_error
from promptlab_eval.settings import EvalSettings
from promptlab_eval.tracking_client import TrackingClient


def test_a_failed_rows_error_keeps_the_models_own_message():
    wrapped = (
        "HTTP 400: Failed to predict data '{'messages': [" + "長い" * 400 + "]}'. \n"
        "Error: the prompt is 801 tokens long, but the model's context is 512 tokens"
    )
    assert (
        readable_error(wrapped)
        == "HTTP 400: the prompt is 801 tokens long, but the model's context is 512 tokens"
    )
    assert (
        readable_error("HTTP 503: x" * 100).endswith("…") and len(readable_error("y" * 900)) == 500
    )


@pytest.fixture(scope="module")
def tracking_with_a_gateway(tmp_path_factory):
    """A real `mlflow server` (tests/tracking_server.py) whose gateway proxy calls our real
    gateway app, whose model server is down: every row fails (HTTP 503), and the runs, their tags
    and tables are made as with a model."""
    with serving(gateway_app(f"http://127.0.0.1:{free_port()}")) as gateway_url:
        db = tmp_path_factory.mktemp("tracking")
        with tracking_server(db, MLFLOW_DEPLOYMENTS_TARGET=gateway_url) as (_, url):
            yield url


def promptlab_eval(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_AUTH_")}
    return subprocess.run(
        [sys.executable, "-m", "promptlab_eval.cli", "--tracking-uri", url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_the_same_data_resumes_its_run_and_edited_data_makes_a_new_one(
    tracking_with_a_gateway, tmp_path
):
    url = tracking_with_a_gateway
    client = TrackingClient(url, EvalSettings(), timeout_s=30)
    data = tmp_path / "果物.csv"
    command = ["--experiment", "再開", "--template", "{{ object }}は何色？", "--data", str(data)]
    command += ["--endpoint", "tiny-ja"]

    def runs() -> dict[str, list[str]]:
        """{run id: the prompts of its table}"""
        found = client.call(
            "POST",
            "api/2.0/mlflow/runs/search",
            json_body={"experiment_ids": [client.experiment_id("再開")]},
        ).get("runs", [])
        ids = [r["info"]["run_id"] for r in found]
        return {i: [row[1] for row in client.read_table(i)["data"]] for i in ids}

    data.write_bytes("object,note\nりんご,赤\nバナナ,黄\n".encode())
    first = promptlab_eval(url, *command)
    assert first.returncode == 1 and "Traceback" not in first.stderr, first.stderr[-2000:]
    (run_id, prompts), *others = runs().items()
    assert prompts == ["りんごは何色？", "バナナは何色？"] and not others

    # The same rows, as Excel saves them (CP932, CRLF, a blank line): the same run, resumed.
    data.write_bytes("object,note\r\nりんご,赤\r\n\r\nバナナ,黄\r\n".encode("cp932"))
    again = promptlab_eval(url, *command)
    assert again.returncode == 1, again.stderr[-2000:]
    assert runs() == {run_id: prompts}

    # An edited file is another evaluation: a run of its own; the first run's table is kept.
    data.write_bytes("object,note\nりんご,赤\nぶどう,紫\n".encode())
    edited = promptlab_eval(url, *command)
    assert edited.returncode == 1, edited.stderr[-2000:]
    after = runs()
    assert after.pop(run_id) == prompts
    assert list(after.values()) == [["りんごは何色？", "ぶどうは何色？"]]
