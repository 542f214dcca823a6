"""Load a Hugging Face causal LM once and generate for a list of requests in one batched call."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from hf_pyfunc.requests import CHAT, GenerationRequest, bad_request

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


def pick_device(requested: str) -> str:
    import torch

    if requested in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE={requested} was asked for, but no CUDA GPU is visible")
    return requested


class HFGenerator:
    def __init__(self, model_id: str, *, device: str = "auto", default_max_new_tokens: int = 256):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = pick_device(device)
        # bf16 halves memory on GPUs that do it natively; CPUs are fastest and exact in float32.
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        started = time.monotonic()
        logger.info("Loading tokenizer for %s (downloads on first use into HF_HOME)", model_id)
        self.tokenizer = AutoTokenizer.from_pretrained(model_id)
        logger.info("Loading weights of %s onto %s as %s", model_id, self.device, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype).to(self.device)
        self.model.eval()
        logger.info("Model %s ready in %.1f s", model_id, time.monotonic() - started)

        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Decoder-only models must be left-padded so every row's new tokens start at one column.
        self.tokenizer.padding_side = "left"
        gen = self.model.generation_config
        self.default_max_new_tokens = gen.max_new_tokens or default_max_new_tokens
        self.context_length = getattr(self.model.config, "max_position_embeddings", None) or (
            self.tokenizer.model_max_length
        )
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._lock = threading.Lock()

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, request: GenerationRequest) -> list[int]:
        if request.kind == CHAT:
            if not self.tokenizer.chat_template:
                raise bad_request("this model's tokenizer has no chat template; use completions")
            encoded = self.tokenizer.apply_chat_template(
                list(request.messages), add_generation_prompt=True, tokenize=True, return_dict=True
            )
            return list(encoded["input_ids"])
        return list(self.tokenizer(request.prompt)["input_ids"])

    # -- generation -------------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        """Generate for every request; requests with the same sampling settings share a batch."""
        encoded = [self.encode(r) for r in requests]
        budgets = [self._new_token_budget(r, ids) for r, ids in zip(requests, encoded)]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            s = r.sampling
            groups[(s.temperature, s.top_p, s.stop)].append(i)
        results: list[Completion | None] = [None] * len(requests)
        for indices in groups.values():
            outs = self._generate_group(
                [encoded[i] for i in indices], [budgets[i] for i in indices], requests[indices[0]]
            )
            for i, out in zip(indices, outs):
                results[i] = out
        return results  # type: ignore[return-value]

    def _new_token_budget(self, request: GenerationRequest, ids: list[int]) -> int:
        if len(ids) >= self.context_length:
            raise bad_request(
                f"the prompt is {len(ids)} tokens long, but the model's context is "
                f"{self.context_length} tokens"
            )
        wanted = request.sampling.max_tokens or self.default_max_new_tokens
        # Never generate past the context window: cap instead of failing mid-generation.
        return min(wanted, self.context_length - len(ids))

    def _generate_group(self, ids: list[list[int]], budgets: list[int], like: GenerationRequest):
        import torch

        s = like.sampling
        kwargs = {"max_new_tokens": max(budgets)}
        if s.temperature is not None:
            kwargs["do_sample"] = not s.greedy
            if not s.greedy:
                kwargs["temperature"] = s.temperature
        if s.top_p is not None and not s.greedy:
            kwargs["top_p"] = s.top_p
        if s.stop:
            kwargs["stop_strings"] = list(s.stop)
            kwargs["tokenizer"] = self.tokenizer
        batch = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        with self._lock, torch.inference_mode():
            output = self.model.generate(**batch, **kwargs)
        width = batch["input_ids"].shape[1]
        return [
            self._finish(row[width:].tolist()[:budget], len(prompt), s.stop, budget)
            for row, prompt, budget in zip(output, ids, budgets)
        ]

    def _finish(self, new_ids: list[int], prompt_tokens: int, stop: tuple[str, ...], budget: int):
        finish = "length"
        for n, token in enumerate(new_ids):
            if token in self.eos_ids:
                new_ids, finish = new_ids[:n], "stop"
                break
        pad = self.tokenizer.pad_token_id
        new_ids = [t for t in new_ids if t != pad or pad in self.eos_ids]
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        cut = min((p for p in (text.find(x) for x in stop) if p >= 0), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        elif finish == "length" and len(new_ids) < budget:
            finish = "stop"
        return Completion(text, prompt_tokens, len(new_ids), finish)
