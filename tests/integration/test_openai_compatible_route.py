"""The tgi/vllm route on CPU: a STAND-IN OpenAI-compatible server, not the real TGI/vLLM images.

TGI and vLLM cannot run here (no GPU, no container registry). Both speak OpenAI's API, and the
`tgi` profile's gateway config sends chat and completions to it with MLflow's `openai` provider.
So this test starts `docker compose --profile tgi` with one override
(tests/integration/compose.openai-standin.yml) that puts `transformers serve` on the tiny model
at TGI's address, and drives the UI's REST path in Japanese through the unchanged gateway config.
"""

from __future__ import annotations

import pytest
from constants import CHAT_ENDPOINT as CHAT
from constants import COMPLETIONS_ENDPOINT as COMPLETIONS
from stack import assert_whole_conversation_reaches_the_model, reference_model, running_stack


@pytest.fixture(scope="module")
def standin_stack(tmp_path_factory):
    compose_files = ("docker-compose.yml", "tests/integration/compose.openai-standin.yml")
    with running_stack(tmp_path_factory, profile="tgi", project="promptlab-it-openai",
                       compose_files=compose_files) as s:
        yield s


@pytest.fixture(scope="module")
def standin_reference(standin_stack):
    return reference_model(standin_stack)


def test_tgi_profile_gateway_routes_both_endpoints_to_the_openai_api(standin_stack):
    status, body = standin_stack.gateway_endpoints()
    assert status == 200, body
    providers = {e["name"]: (e["endpoint_type"], e["model"]["provider"]) for e in body["endpoints"]}
    assert providers == {CHAT: ("llm/v1/chat", "openai"), COMPLETIONS: ("llm/v1/completions", "openai")}


def test_japanese_chat_through_the_standin_returns_an_answer_with_usage(standin_stack):
    status, body = standin_stack.invoke(CHAT, {"messages": [{"role": "user", "content": "りんごは何色ですか？"}],
                                               "temperature": 0, "max_tokens": 12})
    assert status == 200, body
    assert body["choices"][0]["message"]["content"]
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_temperature_zero_is_deterministic(standin_stack):
    payload = {"messages": [{"role": "user", "content": "空は何色？"}], "temperature": 0, "max_tokens": 10}
    answers = {standin_stack.invoke(CHAT, payload)[1]["choices"][0]["message"]["content"] for _ in range(3)}
    assert len(answers) == 1


def test_system_prompt_and_multi_turn_reach_the_model(standin_stack, standin_reference):
    assert_whole_conversation_reaches_the_model(standin_stack, CHAT, standin_reference)


def test_completions_endpoint_through_the_standin(standin_stack):
    status, body = standin_stack.invoke(COMPLETIONS, {"prompt": "東京は", "temperature": 0, "max_tokens": 6})
    assert status == 200, body
    assert isinstance(body["choices"][0]["text"], str)
    assert body["usage"]["completion_tokens"] > 0
