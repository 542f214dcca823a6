"""The gateway's entrypoint: a bad setting stops it with a message naming the setting; the config
it writes is what MLflow loads; the environment gunicorn runs with (gateway/start.py)."""

from __future__ import annotations

import pytest

from gateway.settings import GatewaySettings


def settings(**env) -> GatewaySettings:
    return GatewaySettings.from_env(env)


@pytest.mark.parametrize(
    "env, setting",
    [
        ({"SERVED_MODEL_NAME": "llm jp"}, "SERVED_MODEL_NAME"),
        ({"MODEL_ID": "/models/日本語モデル"}, "MODEL_ID"),
        ({"MODEL_BACKEND": "ollama"}, "MODEL_BACKEND"),
        ({"GENERATION_TIMEOUT_SECONDS": "5m"}, "GENERATION_TIMEOUT_SECONDS"),
        ({"STOP_GRACE_PERIOD": "soon"}, "STOP_GRACE_PERIOD"),
        ({"SERVED_MODEL_NAME": "openai-gpt-4o-mini", "OPENAI_API_KEY": "k"}, "SERVED_MODEL_NAME"),
        ({"MODELS": "a=org/m,,b=org/n"}, "MODELS entry 2 is empty"),
        ({"MODELS": "=org/m"}, "'=org/m' has an empty endpoint name"),
        ({"MODELS": "a=org/m, a=org/n"}, "'a' comes twice"),
        ({"MODELS": "a-completions=org/m, a=org/n"}, "'a-completions' comes twice"),
        ({"MODELS": "bad name=org/m"}, "'bad name=org/m'"),
        ({"OPENAI_COMPATIBLE_ENDPOINTS": "=http://h:1/v1"}, "needs an endpoint name"),
        ({"OPENAI_COMPATIBLE_ENDPOINTS": "x=h:1/v1"}, "'h:1/v1' is not an http(s) URL"),
        ({"OPENAI_COMPATIBLE_ENDPOINTS": "x=http://a/v1,x=http://b/v1"}, "'x' comes twice"),
        ({"OPENAI_COMPATIBLE_ENDPOINTS": "x=https://a/v1;token=K"}, "';token=K'"[1:]),
        ({"OPENAI_COMPATIBLE_ENDPOINTS": "x=https://a/v1;key=lower"}, "is not key=VARIABLE"),
        (
            {"OPENAI_COMPATIBLE_ENDPOINTS": "x=https://a/v1;key=X_KEY"},
            "names the key variable X_KEY, which is not set for the gateway",
        ),
        (
            {"OPENAI_COMPATIBLE_ENDPOINTS": "tiny-ja=http://a/v1", "MODEL_ID": "/models/tiny-ja"},
            "OPENAI_COMPATIBLE_ENDPOINTS",
        ),
    ],
)
def test_bad_settings_stop_the_gateway_before_it_starts_with_a_message_naming_the_setting(
    env, setting, capsys
):
    from gateway.start import main

    # Returns instead of exec'ing the gateway: stopped, not restarted.
    assert main(env, engine_wait_s=0) == 0
    err = capsys.readouterr().err
    assert setting in err and "gateway stopped: config error" in err


def test_written_config_is_what_mlflow_loads(tmp_path):
    from mlflow.gateway.config import _load_gateway_config

    from gateway.start import write_config

    out = tmp_path / "gateway.yaml"
    write_config(settings(MODEL_ID="/models/日本語モデル", SERVED_MODEL_NAME="ja"), out)
    config = _load_gateway_config(out)
    assert [e.name for e in config.endpoints] == ["ja", "ja-completions"]


def test_gateway_drains_for_the_grace_period_and_times_out_after_the_model_server():
    from gateway.start import server_environment

    env = server_environment(settings(STOP_GRACE_PERIOD="2m", GENERATION_TIMEOUT_SECONDS="100.5"))
    assert env["MLFLOW_GATEWAY_ROUTE_TIMEOUT_SECONDS"] == "106"
    assert "--graceful-timeout 115" in env["GUNICORN_CMD_ARGS"]


def test_the_gateway_listens_on_its_compose_port():
    from pathlib import Path

    from gateway.start import server_command

    command = server_command(Path("/tmp/gateway.yaml"))
    assert command[command.index("--bind") + 1] == "0.0.0.0:7000"
