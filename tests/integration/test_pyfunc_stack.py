"""A user runs `docker compose --profile pyfunc up` and works in the Prompt Engineering UI.

These tests drive the UI's own REST calls (the gateway proxy and create-promptlab-run) against
real containers built from our Dockerfiles, serving the tiny model from LOCAL_MODELS_DIR.
"""

from __future__ import annotations

import json
import re

import yaml
from constants import CHAT_ENDPOINT as CHAT
from constants import COMPLETIONS_ENDPOINT as COMPLETIONS
from constants import JUDGE_MODEL_NAME as JUDGE
from constants import SECOND_MODEL_NAME as SECOND
from reference import greedy_chat, greedy_completion
from stack import assert_whole_conversation_reaches_the_model

TEMPLATE = "{{ object }}は何色ですか？"


def escaped_text(raw: str) -> list[str]:
    """\\uXXXX escapes of printable characters (JSON must escape control characters only)."""
    return [e for e in re.findall(r"\\u[0-9a-fA-F]{4}", raw) if int(e[2:], 16) >= 0x20]


def test_user_sees_the_endpoints_of_both_models_in_the_prompt_engineering_dialog(stack):
    status, body = stack.gateway_endpoints()
    assert status == 200, body
    types = {e["name"]: e["endpoint_type"] for e in body["endpoints"]}
    assert types == {
        CHAT: "llm/v1/chat",
        COMPLETIONS: "llm/v1/completions",
        SECOND: "llm/v1/chat",
        f"{SECOND}-completions": "llm/v1/completions",
        JUDGE: "llm/v1/chat",
        f"{JUDGE}-completions": "llm/v1/completions",
    }


def test_user_compares_two_models_with_other_tokenizers_and_chat_templates(
    stack, stack_reference_model, stack_reference_model_b
):
    messages = [
        {"role": "system", "content": "簡潔に。"},
        {"role": "user", "content": "りんごは何色ですか？"},
    ]
    answers = {}
    for endpoint, reference in ((CHAT, stack_reference_model), (SECOND, stack_reference_model_b)):
        status, body = stack.invoke(
            endpoint, {"messages": messages, "temperature": 0, "max_tokens": 12}
        )
        assert status == 200, body
        answers[endpoint] = body["choices"][0]["message"]["content"]
        assert answers[endpoint] == greedy_chat(*reference, messages, 12), endpoint
        assert body["usage"]["completion_tokens"] == 12
        status, body = stack.invoke(
            f"{endpoint}-completions", {"prompt": "東京は日本の", "temperature": 0, "max_tokens": 7}
        )
        assert status == 200, body
        assert body["choices"][0]["text"] == greedy_completion(*reference, "東京は日本の", 7), (
            endpoint
        )
    assert answers[CHAT] != answers[SECOND]


def test_user_evaluates_a_japanese_prompt_on_the_chat_endpoint(stack, stack_reference_model):
    prompt = "りんごは何色ですか？"
    # What the UI sends on "Evaluate" for a chat endpoint.
    status, body = stack.invoke(
        CHAT,
        {"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 12},
    )
    assert status == 200, body
    expected = greedy_chat(*stack_reference_model, [{"role": "user", "content": prompt}], 12)
    assert body["choices"][0]["message"]["content"] == expected
    usage = body["usage"]
    assert usage["completion_tokens"] == 12  # max_tokens honoured (the tiny model never stops)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 12


def test_user_evaluates_on_the_completions_endpoint(stack, stack_reference_model):
    prompt = "東京は日本の"
    status, body = stack.invoke(COMPLETIONS, {"prompt": prompt, "temperature": 0, "max_tokens": 7})
    assert status == 200, body
    assert body["choices"][0]["text"] == greedy_completion(*stack_reference_model, prompt, 7)
    assert body["usage"]["completion_tokens"] == 7


def test_stop_sequence_cuts_the_answer(stack, stack_reference_model):
    messages = [{"role": "user", "content": "空は何色？"}]
    full = greedy_chat(*stack_reference_model, messages, 16)
    stop = full[4:6]
    status, body = stack.invoke(
        CHAT, {"messages": messages, "temperature": 0, "max_tokens": 16, "stop": [stop]}
    )
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == full[: full.index(stop)]


def test_system_prompt_and_earlier_turns_reach_the_model(stack, stack_reference_model):
    assert_whole_conversation_reaches_the_model(stack, CHAT, stack_reference_model)


def test_user_creates_a_run_and_its_artifacts_are_readable_japanese(stack):
    experiment_id = stack.create_experiment("果物の色 / fruit colours")
    value = "りんご🍎 と が (か\u3099)"
    prompt = TEMPLATE.replace("{{ object }}", value)
    status, answer = stack.invoke(
        CHAT, {"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 8}
    )
    assert status == 200, answer
    output = answer["choices"][0]["message"]["content"] + "\n二行目"
    # The payload the UI posts on "Create run".
    status, body = stack.request(
        "POST",
        "ajax-api/2.0/mlflow/runs/create-promptlab-run",
        {
            "experiment_id": experiment_id,
            "run_name": "日本語の実行",
            "tags": [],
            "prompt_template": TEMPLATE,
            "prompt_parameters": [{"key": "object", "value": value}],
            "model_route": CHAT,
            "model_parameters": [
                {"key": "temperature", "value": 0},
                {"key": "max_tokens", "value": 8},
            ],
            "model_input": prompt,
            "model_output": output,
            "model_output_parameters": [
                {"key": "total_tokens", "value": answer["usage"]["total_tokens"]}
            ],
            "mlflow_version": "3.17.2",
        },
    )
    assert status == 200, body
    run = body["run"]
    assert run["info"]["status"] == "FINISHED"
    run_id = run["info"]["run_id"]

    table_raw = stack.artifact_bytes(run_id, "eval_results_table.json").decode("utf-8")
    assert not escaped_text(table_raw) and value in table_raw
    table = json.loads(table_raw)
    assert table["columns"][:3] == ["object", "prompt", "output"]
    assert table["data"][0][:3] == [value, prompt, output]

    params_raw = stack.artifact_bytes(run_id, "model/parameters.yaml").decode("utf-8")
    assert "\\u" not in params_raw and "は何色ですか" in params_raw
    assert yaml.safe_load(params_raw)["prompt_template"] == TEMPLATE

    example_raw = stack.artifact_bytes(run_id, "model/input_example.json").decode("utf-8")
    assert not escaped_text(example_raw) and value in example_raw

    # The run's parameters, as the evaluation table shows them.
    status, got = stack.request("GET", "ajax-api/2.0/mlflow/runs/get", query={"run_id": run_id})
    params = {p["key"]: p["value"] for p in got["run"]["data"]["params"]}
    assert params["prompt_template"] == TEMPLATE and params["model_route"] == CHAT
