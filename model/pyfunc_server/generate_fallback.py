"""The decoding path for models the step loop cannot run: one left-padded `model.generate` per
batch.

Models whose KV cache is not made of plain `DynamicLayer`s (sliding-window or linear-attention
layers, quantized caches; decode_loop.supports_step_loop) cannot have rows merged into a running
batch. Their batches run through `model.generate` with the same per-row rules as the step loop
(sampling.py): each row's sampling settings through `PerRowSampling`, and each row ended on its
own by `PerRowStop` (EOS, its stop strings, its max_tokens or its deadline), its answer handed back
the step it ends. Jobs do not join a running batch here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pyfunc_server.batcher import DeadlineExceeded, Job
from pyfunc_server.sampling import PerRowSampling, RowSettings, StopRules


def run_generate(model, tokenizer, rules: StopRules, jobs: list[Job]) -> None:
    """One `generate` for all jobs; each job's future is resolved as soon as its row ends."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    rows: list[RowSettings] = [job.payload for job in jobs]
    batch = tokenizer.pad(
        {"input_ids": [list(r.ids) for r in rows]}, padding=True, return_tensors="pt"
    )
    batch = {k: v.to(model.device) for k, v in batch.items()}
    stops = PerRowStop(rules, jobs, width=batch["input_ids"].shape[1])
    kwargs = {
        "max_new_tokens": max(r.budget for r in rows),
        "stopping_criteria": StoppingCriteriaList([stops]),
        "pad_token_id": tokenizer.pad_token_id,
    }
    if all(r.greedy for r in rows):
        kwargs["do_sample"] = False
    else:
        # Sampling for the whole batch, with every row's own settings (greedy rows keep only
        # their argmax); transformers' batch-wide warpers are turned off.
        kwargs.update(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, typical_p=1.0)
        kwargs["logits_processor"] = LogitsProcessorList([PerRowSampling(rows, model.device)])
    with torch.inference_mode():
        output = model.generate(**batch, **kwargs)
    stops.finish_all(output)


class PerRowStop:
    """A `StoppingCriteria` that ends each row on its own: EOS, its stop strings, its max_tokens
    or its deadline. A row's future is resolved the step it ends."""

    def __init__(self, rules: StopRules, jobs: list[Job], width: int):
        self.rules = rules
        self.jobs = jobs
        self.rows: list[RowSettings] = [job.payload for job in jobs]
        self.width = width
        self.done = [False] * len(jobs)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        new_ids = input_ids[:, self.width :].tolist()
        now = time.monotonic()
        for i, (job, row) in enumerate(zip(self.jobs, self.rows, strict=True)):
            if self.done[i]:
                continue
            if job.expired(now):
                self._end(i, error=DeadlineExceeded(f"stopped after {len(new_ids[i])} new tokens"))
            elif self.rules.ends(row, new_ids[i]):
                self._end(i, new_ids[i])
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

    def finish_all(self, output) -> None:
        """Rows still open when `generate` returned (it stopped on its own criteria)."""
        for i in range(len(self.jobs)):
            if not self.done[i]:
                self._end(i, output[i, self.width :].tolist())

    def _end(self, i: int, new_ids: Sequence[int] = (), error: BaseException | None = None) -> None:
        self.done[i] = True
        self.rules.answer(self.jobs[i].future, self.rows[i], new_ids, error)
