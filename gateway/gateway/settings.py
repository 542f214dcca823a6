"""The gateway's settings, read once at start (start.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import BeforeValidator, Field

from promptlab_stack.settings import (
    Duration,
    GenerationTimeout,
    ModelChoice,
    RequestLimit,
    check_unique_endpoints,
    checked_by,
    comma_list,
    is_valid_endpoint_name,
    list_entries,
)

Backend = Literal["auto", "pyfunc", "llamacpp", "tgi", "vllm", "sglang"]
OPENAI_COMPATIBLE_API_KEY_ENV = "OPENAI_COMPATIBLE_API_KEY"


@dataclass(frozen=True)
class ExternalEndpoint:
    """An OpenAI-compatible server outside the stack (OPENAI_COMPATIBLE_ENDPOINTS)."""

    name: str
    base_url: str  # the server's OpenAI base URL, ending in /v1
    model: str = ""  # empty: the first model the server lists at /v1/models
    key_env: str = ""  # the variable holding this server's own API key (`;key=VAR`), if any


KEY_VARIABLE = re.compile(r"[A-Z_][A-Z0-9_]*")


def parse_external_endpoints(text: str) -> list[ExternalEndpoint]:
    """`endpoint_name=base_url[#model][;key=VARIABLE], ...`; raises ValueError naming the entry
    that is wrong."""
    knob = "OPENAI_COMPATIBLE_ENDPOINTS"
    endpoints = []
    for entry in list_entries(text, knob):
        name, sep, rest = entry.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(
                f"{knob} entry {entry!r} needs an endpoint name: name=http://host:port/v1"
            )
        if not is_valid_endpoint_name(name):
            raise ValueError(
                f"{knob} entry {entry!r}: the endpoint name {name!r} may use only ASCII "
                "letters, digits, '-', '_' and '.'"
            )
        target, *options = rest.split(";")
        key_env = ""
        for option in options:
            option_name, _, value = option.strip().partition("=")
            if option_name.strip() != "key" or not KEY_VARIABLE.fullmatch(value.strip()):
                raise ValueError(
                    f"{knob} entry {entry!r}: {option.strip()!r} is not key=VARIABLE "
                    "(the upper-case name of the variable that holds this server's API key)"
                )
            key_env = value.strip()
        url, _, model = target.strip().partition("#")
        parsed = urlparse(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"{knob} entry {entry!r}: {url.strip()!r} is not an http(s) URL")
        base = url.strip().rstrip("/")
        if parsed.path in ("", "/"):
            base += "/v1"  # the OpenAI API lives under /v1 unless the URL says otherwise
        endpoints.append(ExternalEndpoint(name, base, model.strip(), key_env))
    check_unique_endpoints([e.name for e in endpoints], knob)
    return endpoints


class GatewaySettings(ModelChoice, GenerationTimeout, RequestLimit):
    # auto: the engine whose compose service runs (render_config.pick_backend).
    model_backend: Annotated[
        Backend, BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)
    ] = Field("auto", description="auto, pyfunc, llamacpp, tgi, vllm or sglang")
    # Any OpenAI-compatible servers beside the stack's own models (README: Compare models).
    openai_compatible_endpoints: Annotated[str, checked_by(parse_external_endpoints)] = Field(
        "", description="comma-separated endpoint_name=base_url[#model][;key=VARIABLE] entries"
    )
    # The key for the entries that name no key variable of their own.
    openai_compatible_api_key: str = ""
    # Adds an "openai-<model>" chat endpoint per model when set; never written to the config file.
    openai_api_key: str = ""
    openai_chat_models: str = Field("gpt-4o-mini", description="comma-separated OpenAI model names")
    stop_grace_period: Duration = Field(
        330.0, ge=0, description="a duration such as 60s, 2m or 1m30s"
    )

    @property
    def openai_models(self) -> list[str]:
        return comma_list(self.openai_chat_models)

    @property
    def external_endpoints(self) -> list[ExternalEndpoint]:
        return (
            parse_external_endpoints(self.openai_compatible_endpoints)
            if self.openai_compatible_endpoints
            else []
        )
