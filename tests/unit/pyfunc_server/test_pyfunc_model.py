"""The pyfunc model, saved and served by MLflow's own scoring server (in process, no Docker)."""

from __future__ import annotations

import pytest
from constants import QUESTION
from fastapi.testclient import TestClient
from reference import greedy_chat, greedy_completion


@pytest.fixture(scope="module")
def scoring(pyfunc_dir):
    """MLflow's real scoring server app (what `mlflow models serve` runs) on our saved model."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    return TestClient(scoring_server.init(mlflow.pyfunc.load_model(str(pyfunc_dir))))


def test_builtin_provider_shape_gets_a_list_of_strings_equal_to_greedy_generate(
    scoring, reference_model
):
    # Exactly what MLflow's built-in `mlflow-model-serving` provider sends for a chat request.
    r = scoring.post(
        "/invocations",
        json={"inputs": [QUESTION], "params": {"temperature": 0.0, "max_tokens": 12}},
    )
    assert r.status_code == 200, r.text
    expected = greedy_chat(*reference_model, [{"role": "user", "content": QUESTION}], 12)
    assert r.json() == {"predictions": [expected]}


def test_chat_answer_equals_greedy_generate_and_reports_usage(scoring, reference_model):
    messages = [
        {"role": "system", "content": "あなたは親切なアシスタントです。"},
        {"role": "user", "content": "こんにちは"},
        {"role": "assistant", "content": "こんにちは！"},
        {"role": "user", "content": QUESTION},
    ]
    r = scoring.post(
        "/invocations", json={"messages": messages, "temperature": 0, "max_tokens": 10}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    tokenizer, _ = reference_model
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": greedy_chat(*reference_model, messages, 10),
    }
    prompt_ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    assert body["usage"] == {
        "prompt_tokens": len(prompt_ids),
        "completion_tokens": 10,
        "total_tokens": len(prompt_ids) + 10,
    }
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["model"] == "tiny-ja"


def test_system_prompt_changes_the_answer(scoring):
    def ask(messages):
        r = scoring.post(
            "/invocations", json={"messages": messages, "temperature": 0, "max_tokens": 8}
        )
        return r.json()["choices"][0]["message"]["content"]

    user = {"role": "user", "content": QUESTION}
    assert ask([{"role": "system", "content": "英語で答えて"}, user]) != ask([user])


def test_completions_use_the_raw_prompt_without_chat_template(scoring, reference_model):
    prompt = "日本の首都は"
    r = scoring.post("/invocations", json={"prompt": prompt, "temperature": 0, "max_tokens": 9})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == greedy_completion(*reference_model, prompt, 9)
    assert body["usage"]["completion_tokens"] == 9


def test_stop_string_cuts_the_answer(scoring, reference_model):
    full = greedy_chat(*reference_model, [{"role": "user", "content": QUESTION}], 16)
    stop = full[5:7]  # a piece from the middle of the greedy answer
    assert stop.strip(), full
    r = scoring.post(
        "/invocations",
        json={
            "messages": [{"role": "user", "content": QUESTION}],
            "temperature": 0,
            "max_tokens": 16,
            "stop": [stop],
        },
    )
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == full[: full.index(stop)]
    assert choice["finish_reason"] == "stop"


def test_sampling_with_temperature_runs_and_respects_max_tokens(scoring):
    r = scoring.post(
        "/invocations",
        json={
            "messages": [{"role": "user", "content": QUESTION}],
            "temperature": 1.5,
            "top_p": 0.9,
            "max_tokens": 5,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 5


def test_defaults_come_from_generation_config(pyfunc_dir, tiny_model_dir):
    """No max_tokens: the model's generation_config decides (here max_new_tokens=7)."""
    import json

    import mlflow.pyfunc

    gen_path = tiny_model_dir / "generation_config.json"
    original = gen_path.read_text()
    try:
        gen_path.write_text(json.dumps({**json.loads(original), "max_new_tokens": 7}))
        model = mlflow.pyfunc.load_model(str(pyfunc_dir))
        out = model.predict(
            {"messages": [{"role": "user", "content": QUESTION}]}, params={"temperature": 0.0}
        )
        assert out["usage"]["completion_tokens"] == 7
    finally:
        gen_path.write_text(original)


@pytest.mark.parametrize(
    "payload, message",
    [
        (
            {"messages": [{"role": "user", "content": "x"}], "temperature": 5},
            "temperature must be between 0 and 2",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": -5}, "max_tokens"),
        ({"messages": "not a list"}, "messages must be a non-empty list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"inputs": [1, 2]}, "inputs must contain only strings"),
        ({"messages": [{"role": "user", "content": "x"}], "stop": "a"}, "stop"),
    ],
)
def test_bad_input_is_a_400_that_names_the_problem(scoring, payload, message):
    r = scoring.post("/invocations", json=payload)
    assert r.status_code == 400, r.text
    assert message in r.json()["message"]


def test_broken_json_is_a_400(scoring):
    r = scoring.post(
        "/invocations", content=b'{"messages": [', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400


def test_prompt_longer_than_the_context_is_a_400_naming_both_lengths(scoring):
    r = scoring.post("/invocations", json={"prompt": "りんご " * 600, "max_tokens": 4})
    assert r.status_code == 400
    message = r.json()["message"]
    assert "tokens long" in message and "context is 512 tokens" in message


def test_max_tokens_is_capped_to_the_context(scoring):
    prompt = "りんご " * 100
    r = scoring.post("/invocations", json={"prompt": prompt, "temperature": 0, "max_tokens": 10**9})
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] == 512


def test_every_setting_is_recorded_in_the_mlmodel_file_and_used_from_there(
    tiny_model_dir, tmp_path
):
    import mlflow.pyfunc
    from mlflow.models import Model

    from pyfunc_server.settings import ModelServerSettings
    from pyfunc_server.start import save

    settings = ModelServerSettings.from_env(
        {
            "MODEL_ID": str(tiny_model_dir),
            "SERVED_MODEL_NAME": "mine",
            "DEVICE": "cpu",
            "BATCH_WINDOW_MS": "7",
            "MAX_BATCH_SIZE": "3",
            "MAX_BATCH_TOKENS": "999",
            "GENERATION_TIMEOUT_SECONDS": "42",
            "DEFAULT_MAX_NEW_TOKENS": "9",
        }
    )
    save(tmp_path / "model", settings)
    recorded = Model.load(str(tmp_path / "model")).flavors["python_function"]["config"]
    assert recorded == settings.model_dump()
    pool = mlflow.pyfunc.load_model(str(tmp_path / "model")).unwrap_python_model().pool
    generator = pool.slots["mine"].generator
    try:
        assert (
            generator.batcher.window_s,
            generator.batcher.max_batch_size,
            generator.batcher.max_batch_tokens,
        ) == (0.007, 3, 999)
        assert generator.request_timeout_s == 42
    finally:
        generator.batcher.close(timeout=10)


def test_saved_model_declares_generation_params_in_its_signature(pyfunc_dir):
    from mlflow.models import Model

    params = {p.name for p in Model.load(str(pyfunc_dir)).signature.params.params}
    assert params == {"temperature", "max_tokens", "top_p", "stop"}


def test_an_answer_cut_inside_a_character_drops_the_broken_tail(scoring, reference_model):
    """The tiny model's byte-level tokenizer splits Japanese characters into byte tokens, as
    llm-jp's byte fallback does: some max_tokens cuts a character in two."""
    from reference import greedy_chat

    tokenizer, model = reference_model
    import torch

    enc = tokenizer.apply_chat_template(
        CHAT_QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=40)[0][
            enc["input_ids"].shape[1] :
        ]
    cuts = [
        n
        for n in range(1, 41)
        if tokenizer.decode(out[:n], skip_special_tokens=True).endswith("\ufffd")
    ]
    assert cuts, "no cut inside a character: pick another prompt"
    n = cuts[0]
    r = scoring.post(
        "/invocations", json={"messages": CHAT_QUESTION, "temperature": 0, "max_tokens": n}
    )
    body = r.json()
    text = body["choices"][0]["message"]["content"]
    assert not text.endswith("\ufffd") and text == greedy_chat(tokenizer, model, CHAT_QUESTION, n)
    assert body["usage"]["completion_tokens"] == n  # the token count stays true


CHAT_QUESTION = [{"role": "user", "content": "カタカナとひらがなと漢字を使います。"}]
