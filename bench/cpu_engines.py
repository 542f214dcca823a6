"""The CPU engines side by side, at the model's full depth: `pyfunc` (float32, its defaults) and
`llamacpp` (llama.cpp on GGUF, Q8_0 and Q4_K_M), each alone on the machine, one after the other.

For each engine, the services of its compose profile run on loopback from this Python environment
with the commands their images run (bench/servers.py; the llamacpp engine with the llama.cpp build
copied out of its image, so build it first: `docker compose --profile llamacpp build`), on a model
of llm-jp-3-3.7b-instruct's shape with all its 28 layers (`--layers`; bench/real_shape.py, random
weights, SentencePiece tokenizer as llm-jp-3 has). Measured, at each concurrency (closed-loop
clients, greedy chat requests):
- new tokens/s and latency p50/p95 through the UI's path (the tracking server's gateway proxy,
  as the Prompt Engineering UI calls it) and direct (the pyfunc server's /invocations;
  llama-server's own /v1/completions on the same token ids the front sends);
- time to first token of a 200-token prompt, streamed through the UI's proxy;
- the engine's peak resident memory (every process of it: for llamacpp the front and
  llama-server's processes);
- beside each figure its physical limit: the machine's memory bandwidth (measured here) divided by
  the bytes of weights one decoding step reads (float32 weights, or the GGUF file's tensors, less
  the token embedding, of which a step reads one row); at c=8 a step serves 8 answers.

    python -m bench.cpu_engines                      # 28 layers, pyfunc, Q8_0, Q4_K_M, c=1 and 8
    python -m bench.cpu_engines --layers 2 --engines llamacpp-Q8_0

Writes bench/results/cpu-engines/results.json and results.md (docs/performance.md quotes it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.clients import Client, Target, _measure_http, chat_body, openai_answer  # noqa: E402
from bench.real_shape import build_real_shape_model  # noqa: E402
from bench.servers import (  # noqa: E402
    ENDPOINT,
    REPO,
    Server,
    gateway_server,
    pyfunc_server,
    tracking_server,
)
from scripts.loopback import free_port  # noqa: E402

ENGINES = ["pyfunc", "llamacpp-Q8_0", "llamacpp-Q4_K_M"]
PROXY = "/ajax-api/2.0/mlflow/gateway-proxy"
# About 200 tokens of the SentencePiece tokenizer: the time-to-first-token prompt.
LONG_PROMPT = "りんごは赤い色をしています。バナナは黄色です。空は青く、海も青い。" * 5


def memory_bandwidth_gbs(gib: int = 1, repeats: int = 5) -> float:
    """Reading `gib` GiB of float32 with torch's sum on this process's threads: the best of
    `repeats`, in GB/s."""
    import torch

    x = torch.ones(gib * (1 << 30) // 4)
    x.sum()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best / 1e9


def float32_bytes_per_step(model_dir: Path) -> int:
    """Every weight but the token embedding (a step reads one of its rows), in float32."""
    config = json.loads((model_dir / "config.json").read_text())
    total = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    return total - config["vocab_size"] * config["hidden_size"] * 4


def gguf_bytes_per_step(path: Path, lcpp: Path) -> int:
    sys.path.insert(0, str(lcpp / "gguf-py"))  # llama.cpp's own reader, from its source
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return sum(int(t.n_bytes) for t in reader.tensors if t.name != "token_embd.weight")


def llama_cpp_dir(image: str, work: Path) -> Path:
    """llama.cpp's build (server, quantizer, converter, gguf-py), copied out of the image."""
    target = work / "llama.cpp"
    if not (target / "bin" / "llama-server").exists():
        container = subprocess.run(
            ["docker", "create", image], capture_output=True, text=True, check=True
        ).stdout.strip()
        try:
            subprocess.run(["docker", "cp", f"{container}:/opt/llama.cpp", str(target)], check=True)
        finally:
            subprocess.run(["docker", "rm", container], capture_output=True)
    return target


def llamacpp_server(model_dir: Path, quant: str, work: Path, logs: Path, lcpp: Path) -> Server:
    port = free_port()
    while free_port() == port + 1:  # the router takes the next port
        port = free_port()
    return Server(
        f"llamacpp-{quant}",
        [
            sys.executable,
            "-m",
            "llamacpp.start",
            "--port",
            str(port),
            "--state-file",
            str(work / f"state-{quant}.json"),
            "--gguf-cache",
            str(work / "gguf"),
        ],
        port,
        "/models",
        logs,
        {
            "MODELS": f"{ENDPOINT}={model_dir}",
            "LLAMACPP_QUANT": quant,
            "LLAMA_CPP_DIR": str(lcpp),
            "PYTHONPATH": str(lcpp / "gguf-py"),
            "PATH": f"{lcpp / 'bin'}{os.pathsep}{os.environ['PATH']}",
        },
    )


def measure(target: Target, concurrency: int, requests: int, engine: Server) -> dict:
    engine.reset_peak()
    point = _measure_http(target, concurrency, requests, {})
    point["peak_rss_mb"] = engine.memory()["peak_rss_mb"]
    lat = sorted(point.pop("latencies_ms"))
    first = sorted(point.pop("first_token_ms"))
    pick = lambda xs, q: round(xs[min(len(xs) - 1, int(q * len(xs)))]) if xs else None  # noqa: E731
    return {
        **{k: point[k] for k in ("requests", "errors", "error_sample", "peak_rss_mb")},
        "tok_s": round(point["tok_s"], 2),
        "latency_ms_p50": round(statistics.median(lat)) if lat else None,
        "latency_ms_p95": pick(lat, 0.95),
        "first_token_ms_p50": round(statistics.median(first)) if first else None,
        "first_token_ms_p95": pick(first, 0.95),
    }


def run_engine(engine: str, args, model_dir: Path, work: Path, lcpp: Path | None) -> dict:
    logs = work / "logs"
    servers: list[Server] = []
    try:
        if engine == "pyfunc":
            server = pyfunc_server("pyfunc", model_dir, work, logs, {})
        else:
            assert lcpp is not None
            server = llamacpp_server(model_dir, engine.split("-", 1)[1], work, logs, lcpp)
        servers.append(server)
        started = time.monotonic()
        server.start()
        server.wait(timeout=args.start_timeout)
        ready_s = time.monotonic() - started
        backend = "pyfunc" if engine == "pyfunc" else "llamacpp"
        gateway = gateway_server(work, logs, server.url, None, model_dir, backend=backend)
        servers.append(gateway)
        gateway.start()
        gateway.wait()
        tracking = tracking_server(work, logs, gateway.url)
        servers.append(tracking)
        tracking.start()
        tracking.wait()

        n = args.max_tokens
        tokenizer = None
        if engine != "pyfunc":
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_dir)

        def direct_body(prompt: str) -> dict:
            if tokenizer is None:
                return chat_body(prompt, n)
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True
            )["input_ids"]
            return {"model": ENDPOINT, "prompt": list(ids), "temperature": 0.0, "max_tokens": n}

        def completion_answer(body: dict) -> tuple[str, int]:
            return body["choices"][0]["text"], body["usage"]["completion_tokens"]

        def ui(prompt: str, stream: bool = False) -> dict:
            return {
                "gateway_path": f"gateway/{ENDPOINT}/invocations",
                "json_data": {**chat_body(prompt, n), **({"stream": True} if stream else {})},
            }

        # Every request a prompt of its own from its first token: llama-server reuses a slot's
        # cached prefix, so a prompt sent before (to the other target, in the warm-up) would skip
        # its prefill there and not here (the pyfunc server caches nothing across requests).
        numbers = itertools.count()

        def fresh(body):
            return lambda prompt: body(f"{next(numbers):05d} {prompt}")

        if engine == "pyfunc":
            direct = Target("direct", server.url, "/invocations", fresh(direct_body), openai_answer)
        else:
            direct = Target(
                "direct",
                f"http://127.0.0.1:{server.port + 1}",
                "/v1/completions",
                fresh(direct_body),
                completion_answer,
            )
        targets = [Target("ui", tracking.url, PROXY, fresh(ui), openai_answer), direct]
        # The conversion's file is written out first (its write-back took CPU from the first
        # point measured after it), then both paths are warmed up (the first request pays
        # one-off costs), then the points.
        os.sync()
        Client(tracking.url).post(PROXY, ui("こんにちは"))
        Client(direct.url).post(direct.path, direct.body("こんにちは"))
        result: dict = {"ready_s": round(ready_s), "points": {}}
        for c in args.concurrency:
            for target in targets:
                requests = max(args.requests, 2 * c) if c > 1 else args.requests
                point = measure(target, c, requests, server)
                result["points"][f"{target.name}@{c}"] = point
                print(engine, target.name, c, point, flush=True)
        long_prompt = Target(
            "ui-stream-200",
            tracking.url,
            PROXY,
            fresh(lambda p: ui(f"{p}\n{LONG_PROMPT}", True)),
            openai_answer,
            stream=True,
        )
        for c in args.concurrency:
            point = measure(long_prompt, c, max(3, c), server)
            result["points"][f"ttft-200@{c}"] = point
            print(engine, "ttft-200", c, point, flush=True)
        if engine != "pyfunc":
            gguf = next((work / "gguf").rglob(f"*-{engine.split('-', 1)[1]}.gguf"))
            result["weights_bytes"] = gguf.stat().st_size
            assert lcpp is not None
            result["bytes_per_step"] = gguf_bytes_per_step(gguf, lcpp)
        else:
            result["weights_bytes"] = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
            result["bytes_per_step"] = float32_bytes_per_step(model_dir)
        return result
    finally:
        for s in reversed(servers):
            s.stop()


def table(report: dict) -> list[str]:
    bw = report["bandwidth_gbs"]
    lines = [
        f"Machine: {report['cpus']} CPUs, memory bandwidth {bw:.1f} GB/s (torch sum over 1 GiB). "
        f"Model: llm-jp-3-3.7b-instruct's shape, {report['layers']} layers, random weights; "
        f"greedy chat, {report['max_tokens']} new tokens a request.",
        "",
        "| engine | weights | path | c | new tokens/s | limit (bandwidth) | latency p50 / p95 ms "
        "| peak memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for engine, r in report["engines"].items():
        limit1 = bw * 1e9 / r["bytes_per_step"]
        for key, p in r["points"].items():
            if key.startswith("ttft"):
                continue
            path, c = key.split("@")
            limit = limit1 * int(c)
            lines.append(
                f"| {engine} | {r['weights_bytes'] / 1e9:.2f} GB | {path} | {c} | {p['tok_s']:.2f} "
                f"| {limit:.1f} | {p['latency_ms_p50']} / {p['latency_ms_p95']} "
                f"| {p['peak_rss_mb'] / 1024:.1f} GB |"
            )
    lines += [
        "",
        "Time to first token, a 200-token prompt streamed through the UI's proxy (ms, p50 / p95):",
        "",
        "| engine | c | first token p50 / p95 ms |",
        "|---|---|---|",
    ]
    for engine, r in report["engines"].items():
        for key, p in r["points"].items():
            if key.startswith("ttft"):
                c = key.split("@")[1]
                lines.append(
                    f"| {engine} | {c} | {p['first_token_ms_p50']} / {p['first_token_ms_p95']} |"
                )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=28, help="of the real-shape model (28: all)")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--concurrency", default="1,8")
    p.add_argument("--requests", type=int, default=4, help="per point at c=1 (2c at c>1)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--image", default="mlflow-promptlab/llamacpp:latest")
    p.add_argument("--start-timeout", type=float, default=3600)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cpu-engines")
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    work = REPO / "bench" / "results" / "work"
    work.mkdir(parents=True, exist_ok=True)
    model_dir = build_real_shape_model(
        work / "models" / f"real-spm-{args.layers}",
        layers=args.layers,
        tokenizer_kind="sentencepiece",
    )
    lcpp = llama_cpp_dir(args.image, work) if any(e != "pyfunc" for e in engines) else None
    report = {
        "layers": args.layers,
        "max_tokens": args.max_tokens,
        "cpus": os.cpu_count(),
        "bandwidth_gbs": memory_bandwidth_gbs(),
        "engines": {},
    }
    for engine in engines:
        report["engines"][engine] = run_engine(engine, args, model_dir, work, lcpp)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (args.out / "results.md").write_text("\n".join(table(report)) + "\n", encoding="utf-8")
    print("\n".join(table(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
