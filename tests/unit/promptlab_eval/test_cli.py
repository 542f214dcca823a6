"""The `promptlab-eval` command (services/promptlab-eval/promptlab_eval/cli.py): its inputs are
checked before anything is created, and it talks to the tracking server over REST only."""

from __future__ import annotations

import subprocess
import sys

import pytest

from promptlab_eval.cli import UsageError, load_inputs, parser

# As Excel saves a CSV in UTF-8: with a byte-order mark and CRLF line ends.
CSV = 'object,note,expected\r\nりんご,"a ""quoted"", comma",赤\r\n'.encode("utf-8-sig")


def test_the_command_refuses_a_template_variable_without_a_column(tmp_path):
    data = tmp_path / "in.csv"
    data.write_bytes(CSV)
    args = parser().parse_args(
        [
            "--experiment",
            "e",
            "--template",
            "{{ object }}と{{ colour }}",
            "--data",
            str(data),
            "--endpoint",
            "x",
        ]
    )
    with pytest.raises(
        UsageError, match=r"\{\{ colour \}\} has no column in .*in.csv .*object, note, expected"
    ):
        load_inputs(args)
    args = parser().parse_args(
        [
            "--experiment",
            "e",
            "--template",
            "{{ object }}",
            "--data",
            str(data),
            "--endpoint",
            "x",
            "--expect",
            "answer",
        ]
    )
    with pytest.raises(UsageError, match="--expect answer: no such column"):
        load_inputs(args)


def test_by_default_it_talks_to_the_tracking_server_of_its_container():
    args = parser().parse_args(
        ["--experiment", "e", "--template", "t", "--data", "-", "--endpoint", "x"]
    )
    assert args.tracking_uri == "http://127.0.0.1:5000"


def test_the_command_imports_neither_mlflow_nor_the_tracking_server():
    """REST only: installable and runnable without MLflow (only --judge uses MLflow's judge)."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "promptlab_eval.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "--tracking-uri" in out.stdout, out.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in out.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "promptlab_eval.tracking_client" in imported
    assert {m.split(".")[0] for m in imported} & {"mlflow", "tracking"} == set()
