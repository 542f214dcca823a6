"""Concurrent requests share one `generate`: answers stay exact, settings stay per request.

The tests batch deterministically: the batching window is made long (seconds) and the batch size
(and the batch size the batcher expects) equal to the number of prompts sent at once, so a batch
starts as soon as all have arrived.
Whether they were batched is read from the batcher's counter of batch sizes, not from timings.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from reference import greedy_chat, greedy_completion

from pyfunc_server.batcher import DeadlineExceeded, Job, MicroBatcher
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


def chat(text: str, **params) -> GenerationRequest:
    return GenerationRequest(CHAT, messages=({"role": "user", "content": text},),
                             sampling=SamplingParams.from_params(params))


def completion(prompt: str, **params) -> GenerationRequest:
    return GenerationRequest(COMPLETIONS, prompt=prompt, sampling=SamplingParams.from_params(params))


def expected_chat(reference_model, text: str, max_tokens: int) -> str:
    return greedy_chat(*reference_model, [{"role": "user", "content": text}], max_tokens)


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    from pyfunc_server.generator import HFGenerator
    from pyfunc_server.settings import ModelServerSettings

    gen = HFGenerator(ModelServerSettings(model_id=str(tiny_model_dir), device="cpu", batch_window_ms=0))
    yield gen
    gen.batcher.close(timeout=10)


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


def test_greedy_answers_are_the_same_alone_and_in_a_batch_of_8(generator, reference_model):
    alone = [generator.generate([chat(q, temperature=0, max_tokens=12)])[0] for q in QUESTIONS]
    outcomes, batches = run_together(
        generator, [[chat(q, temperature=0, max_tokens=12)] for q in QUESTIONS]
    )
    assert batches == {8: 1}, "the 8 prompts were not generated as one batch"
    for q, single, (batched,) in zip(QUESTIONS, alone, outcomes):
        expected = expected_chat(reference_model, q, 12)
        assert single.text == expected
        assert batched == single  # text, token counts and finish reason
    # The prompts really had different lengths, so the batch was left-padded.
    assert len({c[0].prompt_tokens for c in outcomes}) > 4


def test_completions_and_multi_prompt_requests_batch_too(generator, reference_model):
    prompts = ["日本の首都は", "りんごは赤い色をしています。バナナは"]
    outcomes, batches = run_together(
        generator,
        [[completion(p, temperature=0, max_tokens=9) for p in prompts], [chat(QUESTIONS[1], temperature=0, max_tokens=9)]],
    )
    assert batches == {3: 1}
    assert [c.text for c in outcomes[0]] == [greedy_completion(*reference_model, p, 9) for p in prompts]
    assert outcomes[1][0].text == expected_chat(reference_model, QUESTIONS[1], 9)


def test_max_tokens_and_stop_are_per_request_inside_a_batch(generator, reference_model):
    full = expected_chat(reference_model, QUESTIONS[1], 16)
    stop = full[5:7]
    assert stop.strip() and full.index(stop) == 5, full
    calls = [
        [chat(QUESTIONS[0], temperature=0, max_tokens=1)],
        [chat(QUESTIONS[2], temperature=0, max_tokens=5)],
        [chat(QUESTIONS[3], temperature=0, max_tokens=23)],
        [chat(QUESTIONS[1], temperature=0, max_tokens=16, stop=[stop])],
        [chat(QUESTIONS[1], temperature=0, max_tokens=16, stop=["not in the answer"])],
    ]
    outcomes, batches = run_together(generator, calls)
    assert batches == {5: 1}
    (one,), (five,), (many,), (stopped,), (not_stopped,) = outcomes
    for c, q, n in [(one, QUESTIONS[0], 1), (five, QUESTIONS[2], 5), (many, QUESTIONS[3], 23)]:
        assert c.text == expected_chat(reference_model, q, n)
        assert (c.completion_tokens, c.finish_reason) == (n, "length")
    assert (stopped.text, stopped.finish_reason) == (full[:5], "stop")
    # It stopped early: fewer tokens than its max_tokens were generated.
    assert stopped.completion_tokens < 16
    assert (not_stopped.text, not_stopped.finish_reason) == (full, "length")


def test_sampled_requests_in_the_same_batch_leave_greedy_answers_alone(generator, reference_model):
    greedy = [[chat(q, temperature=0, max_tokens=10)] for q in QUESTIONS[:3]]
    sampled = [
        [chat(QUESTIONS[3], temperature=1.5, top_p=0.9, max_tokens=6)],
        [chat(QUESTIONS[4], temperature=0.7, max_tokens=14)],
        [completion("日本の", temperature=2.0, max_tokens=3)],
    ]
    outcomes, batches = run_together(generator, greedy + sampled)
    assert batches == {6: 1}
    for q, (c,) in zip(QUESTIONS, outcomes[:3]):
        assert c.text == expected_chat(reference_model, q, 10)
    assert [o[0].completion_tokens for o in outcomes[3:]] == [6, 14, 3]


def test_a_bad_request_fails_alone(generator, reference_model):
    from mlflow.exceptions import MlflowException

    calls = [[chat(QUESTIONS[0], temperature=0, max_tokens=6)],
             [completion("りんご " * 600, max_tokens=4)],  # longer than the 512-token context
             [chat(QUESTIONS[1], temperature=0, max_tokens=6)]]
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
    assert good[0][0].text == expected_chat(reference_model, QUESTIONS[0], 6)
    assert good[1][0].text == expected_chat(reference_model, QUESTIONS[1], 6)


def test_a_batch_that_fails_is_retried_one_by_one(generator, reference_model, monkeypatch):
    poison = "毒"
    poison_ids = generator.encode(chat(poison))
    real_forward = generator.model.forward

    def fragile_forward(input_ids=None, **kwargs):
        # The prompt's forward pass (its prefill) fails whenever the poison prompt is in it
        # (prompts prefilled together may be packed into one row).
        n = len(poison_ids)
        for row in input_ids.tolist():
            if any(row[i:i + n] == poison_ids for i in range(len(row) - n + 1)):
                raise RuntimeError("this prompt breaks the model")
        return real_forward(input_ids=input_ids, **kwargs)

    monkeypatch.setattr(generator.model, "forward", fragile_forward)
    outcomes, batches = run_together(
        generator,
        [[chat(QUESTIONS[0], temperature=0, max_tokens=7)], [chat(poison, temperature=0, max_tokens=7)],
         [chat(QUESTIONS[2], temperature=0, max_tokens=7)]],
    )
    assert batches == {3: 1, 1: 3}  # the batch, then each prompt alone
    assert isinstance(outcomes[1], RuntimeError)
    assert outcomes[0][0].text == expected_chat(reference_model, QUESTIONS[0], 7)
    assert outcomes[2][0].text == expected_chat(reference_model, QUESTIONS[2], 7)


def test_per_row_sampling_keeps_greedy_rows_on_their_argmax():
    import torch

    from pyfunc_server.generator import RowSettings, _PerRowSampling

    rows = [RowSettings((1,), 4, greedy=True),
            RowSettings((1,), 4, greedy=False, temperature=0.5, top_k=2),
            RowSettings((1,), 4, greedy=False, temperature=1.0, top_p=0.5),
            RowSettings((1,), 4, greedy=False, temperature=2.0)]
    scores = torch.tensor([[1.0, 3.0, 2.0, 0.0]] * 4)
    out = _PerRowSampling(rows, "cpu")(None, scores)
    inf = float("inf")
    assert out[0].tolist() == [-inf, 0.0, -inf, -inf]  # greedy: only the argmax survives
    assert out[1].tolist() == [-inf, 6.0, 4.0, -inf]  # / 0.5, then the top 2
    assert out[2].tolist() == [-inf, 3.0, -inf, -inf]  # top_p 0.5: the top token holds 66 %
    assert out[3].tolist() == [0.5, 1.5, 1.0, 0.0]  # / 2, nothing cut


# -- deadlines: a timed-out request stops generating ------------------------------------------
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


def test_a_timed_out_request_stops_generating_and_its_batch_goes_on(generator, reference_model, slow_model):
    # 100 steps of at least 20 ms: the patient row needs 2 s or more, the late one has 0.2 s.
    rows = [generator._settings(chat(q, temperature=0, max_tokens=100), generator.encode(chat(q)))
            for q in QUESTIONS[:2]]
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
    assert answer.text == expected_chat(reference_model, QUESTIONS[1], 100)
    assert answer.completion_tokens == 100


def test_generate_stops_at_the_request_timeout(generator, slow_model):
    from mlflow.exceptions import MlflowException

    configured, generator.request_timeout_s = generator.request_timeout_s, 0.3
    try:
        with pytest.raises(MlflowException, match="GENERATION_TIMEOUT_SECONDS") as e:
            generator.generate([chat(QUESTIONS[0], temperature=0, max_tokens=400)])
    finally:
        generator.request_timeout_s = configured
    assert e.value.error_code == "DEADLINE_EXCEEDED"
    assert len(slow_model) < 200  # far fewer steps than the 400 tokens asked for


def test_a_request_that_timed_out_in_the_queue_never_runs():
    ran = []
    batcher = MicroBatcher(ran.append, window_s=0)
    try:
        job = Job("late", deadline=time.monotonic() - 1)
        with pytest.raises(DeadlineExceeded):
            batcher.submit(job).result(timeout=10)
    finally:
        batcher.close(timeout=10)
    assert ran == []


# -- the batcher on its own -------------------------------------------------------------------
def test_batcher_respects_max_batch_size_and_token_budget():
    sizes = []
    release = threading.Event()

    def run(jobs):
        release.wait(10)
        sizes.append([j.payload for j in jobs])
        for j in jobs:
            j.future.set_result(j.payload)

    batcher = MicroBatcher(run, window_s=30.0, max_batch_size=3, max_batch_tokens=100)
    batcher.expected = 3
    try:
        jobs = [Job(i, width=10, budget=10) for i in range(5)]  # 20 tokens each
        jobs.append(Job(5, width=50, budget=40))  # 90 tokens: too big to share a batch
        jobs.append(Job(6, width=1, budget=1))  # small, but padded to job 5's size with it
        for j in jobs:
            batcher.submit(j)
        release.set()
        assert [j.future.result(timeout=10) for j in jobs] == list(range(7))
    finally:
        batcher.close(timeout=10)
    # 3 (max_batch_size); 2 (with job 5 it would be 3 x 90 tokens); job 5 alone (2 x 90 with 6).
    # Jobs left over from a full batch do not wait for the (here 30 s) window.
    assert sizes == [[0, 1, 2], [3, 4], [5], [6]]
    assert batcher.batch_sizes == {3: 1, 2: 1, 1: 2}


def test_clients_that_come_back_rejoin_the_others_in_one_batch():
    batches = []
    running_b, gate = threading.Event(), threading.Event()

    def run(jobs):
        if jobs[0].payload == "B":
            running_b.set()
            gate.wait(10)  # B's batch runs while C, D and E arrive
        batches.append([j.payload for j in jobs])
        for j in jobs:
            j.future.set_result(j.payload)

    batcher = MicroBatcher(run, window_s=30.0, max_batch_size=8)
    try:
        # One request at a time never waits for the (here 30 s) window.
        assert batcher.submit(Job("A")).result(timeout=10) == "A"
        b = batcher.submit(Job("B"))
        assert running_b.wait(10)
        later = [batcher.submit(Job(x)) for x in "CDE"]
        gate.set()
        assert b.result(timeout=10) == "B"
        # Four requests were in the server while B ran: C, D and E wait for B's client to send
        # its next request, F, instead of taking turns with it.
        f = batcher.submit(Job("F"))
        assert [x.result(timeout=10) for x in [*later, f]] == list("CDEF")
    finally:
        batcher.close(timeout=10)
    assert batches == [["A"], ["B"], ["C", "D", "E", "F"]]


def test_the_scoring_servers_thread_pool_grows_to_hold_a_full_batch():
    """`mlflow models serve` runs predict via asyncio.to_thread: min(32, CPUs + 4) threads by
    default, 6 on a 2-CPU machine. Once a predict has run, 20 must be able to wait at once."""
    import asyncio

    from pyfunc_server.batcher import widen_thread_pool

    assert widen_thread_pool(32) is False  # the main thread belongs to no pool: nothing to do
    together = threading.Barrier(20)

    async def serve():
        assert await asyncio.to_thread(widen_thread_pool, 32)  # what the first predict does
        # Each call returns only once all 20 are running at the same time.
        await asyncio.gather(*(asyncio.to_thread(together.wait, 10) for _ in range(20)))

    asyncio.run(serve())


def test_a_full_queue_refuses_at_once_and_loses_nothing_it_accepted():
    from pyfunc_server.batcher import QueueFull

    release = threading.Event()

    def run_batch(jobs):
        release.wait(10)
        for job in jobs:
            job.future.set_result(job.payload)

    batcher = MicroBatcher(run_batch, window_s=0, max_batch_size=1, max_queued=2)
    running = batcher.submit(Job("running"))
    deadline = time.monotonic() + 5
    while not batcher._running:  # the first job is on the model
        assert time.monotonic() < deadline
        time.sleep(0.01)
    queued = batcher.submit_all([Job("a"), Job("b")])
    started = time.monotonic()
    with pytest.raises(QueueFull, match="2 prompts are already waiting .*MAX_QUEUED_REQUESTS=2"):
        batcher.submit(Job("refused"))
    assert time.monotonic() - started < 0.1 and batcher.refused == 1
    release.set()
    assert [f.result(10) for f in [running, *queued]] == ["running", "a", "b"]
    batcher.close(5)


def test_a_busy_model_server_is_a_429_through_the_gateway_with_retry_after():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from gateway.retry_after import RetryAfterOn429
    from starlette.responses import JSONResponse

    app = FastAPI()
    app.get("/busy")(lambda: JSONResponse({"detail": "the model server is busy"}, status_code=429))
    app.get("/fine")(lambda: {"ok": True})
    client = TestClient(RetryAfterOn429(app))
    assert client.get("/busy").headers["retry-after"] == "1"
    assert "retry-after" not in client.get("/fine").headers


@pytest.mark.parametrize("stop, words", [
    (["x"] * 17, "stop has 17 strings; at most 16"),
    (["y" * 257], "at most 256 characters"),
])
def test_the_stop_list_is_bounded_with_a_400_that_says_so(stop, words):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=words) as e:
        SamplingParams.from_params({"stop": stop})
    assert e.value.get_http_status_code() == 400
    assert SamplingParams.from_params({"stop": ["x"] * 16}).stop == ("x",) * 16


# -- continuous batching: requests join a running batch between steps -------------------------
def test_a_request_that_arrives_during_a_long_answer_joins_it_and_is_answered_first(
        generator, reference_model, slow_model):
    assert generator.continuous  # a Llama: plain DynamicCache layers, merged step by step
    batcher = generator.batcher
    assert batcher.wait_idle(30)
    before, joined = batcher.batch_sizes.copy(), batcher.joined
    with ThreadPoolExecutor(4) as pool:
        long = pool.submit(generator.generate, [chat(QUESTIONS[3], temperature=0, max_tokens=120)])
        time.sleep(0.5)  # the long answer is being decoded (120 steps of at least 20 ms)
        # A shorter prompt and a longer one than the running row's cache: both sides get padded.
        short = pool.submit(generator.generate, [chat(QUESTIONS[0], temperature=0, max_tokens=6)])
        longer_prompt = pool.submit(generator.generate, [completion("りんご " * 60, temperature=0, max_tokens=4)])
        sampled = pool.submit(generator.generate, [chat(QUESTIONS[4], temperature=0.8, max_tokens=5)])
        (short_answer,) = short.result(timeout=60)
        assert not long.done(), "the short request waited for the long one"
        (long_answer,) = long.result(timeout=120)
        (longer_answer,) = longer_prompt.result(timeout=60)
        assert sampled.result(timeout=60)[0].completion_tokens == 5
    assert batcher.batch_sizes - before == {1: 1}  # one batch; the others joined it
    assert batcher.joined - joined == 3
    assert short_answer.text == expected_chat(reference_model, QUESTIONS[0], 6)
    assert long_answer.text == expected_chat(reference_model, QUESTIONS[3], 120)
    assert longer_answer.text == greedy_completion(*reference_model, "りんご " * 60, 4)


def test_joining_respects_the_batch_size_and_token_bound(generator):
    batcher = generator.batcher
    batcher.max_batch_size, batcher.max_batch_tokens = 3, 1000
    try:
        jobs = [Job(i, width=10, budget=10) for i in range(4)]
        batcher._queue.extend(jobs)
        # 2 rows running: one more row fits the batch size.
        assert batcher.take_joining(2, 10, 10) == jobs[:1]
        # 1 row with a 400-position cache and 100 tokens to go: a second row needs 2 x 500.
        assert batcher.take_joining(1, 400, 100) == jobs[1:2]
        assert batcher.take_joining(1, 500, 100) == []  # 2 x 600 > 1000: it waits
        expired = Job("late", deadline=time.monotonic() - 1)
        batcher._queue.appendleft(expired)
        assert batcher.take_joining(0, 0, 0) == jobs[2:4]
        with pytest.raises(DeadlineExceeded):
            expired.future.result(timeout=1)
    finally:
        batcher._queue.clear()
        batcher._running, batcher._current = [], []
        batcher.max_batch_size, batcher.max_batch_tokens = 16, 8192


def test_torch_threads_follow_the_model_unless_set():
    from pyfunc_server.threads import choose_torch_threads, usable_cpus

    assert choose_torch_threads(3, 10**6, cpus=2)[0] == 3  # TORCH_THREADS wins
    assert choose_torch_threads(0, 10**6, cpus=2)[0] == 1  # tiny: one thread
    assert choose_torch_threads(0, 840 * 10**6, cpus=2)[0] == 2  # llm-jp-3-3.7b width: every CPU
    assert choose_torch_threads(0, 3_800 * 10**6, cpus=16)[0] == 16
    assert 1 <= usable_cpus() <= (__import__("os").cpu_count() or 1)


def test_the_tiny_model_runs_on_one_thread_by_default(generator):
    assert generator.torch_threads == 1


def test_models_whose_cache_cannot_be_merged_run_one_generate_per_batch(generator, reference_model, monkeypatch):
    """The fallback for sliding-window, linear-attention or quantized caches (supports_step_loop
    is False): per-row settings and exact greedy answers, without joining."""
    monkeypatch.setattr(generator, "continuous", False)
    outcomes, batches = run_together(
        generator, [[chat(QUESTIONS[0], temperature=0, max_tokens=5)],
                    [chat(QUESTIONS[2], temperature=0, max_tokens=9)],
                    [chat(QUESTIONS[4], temperature=0.9, max_tokens=4)]])
    assert batches == {3: 1}
    assert outcomes[0][0].text == expected_chat(reference_model, QUESTIONS[0], 5)
    assert outcomes[1][0].text == expected_chat(reference_model, QUESTIONS[2], 9)
    assert outcomes[2][0].completion_tokens == 4


def test_supports_step_loop_only_for_plain_dynamic_caches(generator):
    from transformers import MistralConfig, MistralForCausalLM

    from pyfunc_server.decode_loop import supports_step_loop

    assert supports_step_loop(generator.model)
    sliding = MistralForCausalLM(MistralConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
                                               num_hidden_layers=1, num_attention_heads=2,
                                               num_key_value_heads=1, sliding_window=8))
    assert not supports_step_loop(sliding)
