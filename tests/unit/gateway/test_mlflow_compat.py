"""The private MLflow names and app-structure assumptions the gateway image relies on, one test
each: each lives in gateway/mlflow_compat.py and nowhere else. When an MLflow upgrade moves or
changes one, the test says which, so the seam can be mended (or dropped, if MLflow now offers a
public way)."""

from __future__ import annotations

import pytest

UPGRADE = "MLflow changed {name}, which {module} relies on: mend it there (or use a public API now)"


def test_gateway_image_loads_configs_as_mlflow_gateway_start_does(tmp_path):
    from gateway.mlflow_compat import load_gateway_config

    msg = UPGRADE.format(
        name="mlflow.gateway.config._load_gateway_config", module="gateway/gateway/mlflow_compat.py"
    )
    endpoint = (
        "- name: a\n  endpoint_type: llm/v1/chat\n  model:\n    provider: openai\n"
        "    name: m\n    config: {openai_api_key: k}\n"
    )
    good = tmp_path / "good.yaml"
    good.write_text("endpoints:\n" + endpoint)
    try:
        config = load_gateway_config(good)
    except ImportError as e:
        pytest.fail(f"{msg}: {e}")
    assert [e.name for e in config.endpoints] == ["a"], msg
    twice = tmp_path / "twice.yaml"
    twice.write_text("endpoints:\n" + endpoint + endpoint)
    with pytest.raises(Exception, match="(?i)duplicate|unique|collision"):
        load_gateway_config(twice)
