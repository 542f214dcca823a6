"""The stack's models in MLflow 3's built-in AI Gateway, for the Playground and judges (issue 13).

Against the session's compose stack: the endpoint-sync service registers the gateway's chat
endpoints in the tracking server's built-in AI Gateway (endpoint_sync/sync.py), whose calls go to
our gateway's OpenAI API and on to the model server. The Playground itself is driven in a real
browser in test_browser_playground.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

from constants import JUDGE_MODEL_NAME, REPO, SECOND_MODEL_NAME, SERVED_MODEL_NAME
from reference import greedy_chat
from stack import CONVERSATION

MODELS = sorted([SERVED_MODEL_NAME, SECOND_MODEL_NAME, JUDGE_MODEL_NAME])
SYNCED = "AI Gateway endpoints in sync"


def wait_for_sync_since(stack, since: str, timeout: float = 120) -> None:
    """Until the endpoint-sync service logs a completed sync after `since` (a docker timestamp)."""
    deadline = time.monotonic() + timeout
    while (
        SYNCED not in stack.compose("logs", "--since", since, "endpoint-sync", check=False).stdout
    ):
        assert time.monotonic() < deadline, f"no '{SYNCED}' since {since}\n{stack.logs()}"
        time.sleep(1)


def chat(stack, body: dict) -> tuple[int, dict | str]:
    return stack.request("POST", "gateway/mlflow/v1/chat/completions", body)


def test_every_chat_model_is_an_ai_gateway_endpoint_under_its_prompt_engineering_name(stack):
    status, listing = stack.gateway_endpoints()
    assert status == 200, listing
    chat_endpoints = sorted(
        e["name"] for e in listing["endpoints"] if e["endpoint_type"] == "llm/v1/chat"
    )
    assert chat_endpoints == MODELS
    stack.wait_for_ai_gateway_endpoints(MODELS)
    for endpoint in stack.ai_gateway("endpoints"):
        definition = endpoint["model_mappings"][0]["model_definition"]
        assert (definition["provider"], definition["model_name"]) == ("openai", endpoint["name"])
        assert endpoint["usage_tracking"] and endpoint["experiment_id"]


def test_ai_gateway_chat_on_local_models_equals_greedy_with_token_usage(
    stack, stack_reference_model, stack_reference_model_b
):
    stack.wait_for_ai_gateway_endpoints(MODELS)
    for name, reference in (
        (SERVED_MODEL_NAME, stack_reference_model),
        (SECOND_MODEL_NAME, stack_reference_model_b),
    ):
        status, body = chat(
            stack, {"model": name, "messages": CONVERSATION, "temperature": 0, "max_tokens": 10}
        )
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == greedy_chat(
            *reference, CONVERSATION, 10
        ), name
        assert body["usage"]["completion_tokens"] == 10 and body["usage"]["prompt_tokens"] > 20


def test_a_streamed_ai_gateway_call_streams_the_same_answer(stack, stack_reference_model):
    """Through the built-in AI Gateway (its endpoint route and its OpenAI route), our gateway and
    the model server's /stream: the answer in pieces as generated, joined equal to greedy."""
    stack.wait_for_ai_gateway_endpoints(MODELS)
    body = {"messages": CONVERSATION, "temperature": 0, "max_tokens": 10, "stream": True}
    for path, request in (
        (f"gateway/{SERVED_MODEL_NAME}/mlflow/invocations", body),
        ("gateway/mlflow/v1/chat/completions", {**body, "model": SERVED_MODEL_NAME}),
    ):
        status, text = stack.request("POST", path, request)
        assert status == 200 and isinstance(text, str), (path, text)
        chunks = [
            json.loads(line.removeprefix("data: "))
            for line in text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"
        ]
        pieces = [c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]]
        assert "".join(pieces) == greedy_chat(*stack_reference_model, CONVERSATION, 10), path
        assert len([p for p in pieces if p]) > 2, (path, pieces)  # not whole at the end


def test_model_errors_keep_their_status_and_message_through_the_ai_gateway(stack):
    stack.wait_for_ai_gateway_endpoints(MODELS)
    status, body = chat(
        stack,
        {"model": SERVED_MODEL_NAME, "messages": [{"role": "user", "content": "りんご " * 600}]},
    )
    assert status == 400, body
    assert "context is 512 tokens" in json.dumps(body, ensure_ascii=False)


def test_ai_gateway_calls_are_traced_for_its_usage_page(stack):
    stack.wait_for_ai_gateway_endpoints(MODELS)
    endpoint = next(e for e in stack.ai_gateway("endpoints") if e["name"] == SERVED_MODEL_NAME)

    def traces() -> int:
        status, body = stack.request(
            "GET",
            "ajax-api/2.0/mlflow/traces",
            query={"experiment_ids": endpoint["experiment_id"], "max_results": 500},
        )
        assert status == 200, body
        return len(body.get("traces", []))

    before = traces()
    status, body = chat(
        stack,
        {
            "model": SERVED_MODEL_NAME,
            "messages": [{"role": "user", "content": "こんにちは"}],
            "max_tokens": 4,
        },
    )
    assert status == 200, body
    deadline = time.monotonic() + 30
    while traces() <= before:
        assert time.monotonic() < deadline, (
            "the call left no trace in the endpoint's usage experiment"
        )
        time.sleep(0.5)


def test_after_a_tracking_restart_there_is_still_exactly_one_endpoint_per_model(stack):
    stack.wait_for_ai_gateway_endpoints(MODELS)
    since = stack.compose(
        "exec", "-T", "tracking", "date", "-u", "+%Y-%m-%dT%H:%M:%SZ"
    ).stdout.strip()
    stack.compose("restart", "tracking")
    stack.compose("up", "-d", "--wait", "tracking")
    wait_for_sync_since(stack, since)
    names = [e["name"] for e in stack.ai_gateway("endpoints")]
    assert sorted(names) == MODELS, names
    assert [s["secret_name"] for s in stack.ai_gateway("secrets")] == ["promptlab-stack-gateway"]
    assert len(stack.ai_gateway("model-definitions")) == len(MODELS)


def test_a_model_taken_off_the_list_loses_its_endpoint(stack):
    stack.wait_for_ai_gateway_endpoints(MODELS)
    full = stack.env["MODELS"]
    fewer = ",".join(m for m in full.split(",") if not m.endswith(f"/{JUDGE_MODEL_NAME}"))
    try:
        # Only the gateway restarts with the shorter list; the tracking container follows it.
        stack.extra_env["MODELS"] = fewer
        stack.compose("up", "-d", "--no-deps", "--wait", "gateway")
        stack.wait_for_ai_gateway_endpoints(sorted([SERVED_MODEL_NAME, SECOND_MODEL_NAME]))
    finally:
        stack.extra_env["MODELS"] = full
        stack.compose("up", "-d", "--no-deps", "--wait", "gateway")
    stack.wait_for_ai_gateway_endpoints(MODELS)


def readme_judge_example() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- judge-example -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README.md lost its judge example (<!-- judge-example --> then a python block)"
    return match.group(1)


def test_the_readmes_judge_example_scores_a_japanese_dataset_on_local_endpoints(stack, tmp_path):
    stack.wait_for_ai_gateway_endpoints(MODELS)
    script = tmp_path / "judge_example.py"
    script.write_text(readme_judge_example(), encoding="utf-8")
    env = {
        **stack.env,
        "MLFLOW_TRACKING_URI": stack.url,
        "MODEL_ENDPOINT": SERVED_MODEL_NAME,
        "JUDGE_ENDPOINT": JUDGE_MODEL_NAME,
    }
    out = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    # The judge model's verdict on every row (it always says yes): the mean is 1.0.
    assert re.search(r"'polite/mean': (np\.float64\()?1\.0", out.stdout), out.stdout[-2000:]
