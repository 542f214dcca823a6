"""Models the step loop cannot run get one `model.generate` per batch
(pyfunc_server/generate_fallback.py)."""

from __future__ import annotations


def test_models_whose_cache_cannot_be_merged_run_one_generate_per_batch(
    generator, reference_model, monkeypatch, questions, chat, expected_chat, run_together
):
    """The fallback for sliding-window, linear-attention or quantized caches (supports_step_loop
    is False): per-row settings and exact greedy answers, without joining."""
    monkeypatch.setattr(generator, "continuous", False)
    outcomes, batches = run_together(
        generator,
        [
            [chat(questions[0], temperature=0, max_tokens=5)],
            [chat(questions[2], temperature=0, max_tokens=9)],
            [chat(questions[4], temperature=0.9, max_tokens=4)],
        ],
    )
    assert batches == {3: 1}
    assert outcomes[0][0].text == expected_chat(reference_model, questions[0], 5)
    assert outcomes[1][0].text == expected_chat(reference_model, questions[2], 9)
    assert outcomes[2][0].completion_tokens == 4
