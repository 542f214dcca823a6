"""Fixtures of the model server's tests: a generator on the tiny model (one per test module), a
slow model, and the prompts and helpers the generator's tests send batches with.

The tests batch deterministically: the batching window is made long (seconds) and the batch size
(and the batch size the batcher expects) equal to the number of prompts sent at once, so a batch
starts as soon as all have arrived.
Whether they were batched is read from the batcher's counter of batch sizes, not from timings.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from reference import greedy_chat

from pyfunc_server.requests import CHAT, COMPLETIONS, GenerationRequest, SamplingParams

QUESTIONS = [
    "りんご",
    "りんごは何色ですか？",
    "東京は日本の首都です。富士山は高い山です。富士山はどこにありますか？",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "こんにちは",
    "空は青く、海も青い。" * 4,
    "MLflow tracks experiments; the gateway routes prompts to models. What does MLflow do?",
    "絵文字😀",
]


@pytest.fixture(scope="session")
def questions() -> list[str]:
    """Prompts of different lengths and scripts."""
    return QUESTIONS


@pytest.fixture(scope="session")
def chat():
    """`chat(text, **params)`: a chat request of one user message."""

    def chat(text: str, **params) -> GenerationRequest:
        return GenerationRequest(
            CHAT,
            messages=({"role": "user", "content": text},),
            sampling=SamplingParams.from_params(params),
        )

    return chat


@pytest.fixture(scope="session")
def completion():
    """`completion(prompt, **params)`: a completions request."""

    def completion(prompt: str, **params) -> GenerationRequest:
        return GenerationRequest(
            COMPLETIONS, prompt=prompt, sampling=SamplingParams.from_params(params)
        )

    return completion


@pytest.fixture(scope="session")
def expected_chat():
    """`expected_chat(reference_model, text, max_tokens)`: plain transformers' greedy answer."""

    def expected_chat(reference_model, text: str, max_tokens: int) -> str:
        return greedy_chat(*reference_model, [{"role": "user", "content": text}], max_tokens)

    return expected_chat


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    from pyfunc_server.generator import HFGenerator
    from pyfunc_server.settings import ModelServerSettings

    gen = HFGenerator(
        ModelServerSettings(model_id=str(tiny_model_dir), device="cpu", batch_window_ms=0)
    )
    yield gen
    gen.batcher.close(timeout=10)


@pytest.fixture(scope="session")
def run_together():
    """`run_together(generator, calls)`: each call's `generate` at once, as one batch; returns
    the outcomes (answers or exceptions) and the batch sizes that ran meanwhile."""

    def run_together(generator, calls: list[list[GenerationRequest]]):
        """Call `generate` from one thread per entry, all at once; one batch holds all prompts."""
        prompts = sum(len(c) for c in calls)
        batcher = generator.batcher
        assert batcher.wait_idle(30)
        batcher.window_s, batcher.max_batch_size, batcher.expected = 30.0, prompts, prompts
        before = batcher.batch_sizes.copy()
        try:
            with ThreadPoolExecutor(len(calls)) as pool:
                futures = [pool.submit(generator.generate, c) for c in calls]
                outcomes = []
                for f in futures:
                    try:
                        outcomes.append(f.result(timeout=120))
                    except Exception as e:  # noqa: BLE001 - the test looks at which calls failed
                        outcomes.append(e)
        finally:
            batcher.window_s, batcher.max_batch_size = 0.0, 16
        return outcomes, batcher.batch_sizes - before

    return run_together


@pytest.fixture
def slow_model(generator, monkeypatch):
    """Each decoding step takes at least 20 ms, and the steps are counted."""
    steps = []
    real_forward = generator.model.forward

    def slow_forward(*args, **kwargs):
        steps.append(1)
        time.sleep(0.02)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(generator.model, "forward", slow_forward)
    return steps
