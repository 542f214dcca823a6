"""Concurrent requests share one batch of the model: answers stay exact, settings stay per request
(pyfunc_server/generator.py). conftest.py says how the tests batch deterministically."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from reference import greedy_completion


def test_greedy_answers_are_the_same_alone_and_in_a_batch_of_8(
    generator, reference_model, questions, chat, expected_chat, run_together
):
    alone = [generator.generate([chat(q, temperature=0, max_tokens=12)])[0] for q in questions]
    outcomes, batches = run_together(
        generator, [[chat(q, temperature=0, max_tokens=12)] for q in questions]
    )
    assert batches == {8: 1}, "the 8 prompts were not generated as one batch"
    for q, single, (batched,) in zip(questions, alone, outcomes, strict=True):
        expected = expected_chat(reference_model, q, 12)
        assert single.text == expected
        assert batched == single  # text, token counts and finish reason
    # The prompts really had different lengths, so the batch was left-padded.
    assert len({c[0].prompt_tokens for c in outcomes}) > 4


def test_completions_and_multi_prompt_requests_batch_too(
    generator, reference_model, questions, chat, completion, expected_chat, run_together
):
    prompts = ["日本の首都は", "りんごは赤い色をしています。バナナは"]
    outcomes, batches = run_together(
        generator,
        [
            [completion(p, temperature=0, max_tokens=9) for p in prompts],
            [chat(questions[1], temperature=0, max_tokens=9)],
        ],
    )
    assert batches == {3: 1}
    assert [c.text for c in outcomes[0]] == [
        greedy_completion(*reference_model, p, 9) for p in prompts
    ]
    assert outcomes[1][0].text == expected_chat(reference_model, questions[1], 9)


def test_max_tokens_and_stop_are_per_request_inside_a_batch(
    generator, reference_model, questions, chat, expected_chat, run_together
):
    full = expected_chat(reference_model, questions[1], 16)
    stop = full[5:7]
    assert stop.strip() and full.index(stop) == 5, full
    calls = [
        [chat(questions[0], temperature=0, max_tokens=1)],
        [chat(questions[2], temperature=0, max_tokens=5)],
        [chat(questions[3], temperature=0, max_tokens=23)],
        [chat(questions[1], temperature=0, max_tokens=16, stop=[stop])],
        [chat(questions[1], temperature=0, max_tokens=16, stop=["not in the answer"])],
    ]
    outcomes, batches = run_together(generator, calls)
    assert batches == {5: 1}
    (one,), (five,), (many,), (stopped,), (not_stopped,) = outcomes
    for c, q, n in [(one, questions[0], 1), (five, questions[2], 5), (many, questions[3], 23)]:
        assert c.text == expected_chat(reference_model, q, n)
        assert (c.completion_tokens, c.finish_reason) == (n, "length")
    assert (stopped.text, stopped.finish_reason) == (full[:5], "stop")
    # It stopped early: fewer tokens than its max_tokens were generated.
    assert stopped.completion_tokens < 16
    assert (not_stopped.text, not_stopped.finish_reason) == (full, "length")


def test_sampled_requests_in_the_same_batch_leave_greedy_answers_alone(
    generator, reference_model, questions, chat, completion, expected_chat, run_together
):
    greedy = [[chat(q, temperature=0, max_tokens=10)] for q in questions[:3]]
    sampled = [
        [chat(questions[3], temperature=1.5, top_p=0.9, max_tokens=6)],
        [chat(questions[4], temperature=0.7, max_tokens=14)],
        [completion("日本の", temperature=2.0, max_tokens=3)],
    ]
    outcomes, batches = run_together(generator, greedy + sampled)
    assert batches == {6: 1}
    for q, (c,) in zip(questions, outcomes[:3], strict=False):
        assert c.text == expected_chat(reference_model, q, 10)
    assert [o[0].completion_tokens for o in outcomes[3:]] == [6, 14, 3]


def test_a_bad_request_fails_alone(
    generator, reference_model, questions, chat, completion, expected_chat
):
    from mlflow.exceptions import MlflowException

    calls = [
        [chat(questions[0], temperature=0, max_tokens=6)],
        [completion("りんご " * 600, max_tokens=4)],  # longer than the 512-token context
        [chat(questions[1], temperature=0, max_tokens=6)],
    ]
    batcher = generator.batcher
    assert batcher.wait_idle(30)
    batcher.window_s, batcher.max_batch_size, batcher.expected = 30.0, 2, 2  # the two good prompts
    before = batcher.batch_sizes.copy()
    try:
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(generator.generate, c) for c in calls]
            with pytest.raises(MlflowException, match="context is 512 tokens"):
                futures[1].result(timeout=120)
            good = [futures[0].result(timeout=120), futures[2].result(timeout=120)]
    finally:
        batcher.window_s, batcher.max_batch_size = 0.0, 16
    assert batcher.batch_sizes - before == {2: 1}
    assert good[0][0].text == expected_chat(reference_model, questions[0], 6)
    assert good[1][0].text == expected_chat(reference_model, questions[1], 6)


def test_a_batch_that_fails_is_retried_one_by_one(
    generator, reference_model, monkeypatch, questions, chat, expected_chat, run_together
):
    poison = "毒"
    poison_ids = generator.encode(chat(poison))
    real_forward = generator.model.forward

    def fragile_forward(input_ids=None, **kwargs):
        # The prompt's forward pass (its prefill) fails whenever the poison prompt is in it
        # (prompts prefilled together may be packed into one row).
        n = len(poison_ids)
        for row in input_ids.tolist():
            if any(row[i : i + n] == poison_ids for i in range(len(row) - n + 1)):
                raise RuntimeError("this prompt breaks the model")
        return real_forward(input_ids=input_ids, **kwargs)

    monkeypatch.setattr(generator.model, "forward", fragile_forward)
    outcomes, batches = run_together(
        generator,
        [
            [chat(questions[0], temperature=0, max_tokens=7)],
            [chat(poison, temperature=0, max_tokens=7)],
            [chat(questions[2], temperature=0, max_tokens=7)],
        ],
    )
    assert batches == {3: 1, 1: 3}  # the batch, then each prompt alone
    assert isinstance(outcomes[1], RuntimeError)
    assert outcomes[0][0].text == expected_chat(reference_model, questions[0], 7)
    assert outcomes[2][0].text == expected_chat(reference_model, questions[2], 7)


def test_generate_stops_at_the_request_timeout(generator, slow_model, questions, chat):
    from mlflow.exceptions import MlflowException

    configured, generator.request_timeout_s = generator.request_timeout_s, 0.3
    try:
        with pytest.raises(MlflowException, match="GENERATION_TIMEOUT_SECONDS") as e:
            generator.generate([chat(questions[0], temperature=0, max_tokens=400)])
    finally:
        generator.request_timeout_s = configured
    assert e.value.error_code == "DEADLINE_EXCEEDED"
    assert len(slow_model) < 200  # far fewer steps than the 400 tokens asked for
