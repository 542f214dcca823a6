"""Per-row sampling and stop rules, the same for both decoding paths: the step loop
(decode_loop.py) and the `model.generate` fallback (generate_fallback.py).

Every row of a batch keeps its own settings (`RowSettings`, resolved from the request and the
model's generation_config by `row_settings`):
- `PerRowSampling` applies each row's temperature, top-k and top-p; greedy rows keep only their
  argmax, so a greedy answer is the same alone or batched;
- `StopRules` ends each row on its own (EOS, max_tokens, a stop string) and turns its new tokens
  into the answer (`Completion`: text cut at the first stop string, finish reason, token counts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from promptlab_stack.text import drop_incomplete_utf8_tail
from pyfunc_server.requests import SamplingParams

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


def row_settings(s: SamplingParams, generation_config, ids: list[int], budget: int) -> RowSettings:
    """The request's sampling settings for the prompt `ids`, what it leaves unset taken from the
    model's `generation_config` (else transformers' own defaults); `budget`: its new tokens."""
    gen = generation_config
    if s.temperature is None:  # the model's generation_config decides
        greedy = not gen.do_sample
        temperature = gen.temperature if gen.temperature is not None else HF_DEFAULT_TEMPERATURE
    else:
        greedy, temperature = s.greedy, s.temperature
    if greedy:
        return RowSettings(tuple(ids), budget, True, stop=s.stop)
    top_p = s.top_p if s.top_p is not None else gen.top_p
    top_k = gen.top_k if gen.top_k is not None else HF_DEFAULT_TOP_K
    return RowSettings(
        tuple(ids),
        budget,
        False,
        temperature=temperature,
        top_k=top_k or 0,
        top_p=top_p if top_p is not None else HF_DEFAULT_TOP_P,
        stop=s.stop,
    )


class PerRowSampling:
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
            kth_index = torch.tensor([max(k, 1) - 1 for k in ks], device=scores.device)[:, None]
            kth = top.gather(1, kth_index)
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


class StopRules:
    """When a row ends and what its answer is, for one model's tokenizer and EOS tokens."""

    def __init__(self, tokenizer, eos_ids: set[int]):
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids

    def ends(self, row: RowSettings, new_ids: list[int]) -> bool:
        """Whether the row is done after its latest token: EOS, its max_tokens or a stop string."""
        if new_ids[-1] in self.eos_ids or len(new_ids) >= row.budget:
            return True
        if row.stop:
            text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
            return any(s in text for s in row.stop)
        return False

    def finish(self, row: RowSettings, new_ids: list[int]) -> Completion:
        """The row's answer: its new tokens up to EOS, decoded, cut at the first stop string."""
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

    def answer(
        self,
        future: Future,
        row: RowSettings,
        new_ids: Sequence[int],
        error: BaseException | None = None,
    ) -> None:
        """Resolve a row's future with its answer (or with `error`), unless it already has one
        (the batcher may have failed it)."""
        if future.done():
            return
        if error is None:
            try:
                future.set_result(self.finish(row, list(new_ids)))
                return
            except Exception as e:  # noqa: BLE001 - a decoding problem fails this row only
                error = e
        try:
            future.set_exception(error)
        except Exception:  # noqa: BLE001 - resolved by another thread in the meantime
            pass
