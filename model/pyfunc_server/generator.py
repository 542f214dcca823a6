"""Generate for requests that arrive from many threads, with one loaded model.

`mlflow models serve` calls `predict` concurrently, one thread per request. `HFGenerator` loads
the model (loading.py), tokenizes each request in its own thread and makes its prompts jobs for a
`MicroBatcher` (batcher.py), whose single worker thread decodes them together, whatever their
settings, with continuous batching (decode_loop.py: jobs that arrive meanwhile join at the next
step, finished rows leave); models whose KV cache cannot be merged that way run one
left-padded `model.generate` per batch instead (generate_fallback.py). Either way the per-row
rules are the same (sampling.py):
- temperature, top_p and greedy-vs-sampling are applied per row by `PerRowSampling`;
- max_tokens, stop strings, EOS and the request deadline end each row on its own (`StopRules`),
  and a finished row's answer is handed back at once.
Greedy rows pick the argmax of their own logits, so a greedy answer is the same alone or batched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import DEADLINE_EXCEEDED, REQUEST_LIMIT_EXCEEDED

from pyfunc_server.batcher import DeadlineExceeded, Job, MicroBatcher, QueueFull
from pyfunc_server.decode_loop import StepLoop, supports_step_loop
from pyfunc_server.generate_fallback import run_generate
from pyfunc_server.loading import load_model
from pyfunc_server.prompt_size import (
    check_prompt_size,
    message_overhead_bytes,
    prompt_bytes_limit,
)
from pyfunc_server.requests import CHAT, GenerationRequest, SamplingParams, bad_request
from pyfunc_server.sampling import Completion, RowSettings, StopRules, row_settings
from pyfunc_server.settings import ModelServerSettings
from pyfunc_server.token_stream import TextDeltas

logger = logging.getLogger(__name__)


def timed_out(timeout_s: float, e: DeadlineExceeded) -> MlflowException:
    return MlflowException(
        "generation stopped: the request took longer than its "
        f"{timeout_s:g} s timeout (GENERATION_TIMEOUT_SECONDS); {e}",
        error_code=DEADLINE_EXCEEDED,
    )


class HFGenerator:
    def __init__(self, settings: ModelServerSettings, model_id: str | None = None):
        """Load `model_id` (default: the first model of the settings; loading.py) and start
        batching (settings.py has every knob)."""
        import torch

        loaded = load_model(settings, model_id or settings.served_models[0].model_id)
        self.model_id = loaded.model_id
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.torch_threads = loaded.torch_threads
        self._memory_bytes = loaded.memory_bytes
        gen = self.model.generation_config
        self.default_max_new_tokens = gen.max_new_tokens or settings.default_max_new_tokens
        self.context_length = getattr(self.model.config, "max_position_embeddings", None) or (
            self.tokenizer.model_max_length
        )
        # Prompts longer than this cannot fit the context: refused before tokenizing
        # (prompt_size.py).
        self.prompt_bytes_limit = prompt_bytes_limit(self.tokenizer, self.context_length)
        self.message_overhead = message_overhead_bytes(self.tokenizer)
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.rules = StopRules(self.tokenizer, self.eos_ids)

        self.request_timeout_s = settings.request_timeout_s
        self.continuous = supports_step_loop(self.model)
        self.batcher = MicroBatcher(
            self._run_batch,
            window_s=settings.batch_window_ms / 1000,
            max_batch_size=settings.max_batch_size,
            max_batch_tokens=settings.max_batch_tokens,
            max_queued=settings.max_queued_requests,
            name=f"hf-batcher {self.model_id}",
        )
        logger.info(
            "Batching up to %d concurrent prompts (%s, window %.1f ms, %d tokens); "
            "request timeout %s; %d torch threads",
            self.batcher.max_batch_size,
            "continuous"
            if self.continuous
            else "one generate per batch: this model's cache cannot be merged",
            self.batcher.window_s * 1000,
            self.batcher.max_batch_tokens,
            f"{self.request_timeout_s:g} s",
            torch.get_num_threads(),
        )

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, request: GenerationRequest) -> list[int]:
        check_prompt_size(
            request, self.prompt_bytes_limit, self.context_length, self.message_overhead
        )
        if request.kind == CHAT:
            if not self.tokenizer.chat_template:
                raise bad_request("this model's tokenizer has no chat template; use completions")
            encoded = self.tokenizer.apply_chat_template(
                list(request.messages), add_generation_prompt=True, tokenize=True, return_dict=True
            )
            return list(encoded["input_ids"])
        return list(self.tokenizer(request.prompt)["input_ids"])

    # -- the request threads ----------------------------------------------------------------
    def memory_bytes(self) -> int:
        """The loaded weights and buffers (transformers' own count, taken at load)."""
        return self._memory_bytes

    def close(self) -> None:
        """Finish the queued jobs, stop the batcher and let the weights go."""
        self.batcher.close(timeout=30)
        self.model = None

    def generate(
        self, requests: list[GenerationRequest], deadline: float | None = None
    ) -> list[Completion]:
        """Generate for every request; runs in the caller's thread, batched with other callers'.
        `deadline` (time.monotonic()) defaults to now plus the request timeout."""
        jobs = self.submit(requests, deadline)
        try:
            return [job.future.result() for job in jobs]
        except DeadlineExceeded as e:
            raise timed_out(self.request_timeout_s, e) from e

    def submit(
        self,
        requests: list[GenerationRequest],
        deadline: float | None = None,
        progress: Callable[[list[int]], None] | None = None,
    ) -> list[Job]:
        """Queue every request's row (all or none: a 429 when the queue is full); `progress`:
        told a row's new tokens after each step (streaming, one request)."""
        # Bad input fails here, in this request's own thread, before anything is queued.
        rows = [self._settings(r, self.encode(r)) for r in requests]
        if deadline is None:
            deadline = time.monotonic() + self.request_timeout_s
        jobs = [
            Job(row, width=len(row.ids), budget=row.budget, deadline=deadline, progress=progress)
            for row in rows
        ]
        try:
            self.batcher.submit_all(jobs)
        except QueueFull as e:
            # 429: the gateway and the UI proxy pass it on with Retry-After.
            raise MlflowException(
                f"the model server is busy: {e}; try again in a moment",
                error_code=REQUEST_LIMIT_EXCEEDED,
            ) from e
        return jobs

    def text_deltas(self, row: RowSettings) -> TextDeltas:
        """What to show of `row`'s answer as it is generated (token_stream.py)."""
        return TextDeltas(self.tokenizer, self.eos_ids, row)

    def _settings(self, request: GenerationRequest, ids: list[int]) -> RowSettings:
        return row_settings(
            request.sampling,
            self.model.generation_config,
            ids,
            self._new_token_budget(request.sampling, ids),
        )

    def _new_token_budget(self, sampling: SamplingParams, ids: list[int]) -> int:
        if len(ids) >= self.context_length:
            raise bad_request(
                f"the prompt is {len(ids)} tokens long, but the model's context is "
                f"{self.context_length} tokens"
            )
        wanted = sampling.max_tokens or self.default_max_new_tokens
        # Never generate past the context window: cap instead of failing mid-generation.
        return min(wanted, self.context_length - len(ids))

    # -- the batcher's worker thread --------------------------------------------------------
    def _run_batch(self, jobs: list[Job]) -> None:
        """Decode `jobs` (and the jobs that join them) until every one has its answer."""
        import torch

        # torch applies a thread count per calling thread: this model's, in its batcher's thread
        # (several models may share the process, model_pool.py).
        if self.device == "cpu" and torch.get_num_threads() != self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        if self.continuous:
            StepLoop(self.model, self.rules, self.batcher.take_joining, self.batcher.note_step).run(
                jobs
            )
        else:
            run_generate(self.model, self.tokenizer, self.rules, jobs)
