"""The ``promptlab`` MLflow app plugin's UTF-8 artifacts (services/tracking/tracking:
promptlab_artifacts.py, and the re-encoders of reencode.py it applies).

The plugin makes MLflow's Prompt Engineering UI write its run artifacts as readable UTF-8
instead of ``\\uXXXX`` escapes (mlflow#14785). Needs the package installed so that MLflow sees
the entry point: ``pip install -e services/tracking``.

The real-server tests run MLflow's app in one subprocess per module (promptlab_scenario.py):
``mlflow.server`` builds its app and caches stores/artifact repositories in module globals at
import time, and a subprocess keeps all of that (and the wrapped view) out of the pytest process.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracking import app as plugin
from tracking import promptlab_artifacts as artifacts
from tracking.reencode import (
    ARTIFACT_REENCODERS,
    readable_json,
    readable_yaml,
)

SCENARIO = Path(__file__).with_name("promptlab_scenario.py")
PROMPTLAB_PATH = "/ajax-api/2.0/mlflow/runs/create-promptlab-run"

GA_COMBINING = "\u304b\u3099"  # "が" as か + combining voiced sound mark
E_COMBINING = "e\u0301"  # "é" as e + combining acute accent
FAMILY_ZWJ = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # 👨‍👩‍👧
FLAG_JP = "\U0001f1ef\U0001f1f5"  # 🇯🇵 (regional indicators)
THUMBS_TONE = "\U0001f44d\U0001f3fd"  # 👍🏽 (skin tone modifier)

SAMPLES = [
    "りんご",
    "漢字と仮名カタカナ",
    "ｶﾀｶﾅ半角と全角：？！",
    GA_COMBINING,
    E_COMBINING,
    FAMILY_ZWJ + FLAG_JP + THUMBS_TONE + "😀",
    "改行\nタブ\tCR\r終わり",
    'quote " and backslash \\ and 「括弧」',
    "literal backslash-u: \\u3042 \\\\u3042",
    "mixed ASCII and 日本語 with é and ß",
]

# Characters that must appear literally in the rewritten artifacts.
LITERALS = [
    "りんご",
    "は何色ですか？",
    "赤色",
    GA_COMBINING,
    E_COMBINING,
    FAMILY_ZWJ,
    FLAG_JP,
    THUMBS_TONE,
]

EXTRA_VALUE = (
    f"{GA_COMBINING} {E_COMBINING} {FAMILY_ZWJ}{FLAG_JP}{THUMBS_TONE}"
    ' tab\t quote " backslash \\ literal \\u3042'
)
PAYLOAD = {
    "run_name": "日本語の実行",
    "prompt_template": "{{ object }}は何色ですか？",
    "prompt_parameters": [
        {"key": "object", "value": "りんご"},
        {"key": "extra", "value": EXTRA_VALUE},
    ],
    "model_route": "local-llm",
    "model_parameters": [
        {"key": "temperature", "value": "0.2"},
        {"key": "max_tokens", "value": "64"},
    ],
    "model_input": "りんごは何色ですか？\n一行で答えてください。",
    "model_output": "赤色です。\n緑色のりんごもあります。",
    "model_output_parameters": [{"key": "latency", "value": "1234"}],
    "mlflow_version": "3.17.2",
}

EXPECTED_EVAL_TABLE = {
    "columns": ["object", "extra", "prompt", "output", "latency"],
    "data": [["りんご", EXTRA_VALUE, PAYLOAD["model_input"], PAYLOAD["model_output"], "1234"]],
}
EXPECTED_INPUT_EXAMPLE = {"inputs": ["りんご", EXTRA_VALUE]}
EXPECTED_PARAMETERS = {
    "model_parameters": {"temperature": "0.2", "max_tokens": "64"},
    "model_route": "local-llm",
    "prompt_parameters": {"object": "りんご", "extra": EXTRA_VALUE},
    "prompt_template": "{{ object }}は何色ですか？",
}


def _has_unicode_escape(text: str) -> bool:
    """True if ``text`` has a \\u, \\U or \\x escape (an escaped backslash doesn't count)."""
    unpaired = text.replace("\\\\", "")
    return any(f"\\{c}" in unpaired for c in "uUx")


def _assert_readable(text: str, literals) -> None:
    """``literals`` appear as themselves and no \\u/\\U/\\x escape is left (JSON, or YAML
    whose backslashes are all in double-quoted scalars)."""
    for literal in literals:
        assert literal in text, f"{literal!r} not written literally in:\n{text}"
    assert not _has_unicode_escape(text), f"escapes left in:\n{text}"


# --------------------------------------------------------------------------------------------
# Pure re-encoders
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", SAMPLES)
def test_readable_json_round_trips_samples(value):
    data = {"columns": ["object", "prompt"], "data": [[value, {"nested": [value, 1, None]}]]}
    escaped = json.dumps(data)  # MLflow's call: ensure_ascii=True, default separators

    result = readable_json(escaped)

    assert json.loads(result) == data
    # Exactly what MLflow would write with ensure_ascii=False: layout otherwise unchanged.
    assert result == json.dumps(data, ensure_ascii=False)
    # The value as JSON writes it readably (quotes, backslashes, \n, \t still escaped).
    _assert_readable(result, [json.dumps(value, ensure_ascii=False)[1:-1]])
    # Exact code points: no normalisation of か+U+3099 into が.
    assert json.loads(result)["data"][0][0] == value


def test_readable_json_keeps_indented_layout():
    data = {"inputs": {"inputs": ["りんご", FAMILY_ZWJ, "a\nb"]}}
    escaped = json.dumps(data, indent=2)  # serving_input_example.json's layout

    result = readable_json(escaped)

    assert result == json.dumps(data, indent=2, ensure_ascii=False)
    assert json.loads(result) == data


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "plain ascii", "b": [1, 2.5, null, true]}',
        '{"a": "りんご"}',  # already readable
        '{"a": "literal \\\\u3042 is not an escape"}',
        '{"a": "control \\u0001 and quote \\u0022 and backslash \\u005c stay escaped"}',
        '{"a": "lone surrogate \\ud800 cannot be UTF-8"}',
        "",
    ],
)
def test_readable_json_returns_input_when_nothing_to_undo(text):
    assert readable_json(text) is text


def test_readable_json_rejects_invalid_json():
    # Raised, so that the server logs a warning for that file instead of writing garbage.
    with pytest.raises(ValueError):
        readable_json('{"a": "\\u3042"')


def test_readable_json_keeps_required_escapes_next_to_decoded_ones():
    text = '{"a": "\\u3042\\u0001\\"\\\\\\u3044\\ud83d\\ude00"}'
    result = readable_json(text)
    assert result == '{"a": "あ\\u0001\\"\\\\い😀"}'
    assert json.loads(result) == json.loads(text)


@pytest.mark.parametrize("value", SAMPLES)
def test_readable_yaml_round_trips_samples(value):
    data = {
        "model_parameters": {"temperature": "0.2"},
        "model_route": "chat",
        "prompt_parameters": {"object": value, "その他": [value, 1, None]},
        "prompt_template": "{{ object }}は何色ですか？",
    }
    escaped = yaml.safe_dump(data, default_flow_style=False)  # MLflow's call

    result = readable_yaml(escaped)

    assert yaml.safe_load(result) == data
    assert yaml.safe_load(result)["prompt_parameters"]["object"] == value  # exact code points
    # (A backslash is literal in plain/single-quoted YAML, so look for the characters instead
    # of for the absence of "\u".)
    for literal in ["は何色ですか？", "その他", *{c for c in value if ord(c) > 0x7F}]:
        assert literal in result, f"{literal!r} not written literally in:\n{result}"
    # MLflow's (sorted) key order is kept.
    assert list(yaml.safe_load(result)) == sorted(data)


@pytest.mark.parametrize(
    "text",
    [
        "model_route: chat\nprompt_template: 'plain {{ x }}'\n",
        "prompt_template: りんご\n",  # already readable
        'a: "\\x41"\n',  # an escape, but of an ASCII character
        "",
    ],
)
def test_readable_yaml_returns_input_when_nothing_to_undo(text):
    assert readable_yaml(text) is text


YAML_LINE_BREAKS = "\x85\u2028\u2029"
_text = st.text(max_size=24)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_json_values, st.sampled_from([None, 2]))
def test_readable_json_property(data, indent):
    escaped = json.dumps(data, indent=indent)
    result = readable_json(escaped)
    assert json.loads(result) == data
    assert result == json.dumps(data, indent=indent, ensure_ascii=False)
    result.encode("utf-8")  # always writable as UTF-8


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_text, _json_values, max_size=5))
def test_readable_yaml_property(data):
    escaped = yaml.safe_dump(data, default_flow_style=False)
    result = readable_yaml(escaped)
    assert yaml.safe_load(result) == data
    result.encode("utf-8")
    # Letters, marks and symbols (kanji, kana, emoji, combining marks) are written as themselves.
    # Not checked next to YAML's non-ASCII line breaks (U+0085/2028/2029): with allow_unicode
    # PyYAML may write them raw and then read different data back, so readable_yaml keeps such
    # a file as MLflow wrote it.
    chars = {c for v in _strings(data) for c in v if ord(c) > 0x7F}
    if not chars & set(YAML_LINE_BREAKS):
        for char in chars:
            if unicodedata.category(char)[0] in "LMS":
                assert char in result


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


# --------------------------------------------------------------------------------------------
# Wrapper logic on a bare Flask app (no MLflow server)
# --------------------------------------------------------------------------------------------


def _fake_mlflow_app(status=200):
    from flask import Flask, jsonify

    app = Flask("fake-mlflow")
    calls = []

    def create_promptlab_run():
        calls.append(1)
        body = {"run": {"info": {"run_id": "r1", "artifact_uri": "mlflow-artifacts:/1/r1/a"}}}
        return jsonify(body if status == 200 else {"error_code": "X"}), status

    # Same handler behind several URL variants, as MLflow registers its routes.
    for rule in (PROMPTLAB_PATH, "/api/2.0/mlflow/runs/create-promptlab-run"):
        app.add_url_rule(rule, "create_promptlab_run", create_promptlab_run, methods=["POST"])
    app.add_url_rule("/prefix" + PROMPTLAB_PATH, "prefixed", create_promptlab_run, methods=["POST"])
    app.add_url_rule("/health", "health", lambda: "OK")
    return app, calls


@pytest.fixture
def flask_sgi(monkeypatch):
    monkeypatch.delenv("_MLFLOW_SGI_NAME", raising=False)


def test_create_app_wraps_all_variants_once(flask_sgi):
    app, _ = _fake_mlflow_app()
    health = app.view_functions["health"]

    assert plugin.create_app(app) is app  # not uvicorn: the Flask app itself
    first = dict(app.view_functions)
    assert plugin.create_app(app) is app
    assert app.view_functions == first  # idempotent

    for endpoint in ("create_promptlab_run", "prefixed"):
        view = app.view_functions[endpoint]
        assert getattr(view, artifacts._WRAPPED_MARKER)
        assert not getattr(view.__wrapped__, artifacts._WRAPPED_MARKER, False)
    assert app.view_functions["health"] is health


def test_rewrite_failure_is_logged_and_request_succeeds(flask_sgi, monkeypatch, caplog):
    app, calls = _fake_mlflow_app()
    plugin.create_app(app)

    def broken(_artifact_uri):
        raise RuntimeError("artifact store down")

    monkeypatch.setattr(artifacts, "proxied_artifact_repo", broken)
    with caplog.at_level(logging.WARNING, logger=artifacts.__name__):
        response = app.test_client().post(PROMPTLAB_PATH, json={})

    assert response.status_code == 200
    assert response.get_json()["run"]["info"]["run_id"] == "r1"
    assert calls == [1]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "r1" in warnings[0].getMessage()
    assert "artifact store down" in caplog.text


def test_non_200_is_not_touched(flask_sgi, monkeypatch):
    app, _ = _fake_mlflow_app(status=400)
    plugin.create_app(app)
    monkeypatch.setattr(artifacts, "rewrite_run_artifacts", lambda uri: pytest.fail("called"))

    response = app.test_client().post(PROMPTLAB_PATH, json={})

    assert response.status_code == 400
    assert response.get_json() == {"error_code": "X"}


# --------------------------------------------------------------------------------------------
# Real MLflow server (Flask test client + FastAPI via ASGI), in a subprocess
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _server_process(tmp_path_factory):
    """Start promptlab_scenario.py against a sqlite + --serve-artifacts MLflow.

    Autouse so that it runs in the background while the in-process tests of this module run;
    the ``server`` fixture waits for it.
    """
    work = tmp_path_factory.mktemp("mlflow-server")
    (work / "payload.json").write_text(json.dumps(PAYLOAD), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "_MLFLOW_"))}
    env.update(
        {
            # What `mlflow server --backend-store-uri sqlite:///... --serve-artifacts
            # --artifacts-destination ...` puts in the environment (mlflow.server._run_server).
            "_MLFLOW_SERVER_FILE_STORE": f"sqlite:///{work / 'mlflow.db'}",
            "_MLFLOW_SERVER_ARTIFACT_ROOT": "mlflow-artifacts:/",
            "_MLFLOW_SERVER_SERVE_ARTIFACTS": "true",
            "_MLFLOW_SERVER_ARTIFACT_DESTINATION": str(work / "artifacts"),
            "PYTHONUTF8": "1",
        }
    )
    # Output to a file, not a pipe: nobody reads a pipe until the end, and a full one would
    # block the child.
    with open(work / "output.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(SCENARIO), str(work)],
            env=env,
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc, work
    finally:
        if proc.poll() is None:  # e.g. only the pure tests were selected
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(_server_process):
    """Results of the scenario (promptlab_scenario.py)."""
    proc, work = _server_process
    returncode = proc.wait(timeout=180)
    output = (work / "output.log").read_text(encoding="utf-8", errors="replace")
    assert returncode == 0, f"server scenario failed:\n{output}"
    result = json.loads((work / "result.json").read_text(encoding="utf-8"))
    result["destination"] = work / "artifacts"
    result["output"] = output
    return result


def _run_dir(server, key) -> Path:
    """On-disk artifact directory of the run created by request ``key``."""
    response = server[key]
    assert response["status"] == 200, response
    uri = json.loads(response["body"])["run"]["info"]["artifact_uri"]
    parsed = urlparse(uri)
    if parsed.scheme == "mlflow-artifacts":  # proxied: relative to --artifacts-destination
        return server["destination"] / parsed.path.lstrip("/")
    assert parsed.scheme == "file", uri
    return Path(unquote(parsed.path))


def _read(run_dir: Path, rel_path: str) -> str:
    return (run_dir / rel_path).read_text(encoding="utf-8")


def test_entry_point_is_a_factory(server):
    # What `mlflow server --app-name promptlab` resolves and how it starts it.
    assert server["entry_point"] == "tracking.app:create_app", (
        "entry point not visible: pip install -e services/tracking"
    )
    assert server["is_factory"] is True
    assert server["rules"] == [PROMPTLAB_PATH]


def _assert_run_artifacts_readable(run_dir: Path) -> None:
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    assert set(ARTIFACT_REENCODERS) <= set(files), files

    eval_table = _read(run_dir, "eval_results_table.json")
    _assert_readable(eval_table, LITERALS)
    assert json.loads(eval_table) == EXPECTED_EVAL_TABLE
    assert eval_table == json.dumps(EXPECTED_EVAL_TABLE, ensure_ascii=False)  # MLflow's layout

    parameters = _read(run_dir, "model/parameters.yaml")
    _assert_readable(parameters, ["りんご", "は何色ですか？", GA_COMBINING, FAMILY_ZWJ])
    assert yaml.safe_load(parameters) == EXPECTED_PARAMETERS
    assert list(yaml.safe_load(parameters)) == sorted(EXPECTED_PARAMETERS)

    input_example = _read(run_dir, "model/input_example.json")
    _assert_readable(input_example, ["りんご", E_COMBINING, FAMILY_ZWJ])
    assert json.loads(input_example) == EXPECTED_INPUT_EXAMPLE

    serving = _read(run_dir, "model/serving_input_example.json")
    _assert_readable(serving, ["りんご", THUMBS_TONE])
    assert json.loads(serving) == {"inputs": EXPECTED_INPUT_EXAMPLE}
    assert serving == json.dumps(json.loads(serving), indent=2, ensure_ascii=False)

    # MLmodel still points at the files we rewrote.
    mlmodel = yaml.safe_load(_read(run_dir, "model/MLmodel"))
    assert mlmodel["saved_input_example_info"]["artifact_path"] == "input_example.json"


def test_promptlab_run_artifacts_are_readable_utf8(server):
    assert server["flask_returned"] is True
    response = json.loads(server["wrapped"]["body"])
    assert response["run"]["info"]["status"] == "FINISHED"
    assert response["run"]["info"]["artifact_uri"].startswith("mlflow-artifacts:/")
    _assert_run_artifacts_readable(_run_dir(server, "wrapped"))
    assert server["warnings"] == []


def test_non_proxied_artifact_root_is_rewritten(server):
    # An experiment with its own artifact_location takes MLflow's get_artifact_repository path.
    assert json.loads(server["wrapped_direct"]["body"])["run"]["info"]["artifact_uri"].startswith(
        "file:"
    )
    _assert_run_artifacts_readable(_run_dir(server, "wrapped_direct"))


def test_uvicorn_factory_returns_fastapi_app_and_rewrites(server):
    assert server["uvicorn_app_type"] == "fastapi.applications.FastAPI"
    _assert_run_artifacts_readable(_run_dir(server, "uvicorn"))
    assert server["warnings"] == []


def test_create_app_is_idempotent_on_mlflow_app(server):
    assert server["idempotent"] is True


def test_non_200_passes_through_unchanged(server):
    assert server["stock_bad"]["status"] == 400
    assert server["wrapped_bad"] == server["stock_bad"]
    assert "experiment_id" in server["wrapped_bad"]["body"]


def test_every_artifact_stock_mlflow_escapes_has_a_reencoder(server):
    """The re-encoders cover exactly the files MLflow writes with escapes: a new escaped artifact
    in an MLflow upgrade fails here."""
    run_dir = _run_dir(server, "stock")
    escaped = {
        str(p.relative_to(run_dir))
        for p in run_dir.rglob("*")
        if p.is_file()
        and re.search(r"\\u[0-9a-fA-F]{4}|\\x[0-9A-F]{2}|\\U[0-9A-F]{8}", p.read_text())
    }
    assert escaped == set(ARTIFACT_REENCODERS)


def test_upstream_mlflow_still_escapes(server):
    """MLflow upgrade check: fails once MLflow itself writes readable UTF-8."""
    run_dir = _run_dir(server, "stock")
    readable = [p for p in ARTIFACT_REENCODERS if "りんご" in _read(run_dir, p)]
    assert json.loads(_read(run_dir, "eval_results_table.json")) == EXPECTED_EVAL_TABLE
    assert "eval_results_table.json" not in readable, (
        "MLflow's stock create-promptlab-run now writes eval_results_table.json as readable "
        f"UTF-8 (readable upstream: {readable}): MLflow fixed #14785, so the promptlab "
        "extension (services/tracking) may be removable."
    )


def test_a_local_artifact_is_replaced_whole_so_a_reader_never_sees_half_of_it(tmp_path):
    """The rewrite renames a complete new file over the old one: a reader that opened the old file
    (the UI downloading it) still reads all of it, and nothing is left beside it. On an object
    store the upload replaces the object whole."""
    from tracking.promptlab_artifacts import rewrite_run_artifacts

    escaped = json.dumps(
        {"columns": ["x"], "data": [["りんご" * 2000]]}
    )  # \\u escapes, as MLflow writes
    table = tmp_path / "eval_results_table.json"
    table.write_text(escaped)
    inode = table.stat().st_ino
    with open(table, "rb") as reader:
        assert rewrite_run_artifacts(tmp_path.as_uri()) == ["eval_results_table.json"]
        assert reader.read().decode() == escaped  # the old file, whole
    assert table.stat().st_ino != inode
    assert json.loads(table.read_text()) == {"columns": ["x"], "data": [["りんご" * 2000]]}
    assert "りんご" in table.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval_results_table.json"]
