"""How llama-server runs: in router mode, with one preset per model of MODELS, named by its
endpoint (the gateway sends that name as `model`), each loaded at start and kept loaded.

Every model is served with its own chat template as Hugging Face's tokenizer renders it: the
converter writes `tokenizer.chat_template` into the GGUF file and `--jinja` renders that template
(the compose tests compare the token ids with `apply_chat_template`'s). The context is one KV
cache that the parallel slots share (`--kv-unified`), so memory does not grow with the slots.
"""

from __future__ import annotations

from pathlib import Path

from llamacpp.settings import LlamaCppSettings
from promptlab_stack.topology import LLAMACPP

SERVER = "llama-server"


def preset(models: dict[str, Path]) -> str:
    """The router's INI file: a section per endpoint with its GGUF file."""
    lines = ["version = 1", ""]
    for endpoint, path in models.items():
        lines += [f"[{endpoint}]", f"model = {path}", "load-on-startup = true", ""]
    return "\n".join(lines)


def server_command(
    settings: LlamaCppSettings,
    preset_path: Path,
    models: int,
    *,
    host: str = "0.0.0.0",
    port: int = LLAMACPP.port,
) -> list[str]:
    command = [
        SERVER,
        "--host",
        host,
        "--port",
        str(port),
        "--models-preset",
        str(preset_path),
        "--models-max",
        str(models),  # all stay loaded
        "--jinja",  # the model's own chat template, from the GGUF file
        "--reasoning-format",
        "none",  # the answer's text as the model wrote it
        "--ctx-size",
        str(settings.max_total_tokens),
        "--parallel",
        str(settings.llamacpp_parallel),
        "--kv-unified",
        # No host-memory copy of slots' prompt caches (up to 8 GB by default).
        "--cache-ram",
        "0",
        # Weights are read into memory, not mapped: the kernels for Q8_0 and Q4_K work on a
        # repacked copy, and a mapped file would be resident beside it while it loads.
        "--load-mode",
        "none",
        "--no-webui",
        # Threads waiting for work sleep instead of spinning: the front, the gateway and the
        # tracking server share the CPUs (measured: the UI's path at 8 clients went from 79% to
        # 84% of llama-server called directly on 2 CPUs).
        "--poll",
        "0",
        "--metrics",
    ]
    if settings.llamacpp_threads:
        command += ["--threads", str(settings.llamacpp_threads)]
    return command
