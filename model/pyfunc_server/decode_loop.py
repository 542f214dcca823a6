"""Continuous batching: one decoding step at a time, rows join and leave between steps.

A request that arrives while others decode joins them at the next step (it does not wait for the
longest row of the batch to end), and a finished row leaves the batch at once. The loop:

1. prefill the rows that join (packed into one sequence, each prompt attending to itself only),
   pick each one's first token;
2. merge them into the running batch: both KV caches are left-padded to the longer one and
   stacked on the batch dimension, the attention mask hides the padding;
3. one forward pass for every row's last token; each row picks its next token with its own
   settings (`PerRowSampling`, sampling.py: temperature, top-k, top-p; greedy rows take the
   argmax);
4. rows that hit EOS, their max_tokens, a stop string (`StopRules`) or their deadline are answered
   and removed from the cache (index_select on the batch dimension), and so are rows whose
   stream nobody reads any more (a cancelled future); leading columns that are padding for every
   remaining row are cut off; a streamed row is told its tokens after every step (`Job.progress`);
5. queued jobs that fit (MAX_BATCH_SIZE, MAX_BATCH_TOKENS) are taken from the batcher; repeat.

Why our own loop and not transformers' continuous batching (`model.generate_batch`,
`ContinuousBatchingManager`, which `transformers serve --continuous-batching` uses): in the
transformers this image pins (model/requirements.txt) greedy-or-sampling (`do_sample`) is one
setting for the whole manager, stop strings are not supported, its paged-attention cache is sized
up front in its own thread, and its kernels differ from `model.generate`'s, so a greedy answer
would not be guaranteed to equal `model.generate` on the prompt alone. Here every step is a plain
`model(...)` call with a `DynamicCache`, the same attention code and masks as `generate` with left
padding, so greedy answers stay exact, and every per-row rule of the windowed batcher (per-row
sampling, stop strings, deadlines, early answers) is kept.

Models whose cache is not made of plain `DynamicLayer`s (sliding-window or linear-attention
layers, quantized caches) cannot be merged this way; the generator runs them with
`model.generate` per batch instead (`supports_step_loop`; generate_fallback.py).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyfunc_server.batcher import DeadlineExceeded, Job
from pyfunc_server.sampling import PerRowSampling, RowSettings, StopRules

logger = logging.getLogger(__name__)


def supports_step_loop(model) -> bool:
    """Whether the model's cache is plain `DynamicLayer`s (full attention, nothing else), which
    this loop can pad, merge and shrink."""
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache(config=model.config)
    except Exception:  # noqa: BLE001 - any model we cannot build a cache for runs with generate
        return False
    return all(type(layer) is DynamicLayer for layer in cache.layers)


@dataclass(eq=False)
class _Row:
    job: Job
    settings: RowSettings
    new_ids: list[int] = field(default_factory=list)
    done: bool = False


class StepLoop:
    """Runs one continuous batch of `model` from `jobs` until no row is left; `rules` end each row
    and make its answer; `take_joining(rows, width, budget)` returns queued jobs that may join a
    batch of `rows` rows whose cache is `width` positions long and whose longest remaining answer
    is `budget` tokens."""

    def __init__(
        self,
        model,
        rules: StopRules,
        take_joining: Callable[[int, int, int], list[Job]],
        note_step: Callable[[float], None] | None = None,
    ):
        import torch

        self.torch = torch
        self.rules = rules
        self.model = model
        self.device = model.device
        self.take_joining = take_joining
        self.note_step = note_step  # told each decoding step's time (the batcher's window)
        # Newer transformers call forward's `past_key_values` `cache` (the old name warns there).
        forward = inspect.signature(type(self.model).forward).parameters
        self.cache_kw = "cache" if "cache" in forward else "past_key_values"
        # Only the last position's logits are needed after a prefill (a 100k vocabulary times
        # every prompt token would be the largest tensor of the step).
        self.last_logits = {"logits_to_keep": 1} if "logits_to_keep" in forward else {}
        self.rows: list[_Row] = []
        self.cache: Any = None  # a DynamicCache of every row
        self.mask: Any = None  # [rows, positions]: 1 for a real token, 0 for padding
        self.pending: Any = None  # [rows]: each row's last picked token, not yet in the cache
        self._sampler: PerRowSampling | None = None  # for the current rows; None: all greedy

    def run(self, jobs: list[Job]) -> None:
        with self.torch.inference_mode():
            self._join(jobs)
            self._leave()
            while self.rows:  # an empty batch ends: the batcher gathers the next one
                self._step()
                self._leave()
                if self.rows:
                    joining = self.take_joining(
                        len(self.rows), self._width(), self._longest_remaining()
                    )
                    if joining:
                        self._join(joining)
                        self._leave()

    # -- rows in and out ----------------------------------------------------------------------
    def _width(self) -> int:
        return 0 if self.mask is None else self.mask.shape[1] + 1  # + the pending token

    def _longest_remaining(self) -> int:
        return max((r.settings.budget - len(r.new_ids) for r in self.rows), default=0)

    def _join(self, jobs: list[Job]) -> None:
        """Prefill the new rows and merge them into the running batch."""
        torch = self.torch
        rows = [_Row(job, job.payload) for job in jobs]
        cache, mask, logits = self._prefill(rows)
        first = self._pick(logits, [r.settings for r in rows], running=False)
        if self.rows:
            self.cache, self.mask = _merge(self.cache, self.mask, cache, mask)
            self.pending = torch.cat([self.pending, first])
        else:
            self.cache, self.mask, self.pending = cache, mask, first
        self.rows += rows
        self._sampler = None
        self._record(rows, first.tolist())

    def _prefill(self, rows: list[_Row]):
        """The rows' prompts through the model: their KV cache left-padded to the longest prompt,
        its mask, and each row's last logits.

        Prompts are packed end to end into one sequence (a block-diagonal causal mask keeps each
        prompt to itself), not padded to the longest one: prefill is most of a short answer's
        work on a CPU, and padding short prompts to a long one multiplies it. Packs hold up to
        `PACK_TOKENS` tokens (the mask is packed length squared); a prompt alone runs as
        `generate` would run it."""
        from transformers import DynamicCache

        torch = self.torch
        packs: list[list[_Row]] = []
        for row in rows:
            if (
                packs
                and sum(len(r.settings.ids) for r in packs[-1]) + len(row.settings.ids)
                <= PACK_TOKENS
            ):
                packs[-1].append(row)
            else:
                packs.append([row])
        keys: list[list] = []  # per row: each layer's (keys, values) [1, heads, prompt, dim]
        logits = []
        for pack in packs:
            lengths = [len(r.settings.ids) for r in pack]
            ids = torch.tensor([[t for r in pack for t in r.settings.ids]], device=self.device)
            cache: Any = DynamicCache(config=self.model.config)
            if len(pack) == 1:
                out = self.model(
                    input_ids=ids, use_cache=True, **self.last_logits, **{self.cache_kw: cache}
                )
                logits.append(out.logits[0, -1:, :])
            else:
                row_of = torch.repeat_interleave(
                    torch.arange(len(pack), device=self.device),
                    torch.tensor(lengths, device=self.device),
                )
                position = torch.cat([torch.arange(n, device=self.device) for n in lengths])
                allowed = (row_of[:, None] == row_of[None, :]) & (
                    position[None, :] <= position[:, None]
                )
                dtype = self.model.dtype
                block_mask = torch.zeros(allowed.shape, dtype=dtype, device=self.device)
                block_mask = block_mask.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]
                last = torch.tensor(lengths, device=self.device).cumsum(0) - 1
                keep = {"logits_to_keep": last} if self.last_logits else {}
                out = self.model(
                    input_ids=ids,
                    attention_mask=block_mask,
                    position_ids=position[None],
                    use_cache=True,
                    **keep,
                    **{self.cache_kw: cache},
                )
                logits.append(out.logits[0] if keep else out.logits[0, last])
            start = 0
            for n in lengths:
                keys.append(
                    [
                        (layer.keys[:, :, start : start + n], layer.values[:, :, start : start + n])
                        for layer in cache.layers
                    ]
                )
                start += n
        width = max(len(r.settings.ids) for r in rows)
        merged: Any = DynamicCache(config=self.model.config)
        for i, layer in enumerate(merged.layers):
            k = torch.cat([_pad_left(row_keys[i][0], width) for row_keys in keys])
            v = torch.cat([_pad_left(row_keys[i][1], width) for row_keys in keys])
            layer.update(k, v)
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=self.device)
        for i, r in enumerate(rows):
            mask[i, width - len(r.settings.ids) :] = 1
        return merged, mask, torch.cat(logits)

    def _step(self) -> None:
        torch = self.torch
        started = time.monotonic()
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        out = self.model(
            input_ids=self.pending[:, None],
            attention_mask=self.mask,
            position_ids=_positions(self.mask)[:, -1:],
            use_cache=True,
            **{self.cache_kw: self.cache},
        )
        self.pending = self._pick(
            out.logits[:, -1, :], [r.settings for r in self.rows], running=True
        )
        self._record(self.rows, self.pending.tolist())
        if self.note_step is not None:
            self.note_step(time.monotonic() - started)

    def _leave(self) -> None:
        """Drop finished rows from the cache, and the columns that are padding for all others."""
        keep = [i for i, r in enumerate(self.rows) if not r.done]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        self._sampler = None
        if not keep:
            self.cache = self.mask = self.pending = None
            return
        index = self.torch.tensor(keep, device=self.device)
        self.cache.batch_select_indices(index)
        self.mask, self.pending = self.mask[index], self.pending[index]
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else 0
        if start > 0:
            self.mask = self.mask[:, start:]
            for layer in self.cache.layers:
                layer.keys = layer.keys[:, :, start:, :]
                layer.values = layer.values[:, :, start:, :]

    # -- tokens -------------------------------------------------------------------------------
    def _pick(self, logits, settings: list[RowSettings], running: bool):
        """Each row's next token with its own settings (as `generate` does: float32 scores).
        `running`: these are all the running rows (their sampler is kept until rows change)."""
        torch = self.torch
        scores = logits.float()
        if all(s.greedy for s in settings):
            return scores.argmax(dim=-1)
        sampler = self._sampler if running else None
        if sampler is None:
            sampler = PerRowSampling(settings, scores.device)
            if running:
                self._sampler = sampler
        probs = torch.softmax(sampler(None, scores), dim=-1)
        return torch.multinomial(probs, num_samples=1).squeeze(1)

    def _record(self, rows: list[_Row], tokens: list[int]) -> None:
        """Append each row's new token; answer the rows that are done (EOS, max_tokens, a stop
        string) or whose deadline passed."""
        now = time.monotonic()
        for row, token in zip(rows, tokens, strict=True):
            if row.done:
                continue
            if row.job.future.cancelled():  # a streamed answer whose reader went away
                row.done = True
                logger.info(
                    "dropped a row after %d new tokens: its stream was closed", len(row.new_ids)
                )
                continue
            if row.job.expired(now):
                self._end(
                    row, error=DeadlineExceeded(f"stopped after {len(row.new_ids)} new tokens")
                )
                continue
            row.new_ids.append(token)
            if self.rules.ends(row.settings, row.new_ids):
                self._end(row)
            elif row.job.progress is not None:
                row.job.progress(row.new_ids)

    def _end(self, row: _Row, error: BaseException | None = None) -> None:
        row.done = True
        self.rules.answer(row.job.future, row.settings, row.new_ids, error)


# Tokens of prompts prefilled together in one packed sequence (its mask is this squared).
PACK_TOKENS = 2048


def _pad_left(t, width: int):
    """[batch, heads, length, dim] left-padded with zeros to `width` positions."""
    import torch

    missing = width - t.shape[2]
    if missing == 0:
        return t
    return torch.cat([t.new_zeros(t.shape[0], t.shape[1], missing, t.shape[3]), t], dim=2)


def _positions(mask):
    """Position ids of a left-padded batch, as `generate` computes them."""
    positions = mask.long().cumsum(-1) - 1
    return positions.masked_fill(mask == 0, 1)


def _merge(cache_a, mask_a, cache_b, mask_b):
    """Stack two caches on the batch dimension, left-padding the shorter one with masked zeros."""
    import torch

    width = max(mask_a.shape[1], mask_b.shape[1])

    def pad(t, dim_len, dim):
        missing = width - dim_len
        if missing == 0:
            return t
        shape = list(t.shape)
        shape[dim] = missing
        return torch.cat([t.new_zeros(shape), t], dim=dim)

    for layer_a, layer_b in zip(cache_a.layers, cache_b.layers, strict=True):
        la, lb = layer_a.keys.shape[2], layer_b.keys.shape[2]
        layer_a.keys = torch.cat([pad(layer_a.keys, la, 2), pad(layer_b.keys, lb, 2)], dim=0)
        layer_a.values = torch.cat([pad(layer_a.values, la, 2), pad(layer_b.values, lb, 2)], dim=0)
    mask = torch.cat([pad(mask_a, mask_a.shape[1], 1), pad(mask_b, mask_b.shape[1], 1)], dim=0)
    return cache_a, mask
