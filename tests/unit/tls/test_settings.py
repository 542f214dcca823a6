"""The TLS proxy's settings (tls/settings.py): a malformed knob stops it at start, with a message
naming the knob."""

from __future__ import annotations

import pytest

from promptlab_stack.settings import SettingsError
from tls.settings import TlsSettings


@pytest.mark.parametrize(
    "knob, value",
    [
        ("TLS_HOSTNAMES", "two words"),
    ],
)
def test_a_malformed_knob_is_refused_with_its_name_value_and_accepted_form(knob, value):
    with pytest.raises(SettingsError) as e:
        TlsSettings.from_env({knob: value})
    assert knob in str(e.value) and value in str(e.value)
