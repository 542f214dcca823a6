from __future__ import annotations

import pytest

from llamacpp.settings import BITS_PER_WEIGHT, LlamaCppSettings
from promptlab_stack.settings import SettingsError


def test_defaults():
    settings = LlamaCppSettings.from_env({})
    assert settings.llamacpp_quant == "Q8_0" and settings.max_total_tokens == 4096
    assert settings.llamacpp_parallel == 8 and settings.llamacpp_threads == 0


def test_every_type_has_its_size_and_a_bad_one_names_the_knob():
    assert LlamaCppSettings.from_env({"LLAMACPP_QUANT": "q4_k_m"}).llamacpp_quant == "Q4_K_M"
    for quant in BITS_PER_WEIGHT:
        assert LlamaCppSettings.from_env({"LLAMACPP_QUANT": quant}).bits_per_weight > 0
    with pytest.raises(SettingsError, match="LLAMACPP_QUANT='Q3'"):
        LlamaCppSettings.from_env({"LLAMACPP_QUANT": "Q3"})
    with pytest.raises(SettingsError, match="LLAMACPP_PARALLEL='0'"):
        LlamaCppSettings.from_env({"LLAMACPP_PARALLEL": "0"})
