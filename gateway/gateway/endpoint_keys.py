"""Which API key each OpenAI-compatible server outside the stack gets (OPENAI_COMPATIBLE_ENDPOINTS).

An entry may name the variable that holds its own key (`name=url#model;key=VARIABLE`; compose
passes the variables of `gateway-keys.env` to the gateway); an entry that names none gets
OPENAI_COMPATIBLE_API_KEY, if set. The config file holds only the variable's name, never a key
(openai_engine_provider.py reads it at start). A key that would travel over plain HTTP, or one key
shared by several servers, is allowed (a server on this host or a trusted network may want one)
but logged as a warning at every start.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlparse

from gateway.settings import OPENAI_COMPATIBLE_API_KEY_ENV, ExternalEndpoint, GatewaySettings


class MissingKey(ValueError):
    """An entry names a key variable that the gateway's environment does not have."""


def key_env_of(settings: GatewaySettings, external: ExternalEndpoint) -> str:
    """The variable whose value is sent as the endpoint's bearer token ("" for none)."""
    if external.key_env:
        return external.key_env
    return OPENAI_COMPATIBLE_API_KEY_ENV if settings.openai_compatible_api_key else ""


def key_warnings(settings: GatewaySettings, environ: Mapping[str, str]) -> list[str]:
    """What to warn about the keys at start; raises MissingKey for a named variable not set."""
    warnings = []
    shared = []
    for external in settings.external_endpoints:
        env = key_env_of(settings, external)
        if not env:
            continue
        if not environ.get(env, "").strip():
            raise MissingKey(
                f"OPENAI_COMPATIBLE_ENDPOINTS entry {external.name!r} names the key variable "
                f"{env}, which is not set for the gateway: put {env}=... in gateway-keys.env"
            )
        if env == OPENAI_COMPATIBLE_API_KEY_ENV:
            shared.append(external.name)
        if urlparse(external.base_url).scheme == "http":
            warnings.append(
                f"endpoint {external.name!r} sends its API key ({env}) over plain HTTP: anyone "
                "on the way can read it; use an https:// URL, or no key"
            )
    if len(shared) > 1:
        warnings.append(
            f"{OPENAI_COMPATIBLE_API_KEY_ENV} is sent to {len(shared)} servers "
            f"({', '.join(shared)}): each of them can use it; give each entry its own key "
            "with ;key=VARIABLE"
        )
    return warnings
