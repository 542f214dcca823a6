"""GPU engines and OpenAI-compatible servers on CPU: `transformers serve`, a real OpenAI-compatible
server, in the place of the TGI image (a STAND-IN: TGI and vLLM cannot run here, no GPU, no
registry), and as two OPENAI_COMPATIBLE_ENDPOINTS servers: the stand-in again, on the compose
network, and one on this host reached through host.docker.internal.

`docker compose --profile tgi` runs with one override (tests/integration/compose.openai-standin.yml)
that swaps TGI's launcher for `transformers serve` in the engine's own start line; the gateway
config is what the profile renders. Everything is driven through the UI's REST path, in Japanese.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from constants import CHAT_ENDPOINT as CHAT
from constants import COMPLETIONS_ENDPOINT as COMPLETIONS
from loopback import free_port
from reference import greedy_chat, greedy_completion
from stack import (
    assert_whole_conversation_reaches_the_model,
    docker_host_address,
    reference_model,
    running_stack,
)

QUESTION = [{"role": "user", "content": "りんごは何色ですか？"}]


@pytest.fixture(scope="module")
def host_server(tiny_model_dir):
    """`transformers serve` on this host, listening only on Docker's bridge address."""
    host, port = docker_host_address(), free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "transformers"),
            "serve",
            str(tiny_model_dir),
            "--host",
            host,
            "--port",
            str(port),
            "--device",
            "cpu",
            "--dtype",
            "float32",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2)
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, (
                "transformers serve did not start"
            )
            time.sleep(1)
    yield server, port
    server.terminate()
    server.wait(30)


@pytest.fixture(scope="module")
def standin_stack(tmp_path_factory, host_server):
    _, port = host_server
    compose_files = ("docker-compose.yml", "tests/integration/compose.openai-standin.yml")
    endpoints = f"net-ts=http://tgi:80/v1, host-ts=http://host.docker.internal:{port}"
    with running_stack(
        tmp_path_factory,
        profile="tgi",
        project="promptlab-it-openai",
        compose_files=compose_files,
        extra_env={"OPENAI_COMPATIBLE_ENDPOINTS": endpoints},
    ) as s:
        yield s


@pytest.fixture(scope="module")
def standin_reference(standin_stack):
    return reference_model(standin_stack)


def test_the_tgi_profile_and_the_external_servers_get_their_endpoints(standin_stack):
    status, body = standin_stack.gateway_endpoints()
    assert status == 200, body
    providers = {e["name"]: (e["endpoint_type"], e["model"]["provider"]) for e in body["endpoints"]}
    chat, completions = (
        ("llm/v1/chat", "openai-compatible"),
        ("llm/v1/completions", "openai-compatible"),
    )
    # The engine serves the first model of MODELS; each server has /v1/completions.
    assert providers == {
        CHAT: chat,
        COMPLETIONS: completions,
        "net-ts": chat,
        "net-ts-completions": completions,
        "host-ts": chat,
        "host-ts-completions": completions,
    }


def test_external_endpoints_are_ai_gateway_endpoints_too_and_answer_there(
    standin_stack, standin_reference
):
    """The built-in AI Gateway (Playground, judges) gets the engine's and each external server's
    chat endpoint, and a call there reaches the server (issue 13)."""
    standin_stack.wait_for_ai_gateway_endpoints(sorted([CHAT, "host-ts", "net-ts"]))
    messages = [{"role": "user", "content": "日本の首都は？"}]
    for endpoint in ("net-ts", "host-ts"):
        status, body = standin_stack.request(
            "POST",
            "gateway/mlflow/v1/chat/completions",
            {"model": endpoint, "messages": messages, "temperature": 0, "max_tokens": 8},
        )
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == greedy_chat(
            *standin_reference, messages, 8
        )


def test_an_engines_stream_is_passed_through_in_pieces_equal_to_greedy(
    standin_stack, standin_reference
):
    """`"stream": true` through the built-in AI Gateway and our gateway to the engine's own
    stream (`transformers serve` standing in for TGI, and an external server)."""
    import json

    standin_stack.wait_for_ai_gateway_endpoints(sorted([CHAT, "host-ts", "net-ts"]))
    for endpoint in (CHAT, "host-ts"):
        status, text = standin_stack.request(
            "POST",
            "gateway/mlflow/v1/chat/completions",
            {
                "model": endpoint,
                "messages": QUESTION,
                "temperature": 0,
                "max_tokens": 12,
                "stream": True,
            },
        )
        assert status == 200 and isinstance(text, str), (endpoint, text)
        chunks = [
            json.loads(line.removeprefix("data: "))
            for line in text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"
        ]
        pieces = [c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]]
        assert "".join(pieces) == greedy_chat(*standin_reference, QUESTION, 12), endpoint
        assert len([p for p in pieces if p]) > 2, (endpoint, pieces)


@pytest.mark.parametrize("endpoint", [CHAT, "net-ts", "host-ts"])
def test_japanese_chat_equals_plain_transformers_with_usage(
    standin_stack, standin_reference, endpoint
):
    status, body = standin_stack.invoke(
        endpoint, {"messages": QUESTION, "temperature": 0, "max_tokens": 12}
    )
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == greedy_chat(*standin_reference, QUESTION, 12)
    usage = body["usage"]
    assert usage["completion_tokens"] == 12 and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("endpoint", [COMPLETIONS, "host-ts-completions"])
def test_completions_equal_plain_transformers(standin_stack, standin_reference, endpoint):
    status, body = standin_stack.invoke(
        endpoint, {"prompt": "東京は", "temperature": 0, "max_tokens": 6}
    )
    assert status == 200, body
    assert body["choices"][0]["text"] == greedy_completion(*standin_reference, "東京は", 6)
    assert body["usage"]["completion_tokens"] == 6


def test_system_prompt_and_multi_turn_reach_the_model(standin_stack, standin_reference):
    assert_whole_conversation_reaches_the_model(standin_stack, CHAT, standin_reference)


def test_a_stopped_server_is_a_readable_503_naming_it(standin_stack, host_server):
    server, port = host_server
    server.terminate()
    server.wait(30)
    status, body = standin_stack.invoke("host-ts", {"messages": QUESTION, "max_tokens": 4})
    assert status == 503, body
    # The endpoint and the cause, never the server's URL: the message reaches the browser.
    assert body["message"].startswith(
        "The OpenAI-compatible server of endpoint 'host-ts' is unreachable"
    )
    assert "host.docker.internal" not in body["message"] and str(port) not in body["message"]
    # The other endpoints are unaffected.
    assert standin_stack.invoke("net-ts", {"messages": QUESTION, "max_tokens": 4})[0] == 200
