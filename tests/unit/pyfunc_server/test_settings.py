"""The model server's settings (pyfunc_server/settings.py): a malformed knob stops it at start,
with a message naming the knob."""

from __future__ import annotations

import pytest

from promptlab_stack.settings import SettingsError
from pyfunc_server.settings import ModelServerSettings


@pytest.mark.parametrize(
    "knob, value",
    [
        ("GENERATION_TIMEOUT_SECONDS", "5m"),
        ("GENERATION_TIMEOUT_SECONDS", "-1"),
        ("DEVICE", "tpu"),
        ("DEFAULT_MAX_NEW_TOKENS", "0"),
        ("BATCH_WINDOW_MS", "soon"),
        ("MAX_BATCH_SIZE", "0"),
        ("MAX_BATCH_TOKENS", "8k"),
        ("TORCH_THREADS", "-2"),
        ("SERVED_MODEL_NAME", "llm jp"),
        ("MODEL_ID", "/models/日本語"),
        ("MODELS", "a=x,a=y"),
        ("MODEL_MEMORY_BUDGET_GB", "lots"),
    ],
)
def test_a_malformed_knob_is_refused_with_its_name_value_and_accepted_form(knob, value):
    with pytest.raises(SettingsError) as e:
        ModelServerSettings.from_env({knob: value})
    assert knob in str(e.value) and value in str(e.value)


def test_every_wrong_knob_is_named_at_once():
    with pytest.raises(SettingsError) as e:
        ModelServerSettings.from_env({"DEVICE": "tpu", "MAX_BATCH_SIZE": "x", "TORCH_THREADS": "1"})
    assert "DEVICE='tpu'" in str(e.value) and "MAX_BATCH_SIZE='x'" in str(e.value)
    assert "expected auto, cpu, cuda or cuda:N" in str(e.value)


def test_empty_means_unset():
    assert (
        ModelServerSettings.from_env({"MODEL_ID": "", "BATCH_WINDOW_MS": " "})
        == ModelServerSettings()
    )


def test_the_model_server_stops_on_a_model_folder_that_is_not_there():
    import os
    import subprocess
    import sys

    env = {**os.environ, "MODELS": "ok=org/model, gone=/models/not-there"}
    out = subprocess.run(
        [sys.executable, "-m", "pyfunc_server.start"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Stopped with 0 (not restarted), on the missing folder before any Hub call for the other model.
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("model server stopped: /models/not-there: no such folder"), last
    assert "LOCAL_MODELS_DIR" in last
