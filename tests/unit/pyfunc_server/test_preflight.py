"""Model problems that waiting cannot fix are found before the server starts, each with its cause
and fix (model/pyfunc_server/preflight.py); the models then arrive in the background, their state in
the state file the healthcheck and the gateway read (model_pool.py, promptlab_stack/model_state.py).

The compose tests (tests/integration/test_model_failures.py) run the same failures in containers,
where the model server is not root (so unreadable files can be tested there, not here).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest


def settings_for(models: str, **env):
    from pyfunc_server.settings import ModelServerSettings

    return ModelServerSettings.from_env({"MODELS": models, "DEVICE": "cpu", **env})


def problem(models: str, **env) -> str:
    from pyfunc_server.preflight import ModelProblem, check

    with pytest.raises(ModelProblem) as e:
        check(settings_for(models, **env))
    return str(e.value)


def copy_with_config(src, dst, **changes):
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, **changes}))
    return dst


def test_a_good_folder_gets_a_plan_with_its_size(tiny_model_dir):
    from pyfunc_server.preflight import check

    [plan] = check(settings_for(str(tiny_model_dir)))
    assert plan.folder == tiny_model_dir and plan.files == [] and plan.memory_bytes > 0


def test_a_missing_folder_names_where_models_go():
    text = problem("/models/not-there")
    assert "no such folder /models/not-there" in text and "LOCAL_MODELS_DIR" in text


def test_a_folder_only_in_the_old_models_folder_is_read_from_there_saying_so(tmp_path, caplog):
    """/models/<folder> is the host's ./weights (LOCAL_MODELS_DIR); ./models, the old default, is
    mounted at /models-legacy and still read, with a log line that says to move the folder."""
    from pyfunc_server.preflight import host_folder, local_folder

    models, legacy = tmp_path / "weights", tmp_path / "models-legacy"
    (legacy / "old").mkdir(parents=True)
    (models / "new").mkdir(parents=True)
    (legacy / "new").mkdir()  # in both: the new folder wins
    with caplog.at_level(logging.INFO, logger="pyfunc_server.preflight"):
        assert local_folder(str(models / "old"), models, legacy) == legacy / "old"
        assert local_folder(str(models / "new"), models, legacy) == models / "new"
        assert local_folder(str(models / "gone"), models, legacy) == models / "gone"
        assert local_folder("/elsewhere/x", models, legacy) == Path("/elsewhere/x")
    [line] = [r.getMessage() for r in caplog.records]
    assert line == f"{legacy / 'old'}: read from ./models, the old folder; move it to ./weights"
    assert host_folder(legacy / "old", models, legacy) == "./models/old"
    assert (
        host_folder(models / "new", models, legacy)
        == "$LOCAL_MODELS_DIR/new (default ./weights/new)"
    )


def test_a_folder_without_config_or_weights_says_what_is_missing(tmp_path, tiny_model_dir):
    (tmp_path / "empty").mkdir()
    assert "has no config.json" in problem(
        str(tmp_path / "empty")
    ) and "save_pretrained" in problem(str(tmp_path / "empty"))
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_model_dir, no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    assert "has no weights" in problem(str(no_weights))


def test_an_architecture_transformers_does_not_know_or_cannot_generate_with(
    tmp_path, tiny_model_dir
):
    from transformers import __version__

    unknown = copy_with_config(
        tiny_model_dir,
        tmp_path / "unknown",
        model_type="llm-from-the-future",
        architectures=["FutureForCausalLM"],
    )
    text = problem(str(unknown))
    assert f"transformers {__version__} does not know the model type 'llm-from-the-future'" in text
    assert "FutureForCausalLM" in text and "Fix:" in text
    remote = copy_with_config(
        tiny_model_dir,
        tmp_path / "remote",
        model_type="custom",
        auto_map={"AutoModelForCausalLM": "modeling.Custom"},
    )
    assert "needs its own code" in problem(str(remote))
    encoder = copy_with_config(
        tiny_model_dir, tmp_path / "vision", model_type="vit", architectures=["ViTModel"]
    )
    assert "not a causal language model" in problem(str(encoder))


def test_weights_larger_than_the_memory_are_refused_before_loading(tiny_model_dir):
    text = problem(str(tiny_model_dir), MODEL_MEMORY_BUDGET_GB="0.00001")
    assert (
        "need about" in text
        and "only 0.0 GB are available" in text
        and "MODEL_MEMORY_BUDGET_GB" in text
    )


def test_a_hub_that_cannot_be_reached_stops_the_server_quickly_naming_it(tmp_path):
    env = {
        **os.environ,
        "MODELS": "llm-jp/not-in-the-cache",
        "HF_HOME": str(tmp_path),
        "HF_ENDPOINT": "http://127.0.0.1:9",
    }  # nothing listens there
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "pyfunc_server.start"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert time.monotonic() - started < 60
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "model server stopped: llm-jp/not-in-the-cache: llm-jp/not-in-the-cache is not "
        "in the model cache"
    ), last
    assert (
        "http://127.0.0.1:9 cannot be reached" in last
        and "HF_ENDPOINT" in last
        and "./weights" in last
    )


def test_the_server_answers_at_once_and_the_state_file_follows_the_models(tiny_model_dir, tmp_path):
    from mlflow.exceptions import MlflowException

    from promptlab_stack.model_state import read_state
    from pyfunc_server.generator import HFGenerator
    from pyfunc_server.model_pool import ModelPool
    from pyfunc_server.preflight import check

    release = __import__("threading").Event()

    def slow_load(settings, source):
        release.wait(30)
        return HFGenerator(settings, source)

    settings = settings_for(str(tiny_model_dir))
    state = tmp_path / "state.json"
    pool = ModelPool(settings, slow_load, plans=check(settings), state_path=state)
    pool.start()
    with pytest.raises(MlflowException, match="is (queued|loading)") as e:
        with pool.use(None, deadline=time.monotonic() + 0.2):
            pass
    assert e.value.get_http_status_code() == 503
    entry = read_state(state)["models"]["tiny-ja"]
    assert entry["at_start"] and entry["state"] in ("queued", "loading")
    release.set()
    assert pool.wait_started(60)
    entry = read_state(state)["models"]["tiny-ja"]
    assert (
        entry["state"] == "ready"
        and entry["message"] == f"model 'tiny-ja' ({tiny_model_dir}) is ready"
    )
