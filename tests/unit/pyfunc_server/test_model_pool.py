"""Several models in one model server: each answers as plain transformers does, and a memory budget
that fits one of them loads and unloads them on demand (MLflow's real scoring server, no Docker)."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from constants import QUESTION, SECOND_MODEL_NAME, SERVED_MODEL_NAME
from fastapi.testclient import TestClient
from reference import greedy_chat, greedy_completion

CHAT = [{"role": "user", "content": QUESTION}]


def settings_for(models: str, **env):
    from pyfunc_server.settings import ModelServerSettings

    return ModelServerSettings.from_env({"MODELS": models, "DEVICE": "cpu", **env})


def serve(tmp_path, settings):
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    from pyfunc_server.start import save

    save(tmp_path / "model", settings)
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    return TestClient(scoring_server.init(loaded)), loaded.unwrap_python_model().pool


def ask(client, model, **body):
    r = client.post("/invocations", json={"model": model, "temperature": 0, **body})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def two_models(tiny_model_dir, tiny_model_b_dir, tmp_path_factory):
    settings = settings_for(f"{tiny_model_dir},{SECOND_MODEL_NAME}={tiny_model_b_dir}")
    client, pool = serve(tmp_path_factory.mktemp("two"), settings)
    yield client, pool


def test_both_models_answer_chat_and_completions_as_transformers_does(
    two_models, reference_model, reference_model_b
):
    client, pool = two_models
    assert list(pool.slots) == [SERVED_MODEL_NAME, SECOND_MODEL_NAME]
    for name, reference in (
        (SERVED_MODEL_NAME, reference_model),
        (SECOND_MODEL_NAME, reference_model_b),
    ):
        chat = ask(client, name, messages=CHAT, max_tokens=10)
        assert chat["choices"][0]["message"]["content"] == greedy_chat(*reference, CHAT, 10)
        assert chat["model"] == name and chat["usage"]["completion_tokens"] == 10
        done = ask(client, name, prompt="日本の首都は", max_tokens=6)
        assert done["choices"][0]["text"] == greedy_completion(*reference, "日本の首都は", 6)
    # Different tokenizers and chat templates: the same prompt is not the same tokens.
    a = ask(client, SERVED_MODEL_NAME, messages=CHAT, max_tokens=1)["usage"]["prompt_tokens"]
    b = ask(client, SECOND_MODEL_NAME, messages=CHAT, max_tokens=1)["usage"]["prompt_tokens"]
    assert a != b
    # Both fit the default budget: both were loaded at start and stay.
    assert pool.loads == 2 and pool.unloads == 0


def test_no_model_named_is_the_first_and_an_unknown_one_is_a_404_naming_the_models(
    two_models, reference_model
):
    client, _ = two_models
    r = client.post("/invocations", json={"messages": CHAT, "temperature": 0, "max_tokens": 5})
    assert r.json()["choices"][0]["message"]["content"] == greedy_chat(*reference_model, CHAT, 5)
    r = client.post("/invocations", json={"model": "nope", "messages": CHAT})
    assert r.status_code == 404
    assert "nope" in r.text and SERVED_MODEL_NAME in r.text and SECOND_MODEL_NAME in r.text


def test_a_budget_that_fits_one_model_loads_them_in_turn(
    tiny_model_dir, tiny_model_b_dir, tmp_path, reference_model, reference_model_b, caplog
):
    from pyfunc_server.model_pool import estimate_bytes

    one = max(
        estimate_bytes(str(tiny_model_dir), False), estimate_bytes(str(tiny_model_b_dir), False)
    )
    settings = settings_for(
        f"{tiny_model_dir},{SECOND_MODEL_NAME}={tiny_model_b_dir}",
        MODEL_MEMORY_BUDGET_GB=str(1.5 * one / 1e9),
    )
    with caplog.at_level(logging.INFO, logger="pyfunc_server.model_pool"):
        client, pool = serve(tmp_path, settings)
        assert pool.loads == 1  # only the first fits at start
        for name, reference in [
            (SECOND_MODEL_NAME, reference_model_b),
            (SERVED_MODEL_NAME, reference_model),
        ] * 2:
            chat = ask(client, name, messages=CHAT, max_tokens=8)
            assert chat["choices"][0]["message"]["content"] == greedy_chat(*reference, CHAT, 8)
            assert sum(s.state == "ready" for s in pool.slots.values()) == 1
    assert (pool.loads, pool.unloads) == (5, 4)
    assert (
        "Unloaded model tiny-ja" in caplog.text
        and f"to make room for {SECOND_MODEL_NAME}" in caplog.text
    )
    assert f"Loaded model {SECOND_MODEL_NAME} in" in caplog.text and "GB budget" in caplog.text


def test_a_prompt_to_a_loading_model_waits_for_it_or_gets_a_503_saying_so(
    tiny_model_dir, tiny_model_b_dir
):
    from mlflow.exceptions import MlflowException

    from pyfunc_server.generator import HFGenerator
    from pyfunc_server.model_pool import ModelPool

    loading = threading.Event()

    def slow_load(settings, model_id):  # a large model takes a while to load
        loading.set()
        time.sleep(1.5)
        return HFGenerator(settings, model_id)

    pool = ModelPool(
        settings_for(f"{tiny_model_dir},{SECOND_MODEL_NAME}={tiny_model_b_dir}"), slow_load
    )
    with pytest.raises(MlflowException, match=f"model '{SECOND_MODEL_NAME}' .* is loading") as e:
        with pool.use(SECOND_MODEL_NAME, deadline=time.monotonic() + 0.3):
            pass
    assert e.value.get_http_status_code() == 503 and loading.is_set()
    # The load went on; a request with time to wait gets the model.
    with pool.use(SECOND_MODEL_NAME, deadline=time.monotonic() + 30) as generator:
        assert generator.model_id == str(tiny_model_b_dir)
    assert pool.loads == 1


def test_a_model_that_fails_to_load_is_a_503_with_the_reason_and_is_tried_again(
    tiny_model_dir, tmp_path
):
    from mlflow.exceptions import MlflowException

    from pyfunc_server.generator import HFGenerator
    from pyfunc_server.model_pool import ModelPool

    empty = tmp_path / "empty"
    empty.mkdir()
    pool = ModelPool(settings_for(f"{tiny_model_dir},broken={empty}"), HFGenerator)
    for _ in range(2):  # each request starts a new attempt
        with pytest.raises(MlflowException, match="'broken' .* failed to load") as e:
            with pool.use("broken", deadline=time.monotonic() + 30):
                pass
        assert e.value.get_http_status_code() == 503
        assert (
            "docker compose logs pyfunc" in e.value.message and "Traceback" not in e.value.message
        )
        assert str(empty) not in e.value.message.split("failed to load")[1]  # no exception text
    assert pool.slots["broken"].attempt == 2
