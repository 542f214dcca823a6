"""The `llamacpp` profile end to end: llama.cpp's own server, built from source by our Dockerfile,
on tiny models of the kind llm-jp-3 is (a SentencePiece tokenizer), converted at first start by
llama.cpp's own converter to the default LLAMACPP_QUANT (Q8_0), behind the gateway and the
tracking server, driven through the UI's REST path in Japanese.

The oracle is the same as for the pyfunc server: greedy answers equal plain transformers'
`generate` on the Hugging Face checkpoint. It holds here because the tiny models' output head is
scaled so that greedy choices are far apart (scripts/make_tiny_model.py), so that Q8_0's rounding
never flips one; it only holds if the prompt reaching llama.cpp is token for token the one
Hugging Face's tokenizer makes from the model's chat template.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from constants import REPO
from reference import greedy_chat, greedy_completion
from stack import CONVERSATION, Stack

# Two models with other chat templates (llm-jp-3's shape and ChatML), both SentencePiece.
CHAT = "tiny-ja"
SECOND = "tiny-b"
MODELS = f"{CHAT}=/models/{CHAT},{SECOND}=/models/{SECOND}"
QUESTION = [{"role": "user", "content": "りんごは何色ですか？"}]


def build_models(models_dir):
    from make_tiny_model import build_tiny_model

    build_tiny_model(models_dir / CHAT, tokenizer_kind="sentencepiece", vocab_size=400)
    build_tiny_model(
        models_dir / SECOND,
        seed=1,
        tokenizer_kind="sentencepiece",
        vocab_size=420,
        chat_style="chatml",
    )
    # A checkpoint llama.cpp's converter cannot read: a byte-level BPE tokenizer it does not know.
    build_tiny_model(models_dir / "bpe-only")


@pytest.fixture(scope="module")
def llamacpp_stack(tmp_path_factory):
    models = tmp_path_factory.mktemp("models-llamacpp")
    build_models(models)
    stack = Stack(
        models,
        profile="llamacpp",
        project="promptlab-it-llamacpp",
        extra_env={"MODELS": MODELS, "MODEL_ID": ""},
    )
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="module")
def references(llamacpp_stack):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return {
        name: (
            AutoTokenizer.from_pretrained(llamacpp_stack.models_dir / name),
            AutoModelForCausalLM.from_pretrained(llamacpp_stack.models_dir / name).eval(),
        )
        for name in (CHAT, SECOND)
    }


def events(text: str) -> list[dict]:
    return [
        json.loads(line.removeprefix("data: "))
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def test_each_model_gets_its_chat_and_completions_endpoints(llamacpp_stack):
    status, body = llamacpp_stack.gateway_endpoints()
    assert status == 200, body
    assert sorted(e["name"] for e in body["endpoints"]) == sorted(
        [CHAT, f"{CHAT}-completions", SECOND, f"{SECOND}-completions"]
    )


def test_the_first_start_converted_each_checkpoint_to_q8_0(llamacpp_stack):
    logs = llamacpp_stack.compose("logs", "--no-color", "llamacpp", check=False).stdout
    for name in (CHAT, SECOND):
        assert f"{name}: converted to /data/gguf/models--{name}/" in logs
        assert "-Q8_0.gguf" in logs


def test_a_whole_conversation_equals_greedy_on_each_model(llamacpp_stack, references):
    """System prompt, earlier turns, a question, two chat templates: equal only if the prompt
    reaching llama.cpp is Hugging Face's token for token."""
    for name in (CHAT, SECOND):
        status, body = llamacpp_stack.invoke(
            name, {"messages": CONVERSATION, "temperature": 0, "max_tokens": 10}
        )
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == greedy_chat(
            *references[name], CONVERSATION, 10
        ), name
        tokenizer = references[name][0]
        prompt = tokenizer.apply_chat_template(
            CONVERSATION, add_generation_prompt=True, return_dict=True
        )["input_ids"]
        usage = body["usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
            len(prompt),
            10,
            len(prompt) + 10,
        )


def test_completions_stop_strings_and_max_tokens(llamacpp_stack, references):
    reference = references[CHAT]
    status, body = llamacpp_stack.invoke(
        f"{CHAT}-completions", {"prompt": "東京は日本の", "temperature": 0, "max_tokens": 7}
    )
    assert status == 200, body
    assert body["choices"][0]["text"] == greedy_completion(*reference, "東京は日本の", 7)
    assert body["usage"]["completion_tokens"] == 7
    full = greedy_chat(*reference, QUESTION, 16)
    stop = full[4:6]
    status, body = llamacpp_stack.invoke(
        CHAT, {"messages": QUESTION, "temperature": 0, "max_tokens": 16, "stop": [stop]}
    )
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == full[: full.index(stop)]


def test_answers_stream_through_the_built_in_ai_gateway_equal_to_greedy(llamacpp_stack, references):
    """The Playground's route (the built-in AI Gateway's OpenAI API) and promptlab-eval's (the
    UI's proxy), as llama-server streams: in pieces, joined equal to the whole answer."""
    llamacpp_stack.wait_for_ai_gateway_endpoints(sorted([CHAT, SECOND]))
    expected = greedy_chat(*references[CHAT], CONVERSATION, 10)
    body = {"messages": CONVERSATION, "temperature": 0, "max_tokens": 10, "stream": True}
    for path, request in (
        ("gateway/mlflow/v1/chat/completions", {**body, "model": CHAT}),
        (
            "ajax-api/2.0/mlflow/gateway-proxy",
            {"gateway_path": f"gateway/{CHAT}/invocations", "json_data": body},
        ),
    ):
        status, text = llamacpp_stack.request("POST", path, request)
        assert status == 200 and isinstance(text, str), (path, text)
        chunks = events(text)
        pieces = [c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]]
        assert "".join(pieces) == expected, path
        assert len([p for p in pieces if p]) > 2, (path, pieces)
        assert chunks[-1]["usage"]["completion_tokens"] == 10, path


@pytest.fixture(scope="module")
def page():
    """A Japanese Chromium page, as the other browser tests open it."""
    from test_browser_prompt_engineering import CHROMIUM, CHROMIUM_ARGS, sync_api

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="ja-JP")
        context.set_default_timeout(30_000)
        try:
            yield context.new_page()
        finally:
            browser.close()


def test_a_user_evaluates_a_japanese_template_in_the_browser(llamacpp_stack, references, page):
    """The Prompt Engineering UI in Chromium on the llamacpp engine: the answer in the Output box
    is greedy decoding's, with its token count; the run's evaluation table shows it."""
    import uuid

    from test_browser_prompt_engineering import (
        MAX_TOKENS,
        TEMPLATE,
        Scenario,
        check_token_count,
        create_run,
        evaluate,
        evaluation_table,
        expect,
        fill_prompt,
        open_prompt_engineering_dialog,
        pick_endpoint,
        visible_text,
    )

    s = Scenario(page)
    prompt = TEMPLATE.replace("{{ object }}", "りんご")
    with s.step(1, "open the new experiment's runs view"):
        experiment_id = llamacpp_stack.create_experiment(f"llamacpp {uuid.uuid4().hex[:8]}")
        page.goto(f"{llamacpp_stack.url}/#/experiments/{experiment_id}/runs")
        expect(page.get_by_role("button", name="New run")).to_be_visible(timeout=60_000)
        s.dismiss_popups(wait_ms=3_000)
    with s.step(2, f"New run → using Prompt Engineering, endpoint {CHAT}, the template"):
        dialog = open_prompt_engineering_dialog(s)
        offered = pick_endpoint(s, dialog, CHAT)
        assert {CHAT, f"{CHAT}-completions", SECOND} <= set(offered), offered
        fill_prompt(s, dialog, "りんご", "llama.cpp")
    with s.step(3, "Evaluate: greedy decoding's answer, with a token count"):
        answer, metadata = evaluate(s, dialog)
        expected = greedy_chat(*references[CHAT], [{"role": "user", "content": prompt}], MAX_TOKENS)
        assert visible_text(answer) == visible_text(expected), (answer, expected)
        check_token_count(metadata)
    with s.step(4, "Create run: the evaluation table shows the answer"):
        create_run(s, dialog)
        grid = evaluation_table(s)
        expect(grid).to_contain_text("りんご")
        assert visible_text(answer) in visible_text(grid.inner_text())


def test_bad_input_is_a_4xx_naming_the_problem(llamacpp_stack):
    long = [{"role": "user", "content": "りんご " * 3000}]
    status, body = llamacpp_stack.invoke(CHAT, {"messages": long, "max_tokens": 4})
    assert status == 400, body
    assert "context" in json.dumps(body, ensure_ascii=False)


def test_the_fidelity_report_compares_the_engine_with_float32_generate(llamacpp_stack, tmp_path):
    """The report's mechanics, on the tiny model (whose random weights make the figure mean
    nothing, which the report says): Q8_0's greedy answers against float32 `generate`."""
    out = tmp_path / "fidelity.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.fidelity",
            "--model",
            str(llamacpp_stack.models_dir / CHAT),
            "--stack-url",
            llamacpp_stack.url,
            "--endpoint",
            CHAT,
            "--label",
            "llamacpp-Q8_0",
            "--max-tokens",
            "12",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (result,) = json.loads(out.read_text())
    assert result["label"] == "llamacpp-Q8_0" and result["prompts"] == 8
    # The tiny model's greedy choices are far apart: Q8_0 gives float32's answers.
    assert result["share_identical"] == 1.0 and result["median_first_difference"] is None
    assert "| llamacpp-Q8_0 | 8 | 100% | - |" in run.stdout
    assert "random weights" in run.stdout


def test_a_checkpoint_the_converter_cannot_read_stops_the_engine_with_the_fix(llamacpp_stack):
    """The same stack restarted on a model whose tokenizer llama.cpp's converter does not know:
    the engine stops (status 0, not restarted) with the reason as its last log line, and a
    prompt's 503 says it."""
    env = {"MODELS": "broken=/models/bpe-only"}
    stack = Stack(
        llamacpp_stack.models_dir,
        profile="llamacpp",
        project=llamacpp_stack.project,
        port=llamacpp_stack.port,
        extra_env=env,
    )
    up = stack.compose("up", "-d", "llamacpp", "gateway", check=False)
    assert up.returncode == 0, up.stdout
    try:
        deadline = time.monotonic() + 300
        while True:
            state = stack.compose("ps", "-a", "--format", "json", "llamacpp", check=False).stdout
            if '"exited"' in state:
                break
            assert time.monotonic() < deadline, stack.logs()
            time.sleep(2)
        assert '"ExitCode":0' in state.replace(" ", ""), state
        last = stack.compose("logs", "--no-color", "llamacpp", check=False).stdout.strip()
        last = last.splitlines()[-1]
        assert "llamacpp engine stopped:" in last
        assert "BPE tokenizer that llama.cpp's converter does not recognize" in last
        assert "published GGUF" in last and "pyfunc profile" in last
        deadline = time.monotonic() + 120
        while True:
            status, body = stack.invoke("broken", {"messages": QUESTION, "max_tokens": 4})
            if status == 503 and "converter" in json.dumps(body, ensure_ascii=False):
                break
            assert time.monotonic() < deadline, (status, body)
            time.sleep(2)
    finally:
        # Back to the module's models for any test after this one.
        llamacpp_stack.compose("up", "-d", "--wait", check=False)
