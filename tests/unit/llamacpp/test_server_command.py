"""How llama-server is started: router mode over a preset per endpoint, the model's own chat
template, one shared context."""

from __future__ import annotations

from pathlib import Path

from llamacpp.server_command import preset, server_command
from llamacpp.settings import LlamaCppSettings


def test_each_endpoint_is_a_preset_loaded_at_start():
    text = preset({"tiny-ja": Path("/data/gguf/a.gguf"), "b": Path("/models/b.gguf")})
    assert "[tiny-ja]\nmodel = /data/gguf/a.gguf\nload-on-startup = true" in text
    assert "[b]\nmodel = /models/b.gguf\nload-on-startup = true" in text


def test_the_command_takes_the_knobs():
    settings = LlamaCppSettings.from_env(
        {"MAX_TOTAL_TOKENS": "2048", "LLAMACPP_PARALLEL": "4", "LLAMACPP_THREADS": "2"}
    )
    command = server_command(settings, Path("/tmp/p.ini"), 2)
    joined = " ".join(command)
    assert command[0] == "llama-server"
    assert "--models-preset /tmp/p.ini --models-max 2" in joined
    assert "--ctx-size 2048 --parallel 4 --kv-unified" in joined
    assert "--jinja" in command and "--threads 2" in joined
    assert "--load-mode none" in joined  # read, not mapped: the repacked weights are the only copy
    # Defaults: llama.cpp picks the threads.
    assert "--threads" not in server_command(LlamaCppSettings.from_env({}), Path("p"), 1)
