"""`model.generate` in this process on left-padded batches: the limit that batching can reach.

The model gets what the model server gives it at start: the same torch thread count and the
same linear layers (prepacked for oneDNN when PREPACK_WEIGHTS decides so), so that the limit
measures what serving costs and not a different kernel."""

from __future__ import annotations

import time
from pathlib import Path

from bench.prompts import PROMPTS
from promptlab_stack.text import drop_incomplete_utf8_tail


class InProcess:
    """`model.generate` on `concurrency` left-padded prompts at once: what batching can reach."""

    def __init__(
        self,
        model_dir: Path,
        max_tokens: int,
        torch_threads: int | None = None,
        prepack_weights: str = "auto",
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        # The thread count the model server picks for this model (pyfunc_server/threads.py), unless
        # --torch-threads set one: the limit is measured with the same settings.
        from pyfunc_server.threads import choose_torch_threads

        if torch_threads is None:
            parameters = sum(p.numel() for p in self.model.parameters())
            torch_threads = choose_torch_threads(0, parameters)[0]
        self.threads = torch_threads
        torch.set_num_threads(torch_threads)
        self.max_tokens = max_tokens
        self.ids = {p: self._encode(p) for p in PROMPTS}
        # The ground truth is plain transformers, before any prepacking: every target (this one
        # included) is checked against what dense `generate` answers.
        self._reference = {p: self.generate([p])[0] for p in PROMPTS}
        from pyfunc_server.prepacked_weights import prepack_linear_layers

        self.layers = prepack_linear_layers(self.model, prepack_weights)

    def _encode(self, prompt: str) -> list[int]:
        return list(
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True
            )["input_ids"]
        )

    def generate(self, prompts: list[str]) -> list[str]:
        batch = self.tokenizer.pad(
            {"input_ids": [self.ids[p] for p in prompts]}, padding=True, return_tensors="pt"
        )
        with self.torch.inference_mode():
            out = self.model.generate(
                **batch,
                do_sample=False,
                max_new_tokens=self.max_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        width = batch["input_ids"].shape[1]
        # The stack's rule for answer text (promptlab_stack/text.py), so "answers exact" compares
        # like with like.
        return [
            drop_incomplete_utf8_tail(self.tokenizer.decode(row[width:], skip_special_tokens=True))
            for row in out
        ]

    def first_token_ms(self, repeats: int = 3) -> dict[str, float]:
        """What the first token of an answer costs the model, each prompt alone: the prefill of
        the prompt and one decoding step after it (ms, medians over prompts and repeats)."""
        import statistics

        prefill, step = [], []
        with self.torch.inference_mode():
            for _ in range(repeats):
                for prompt in PROMPTS:
                    ids = self.torch.tensor([self.ids[prompt]])
                    t0 = time.perf_counter()
                    # The head on the last position only, as generate and the server compute it.
                    out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
                    t1 = time.perf_counter()
                    token = out.logits[:, -1:].argmax(-1)
                    self.model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
                    t2 = time.perf_counter()
                    prefill.append(t1 - t0)
                    step.append(t2 - t1)
        return {
            "prefill_ms": statistics.median(prefill) * 1000,
            "step_ms": statistics.median(step) * 1000,
        }

    def reference(self) -> dict[str, str]:
        """Each prompt alone, greedy, with plain dense layers: the answer every server should
        give."""
        return dict(self._reference)

    def measure(self, concurrency: int, requests: int, reference: dict[str, str]) -> dict:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(requests)]
        from bench.servers import peak_rss_mb, reset_peak

        latencies, exact = [], 0
        reset_peak()
        t0 = time.perf_counter()
        for i in range(0, requests, concurrency):
            chunk = prompts[i : i + concurrency]
            t = time.perf_counter()
            texts = self.generate(chunk)
            latencies += [(time.perf_counter() - t) * 1000] * len(chunk)
            exact += sum(reference[p] == x for p, x in zip(chunk, texts, strict=True))
        wall = time.perf_counter() - t0
        return {
            "requests": requests,
            "errors": 0,
            "error_sample": [],
            "wall_s": wall,
            "rps": requests / wall,
            "tok_s": requests * self.max_tokens / wall,
            "peak_rss_mb": peak_rss_mb(),
            "latencies_ms": latencies,
            "completion_tokens": self.max_tokens,
            "exact": exact / requests,
        }
