"""Rendering the gateway config from the gateway's settings, checked by MLflow's own loader."""

from __future__ import annotations

import pytest
from loopback import free_port, serving

from gateway.render_config import (
    BACKEND_URLS,
    BACKENDS,
    ConfigError,
    has_completions,
    pick_backend,
    render,
    validate,
)
from gateway.settings import GatewaySettings


def settings(**env) -> GatewaySettings:
    return GatewaySettings.from_env(env)


def endpoints(env, resolves=lambda url: False, urls=BACKEND_URLS, has_completions=lambda url: True):
    config = render(settings(**env), urls, resolves=resolves, has_completions=has_completions)
    validate(config)  # every rendered config must load in MLflow
    return {e["name"]: e for e in config["endpoints"]}


def test_defaults_give_chat_and_completions_endpoints_for_llm_jp_on_pyfunc():
    eps = endpoints({})
    assert set(eps) == {"llm-jp-3-3.7b-instruct", "llm-jp-3-3.7b-instruct-completions"}
    chat = eps["llm-jp-3-3.7b-instruct"]
    assert chat["endpoint_type"] == "llm/v1/chat"
    assert chat["model"] == {
        "provider": "pyfunc",
        "name": "llm-jp-3-3.7b-instruct",
        "config": {"model_server_url": "http://pyfunc:8080"},
    }
    assert eps["llm-jp-3-3.7b-instruct-completions"]["endpoint_type"] == "llm/v1/completions"


def test_served_model_name_follows_model_id_or_the_explicit_knob():
    assert "tiny-ja" in endpoints({"MODEL_ID": "/models/tiny-ja/"})
    assert "my-llm-completions" in endpoints(
        {"MODEL_ID": "/models/x", "SERVED_MODEL_NAME": "my-llm"}
    )


@pytest.mark.parametrize(
    "backend, base",
    [
        ("tgi", "http://tgi:80/v1"),
        ("vllm", "http://vllm:8000/v1"),
        ("sglang", "http://sglang:30000/v1"),
    ],
)
def test_gpu_engines_serve_the_first_model_through_their_openai_api(backend, base):
    eps = endpoints({"MODEL_BACKEND": backend, "MODELS": "a=org/m1,b=org/m2"})
    assert set(eps) == {"a", "a-completions"}
    for name in ("a", "a-completions"):
        model = eps[name]["model"]
        assert model["provider"] == "openai-compatible" and model["config"]["base_url"] == base
        # The engine's own name for the model comes from its /v1/models when first needed.
        assert "name" not in model


def test_every_model_of_the_list_gets_its_endpoints_on_the_one_model_server():
    eps = endpoints({"MODELS": "llm-jp/llm-jp-3-3.7b-instruct, small=/models/tiny-ja"})
    assert list(eps) == [
        "llm-jp-3-3.7b-instruct",
        "llm-jp-3-3.7b-instruct-completions",
        "small",
        "small-completions",
    ]
    assert eps["small-completions"]["model"] == {
        "provider": "pyfunc",
        "name": "small",
        "config": {"model_server_url": "http://pyfunc:8080"},
    }
    # MODELS wins over the one-model shorthand.
    assert "x" not in endpoints({"MODELS": "/models/tiny-ja", "MODEL_ID": "org/x"})


def test_openai_compatible_servers_get_a_chat_endpoint_and_completions_where_they_have_it():
    env = {
        "OPENAI_COMPATIBLE_ENDPOINTS": "fleet=http://router.example:8080/v1#llm-jp/llm-jp-3-13b-instruct,"
        "host=http://host.docker.internal:8000",
        "OPENAI_COMPATIBLE_API_KEY": "sk-secret",
    }
    eps = endpoints(env, has_completions=lambda url: "router" in url)
    assert eps["fleet"]["model"] == {
        "provider": "openai-compatible",
        "name": "llm-jp/llm-jp-3-13b-instruct",
        "config": {
            "base_url": "http://router.example:8080/v1",
            "api_key_env": "OPENAI_COMPATIBLE_API_KEY",
        },
    }
    assert "fleet-completions" in eps and "host-completions" not in eps
    assert eps["host"]["model"]["config"]["base_url"] == "http://host.docker.internal:8000/v1"
    assert "name" not in eps["host"]["model"] and "sk-secret" not in str(eps)
    # A server that does not answer at start keeps its completions endpoint.
    assert "host-completions" in endpoints(env, has_completions=lambda url: None)


def test_auto_backend_picks_the_engine_whose_service_resolves():
    assert pick_backend(settings(), resolves=lambda url: "vllm" in url) == "vllm"
    assert pick_backend(settings(), resolves=lambda url: "tgi" in url) == "tgi"
    assert pick_backend(settings(), resolves=lambda url: False) == "pyfunc"
    assert pick_backend(settings(MODEL_BACKEND="VLLM"), resolves=lambda url: False) == "vllm"
    with pytest.raises(ConfigError, match="several engines"):
        pick_backend(settings(), resolves=lambda url: True)


def test_the_model_server_url_is_the_compose_service_unless_given():
    eps = endpoints({}, urls={**BACKEND_URLS, "pyfunc": "http://127.0.0.1:9/"})
    assert eps["llm-jp-3-3.7b-instruct"]["model"]["config"] == {
        "model_server_url": "http://127.0.0.1:9"
    }


def test_openai_endpoints_are_added_only_with_a_key_and_keep_it_out_of_the_file(monkeypatch):
    # As in the gateway container, where the key is in the environment (MLflow resolves the
    # `$OPENAI_API_KEY` reference there once a gateway app has been made in this process).
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    assert not any(n.startswith("openai-") for n in endpoints({}))
    eps = endpoints({"OPENAI_API_KEY": "sk-secret", "OPENAI_CHAT_MODELS": "gpt-4o-mini, gpt-4.1"})
    assert eps["openai-gpt-4o-mini"]["model"]["config"] == {"openai_api_key": "$OPENAI_API_KEY"}
    assert eps["openai-gpt-4.1"]["model"]["name"] == "gpt-4.1"
    assert "sk-secret" not in str(eps)


def test_the_engines_are_the_compose_services_in_the_order_auto_tries_them():
    assert BACKENDS == ("pyfunc", "llamacpp", "tgi", "vllm", "sglang")
    assert BACKEND_URLS == {
        "pyfunc": "http://pyfunc:8080",
        "llamacpp": "http://llamacpp:8080",
        "tgi": "http://tgi:80",
        "vllm": "http://vllm:8000",
        "sglang": "http://sglang:30000",
    }


def test_a_server_has_completions_when_it_refuses_an_empty_request_for_another_reason():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def refuse(request):  # what a server says to an empty completions request
        return JSONResponse({"detail": "prompt: field required"}, status_code=422)

    full = Starlette(routes=[Route("/v1/completions", refuse, methods=["POST"])])
    chat_only = Starlette(routes=[Route("/v1/chat/completions", refuse, methods=["POST"])])
    get_only = Starlette(routes=[Route("/v1/completions", refuse, methods=["GET"])])
    with serving(full) as a, serving(chat_only) as b, serving(get_only) as c:
        assert has_completions(f"{a}/v1") is True
        assert has_completions(f"{b}/v1") is False  # 404
        assert has_completions(f"{c}/v1") is False  # 405
    assert has_completions(f"http://127.0.0.1:{free_port()}/v1") is None  # nothing listens


def test_the_llamacpp_engine_serves_every_model_under_its_endpoint_name():
    eps = endpoints({"MODEL_BACKEND": "llamacpp", "MODELS": "a=org/m1,b=/models/m2.gguf"})
    assert list(eps) == ["a", "a-completions", "b", "b-completions"]
    assert eps["b-completions"]["model"] == {
        "provider": "openai-compatible",
        "name": "b",  # llama-server's router knows each model by its endpoint's name
        "config": {"base_url": "http://llamacpp:8080/v1", "local_engine": True},
    }


def test_auto_waits_for_the_engine_whose_container_starts_after_the_gateway():
    """compose starts the gateway and the engine at once; the engine's name resolves only once
    its container runs."""
    calls = {"n": 0}

    def tgi_after_a_while(url: str) -> bool:
        calls["n"] += 1
        return url == "http://tgi:80" and calls["n"] > 2 * len(BACKENDS)

    assert pick_backend(settings(), resolves=tgi_after_a_while, wait_s=10) == "tgi"
    # Nothing at all within the wait: pyfunc, as before.
    assert pick_backend(settings(), resolves=lambda url: False, wait_s=0.6) == "pyfunc"
