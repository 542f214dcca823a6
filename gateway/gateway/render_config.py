"""Render the MLflow AI Gateway config from the gateway's settings; check it with MLflow's loader.

Every model the stack serves gets two endpoints, named the same whatever the engine, so that
runs made on pyfunc, vLLM, SGLang and TGI stay comparable:
  <endpoint name>              llm/v1/chat
  <endpoint name>-completions  llm/v1/completions
(MODELS, or MODEL_ID and SERVED_MODEL_NAME: promptlab_stack.settings), then each
OPENAI_COMPATIBLE_ENDPOINTS server's chat endpoint (and its completions endpoint where the server
has /v1/completions), then OpenAI chat endpoints when OPENAI_API_KEY is set.
"""

from __future__ import annotations

import asyncio
import re
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import yaml

from gateway.endpoint_keys import key_env_of
from gateway.mlflow_compat import load_gateway_config
from gateway.settings import GatewaySettings
from promptlab_stack.topology import ENGINES

# The engines MODEL_BACKEND names (pyfunc, llamacpp, tgi, vllm, sglang), each named by its compose
# service, and where each listens on the compose network (service name = host name).
BACKENDS = tuple(engine.name for engine in ENGINES)
BACKEND_URLS = {engine.name: engine.url for engine in ENGINES}


class ConfigError(ValueError):
    """The settings give no usable config; the message names the setting."""


def resolves(url: str) -> bool:
    try:
        socket.getaddrinfo(urlparse(url).hostname, None)
        return True
    except OSError:
        return False


def has_completions(base_url: str) -> bool | None:
    """Whether an OpenAI-compatible server has /v1/completions (None: it did not answer).

    An empty request is refused with 400/422 by a server that has the route, and with 404 or 405
    by one that has not (`transformers serve`, for one, has chat only). Asked once at start,
    outside any event loop."""
    return asyncio.run(_has_completions(base_url))


async def _has_completions(base_url: str) -> bool | None:
    # 3 s to connect and 3 s for the answer; HTTP(S)_PROXY and NO_PROXY apply (trust_env).
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=3)
    try:
        async with aiohttp.ClientSession(trust_env=True, timeout=timeout) as session:
            async with session.post(
                f"{base_url}/completions",
                data=b"{}",
                headers={"Content-Type": "application/json"},
                allow_redirects=False,
            ) as resp:
                return resp.status not in (404, 405)
    except (TimeoutError, aiohttp.ClientError, OSError):
        return None


def pick_backend(
    settings: GatewaySettings,
    urls: Mapping[str, str] = BACKEND_URLS,
    resolves: Callable[[str], bool] = resolves,
    wait_s: float = 0.0,
) -> str:
    """MODEL_BACKEND, or with `auto` the engine whose compose service is running, looked for up to
    `wait_s` (its container may start after the gateway's); none: pyfunc."""
    if settings.model_backend != "auto":
        return settings.model_backend
    deadline = time.monotonic() + wait_s
    while True:
        # A compose profile starts exactly one engine; only its service name resolves then.
        running = [b for b in BACKENDS if resolves(urls[b])]
        if len(running) > 1:
            raise ConfigError(
                f"MODEL_BACKEND=auto found several engines running ({', '.join(running)}); "
                "start one profile, or set MODEL_BACKEND"
            )
        if running:
            return running[0]
        if time.monotonic() >= deadline:
            return "pyfunc"
        time.sleep(0.5)


def chat_and_completions(name: str, model: dict, completions: bool = True) -> list[dict]:
    endpoints = [{"name": name, "endpoint_type": "llm/v1/chat", "model": model}]
    if completions:
        # Separate copies, so the YAML has no anchors/aliases a person would trip over.
        endpoints.append(
            {
                "name": f"{name}-completions",
                "endpoint_type": "llm/v1/completions",
                "model": {**model, "config": dict(model["config"])},
            }
        )
    return endpoints


def local_endpoints(
    settings: GatewaySettings,
    backend: str,
    url: str,
    has_completions: Callable[[str], bool | None] = has_completions,
) -> list[dict]:
    url = url.rstrip("/")
    base = f"{url}/v1"
    if backend in ("pyfunc", "llamacpp"):
        # One engine serves the whole list; "name" tells it which model answers. llama-server's
        # router knows each model by its endpoint's name; a model the llamacpp engine could not
        # prepare left the reason in the model-state file, as the pyfunc server does.
        def model(name: str) -> dict:
            if backend == "pyfunc":
                return {"provider": "pyfunc", "name": name, "config": {"model_server_url": url}}
            return {
                "provider": "openai-compatible",
                "name": name,
                "config": {"base_url": base, "local_engine": True},
            }

        return [
            endpoint
            for served in settings.served_models
            for endpoint in chat_and_completions(served.endpoint, model(served.endpoint))
        ]
    # A GPU engine serves the first model, under whatever name it lists at /v1/models.
    return chat_and_completions(
        settings.endpoint_name,
        {"provider": "openai-compatible", "config": {"base_url": base}},
        has_completions(base) is not False,
    )


def external_endpoints(
    settings: GatewaySettings, has_completions: Callable[[str], bool | None] = has_completions
) -> list[dict]:
    endpoints = []
    for external in settings.external_endpoints:
        model = {
            "provider": "openai-compatible",
            "config": {
                "base_url": external.base_url,
                "api_key_env": key_env_of(settings, external),
            },
        }
        if external.model:
            model["name"] = external.model
        # A server that is down at start keeps its completions endpoint (it answers 503 meanwhile).
        endpoints += chat_and_completions(
            external.name, model, has_completions(external.base_url) is not False
        )
    return endpoints


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


def render(
    settings: GatewaySettings,
    urls: Mapping[str, str] = BACKEND_URLS,
    resolves: Callable[[str], bool] = resolves,
    has_completions: Callable[[str], bool | None] = has_completions,
    wait_s: float = 0.0,
) -> dict:
    """The config; `wait_s`: how long MODEL_BACKEND=auto looks for the engine (pick_backend)."""
    backend = pick_backend(settings, urls, resolves, wait_s)
    endpoints = (
        local_endpoints(settings, backend, urls[backend], has_completions)
        + external_endpoints(settings, has_completions)
        + openai_endpoints(settings)
    )
    names = [e["name"] for e in endpoints]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ConfigError(
            f"endpoint names collide: {clashes}; rename the entries of MODELS, "
            "OPENAI_COMPATIBLE_ENDPOINTS or SERVED_MODEL_NAME that give them"
        )
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
