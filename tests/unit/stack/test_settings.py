"""Settings across the services: one endpoint-name rule, each service stops once on a bad knob,
timeouts that nest, and one default per knob that compose, .env.example and the docs agree with.
Each service's own knobs are tested in tests/unit/<package>/test_settings.py."""

from __future__ import annotations

import re

import pytest
from constants import REPO
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from endpoint_sync.settings import EndpointSyncSettings
from gateway.settings import GatewaySettings
from llamacpp.settings import LlamaCppSettings
from promptlab_eval.settings import EvalSettings
from promptlab_stack.settings import parse_duration
from promptlab_stack.timings import (
    GATEWAY_KEEPALIVE_S,
    GATEWAY_POOL_KEEPALIVE_S,
    MODEL_SERVER_KEEPALIVE_S,
    UI_PROXY_POOL_KEEPALIVE_S,
    gateway_route_timeout,
    model_server_timeout,
    ui_proxy_timeout,
)
from pyfunc_server.settings import ModelServerSettings
from tls.settings import TlsSettings
from tracking.settings import TrackingSettings

SERVICES = {
    "pyfunc": ModelServerSettings,
    "llamacpp": LlamaCppSettings,
    "gateway": GatewaySettings,
    "tracking": TrackingSettings,
    "tls": TlsSettings,
    "endpoint-sync": EndpointSyncSettings,
    "promptlab-eval": EvalSettings,
}
# Set by docker-compose.yml itself, not by the user: wiring between the services.
WIRED = {"MLFLOW_DEPLOYMENTS_TARGET"}


@hypothesis_settings(deadline=None)  # the first call imports MLflow's gateway
@given(st.text(max_size=12))
def test_the_endpoint_name_rule_is_mlflows(name):
    from mlflow.gateway.utils import is_valid_endpoint_name as mlflow_rule

    from promptlab_stack.settings import is_valid_endpoint_name

    for probe in (name, "tiny-ja", "llm-jp-3-3.7b-instruct", "a b", "日本", "x/y", "v1.2_a"):
        assert is_valid_endpoint_name(probe) == mlflow_rule(probe), probe


def test_the_endpoint_name_rule_is_one_rule_for_every_service():
    for settings in (ModelServerSettings, LlamaCppSettings, GatewaySettings):
        assert settings.from_env({}).endpoint_name == "llm-jp-3-3.7b-instruct"
        assert settings.from_env({"MODEL_ID": "/models/tiny-ja/"}).endpoint_name == "tiny-ja"
        assert (
            settings.from_env({"MODEL_ID": "org/m", "SERVED_MODEL_NAME": "x"}).endpoint_name == "x"
        )
        assert [
            (m.endpoint, m.model_id)
            for m in settings.from_env(
                {"MODELS": " org/a , b=/models/x/ ", "MODEL_ID": "ignored"}
            ).served_models
        ] == [("a", "org/a"), ("b", "/models/x/")]


@pytest.mark.parametrize(
    "module, prefix",
    [
        ("pyfunc_server.start", "model server stopped"),
        ("gateway.start", "gateway stopped"),
        ("tracking.start", "tracking stopped"),
        ("tls.start", "tls proxy stopped"),
    ],
)
def test_each_service_stops_once_on_a_bad_knob_naming_it(module, prefix):
    """Status 0, so that compose's `restart: on-failure` does not loop (promptlab_stack/stop.py),
    and the last log line names the service and the knob."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "GENERATION_TIMEOUT_SECONDS": "5m"}
    out = subprocess.run(
        [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(prefix) and "GENERATION_TIMEOUT_SECONDS='5m'" in last


@given(st.floats(min_value=0.001, max_value=1e6, allow_nan=False))
def test_timeouts_nest_from_the_model_server_outwards(t):
    assert model_server_timeout(t) < gateway_route_timeout(t) < ui_proxy_timeout(t)


def test_every_pool_drops_idle_connections_before_its_server_closes_them():
    assert GATEWAY_POOL_KEEPALIVE_S < MODEL_SERVER_KEEPALIVE_S
    assert UI_PROXY_POOL_KEEPALIVE_S < GATEWAY_KEEPALIVE_S


# -- one default per knob -----------------------------------------------------------------------
def code_defaults() -> dict[str, object]:
    defaults: dict[str, object] = {}
    for settings in SERVICES.values():
        for knob, value in settings.knob_defaults().items():
            assert defaults.setdefault(knob, value) == value, f"{knob} has two defaults in code"
    return {k: v for k, v in defaults.items() if k not in WIRED}


def same(a, b) -> bool:
    """Equal as the settings would read them: numbers, booleans and durations by value."""
    a, b = str(a).strip(), str(b).strip()
    if a.lower() == b.lower():
        return True
    try:
        return parse_duration(a) == parse_duration(b)
    except ValueError:
        return False


def compose_defaults() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    text = "\n".join(
        line.split("#")[0] for line in (REPO / "docker-compose.yml").read_text().splitlines()
    )
    for knob, default in re.findall(r"\$\{([A-Z0-9_]+):-([^}$]*)\}", text):
        found.setdefault(knob, []).append(default)
    return found


def env_example() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z0-9_]+)=(.*)$", (REPO / ".env.example").read_text(), re.M))


def readme_defaults() -> dict[str, str]:
    """The settings page's tables (docs/settings.md):
    `| `KNOB` [/ `KNOB2`] | `default` [/ `default2`] | ... |`;
    a default without backticks is a description (for knobs whose default is empty)."""
    table = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        knobs = re.findall(r"`([A-Z0-9_]+)`", cells[0])
        values = [v.strip() for v in cells[1].split(" / ")]
        assert len(knobs) == len(values), line
        for knob, value in zip(knobs, values, strict=True):
            rows[knob] = value[1:-1] if value.startswith("`") and value.endswith("`") else None
    return rows


def test_code_defaults_agree_with_compose_env_example_and_readme():
    code, compose, example, readme = (
        code_defaults(),
        compose_defaults(),
        env_example(),
        readme_defaults(),
    )
    for knob, default in code.items():
        for written in compose.get(knob, []):
            assert written == "" or same(written, default), (
                f"docker-compose.yml: {knob} {written!r} vs {default!r}"
            )
        assert knob in example, f".env.example lacks {knob}"
        assert example[knob] == "" and default == "" or same(example[knob], default), (
            f".env.example: {knob}={example[knob]!r}, code default {default!r}"
        )
        assert knob in readme, f"docs/settings.md lacks {knob}"
        if readme[knob] is None:
            assert default == "", (
                f"docs/settings.md describes {knob}'s default; code has {default!r}"
            )
        else:
            assert same(readme[knob], default), (
                f"docs/settings.md: {knob} {readme[knob]!r} vs {default!r}"
            )


def test_knobs_only_compose_reads_have_one_default_there_and_the_same_in_the_docs():
    code, example, readme = code_defaults(), env_example(), readme_defaults()
    for knob, written in compose_defaults().items():
        if knob in code or knob in WIRED:
            continue
        assert len(set(written)) == 1, (
            f"docker-compose.yml gives {knob} several defaults: {written}"
        )
        assert same(example.get(knob, "<missing>"), written[0]), f".env.example: {knob}"
        assert (
            readme.get(knob) is None and written[0] == "" or same(readme.get(knob), written[0])
        ), f"docs/settings.md: {knob}"


def test_env_example_and_readme_list_the_same_knobs():
    assert set(env_example()) == set(readme_defaults())


def test_the_default_stop_grace_period_covers_a_whole_generation():
    from gateway.settings import GatewaySettings
    from promptlab_stack.settings import GenerationTimeout

    generation = GenerationTimeout.from_env({}).generation_timeout_seconds
    assert GatewaySettings.from_env({}).stop_grace_period > ui_proxy_timeout(generation)
