"""Render the MLflow AI Gateway config from the gateway's settings; check it with MLflow's loader.

The endpoint names do not depend on the engine, so runs made on pyfunc, TGI and vLLM stay
comparable:
  <endpoint name>              llm/v1/chat
  <endpoint name>-completions  llm/v1/completions
(the name is SERVED_MODEL_NAME, else the last part of MODEL_ID: promptlab_stack.settings), plus
OpenAI chat endpoints when OPENAI_API_KEY is set, as in the article this stack grew from.
"""

from __future__ import annotations

import copy
import re
import socket
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import yaml

from local_llm_gateway.mlflow_compat import load_gateway_config
from local_llm_gateway.settings import GatewaySettings

BACKENDS = ("pyfunc", "tgi", "vllm")
# Where each engine listens on the compose network (service name = host name).
BACKEND_URLS = {
    "pyfunc": "http://pyfunc:8080",
    "tgi": "http://tgi:80",
    "vllm": "http://vllm:8000",
}


class ConfigError(ValueError):
    """The settings give no usable config; the message names the setting."""


def resolves(url: str) -> bool:
    try:
        socket.getaddrinfo(urlparse(url).hostname, None)
        return True
    except OSError:
        return False


def pick_backend(settings: GatewaySettings, urls: Mapping[str, str] = BACKEND_URLS,
                 resolves: Callable[[str], bool] = resolves) -> str:
    """MODEL_BACKEND, or with `auto` the engine whose compose service is running."""
    if settings.model_backend != "auto":
        return settings.model_backend
    # A compose profile starts exactly one engine; only its service name resolves on the network.
    running = [b for b in BACKENDS if resolves(urls[b])]
    if len(running) > 1:
        raise ConfigError(
            f"MODEL_BACKEND=auto found several engines running ({', '.join(running)}); "
            "start one profile, or set MODEL_BACKEND"
        )
    return running[0] if running else "pyfunc"


def local_endpoints(settings: GatewaySettings, backend: str, url: str) -> list[dict]:
    name = settings.endpoint_name
    url = url.rstrip("/")
    if backend == "pyfunc":
        model = {"provider": "hf-pyfunc", "name": name, "config": {"model_server_url": url}}
    else:
        # TGI and vLLM both serve OpenAI's API under /v1, which keeps every chat message and
        # returns token usage (MLflow's TGI provider only does completions and rescales
        # temperature). The engines ignore the key, but MLflow's OpenAI config requires one.
        model = {
            "provider": "openai",
            "name": settings.engine_model_name,  # TGI ignores it; vLLM serves under it
            "config": {"openai_api_key": "unused", "openai_api_base": f"{url}/v1"},
        }
    # Separate copies, so the YAML has no anchors/aliases a person would trip over.
    return [
        {"name": name, "endpoint_type": "llm/v1/chat", "model": copy.deepcopy(model)},
        {"name": f"{name}-completions", "endpoint_type": "llm/v1/completions", "model": model},
    ]


def openai_endpoints(settings: GatewaySettings) -> list[dict]:
    if not settings.openai_api_key:
        return []
    return [
        {
            "name": "openai-" + re.sub(r"[^A-Za-z0-9_.-]", "-", model),
            "endpoint_type": "llm/v1/chat",
            "model": {
                "provider": "openai",
                "name": model,
                # Resolved from the gateway's environment at start, never written to disk.
                "config": {"openai_api_key": "$OPENAI_API_KEY"},
            },
        }
        for model in settings.openai_models
    ]


def render(settings: GatewaySettings, urls: Mapping[str, str] = BACKEND_URLS,
           resolves: Callable[[str], bool] = resolves) -> dict:
    backend = pick_backend(settings, urls, resolves)
    endpoints = local_endpoints(settings, backend, urls[backend]) + openai_endpoints(settings)
    names = [e["name"] for e in endpoints]
    if len(set(names)) != len(names):
        raise ConfigError(f"endpoint names collide: {names}; change SERVED_MODEL_NAME")
    return {"endpoints": endpoints}


def to_yaml(config: dict) -> str:
    return yaml.safe_dump(config, allow_unicode=True, sort_keys=False)


def validate(config: dict):
    """Load the rendered YAML as `mlflow gateway start` will; return MLflow's GatewayConfig."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "gateway.yaml")
        path.write_text(to_yaml(config), encoding="utf-8")
        try:
            return load_gateway_config(path)
        except Exception as e:  # MLflow raises MlflowException wrapping pydantic's errors
            raise ConfigError(f"MLflow rejected the rendered gateway config: {e}") from e
