"""The gateway's settings (gateway/settings.py)."""

from __future__ import annotations

import pytest

from gateway.settings import GatewaySettings


@pytest.mark.parametrize(
    "value, seconds", [("60s", 60), ("90", 90), ("2m", 120), ("1m30s", 90), ("1h", 3600)]
)
def test_stop_grace_period_is_read_like_compose_does(value, seconds):
    assert GatewaySettings.from_env({"STOP_GRACE_PERIOD": value}).stop_grace_period == seconds
