"""PREPACK_WEIGHTS: linear layers prepacked for oneDNN keep every answer of the step loop exact.

The tiny model is faster dense, so `auto` leaves it alone; these tests force `on` to run the
prepacked layers through the same continuous batching paths (alone, a batch, a prompt joining a
running batch) and compare with plain `model.generate`.
"""

from __future__ import annotations

import threading
import time

import pytest
from reference import greedy_chat

from pyfunc_server.requests import CHAT, GenerationRequest, SamplingParams

PROMPTS = [
    "りんごは何色ですか？",
    "東京は日本の首都です。富士山はどこにありますか？",
    "こんにちは",
    "The quick brown fox jumps over the lazy dog. " * 3,
]


def chat(text: str, max_tokens: int) -> GenerationRequest:
    return GenerationRequest(
        CHAT,
        messages=({"role": "user", "content": text},),
        sampling=SamplingParams.from_params({"temperature": 0, "max_tokens": max_tokens}),
    )


def make_generator(model_dir, prepack: str):
    from pyfunc_server.generator import HFGenerator
    from pyfunc_server.settings import ModelServerSettings

    return HFGenerator(
        ModelServerSettings(
            model_id=str(model_dir), device="cpu", batch_window_ms=0, prepack_weights=prepack
        )
    )


@pytest.fixture(scope="module")
def prepacked(tiny_model_dir):
    gen = make_generator(tiny_model_dir, "on")
    yield gen
    gen.batcher.close(timeout=10)


def linear_kinds(model) -> dict[str, int]:
    from torch.utils.mkldnn import MkldnnLinear

    kinds = {"dense": 0, "prepacked": 0}
    for module in model.modules():
        if type(module).__name__ == "Linear":
            kinds["dense"] += 1
        elif isinstance(module, MkldnnLinear):
            kinds["prepacked"] += 1
    return kinds


def test_torch_still_offers_onednn_prepacked_linear_layers():
    """Canary: prepacked_weights.py depends on torch.utils.mkldnn.MkldnnLinear; if a torch upgrade
    drops it, PREPACK_WEIGHTS quietly means dense layers, and this says so."""
    import torch
    from torch.utils.mkldnn import MkldnnLinear

    assert torch.backends.mkldnn.is_available()
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(3, 2, 8)
    with torch.no_grad():
        assert torch.allclose(MkldnnLinear(layer, torch.float32)(x), layer(x), atol=1e-6)


def test_on_prepacks_every_linear_layer_and_keeps_the_memory_figure(prepacked, tiny_model_dir):
    dense = make_generator(tiny_model_dir, "off")
    try:
        assert linear_kinds(prepacked.model) == {
            "dense": 0,
            "prepacked": 15,
        }  # 2 layers x 7 + lm_head
        assert linear_kinds(dense.model) == {"dense": 15, "prepacked": 0}
        assert prepacked.memory_bytes() == dense.memory_bytes()  # the model pool's budget
    finally:
        dense.batcher.close(timeout=10)


def test_auto_keeps_the_tiny_model_dense_and_says_why(tiny_model_dir, caplog):
    caplog.set_level("INFO", logger="pyfunc_server.loading")
    gen = make_generator(tiny_model_dir, "auto")
    try:
        assert linear_kinds(gen.model)["prepacked"] == 0
        assert any(
            "dense linear layers (oneDNN prepacked:" in r.getMessage()
            and "PREPACK_WEIGHTS" in r.getMessage()
            for r in caplog.records
        )
    finally:
        gen.batcher.close(timeout=10)


def test_prepacked_answers_equal_generate_alone_and_in_a_batch(prepacked, reference_model):
    alone = [prepacked.generate([chat(p, 10)])[0].text for p in PROMPTS]
    batcher = prepacked.batcher
    assert batcher.wait_idle(30)  # the last batch has ended (it would reset `expected` to 1)
    batcher.window_s, batcher.max_batch_size, batcher.expected = 30.0, len(PROMPTS), len(PROMPTS)
    results: dict[int, str] = {}
    try:
        threads = [
            threading.Thread(
                target=lambda i=i, p=p: results.__setitem__(
                    i, prepacked.generate([chat(p, 10)])[0].text
                )
            )
            for i, p in enumerate(PROMPTS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        batcher.window_s, batcher.max_batch_size = 0.0, 16
    assert batcher.batch_sizes[len(PROMPTS)] >= 1, "the prompts were not batched together"
    for i, p in enumerate(PROMPTS):
        expected = greedy_chat(*reference_model, [{"role": "user", "content": p}], 10)
        assert alone[i] == expected
        assert results[i] == expected


def test_a_prompt_that_joins_a_running_prepacked_batch_is_exact(prepacked, reference_model):
    long_answer: list[str] = []
    runner = threading.Thread(
        target=lambda: long_answer.append(prepacked.generate([chat(PROMPTS[3], 200)])[0].text)
    )
    joined_before = prepacked.batcher.joined
    runner.start()
    deadline = time.monotonic() + 30
    while not prepacked.batcher._running and time.monotonic() < deadline:
        time.sleep(0.001)
    short = prepacked.generate([chat(PROMPTS[1], 8)])[0].text
    runner.join(120)
    assert prepacked.batcher.joined > joined_before, (
        "the short prompt did not join the running batch"
    )
    assert short == greedy_chat(*reference_model, [{"role": "user", "content": PROMPTS[1]}], 8)
    assert long_answer == [
        greedy_chat(*reference_model, [{"role": "user", "content": PROMPTS[3]}], 200)
    ]


def small_llama(**config):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            **config,
        )
    ).eval()


def test_tied_embeddings_stay_dense_and_tied():
    import torch

    from pyfunc_server.prepacked_weights import prepack_linear_layers

    model = small_llama(tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.inference_mode():
        before = model(ids).logits
    said = prepack_linear_layers(model, "on")
    assert said.startswith("7 linear layers prepacked")  # q, k, v, o, gate, up, down: not lm_head
    assert type(model.lm_head) is torch.nn.Linear
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with torch.inference_mode():
        assert torch.allclose(model(ids).logits, before, atol=1e-5)


def test_off_and_non_float32_models_stay_dense():
    import torch

    from pyfunc_server.prepacked_weights import prepack_linear_layers

    assert (
        prepack_linear_layers(small_llama(), "off") == "dense linear layers (PREPACK_WEIGHTS=off)"
    )
    said = prepack_linear_layers(small_llama().to(torch.bfloat16), "on")
    assert said.startswith("dense linear layers (cpu, torch.bfloat16")
