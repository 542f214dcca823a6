"""Throughput and latency of the pyfunc model server, alone and behind the UI's path.

Starts, on loopback and from this Python environment (the same code and pinned versions as the
images), the three services of docker-compose.yml's pyfunc profile with the commands their images
run (bench/servers.py), plus `transformers serve --continuous-batching` on the same model and the
same pyfunc server with batching off, then sends every target the same greedy chat requests from
closed-loop clients at each concurrency level (bench/clients.py), beside in-process
`model.generate` (bench/in_process.py). bench/README.md says what each target is and how to read
the results (bench/report.py writes them to bench/results/).

    python -m bench.run_benchmark                     # tiny model, built on the fly
    python -m bench.run_benchmark --model-dir /path/to/model --rounds 5
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

# As hf_pyfunc's generator does in the model server: idle OpenMP threads sleep rather than spin
# (before torch is imported here, for the in-process runs; the servers inherit it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.clients import http_targets, measure_http, measure_overhead  # noqa: E402
from bench.in_process import InProcess  # noqa: E402
from bench.report import check_targets, summarize, write_reports  # noqa: E402
from bench.servers import ENDPOINT, REPO, Server, start_servers  # noqa: E402


ALL_TARGETS = ["in-process", "direct", "gateway", "proxy", "transformers-cb", "proxy-transformers-cb",
               "pyfunc-unbatched"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, help="a local model folder (default: build the tiny model)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--concurrency", default="1,2,4,8,16")
    p.add_argument("--requests", type=int, default=48, help="requests per point")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--targets", default=",".join(ALL_TARGETS), help=f"comma-separated, of {ALL_TARGETS}")
    p.add_argument("--window-ms", type=float, help="BATCH_WINDOW_MS for the pyfunc server")
    p.add_argument("--max-batch", type=int, help="MAX_BATCH_SIZE for the pyfunc server")
    p.add_argument("--overhead-samples", type=int, default=60,
                   help="interleaved one-at-a-time requests per target for the overhead figures")
    p.add_argument("--torch-threads", type=int,
                   help="OMP_NUM_THREADS for every server and torch threads in-process (default: torch's)")
    p.add_argument("--stack-url", help="also measure a running compose stack's tracking proxy, e.g. "
                                       "http://127.0.0.1:5077")
    p.add_argument("--stack-endpoint", default=ENDPOINT, help="the stack's chat endpoint name")
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(ALL_TARGETS)
    if unknown:
        p.error(f"unknown targets {sorted(unknown)}")
    concurrency = [int(c) for c in args.concurrency.split(",")]
    # A `kill` of this script still stops the servers it started (the `finally` below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    model_dir = args.model_dir
    if model_dir is None:
        from scripts.make_tiny_model import build_tiny_model

        model_dir = build_tiny_model(work / "models" / "tiny-ja")
    model_dir = model_dir.resolve()
    print(f"model: {model_dir}", flush=True)

    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    inproc = InProcess(model_dir, args.max_tokens)
    reference = inproc.reference()
    servers: dict[str, Server] = {}
    try:
        print("starting servers ...", flush=True)
        start_servers(args, model_dir, work, servers)
        targets = http_targets(servers, args, model_dir)
        # Warm up: first requests load lazily (transformers serve sets up its KV cache, ~30 s).
        for t in targets:
            measure_http(t, max(concurrency), max(concurrency), reference)
        raw: dict[str, dict[int, list[dict]]] = {}
        for r in range(args.rounds):
            for c in concurrency:
                if "in-process" in args.targets:
                    raw.setdefault("in-process", {}).setdefault(c, []).append(
                        inproc.measure(c, args.requests, reference))
                for t in targets:
                    raw.setdefault(t.name, {}).setdefault(c, []).append(
                        measure_http(t, c, args.requests, reference))
                for s in servers.values():
                    s.check_alive()
                line = "  ".join(f"{n}={v[c][-1]['rps']:.1f}" for n, v in raw.items())
                print(f"round {r + 1} c={c:>2}: {line} req/s", flush=True)
        # Overhead of the gateway and the tracking proxy: same requests, one at a time, interleaved.
        overhead = {}
        chain = [t for t in targets if t.name in ("direct", "gateway", "proxy", "transformers-cb",
                                                  "proxy-transformers-cb")]
        if any(t.name == "direct" for t in chain):
            for tokens in sorted({args.max_tokens, 1}, reverse=True):
                overhead[str(tokens)] = measure_overhead(chain, tokens, args.overhead_samples)
                print(f"latency one at a time, {tokens} new tokens (ms): " + "  ".join(
                    f"{k}={v:.1f}" for k, v in overhead[str(tokens)]["median_ms"].items()), flush=True)
        memory = {s.name: s.memory() for s in servers.values()}
    finally:
        for s in servers.values():
            s.stop()

    order = [n for n in [*ALL_TARGETS, "stack"] if n in raw]
    results = {n: {str(c): summarize(pts) for c, pts in raw[n].items()} for n in order}
    import torch

    report = {
        "config": {"model": model_dir.name, "model_dir": str(model_dir), "requests": args.requests,
                   "max_tokens": args.max_tokens, "rounds": args.rounds, "concurrency": concurrency,
                   "window_ms": args.window_ms, "max_batch": args.max_batch,
                   "torch_threads": args.torch_threads,
                   "command": " ".join([Path(sys.executable).name, *sys.argv])},
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)",
        "results": results,
        "overhead_ms": overhead,
        "checks": check_targets(results, concurrency, overhead),
        "memory": memory,
    }
    write_reports(args.out, report)
    print((args.out / "results.md").read_text())
    print(f"written: {args.out / 'results.json'}, results.md, results.png")
    return 0 if all(c["met"] for c in report["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
