"""Throughput and latency of the pyfunc model server, alone and behind the UI's path.

Starts, on loopback and from this Python environment (the same code and pinned versions as the
images), the three services of docker-compose.yml's pyfunc profile with the commands their images
run (bench/servers.py), plus `transformers serve --continuous-batching` on the same model and the
same pyfunc server with batching off, then sends every target the same greedy chat requests from
closed-loop clients at each concurrency level (bench/clients.py), beside in-process
`model.generate` (bench/in_process.py). bench/README.md says what each target is and how to read
the results (bench/report.py writes them to bench/results/).

    python -m bench.run_benchmark                     # tiny and real-shape models, built on the fly
    python -m bench.run_benchmark --models tiny --rounds 5
    python -m bench.run_benchmark --model-dir /path/to/model
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

# As pyfunc_server's loading does in the model server: idle OpenMP threads sleep rather than spin
# (before torch is imported here, for the in-process runs; the servers inherit it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.clients import http_targets, measure_http, measure_overhead, measure_short_during_long  # noqa: E402
from bench.in_process import InProcess  # noqa: E402
from bench.report import check_targets, summarize, write_reports  # noqa: E402
from bench.servers import ENDPOINT, REPO, Server, start_servers  # noqa: E402

ALL_TARGETS = [
    "in-process",
    "direct",
    "gateway",
    "proxy",
    "transformers-cb",
    "proxy-transformers-cb",
    "pyfunc-unbatched",
    "proxy-stream",
    "gateway-stream",
]
DEFAULT_TARGETS = ["in-process", "proxy", "proxy-stream", "gateway-stream", "transformers-cb"]
MODELS = ["tiny", "real"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models",
        default=",".join(MODELS),
        help="comma-separated, of tiny (a tiny Llama) and real (llm-jp-3-3.7b's width)",
    )
    p.add_argument(
        "--model-dir", type=Path, help="a local model folder instead (replaces --models)"
    )
    p.add_argument("--real-layers", type=int, default=2, help="layers of the real-shape model")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--concurrency", default="1,2,4,8,16")
    p.add_argument("--requests", type=int, default=48, help="requests per point (tiny model)")
    p.add_argument(
        "--real-requests",
        type=int,
        default=0,
        help="requests per point for the real-shape model (0: twice the concurrency, at least 8)",
    )
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--real-rounds", type=int, default=3, help="rounds for the real-shape model")
    p.add_argument(
        "--targets", default=",".join(DEFAULT_TARGETS), help=f"comma-separated, of {ALL_TARGETS}"
    )
    p.add_argument("--window-ms", type=float, help="BATCH_WINDOW_MS for the pyfunc server")
    p.add_argument("--max-batch", type=int, help="MAX_BATCH_SIZE for the pyfunc server")
    p.add_argument(
        "--overhead-samples",
        type=int,
        default=60,
        help="interleaved one-at-a-time requests per target for the overhead figures "
        "(tiny model, needs the direct target)",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        help="TORCH_THREADS for the pyfunc servers, OMP_NUM_THREADS for transformers serve "
        "and torch threads in-process (default: each picks its own)",
    )
    p.add_argument(
        "--prepack-weights",
        choices=["auto", "on", "off"],
        help="PREPACK_WEIGHTS for the pyfunc servers and in-process (default: the server's, auto)",
    )
    p.add_argument(
        "--stack-url",
        help="also measure a running compose stack's tracking proxy, e.g. http://127.0.0.1:5077",
    )
    p.add_argument("--stack-endpoint", default=ENDPOINT, help="the stack's chat endpoint name")
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(ALL_TARGETS)
    if unknown:
        p.error(f"unknown targets {sorted(unknown)}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(models) - set(MODELS):
        p.error(f"unknown models {sorted(set(models) - set(MODELS))}")
    concurrency = [int(c) for c in args.concurrency.split(",")]
    # A `kill` of this script still stops the servers it started (the `finally` below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = " ".join(
        ["python -m bench.run_benchmark", *(argv if argv is not None else sys.argv[1:])]
    )

    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    runs = []  # (name, folder, description, requests per concurrency, rounds)
    if args.model_dir is not None:
        runs.append(
            (
                args.model_dir.name,
                args.model_dir.resolve(),
                str(args.model_dir),
                lambda c: args.requests,
                args.rounds,
            )
        )
    for m in [] if args.model_dir is not None else models:
        if m == "tiny":
            from scripts.make_tiny_model import build_tiny_model

            runs.append(
                (
                    "tiny",
                    build_tiny_model(work / "models" / "tiny-ja").resolve(),
                    "tiny Llama (hidden 64, 2 layers, 512 tokens)",
                    lambda c: args.requests,
                    args.rounds,
                )
            )
        else:
            from bench.real_shape import build_real_shape_model

            folder = build_real_shape_model(
                work / "models" / f"real-shape-{args.real_layers}l", layers=args.real_layers
            ).resolve()
            runs.append(
                (
                    f"real-shape-{args.real_layers}l",
                    folder,
                    f"llm-jp-3-3.7b's width (hidden 3072, intermediate 8192, 24 heads, vocabulary "
                    f"99584), {args.real_layers} layers, random weights, float32",
                    lambda c: args.real_requests or max(8, 2 * c),
                    args.real_rounds,
                )
            )
    reports = []
    for name, folder, description, requests, rounds in runs:
        print(f"model: {name} ({folder})", flush=True)
        reports.append(
            run_model(args, name, folder, description, requests, rounds, concurrency, work / name)
        )
    write_reports(args.out, reports, command)
    print((args.out / "results.md").read_text())
    print(f"written: {args.out / 'results.json'}, results.md, results-*.png")
    return 0 if all(c["met"] for r in reports for c in r["checks"]) else 1


def run_model(
    args,
    name: str,
    model_dir: Path,
    description: str,
    requests,
    rounds: int,
    concurrency: list[int],
    work: Path,
) -> dict:
    """Every target on one model: servers started, rounds interleaved, servers stopped."""
    import torch

    inproc = InProcess(
        model_dir, args.max_tokens, args.torch_threads, args.prepack_weights or "auto"
    )
    reference = inproc.reference()
    # What a first token costs the model itself: the bar for the streamed targets' first piece.
    first_token = inproc.first_token_ms()
    if "in-process" not in args.targets:
        inproc.model = None  # only its answers were needed
    servers: dict[str, Server] = {}
    # The process that holds the model behind each target, for its peak memory.
    holder = {
        "direct": "direct",
        "gateway": "direct",
        "proxy": "direct",
        "transformers-cb": "transformers",
        "proxy-transformers-cb": "transformers",
        "pyfunc-unbatched": "unbatched",
        "proxy-stream": "direct",
        "gateway-stream": "direct",
    }
    try:
        print("starting servers ...", flush=True)
        start_servers(args, model_dir, work, servers)
        targets = http_targets(servers, args, model_dir)
        # Warm up: first requests load lazily (transformers serve sets up its KV cache).
        for t in targets:
            measure_http(t, max(concurrency), max(concurrency), reference)
        raw: dict[str, dict[int, list[dict]]] = {}
        for r in range(rounds):
            for c in concurrency:
                n = requests(c)
                if "in-process" in args.targets:
                    raw.setdefault("in-process", {}).setdefault(c, []).append(
                        inproc.measure(c, n, reference)
                    )
                for t in targets:
                    raw.setdefault(t.name, {}).setdefault(c, []).append(
                        measure_http(t, c, n, reference, servers.get(holder.get(t.name, "")))
                    )
                for s in servers.values():
                    s.check_alive()
                line = "  ".join(f"{k}={v[c][-1]['tok_s']:.1f}" for k, v in raw.items())
                print(f"round {r + 1} c={c:>2}: {line} tok/s", flush=True)
        short_during_long = {}
        for t in targets:
            if t.name in ("proxy", "transformers-cb"):
                try:
                    short_during_long[t.name] = measure_short_during_long(
                        t, args.max_tokens, 8 * args.max_tokens
                    )
                except Exception as e:  # noqa: BLE001 - reported; the other figures stand
                    print(f"short during long, {t.name}: failed: {e}", flush=True)
                    continue
                print(f"short during long, {t.name}: {short_during_long[t.name]}", flush=True)
        # Overhead of the gateway and the tracking proxy: same requests, one at a time, interleaved.
        overhead = {}
        chain = [
            t
            for t in targets
            if t.name in ("direct", "gateway", "proxy", "transformers-cb", "proxy-transformers-cb")
        ]
        if any(t.name == "direct" for t in chain) and args.overhead_samples:
            for tokens in sorted({args.max_tokens, 1}, reverse=True):
                overhead[str(tokens)] = measure_overhead(chain, tokens, args.overhead_samples)
                print(
                    f"latency one at a time, {tokens} new tokens (ms): "
                    + "  ".join(
                        f"{k}={v:.1f}" for k, v in overhead[str(tokens)]["median_ms"].items()
                    ),
                    flush=True,
                )
        memory = {s.name: s.memory() for s in servers.values()}
        threads = _logged_threads(work / "logs" / "pyfunc.log")
    finally:
        for s in servers.values():
            s.stop()
        inproc.model = None

    order = [n for n in [*ALL_TARGETS, "stack"] if n in raw]
    results = {n: {str(c): summarize(pts) for c, pts in raw[n].items()} for n in order}
    counts = sorted({requests(c) for c in concurrency})
    return {
        "config": {
            "model": name,
            "model_dir": str(model_dir),
            "description": description,
            "requests": {str(c): requests(c) for c in concurrency},
            "requests_label": str(counts[0])
            if len(counts) == 1
            else "/".join(str(requests(c)) for c in concurrency)
            + f" (c={','.join(map(str, concurrency))})",
            "max_tokens": args.max_tokens,
            "rounds": rounds,
            "concurrency": concurrency,
            "window_ms": args.window_ms,
            "max_batch": args.max_batch,
            "torch_threads": args.torch_threads,
            "prepack_weights": args.prepack_weights,
        },
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}; in-process {inproc.threads} "
        f"torch threads, {inproc.layers}; model server: {threads}",
        "results": results,
        "short_during_long": short_during_long,
        "overhead_ms": overhead,
        "first_token_in_process_ms": first_token,
        "checks": check_targets(
            results,
            concurrency,
            overhead,
            short_during_long,
            against_limit=name != "tiny",
            first_token=first_token,
        ),
        "memory": memory,
    }


def _logged_threads(log: Path) -> str:
    """What the model server logged about its torch threads and its linear layers."""
    import re

    said = []
    try:
        for line in log.read_text(errors="replace").splitlines():
            found = re.search(r"(\d+ torch threads) for \S+: (.*)", line)
            if found:
                said.append(f"{found[1]}, {found[2]}")
            found = re.search(r": ((?:\d+ |dense )linear layers.*)", line)
            if found:
                said.append(found[1])
    except OSError:
        pass
    return "; ".join(said) or "?"


if __name__ == "__main__":
    sys.exit(main())
