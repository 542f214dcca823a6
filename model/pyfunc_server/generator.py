"""Load a Hugging Face causal LM once and generate for requests that arrive from many threads.

`mlflow models serve` calls `predict` concurrently, one thread per request. Every request's
prompts become jobs for a `MicroBatcher` (batcher.py), whose single worker thread decodes them
together, whatever their settings, with continuous batching (decode_loop.py: jobs that arrive
meanwhile join at the next step, finished rows leave); models whose KV cache cannot be merged
that way run one left-padded `model.generate` per batch instead. Either way:
- temperature, top_p and greedy-vs-sampling are applied per row by `_PerRowSampling`;
- max_tokens, stop strings, EOS and the request deadline end each row on its own
  (`_PerRowStop` for `generate`), and a finished row's answer is handed back at once.
Greedy rows pick the argmax of their own logits, so a greedy answer is the same alone or batched.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import DEADLINE_EXCEEDED, REQUEST_LIMIT_EXCEEDED

from promptlab_stack.text import drop_incomplete_utf8_tail

from pyfunc_server.batcher import DeadlineExceeded, Job, MicroBatcher, QueueFull, widen_thread_pool
from pyfunc_server.prompt_size import check_prompt_size, prompt_bytes_limit
from pyfunc_server.requests import CHAT, GenerationRequest, SamplingParams, bad_request
from pyfunc_server.settings import ModelServerSettings

logger = logging.getLogger(__name__)

# transformers' own fallbacks when neither the request nor generation_config sets a value.
HF_DEFAULT_TEMPERATURE, HF_DEFAULT_TOP_K, HF_DEFAULT_TOP_P = 1.0, 50, 1.0


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


@dataclass(frozen=True)
class RowSettings:
    """One prompt's resolved generation settings (request values, else generation_config)."""

    ids: tuple[int, ...]
    budget: int  # new tokens at most
    greedy: bool
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    stop: tuple[str, ...] = ()


def pick_device(requested: str) -> str:
    import torch

    if requested in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE={requested} was asked for, but no CUDA GPU is visible")
    return requested


def quiet_openmp_threads() -> None:
    """Idle OpenMP threads sleep instead of spinning (unless OMP_WAIT_POLICY says otherwise).

    PyTorch's CPU kernels run on OpenMP threads that, by default, spin for a while after each
    parallel region. Between decoding steps that spinning takes the CPU from the server's own
    threads (HTTP, JSON, the batcher); on a 2-CPU machine it made 8 concurrent requests slower than
    one at a time. Only effective before torch is first imported, i.e. in the model server.
    """
    import sys

    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class HFGenerator:
    def __init__(self, settings: ModelServerSettings, model_id: str | None = None):
        """Load `model_id` (default: the first model of the settings) and start batching
        (settings.py has every knob). The torch thread count follows the model's size unless
        TORCH_THREADS sets it (threads.py says why)."""
        quiet_openmp_threads()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from pyfunc_server.prepacked_weights import prepack_linear_layers
        from pyfunc_server.threads import choose_torch_threads

        model_id = model_id or settings.served_models[0].model_id
        self.model_id = model_id
        if settings.torch_threads > 0:
            torch.set_num_threads(settings.torch_threads)

        self.device = pick_device(settings.device)
        # bf16 halves memory on GPUs that do it natively; CPUs are fastest and exact in float32.
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        started = time.monotonic()
        logger.info("Loading tokenizer for %s (downloads on first use into HF_HOME)", model_id)
        self.tokenizer = AutoTokenizer.from_pretrained(model_id)
        logger.info("Loading weights of %s onto %s as %s", model_id, self.device, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype).to(self.device)
        self.model.eval()
        logger.info("Model %s ready in %.1f s", model_id, time.monotonic() - started)
        parameters = sum(p.numel() for p in self.model.parameters())
        # Counted before prepacking: prepacked weights are buffers in their own layout.
        self._memory_bytes = int(self.model.get_memory_footprint())
        self.torch_threads, why = choose_torch_threads(settings.torch_threads, parameters)
        if self.device == "cpu":
            torch.set_num_threads(self.torch_threads)
            logger.info("%d torch threads for %s: %s", self.torch_threads, model_id, why)
        # After the thread count is set: `auto` times the layers with the threads they will use.
        logger.info("%s: %s", model_id, prepack_linear_layers(self.model, settings.prepack_weights))

        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Decoder-only models must be left-padded so every row's new tokens start at one column.
        self.tokenizer.padding_side = "left"
        gen = self.model.generation_config
        self.default_max_new_tokens = gen.max_new_tokens or settings.default_max_new_tokens
        self.context_length = getattr(self.model.config, "max_position_embeddings", None) or (
            self.tokenizer.model_max_length
        )
        # Prompts longer than this cannot fit the context: refused before tokenizing (prompt_size.py).
        self.prompt_bytes_limit = prompt_bytes_limit(self.tokenizer, self.context_length)
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}

        self.request_timeout_s = settings.request_timeout_s
        from pyfunc_server.decode_loop import supports_step_loop

        self.continuous = supports_step_loop(self.model)
        self.batcher = MicroBatcher(
            self._run_batch,
            window_s=settings.batch_window_ms / 1000,
            max_batch_size=settings.max_batch_size,
            max_batch_tokens=settings.max_batch_tokens,
            max_queued=settings.max_queued_requests,
            name=f"hf-batcher {model_id}",
        )
        # Each request waits for its batch in a thread of the server's pool: see generate().
        self.pool_threads = max(32, 2 * self.batcher.max_batch_size)
        logger.info(
            "Batching up to %d concurrent prompts (%s, window %.1f ms, %d tokens); request timeout %s; "
            "%d torch threads",
            self.batcher.max_batch_size,
            "continuous" if self.continuous else "one generate per batch: this model's cache cannot be merged",
            self.batcher.window_s * 1000,
            self.batcher.max_batch_tokens, f"{self.request_timeout_s:g} s",
            torch.get_num_threads(),
        )

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, request: GenerationRequest) -> list[int]:
        check_prompt_size(request, self.prompt_bytes_limit, self.context_length)
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

    def generate(self, requests: list[GenerationRequest], deadline: float | None = None) -> list[Completion]:
        """Generate for every request; runs in the caller's thread, batched with other callers'.
        `deadline` (time.monotonic()) defaults to now plus the request timeout."""
        # Enough threads in the scoring server's pool for a full batch to wait at once.
        widen_thread_pool(self.pool_threads)
        # Bad input fails here, in this request's own thread, before anything is queued.
        rows = [self._settings(r, self.encode(r)) for r in requests]
        if deadline is None:
            deadline = time.monotonic() + self.request_timeout_s
        try:
            jobs = self.batcher.submit_all(
                [Job(row, width=len(row.ids), budget=row.budget, deadline=deadline) for row in rows])
        except QueueFull as e:
            # 429: the gateway and the UI proxy pass it on with Retry-After.
            raise MlflowException(f"the model server is busy: {e}; try again in a moment",
                                  error_code=REQUEST_LIMIT_EXCEEDED) from e
        try:
            return [job.result() for job in jobs]
        except DeadlineExceeded as e:
            raise MlflowException(
                f"generation stopped: the request took longer than its {self.request_timeout_s:g} s "
                f"timeout (GENERATION_TIMEOUT_SECONDS); {e}",
                error_code=DEADLINE_EXCEEDED,
            ) from e

    def _settings(self, request: GenerationRequest, ids: list[int]) -> RowSettings:
        s: SamplingParams = request.sampling
        gen = self.model.generation_config
        if s.temperature is None:  # the model's generation_config decides
            greedy = not gen.do_sample
            temperature = gen.temperature if gen.temperature is not None else HF_DEFAULT_TEMPERATURE
        else:
            greedy, temperature = s.greedy, s.temperature
        if greedy:
            return RowSettings(tuple(ids), self._new_token_budget(s, ids), True, stop=s.stop)
        top_p = s.top_p if s.top_p is not None else gen.top_p
        top_k = gen.top_k if gen.top_k is not None else HF_DEFAULT_TOP_K
        return RowSettings(
            tuple(ids),
            self._new_token_budget(s, ids),
            False,
            temperature=temperature,
            top_k=top_k or 0,
            top_p=top_p if top_p is not None else HF_DEFAULT_TOP_P,
            stop=s.stop,
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
            from pyfunc_server.decode_loop import StepLoop

            StepLoop(self, self.batcher.take_joining, self.batcher.note_step).run(jobs)
        else:
            self._generate_batch(jobs)

    def _generate_batch(self, jobs: list[Job]) -> None:
        """One `generate` for all jobs; each job's future is resolved as soon as its row ends."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        rows: list[RowSettings] = [job.payload for job in jobs]
        batch = self.tokenizer.pad({"input_ids": [list(r.ids) for r in rows]}, padding=True,
                                   return_tensors="pt")
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        stops = _PerRowStop(self, jobs, width=batch["input_ids"].shape[1])
        kwargs = {
            "max_new_tokens": max(r.budget for r in rows),
            "stopping_criteria": StoppingCriteriaList([stops]),
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if all(r.greedy for r in rows):
            kwargs["do_sample"] = False
        else:
            # Sampling for the whole batch, with every row's own settings (greedy rows keep only
            # their argmax); transformers' batch-wide warpers are turned off.
            kwargs.update(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, typical_p=1.0)
            kwargs["logits_processor"] = LogitsProcessorList([_PerRowSampling(rows, self.model.device)])
        with torch.inference_mode():
            output = self.model.generate(**batch, **kwargs)
        stops.finish_all(output)

    def _finish(self, row: RowSettings, new_ids: list[int]) -> Completion:
        finish = "length" if len(new_ids) >= row.budget else "stop"
        for n, token in enumerate(new_ids):
            if token in self.eos_ids:
                new_ids, finish = new_ids[:n], "stop"
                break
        text = drop_incomplete_utf8_tail(self.tokenizer.decode(new_ids, skip_special_tokens=True))
        cut = min((p for p in (text.find(x) for x in row.stop) if p >= 0), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        return Completion(text, len(row.ids), len(new_ids), finish)


class _PerRowStop:
    """A `StoppingCriteria` that ends each row on its own: EOS, its stop strings, its max_tokens
    or its deadline. A row's future is resolved the step it ends."""

    def __init__(self, generator: HFGenerator, jobs: list[Job], width: int):
        self.generator = generator
        self.jobs = jobs
        self.rows: list[RowSettings] = [job.payload for job in jobs]
        self.width = width
        self.done = [False] * len(jobs)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        new = input_ids.shape[1] - self.width
        last = input_ids[:, -1].tolist()
        now = time.monotonic()
        for i, (job, row) in enumerate(zip(self.jobs, self.rows)):
            if self.done[i]:
                continue
            if job.expired(now):
                self._end(i, error=DeadlineExceeded(f"stopped after {new} new tokens"))
            elif last[i] in self.generator.eos_ids or new >= row.budget:
                self._end(i, input_ids[i, self.width:].tolist())
            elif row.stop:
                text = self.generator.tokenizer.decode(
                    input_ids[i, self.width:].tolist(), skip_special_tokens=True
                )
                if any(s in text for s in row.stop):
                    self._end(i, input_ids[i, self.width:].tolist())
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

    def finish_all(self, output) -> None:
        """Rows still open when `generate` returned (it stopped on its own criteria)."""
        for i in range(len(self.jobs)):
            if not self.done[i]:
                self._end(i, output[i, self.width:].tolist())

    def _end(self, i: int, new_ids: list[int] | None = None, error: Exception | None = None):
        self.done[i] = True
        future = self.jobs[i].future
        if future.done():
            return
        if error is None:
            try:
                future.set_result(self.generator._finish(self.rows[i], new_ids))
                return
            except Exception as e:  # a decoding problem fails this row only
                error = e
        future.set_exception(error)


class _PerRowSampling:
    """A `LogitsProcessor` applying each row's temperature, top-k and top-p; greedy rows keep only
    their argmax, so multinomial sampling picks exactly the token greedy decoding would."""

    def __init__(self, rows: list[RowSettings], device):
        import torch

        self.greedy = torch.tensor([r.greedy for r in rows], device=device)
        self.temperature = torch.tensor(
            [1.0 if r.greedy else max(r.temperature, 1e-5) for r in rows], device=device
        )[:, None]
        self.top_k = [0 if r.greedy else r.top_k for r in rows]
        self.top_p = torch.tensor([1.0 if r.greedy else r.top_p for r in rows], device=device)

    def __call__(self, input_ids, scores):
        import torch

        neg_inf = -math.inf
        argmax = scores.argmax(dim=-1, keepdim=True)
        warped = scores / self.temperature.to(scores.dtype)
        ks = [k if 0 < k < warped.shape[-1] else 0 for k in self.top_k]  # 0: no top-k
        if any(ks):
            top = torch.topk(warped, max(ks), dim=-1).values
            kth = top.gather(1, torch.tensor([max(k, 1) - 1 for k in ks], device=scores.device)[:, None])
            kth = torch.where(torch.tensor(ks, device=scores.device)[:, None] > 0, kth, neg_inf)
            warped = warped.masked_fill(warped < kth, neg_inf)
        if bool((self.top_p < 1.0).any()):
            # As transformers' TopPLogitsWarper, with one top_p per row.
            sorted_logits, sorted_idx = torch.sort(warped, descending=False)
            cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            remove = cumulative <= (1 - self.top_p)[:, None]
            remove[:, -1] = False
            warped = warped.masked_fill(remove.scatter(1, sorted_idx, remove), neg_inf)
        one_hot = torch.full_like(scores, neg_inf).scatter(1, argmax, 0.0)
        return torch.where(self.greedy[:, None], one_hot, warped)
