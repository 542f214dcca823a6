"""Fidelity: how far an engine's greedy answers are from float32 `generate` on the same model.

Asks a running stack's endpoint (through the UI's path, the tracking server's gateway proxy) for
greedy answers to the prompts, and compares each with plain transformers' `generate` in float32
on the model's Hugging Face checkpoint, token by token (the answer tokenized by the model's
tokenizer). Reports the share of answers that are identical and, among the others, the median
position of the first token that differs. Run it once per engine or quantization (the stack
restarted with another LLAMACPP_QUANT, say); each run adds its line to the report.

    python -m bench.fidelity --model ./weights/llm-jp-3-3.7b-instruct \\
        --stack-url http://127.0.0.1:5000 --endpoint llm-jp-3-3.7b-instruct --label llamacpp-Q8_0

A model with random weights (the tests' tiny models, the benchmark's real-shape one) has no
meaningful figure: its answers are noise whose greedy choices were spread far apart on purpose.
Name a real model for a real figure.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import urllib.request
from pathlib import Path

from bench.prompts import PROMPTS

PROXY = "/ajax-api/2.0/mlflow/gateway-proxy"


def ask(stack_url: str, endpoint: str, prompt: str, max_tokens: int) -> str:
    body = {
        "gateway_path": f"gateway/{endpoint}/invocations",
        "json_data": {
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": max_tokens,
        },
    }
    headers = {"Content-Type": "application/json"}
    user, password = (
        os.environ.get("MLFLOW_TRACKING_USERNAME"),
        os.environ.get("MLFLOW_TRACKING_PASSWORD"),
    )
    if user and password:
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        )
    req = urllib.request.Request(
        stack_url.rstrip("/") + PROXY, json.dumps(body).encode(), headers, method="POST"
    )
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read())["choices"][0]["message"]["content"]


def first_difference(reference: list[int], answer: list[int]) -> int | None:
    """The position of the first token that differs (None: identical)."""
    for i, (a, b) in enumerate(zip(reference, answer, strict=False)):
        if a != b:
            return i
    return None if len(reference) == len(answer) else min(len(reference), len(answer))


def compare(model_dir: Path, prompts: list[str], answers: list[str], max_tokens: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    differences: list[int] = []
    for prompt, answer in zip(prompts, answers, strict=True):
        enc = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_tokens)
        reference = out[0][enc["input_ids"].shape[1] :].tolist()
        if reference and reference[-1] == tokenizer.eos_token_id:
            reference = reference[:-1]
        text = tokenizer.decode(reference, skip_special_tokens=True)
        if text == answer:
            continue
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        position = first_difference(reference, ids)
        differences.append(position if position is not None else len(reference))
    return {
        "prompts": len(prompts),
        "identical": len(prompts) - len(differences),
        "share_identical": (len(prompts) - len(differences)) / len(prompts),
        "median_first_difference": statistics.median(differences) if differences else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="the Hugging Face checkpoint")
    p.add_argument("--stack-url", default="http://127.0.0.1:5000")
    p.add_argument("--endpoint", required=True, help="the chat endpoint serving that model")
    p.add_argument("--label", required=True, help="what is measured, e.g. llamacpp-Q8_0")
    p.add_argument("--prompts", type=Path, help="a text file, one prompt per line")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path("bench/results/fidelity.json"))
    args = p.parse_args(argv)
    prompts = (
        [line for line in args.prompts.read_text(encoding="utf-8").splitlines() if line.strip()]
        if args.prompts
        else PROMPTS
    )
    answers = [ask(args.stack_url, args.endpoint, q, args.max_tokens) for q in prompts]
    result = {"label": args.label, "model": str(args.model), "max_tokens": args.max_tokens}
    result |= compare(args.model, prompts, answers, args.max_tokens)
    report = json.loads(args.out.read_text()) if args.out.exists() else []
    report = [r for r in report if r["label"] != args.label] + [result]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    print("| engine | prompts | identical to float32 generate | median first differing token |")
    print("|---|---|---|---|")
    for r in report:
        median = r["median_first_difference"]
        print(
            f"| {r['label']} | {r['prompts']} | {r['share_identical']:.0%} "
            f"| {'-' if median is None else median} |"
        )
    print(
        "\nA model with random weights (the tests' and the benchmark's) gives no meaningful figure."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
