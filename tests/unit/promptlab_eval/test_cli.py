"""The `promptlab-eval` command (services/promptlab-eval/promptlab_eval/cli.py): its inputs are
checked before anything is created, and it talks to the tracking server over REST only."""

from __future__ import annotations

import os
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


@pytest.mark.parametrize(
    "data, options, env, words",
    [
        # A field past csv's own limit (131,072) and past MAX_REQUEST_MB (here 0.15 MB).
        (
            b"object,note\nx,y\n" + b"z" * 150_001 + b",y\n",
            [],
            {"MAX_REQUEST_MB": "0.15"},
            "in.csv, row 3 (line 3): a field is longer than 150,000 characters",
        ),
        (b"object,note\nx,y\n", ["--encoding", "rot13"], {}, "--encoding 'rot13' is not a text"),
        (b"object,note\nx,y\n", ["--encoding", "klingon"], {}, "--encoding 'klingon' is not an"),
        (b"object,note\nx,y\n", ["--encoding", "undefined"], {}, "in.csv is not valid undefined"),
        ("object,note\nあ,y\n".encode("cp932"), ["--encoding", "utf-8"], {}, "(line 2, byte 12)"),
        (b"object,note\nx,y\n", [], {"MAX_REQUEST_MB": "8 MB"}, "MAX_REQUEST_MB='8 MB'"),
    ],
    ids=["long-field", "rot13", "unknown", "undefined", "not-utf-8", "bad-knob"],
)
def test_bad_data_ends_with_one_line_naming_it_and_status_2_never_a_traceback(
    tmp_path, data, options, env, words
):
    (tmp_path / "in.csv").write_bytes(data)
    command = ["--experiment", "e", "--template", "{{ object }}", "--data", "in.csv"]
    out = subprocess.run(
        [sys.executable, "-m", "promptlab_eval.cli", *command, "--endpoint", "x", *options],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, **env},
    )
    assert out.returncode == 2 and out.stdout == "", out.stderr[-2000:]
    assert out.stderr.startswith("promptlab-eval: ") and out.stderr.count("\n") == 1, out.stderr
    assert words in out.stderr
