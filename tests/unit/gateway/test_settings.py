"""The gateway's settings (gateway/settings.py)."""

from __future__ import annotations

import pytest

from gateway.settings import GatewaySettings
from promptlab_stack.settings import SettingsError


@pytest.mark.parametrize(
    "value, seconds", [("60s", 60), ("90", 90), ("2m", 120), ("1m30s", 90), ("1h", 3600)]
)
def test_stop_grace_period_is_read_like_compose_does(value, seconds):
    assert GatewaySettings.from_env({"STOP_GRACE_PERIOD": value}).stop_grace_period == seconds


@pytest.mark.parametrize(
    "knob, value",
    [
        ("GENERATION_TIMEOUT_SECONDS", "5m"),
        ("MODEL_BACKEND", "ollama"),
        ("OPENAI_COMPATIBLE_ENDPOINTS", "x=ftp://h/v1"),
        ("STOP_GRACE_PERIOD", "1 minute"),
    ],
)
def test_a_malformed_knob_is_refused_with_its_name_value_and_accepted_form(knob, value):
    with pytest.raises(SettingsError) as e:
        GatewaySettings.from_env({knob: value})
    assert knob in str(e.value) and value in str(e.value)
