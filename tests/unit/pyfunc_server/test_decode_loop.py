"""Continuous batching (pyfunc_server/decode_loop.py): requests join a running batch between steps,
and a row whose deadline passed leaves it while the others go on."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from reference import greedy_completion

from pyfunc_server.batcher import DeadlineExceeded, Job


def test_a_request_that_arrives_during_a_long_answer_joins_it_and_is_answered_first(
    generator, reference_model, slow_model, questions, chat, completion, expected_chat
):
    assert generator.continuous  # a Llama: plain DynamicCache layers, merged step by step
    batcher = generator.batcher
    assert batcher.wait_idle(30)
    before, joined = batcher.batch_sizes.copy(), batcher.joined
    with ThreadPoolExecutor(4) as pool:
        long = pool.submit(generator.generate, [chat(questions[3], temperature=0, max_tokens=120)])
        time.sleep(0.5)  # the long answer is being decoded (120 steps of at least 20 ms)
        # A shorter prompt and a longer one than the running row's cache: both sides get padded.
        short = pool.submit(generator.generate, [chat(questions[0], temperature=0, max_tokens=6)])
        longer_prompt = pool.submit(
            generator.generate, [completion("りんご " * 60, temperature=0, max_tokens=4)]
        )
        sampled = pool.submit(
            generator.generate, [chat(questions[4], temperature=0.8, max_tokens=5)]
        )
        (short_answer,) = short.result(timeout=60)
        assert not long.done(), "the short request waited for the long one"
        (long_answer,) = long.result(timeout=120)
        (longer_answer,) = longer_prompt.result(timeout=60)
        assert sampled.result(timeout=60)[0].completion_tokens == 5
    assert batcher.batch_sizes - before == {1: 1}  # one batch; the others joined it
    assert batcher.joined - joined == 3
    assert short_answer.text == expected_chat(reference_model, questions[0], 6)
    assert long_answer.text == expected_chat(reference_model, questions[3], 120)
    assert longer_answer.text == greedy_completion(*reference_model, "りんご " * 60, 4)


def test_a_timed_out_request_stops_generating_and_its_batch_goes_on(
    generator, reference_model, slow_model, questions, chat, expected_chat
):
    # 100 steps of at least 20 ms: the patient row needs 2 s or more, the late one has 0.2 s.
    rows = [
        generator._settings(chat(q, temperature=0, max_tokens=100), generator.encode(chat(q)))
        for q in questions[:2]
    ]
    batcher = generator.batcher
    assert batcher.wait_idle(30)
    batcher.window_s, batcher.max_batch_size, batcher.expected = 30.0, 2, 2
    try:
        late = Job(rows[0], width=len(rows[0].ids), budget=100, deadline=time.monotonic() + 0.2)
        patient = Job(rows[1], width=len(rows[1].ids), budget=100)
        batcher.submit(late)
        batcher.submit(patient)
        with pytest.raises(DeadlineExceeded) as stopped:
            late.future.result(timeout=60)
        assert not patient.future.done()  # the other row is still generating
        answer = patient.future.result(timeout=60)
    finally:
        batcher.window_s, batcher.max_batch_size = 0.0, 16
    tokens_before_stop = int(str(stopped.value).split()[2])  # "stopped after N new tokens"
    assert tokens_before_stop < 50
    assert answer.text == expected_chat(reference_model, questions[1], 100)
    assert answer.completion_tokens == 100


def test_supports_step_loop_only_for_plain_dynamic_caches(generator):
    from transformers import MistralConfig, MistralForCausalLM

    from pyfunc_server.decode_loop import supports_step_loop

    assert supports_step_loop(generator.model)
    sliding = MistralForCausalLM(
        MistralConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            sliding_window=8,
        )
    )
    assert not supports_step_loop(sliding)
