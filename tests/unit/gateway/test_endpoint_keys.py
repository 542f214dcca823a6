"""Each OpenAI-compatible server outside the stack gets its own key, named by its entry
(gateway/endpoint_keys.py); the config holds variable names only; risky keys are warned about."""

from __future__ import annotations

import pytest

from gateway.endpoint_keys import MissingKey, key_warnings
from gateway.render_config import external_endpoints
from gateway.settings import GatewaySettings


def configured(env: dict[str, str]) -> dict[str, dict]:
    settings = GatewaySettings.from_env(env)
    return {
        e["name"]: e["model"]["config"]
        for e in external_endpoints(settings, has_completions=lambda url: False)
    }


def test_an_entry_that_names_its_key_gets_that_key_and_no_other():
    env = {
        "OPENAI_COMPATIBLE_ENDPOINTS": "team=https://llm.example.com/v1#m;key=TEAM_KEY,"
        "local=http://host.docker.internal:11434/v1",
        "OPENAI_COMPATIBLE_API_KEY": "shared-secret",
    }
    config = configured(env)
    assert config["team"] == {"base_url": "https://llm.example.com/v1", "api_key_env": "TEAM_KEY"}
    assert config["local"]["api_key_env"] == "OPENAI_COMPATIBLE_API_KEY"
    assert "shared-secret" not in str(config)
    assert "api_key_env" in configured({"OPENAI_COMPATIBLE_ENDPOINTS": "a=https://a/v1"})["a"]
    assert configured({"OPENAI_COMPATIBLE_ENDPOINTS": "a=https://a/v1"})["a"]["api_key_env"] == ""


def test_a_key_over_plain_http_and_a_shared_key_are_warned_about_without_the_key():
    env = {
        "OPENAI_COMPATIBLE_ENDPOINTS": "a=http://lan-box:8000/v1,b=https://b.example.com/v1,"
        "c=https://c.example.com/v1;key=C_KEY",
        "OPENAI_COMPATIBLE_API_KEY": "shared-secret",
        "C_KEY": "c-secret",
    }
    warnings = key_warnings(GatewaySettings.from_env(env), env)
    assert len(warnings) == 2, warnings
    assert (
        "endpoint 'a' sends its API key (OPENAI_COMPATIBLE_API_KEY) over plain HTTP" in warnings[0]
    )
    assert "OPENAI_COMPATIBLE_API_KEY is sent to 2 servers (a, b)" in warnings[1]
    assert "secret" not in " ".join(warnings)
    # One server per key, over https: nothing to say.
    env = {"OPENAI_COMPATIBLE_ENDPOINTS": "c=https://c.example.com/v1;key=C_KEY", "C_KEY": "k"}
    assert key_warnings(GatewaySettings.from_env(env), env) == []


def test_a_named_key_variable_that_is_not_set_stops_the_gateway():
    env = {"OPENAI_COMPATIBLE_ENDPOINTS": "c=https://c.example.com/v1;key=C_KEY"}
    with pytest.raises(MissingKey, match="put C_KEY=... in gateway-keys.env"):
        key_warnings(GatewaySettings.from_env(env), env)
