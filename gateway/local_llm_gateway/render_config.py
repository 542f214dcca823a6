"""Render the MLflow AI Gateway config from the environment, then check it with MLflow's loader.

Configuration flows one way: .env -> docker compose -> this renderer -> MLflow's own loader. The
endpoint names do not depend on the engine, so runs made on pyfunc, TGI and vLLM stay comparable:
  ${SERVED_MODEL_NAME}              llm/v1/chat
  ${SERVED_MODEL_NAME}-completions  llm/v1/completions
plus OpenAI chat endpoints when OPENAI_API_KEY is set, as in the article this stack grew from.
"""

from __future__ import annotations

import argparse
import copy
import re
import socket
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import yaml

DEFAULT_MODEL_ID = "llm-jp/llm-jp-3-3.7b-instruct"
BACKENDS = ("pyfunc", "tgi", "vllm")
# Where each engine listens on the compose network (service name = host name).
DEFAULT_BACKEND_URLS = {
    "pyfunc": "http://pyfunc:8080",
    "tgi": "http://tgi:80",
    "vllm": "http://vllm:8000",
}


class ConfigError(ValueError):
    """A setting is wrong; the message names the setting."""


def served_model_name(env: dict[str, str]) -> str:
    name = env.get("SERVED_MODEL_NAME", "").strip()
    if not name:
        model_id = env.get("MODEL_ID", "").strip() or DEFAULT_MODEL_ID
        name = model_id.rstrip("/").split("/")[-1]
        source = f"MODEL_ID ({model_id!r})"
    else:
        source = "SERVED_MODEL_NAME"
    from mlflow.gateway.utils import is_valid_endpoint_name

    if not is_valid_endpoint_name(name):
        raise ConfigError(
            f"{source} gives the endpoint name {name!r}, which MLflow does not accept: use only "
            "ASCII letters, digits, '-', '_' and '.' (set SERVED_MODEL_NAME)"
        )
    return name


def _url(env: dict[str, str], backend: str) -> str:
    key = f"{backend.upper()}_URL"
    url = env.get(key, "").strip() or DEFAULT_BACKEND_URLS[backend]
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"{key} must be an http(s) URL, got {url!r}")
    return url.rstrip("/")


def _resolves(url: str) -> bool:
    try:
        socket.getaddrinfo(urlparse(url).hostname, None)
        return True
    except OSError:
        return False


def pick_backend(env: dict[str, str], resolves=_resolves) -> str:
    """MODEL_BACKEND, or with `auto` the engine whose compose service is running."""
    backend = env.get("MODEL_BACKEND", "").strip().lower() or "auto"
    if backend in BACKENDS:
        return backend
    if backend != "auto":
        raise ConfigError(f"MODEL_BACKEND must be auto, {', '.join(BACKENDS)}; got {backend!r}")
    # A compose profile starts exactly one engine; only its service name resolves on the network.
    running = [b for b in BACKENDS if resolves(_url(env, b))]
    if len(running) > 1:
        raise ConfigError(
            f"MODEL_BACKEND=auto found several engines running ({', '.join(running)}); "
            "start one profile, or set MODEL_BACKEND"
        )
    return running[0] if running else "pyfunc"


def local_endpoints(env: dict[str, str], backend: str) -> list[dict]:
    name = served_model_name(env)
    url = _url(env, backend)
    if backend == "pyfunc":
        model = {"provider": "hf-pyfunc", "name": name, "config": {"model_server_url": url}}
    else:
        # TGI and vLLM both serve OpenAI's API under /v1, which keeps every chat message and
        # returns token usage (MLflow's TGI provider only does completions and rescales
        # temperature). The engines ignore the key, but MLflow's OpenAI config requires one.
        model = {
            "provider": "openai",
            # The name the engine serves the model under: vLLM's --served-model-name in
            # docker-compose.yml is SERVED_MODEL_NAME or else MODEL_ID (TGI ignores it).
            "name": env.get("SERVED_MODEL_NAME", "").strip()
            or env.get("MODEL_ID", "").strip()
            or DEFAULT_MODEL_ID,
            "config": {"openai_api_key": "unused", "openai_api_base": f"{url}/v1"},
        }
    # Separate copies, so the YAML has no anchors/aliases a person would trip over.
    return [
        {"name": name, "endpoint_type": "llm/v1/chat", "model": copy.deepcopy(model)},
        {"name": f"{name}-completions", "endpoint_type": "llm/v1/completions", "model": model},
    ]


def openai_endpoints(env: dict[str, str]) -> list[dict]:
    if not env.get("OPENAI_API_KEY", "").strip():
        return []
    models = [m.strip() for m in env.get("OPENAI_CHAT_MODELS", "gpt-4o-mini").split(",") if m.strip()]
    endpoints = []
    for model in models:
        endpoint = "openai-" + re.sub(r"[^A-Za-z0-9_.-]", "-", model)
        endpoints.append(
            {
                "name": endpoint,
                "endpoint_type": "llm/v1/chat",
                "model": {
                    "provider": "openai",
                    "name": model,
                    # Resolved from the gateway's environment at start, never written to disk.
                    "config": {"openai_api_key": "$OPENAI_API_KEY"},
                },
            }
        )
    return endpoints


def render(env: dict[str, str], resolves=_resolves) -> dict:
    backend = pick_backend(env, resolves)
    endpoints = local_endpoints(env, backend) + openai_endpoints(env)
    names = [e["name"] for e in endpoints]
    if len(set(names)) != len(names):
        raise ConfigError(f"endpoint names collide: {names}; change SERVED_MODEL_NAME")
    return {"endpoints": endpoints}


def to_yaml(config: dict) -> str:
    return yaml.safe_dump(config, allow_unicode=True, sort_keys=False)


def validate(config: dict):
    """Load the rendered YAML with MLflow's own gateway config loader (what `gateway start` does)."""
    from mlflow.gateway.config import _load_gateway_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "gateway.yaml")
        path.write_text(to_yaml(config), encoding="utf-8")
        try:
            return _load_gateway_config(path)
        except Exception as e:  # MLflow raises MlflowException wrapping pydantic's errors
            raise ConfigError(f"MLflow rejected the rendered gateway config: {e}") from e


def main(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(description="Render the MLflow AI Gateway config")
    parser.add_argument("--output", "-o", help="write here instead of standard output")
    args = parser.parse_args(argv)
    env = dict(os.environ) if env is None else env
    try:
        config = render(env)
        validate(config)
    except ConfigError as e:
        print(f"gateway config error: {e}", file=sys.stderr)
        return 2
    text = to_yaml(config)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        for e in config["endpoints"]:
            print(f"endpoint {e['name']} ({e['endpoint_type']}) -> {e['model']['provider']}",
                  file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
