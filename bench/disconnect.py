"""What a closed stream gives back (issue 27): the pyfunc model server drops a row whose reader
went away at its next step, and the batch's other rows decode faster for it.

On the real-shape model (bench/real_shape.py, `--layers`), the pyfunc server with its defaults
runs 8 streamed greedy chat requests at once (its `/stream` route, as the gateway calls it), twice:
- all 8 are read to the end;
- 4 of them are closed as soon as their first piece of text arrives (a user who leaves, clicks
  stop, or a client that times out), the other 4 are read to the end.
Reported: the decoding speed (new tokens/s after the first) of the 4 rows read to the end in both
cases, and how many tokens the closed rows had made when the server dropped them (its log).

    python -m bench.disconnect                 # 2 layers, 64 new tokens
    python -m bench.disconnect --layers 28

Writes bench/results/disconnect/results.json and results.md (docs/performance.md quotes it).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.real_shape import build_real_shape_model  # noqa: E402
from bench.servers import REPO, pyfunc_server  # noqa: E402

ROWS = 8
CLOSED = 4


def one_stream(port: int, prompt: str, max_tokens: int, close_early: bool, out: dict) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "stream": True,
    }
    started = time.perf_counter()
    conn.request("POST", "/stream", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    first = None
    usage: dict = {}
    for line in iter(resp.readline, b""):
        if not line.startswith(b"data:") or line.strip() == b"data: [DONE]":
            continue
        event = json.loads(line[5:])
        piece = (event.get("choices") or [{}])[0].get("delta", {}).get("content")
        if piece and first is None:
            first = time.perf_counter()
            if close_early:
                conn.close()  # the reader goes away
                out.update(closed=True)
                return
        usage = event.get("usage") or usage
    ended = time.perf_counter()
    tokens = usage.get("completion_tokens", 0)
    first = first or ended
    out.update(
        closed=False,
        tokens=tokens,
        first_s=first - started,
        decode_tokens_per_s=(tokens - 1) / (ended - first) if tokens > 1 and ended > first else 0,
    )
    conn.close()


def batch(port: int, max_tokens: int, close: int, round_no: int) -> list[dict]:
    results: list[dict] = [{} for _ in range(ROWS)]
    threads = [
        threading.Thread(
            target=one_stream,
            args=(
                port,
                f"質問 {round_no}-{i}: りんごは何色ですか？",
                max_tokens,
                i < close,
                results[i],
            ),
        )
        for i in range(ROWS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--work", type=Path, default=REPO / "bench" / "work")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "disconnect")
    args = p.parse_args(argv)
    model_dir = build_real_shape_model(args.work / f"real-shape-{args.layers}", args.layers)
    logs = args.out / "logs"
    server = pyfunc_server("pyfunc", model_dir, args.work, logs, {})
    server.start()
    try:
        server.wait()
        batch(server.port, 4, 0, -1)  # warm up
        kept: dict[str, list[float]] = {"all read": [], f"{CLOSED} closed": []}
        for r in range(args.rounds):
            for label, close in (("all read", 0), (f"{CLOSED} closed", CLOSED)):
                rows = batch(server.port, args.max_tokens, close, r)
                kept[label] += [x["decode_tokens_per_s"] for x in rows[CLOSED:]]
    finally:
        server.stop()
    log = (logs / "pyfunc.log").read_text(errors="replace")
    dropped = [line for line in log.splitlines() if "dropped" in line.lower()]
    result = {
        "layers": args.layers,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "rows": ROWS,
        "median_decode_tokens_per_s_of_the_4_rows_read_to_the_end": {
            k: round(statistics.median(v), 2) for k, v in kept.items()
        },
        "server_log_lines_about_dropped_rows": dropped[:8],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, ensure_ascii=False, indent=2))
    speeds = result["median_decode_tokens_per_s_of_the_4_rows_read_to_the_end"]
    md = [
        f"Real-shape model, {args.layers} layers, pyfunc defaults, {ROWS} streams at once, "
        f"{args.max_tokens} new tokens, {args.rounds} rounds; decoding speed of the "
        f"{ROWS - CLOSED} streams read to the end (median, new tokens/s after the first, each):",
        "",
        "| the other 4 streams | tokens/s each |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in speeds.items()),
        "",
        f"Rows dropped by the server (log): {len(dropped)}",
    ]
    (args.out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
