"""Typed settings, read once from the environment when a service starts.

Configuration flows one way: .env -> docker-compose.yml -> one settings object per service -> the
code. A service declares its knobs as a `Settings` subclass: one field per environment variable
(the field's name in upper case) with its one default, and a description that says the accepted
form. `from_env()` validates every knob at once; a bad value raises `SettingsError`, whose message
names each wrong knob, its value and the accepted form, and the service's `start` module stops
with it before anything else starts. An empty variable counts as unset, because compose passes a
knob that `.env` leaves out as `${KNOB:-}`.

Why not pydantic-settings: it would be one more pinned dependency in every image for the little
used here, and it reads `os.environ` implicitly, which the tests and the benchmark must not
inherit; pydantic (an MLflow dependency, so in every image) does the typing and validation.

The knobs that more than one service reads are declared here once (`ModelChoice`,
`GenerationTimeout`), so each has exactly one default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import pydantic
from pydantic import AfterValidator, BeforeValidator, Field

DEFAULT_MODEL_ID = "llm-jp/llm-jp-3-3.7b-instruct"


class SettingsError(ValueError):
    """Knobs with bad values; the message names each knob, its value and the accepted form."""


class Settings(pydantic.BaseModel):
    """Base of every service's settings: frozen, typed, and built by `from_env`."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any):
        """Read every field from its upper-case variable in `environ` (default: os.environ);
        `overrides` (field names) win, for embedders such as the benchmark."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = environ.get(name.upper(), "")
            if raw.strip():
                values[name] = raw.strip()
        values.update(overrides)
        try:
            return cls.model_validate(values)
        except pydantic.ValidationError as e:
            raise SettingsError(describe_errors(cls, e)) from None

    @classmethod
    def knob_defaults(cls) -> dict[str, Any]:
        """Each knob's default, by its variable's name (the docs and compose are checked
        against these)."""
        return {name.upper(): field.default for name, field in cls.model_fields.items()}


def describe_errors(cls: type[Settings], error: pydantic.ValidationError) -> str:
    """One line per wrong knob: `KNOB='value': what is wrong (expected <accepted form>)`."""
    lines = []
    for err in error.errors(include_url=False):
        name = str(err["loc"][0]) if err["loc"] else ""
        field = cls.model_fields.get(name)
        message = err["msg"].removeprefix("Value error, ")
        if field is None:  # a rule across knobs; its message names them
            lines.append(message)
            continue
        accepted = f" (expected {field.description})" if field.description else ""
        lines.append(f"{name.upper()}={err['input']!r}: {message}{accepted}")
    return "; ".join(lines)


# -- value types ---------------------------------------------------------------------------------
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}


def parse_duration(value: Any) -> Any:
    """Seconds from a compose-style duration ("90", "60s", "2m", "1m30s", "500ms"); other types
    are left to pydantic (and a number is seconds)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError("not a duration")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


# Seconds, written as compose writes durations (stop_grace_period and the like).
Duration = Annotated[float, BeforeValidator(parse_duration)]


def checked_by(parse):
    """A text knob that `parse` must accept when set (its ValueError names the wrong entry)."""

    def check(value: str) -> str:
        if value:
            parse(value)
        return value

    return AfterValidator(check)


def list_entries(text: str, knob: str) -> Iterator[str]:
    """The stripped entries of a comma-separated list knob, in order; an empty one is an error
    where it stands (a stray comma usually means an entry was lost)."""
    for position, raw in enumerate(text.split(","), start=1):
        entry = raw.strip()
        if not entry:
            raise ValueError(f"{knob} entry {position} is empty (a stray comma?)")
        yield entry


def comma_list(value: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated knob."""
    return [item.strip() for item in value.split(",") if item.strip()]


# -- knobs read by more than one service -----------------------------------------------------------
def endpoint_name_of(model_id: str) -> str:
    """The endpoint name a model gets unless one is given: the last part of its id or path
    (llm-jp/llm-jp-3-3.7b-instruct -> llm-jp-3-3.7b-instruct, /models/tiny-ja/ -> tiny-ja)."""
    return model_id.rstrip("/").split("/")[-1]


# MLflow's own rule (mlflow.gateway.utils.is_valid_endpoint_name), written here so that an image
# without MLflow (the llamacpp engine's) reads MODELS the same way; tests/unit/stack/
# test_settings.py holds the two equal.
ENDPOINT_NAME = re.compile(r"[a-zA-Z0-9_\-\.]+")


def is_valid_endpoint_name(name: str) -> bool:
    return ENDPOINT_NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class ServedModel:
    """One model the stack serves: its chat endpoint's name (the completions endpoint adds
    "-completions") and its Hugging Face repo id or /models/<folder> path."""

    endpoint: str
    model_id: str


def parse_models(text: str, knob: str = "MODELS") -> list[ServedModel]:
    """`[endpoint_name=]model, ...`; raises ValueError naming the entry that is wrong."""
    models: list[ServedModel] = []
    for entry in list_entries(text, knob):
        name, sep, model_id = entry.partition("=")
        name, model_id = name.strip(), model_id.strip()
        if not sep:
            name, model_id = endpoint_name_of(entry), entry
        elif not name:
            raise ValueError(f"{knob} entry {entry!r} has an empty endpoint name before '='")
        if not model_id:
            raise ValueError(f"{knob} entry {entry!r} names no model after '='")
        if not is_valid_endpoint_name(name):
            raise ValueError(
                f"{knob} entry {entry!r} gives the endpoint name {name!r}, which MLflow does not "
                "accept: use only ASCII letters, digits, '-', '_' and '.' (write name=model)"
            )
        models.append(ServedModel(name, model_id))
    check_unique_endpoints([m.endpoint for m in models], knob)
    return models


def check_unique_endpoints(names: list[str], knob: str) -> None:
    """Each name also takes `<name>-completions`; no two endpoints may share a name."""
    seen: dict[str, str] = {}
    for name in names:
        for endpoint in (name, f"{name}-completions"):
            if endpoint in seen:
                raise ValueError(
                    f"{knob}: the endpoint name {endpoint!r} comes twice "
                    f"(from {seen[endpoint]!r} and {name!r}); name the entries apart"
                )
            seen[endpoint] = name


class ModelChoice(Settings):
    """Which models the stack serves, and under which endpoint names (model server and gateway).

    MODELS lists several; MODEL_ID (with SERVED_MODEL_NAME) is the shorthand for one, and MODELS
    wins when both are set."""

    models: Annotated[str, checked_by(parse_models)] = Field(
        "", description="comma-separated [endpoint_name=]model entries"
    )
    model_id: str = Field(
        DEFAULT_MODEL_ID, description="a Hugging Face repo id or a /models/<folder> path"
    )
    served_model_name: str = Field(
        "", description="an endpoint name of ASCII letters, digits, '-', '_' and '.'"
    )

    @property
    def served_models(self) -> list[ServedModel]:
        if self.models:
            return parse_models(self.models)
        return [
            ServedModel(self.served_model_name or endpoint_name_of(self.model_id), self.model_id)
        ]

    @property
    def endpoint_name(self) -> str:
        """The first (or only) model's chat endpoint name."""
        return self.served_models[0].endpoint

    @pydantic.model_validator(mode="after")
    def _served_models_are_valid(self):
        if self.models:
            return self
        name = self.served_models[0].endpoint
        if not is_valid_endpoint_name(name):
            source = (
                "SERVED_MODEL_NAME" if self.served_model_name else f"MODEL_ID ({self.model_id!r})"
            )
            raise ValueError(
                f"{source} gives the endpoint name {name!r}, which MLflow does not "
                "accept: use only ASCII letters, digits, '-', '_' and '.' (set SERVED_MODEL_NAME)"
            )
        return self


class GenerationTimeout(Settings):
    """How long one generation may take, end to end; every hop derives its own timeout from it
    (timings.py)."""

    generation_timeout_seconds: float = Field(300.0, gt=0, description="seconds, a positive number")


class RequestLimit(Settings):
    """The largest request body every hop reads (the UI proxy, the gateway, the model server): one
    knob, so that no hop accepts what the next one refuses."""

    max_request_mb: float = Field(8.0, gt=0, description="megabytes, more than 0")

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1e6)


class AdminLogin(Settings):
    """Basic auth on the tracking server: on when an admin password is set. The tracking server
    creates its admin from these; the endpoint sync and `promptlab-eval` log in with them."""

    mlflow_auth_admin_username: str = "admin"
    mlflow_auth_admin_password: str = ""

    @property
    def basic_auth(self) -> bool:
        return bool(self.mlflow_auth_admin_password)


class StackGateway(Settings):
    """Our gateway, as docker-compose.yml wires it (MLFLOW_DEPLOYMENTS_TARGET)."""

    mlflow_deployments_target: str = Field("", description="the gateway's http(s) URL")

    @property
    def gateway_api_base(self) -> str:
        """Our gateway's OpenAI API: where the built-in AI Gateway's stack endpoints send their
        calls (endpoint_sync), the one private upstream the tracking server lets it call (tracking),
        and where `promptlab-eval --judge` sends its questions."""
        return self.mlflow_deployments_target.rstrip("/") + "/v1"


def check_hostnames(value: str) -> None:
    names = comma_list(value)
    if not names:
        raise ValueError("name at least one host name or IP address")
    for name in names:
        if not all(c.isalnum() or c in "-.:*" for c in name):
            raise ValueError(f"{name!r} is not a host name or IP address")


class TlsAddress(Settings):
    """Where a browser reaches the UI through the tls proxy: the names its certificate is valid
    for and the published port. The tls proxy makes its certificate for them; the tracking server
    accepts them as Host headers and as origins of the browser's POSTs (MLflow refuses both from
    names it does not know)."""

    tls_hostnames: Annotated[str, checked_by(check_hostnames)] = Field(
        "localhost,127.0.0.1", description="comma-separated host names or IP addresses"
    )
    tls_port: int = Field(8443, ge=1, le=65535, description="a port number")

    @property
    def hostnames(self) -> list[str]:
        return comma_list(self.tls_hostnames)

    @property
    def tls_origins(self) -> list[str]:
        """What a browser sends as Origin from the UI over the tls proxy, one per name."""
        port = "" if self.tls_port == 443 else f":{self.tls_port}"
        return [f"https://{f'[{h}]' if ':' in h else h}{port}" for h in self.hostnames]
