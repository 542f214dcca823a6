"""Closed-loop HTTP clients: what each target is sent, and how requests/s and latency are
measured."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.prompts import PROMPTS
from bench.servers import ENDPOINT, PEER_ENDPOINT, Server
from promptlab_eval.tracking_client import read_stream


@dataclass
class Target:
    name: str
    url: str
    path: str
    body: callable  # prompt -> JSON body
    answer: callable  # response JSON -> (text, completion tokens)
    stream: bool = False  # asks for a stream: the time to the first piece is measured too


def chat_body(prompt: str, max_tokens: int) -> dict:
    return {
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0.0,
        "max_tokens": max_tokens,
    }


def openai_answer(body: dict) -> tuple[str, int]:
    return body["choices"][0]["message"]["content"], body["usage"]["completion_tokens"]


def http_targets(servers: dict[str, Server], args, model_dir: Path) -> list[Target]:
    n = args.max_tokens
    proxy_path = "/ajax-api/2.0/mlflow/gateway-proxy"

    def chat(p):
        return chat_body(p, n)

    def via_proxy(endpoint):  # what the Prompt Engineering UI sends
        return lambda p: {
            "gateway_path": f"gateway/{endpoint}/invocations",
            "json_data": chat_body(p, n),
        }

    def peer(p):
        return {"model": str(model_dir), **chat_body(p, n)}

    def streamed_via_proxy(p):  # what promptlab-eval sends
        body = via_proxy(ENDPOINT)(p)
        return body | {"json_data": body["json_data"] | {"stream": True}}

    def streamed_openai(p):  # what the built-in AI Gateway sends for a streaming client
        return {"model": ENDPOINT, **chat_body(p, n), "stream": True}

    candidates = [
        ("direct", "direct", "/invocations", chat),
        ("gateway", "gateway", f"/gateway/{ENDPOINT}/invocations", chat),
        ("proxy", "tracking", proxy_path, via_proxy(ENDPOINT)),
        ("transformers-cb", "transformers", "/v1/chat/completions", peer),
        ("proxy-transformers-cb", "tracking", proxy_path, via_proxy(PEER_ENDPOINT)),
        ("pyfunc-unbatched", "unbatched", "/invocations", chat),
        ("proxy-stream", "tracking", proxy_path, streamed_via_proxy),
        ("gateway-stream", "gateway", "/v1/chat/completions", streamed_openai),
    ]
    targets = [
        Target(name, servers[server].url, path, body, openai_answer, name.endswith("-stream"))
        for name, server, path, body in candidates
        if name in args.targets and server in servers
    ]
    if args.stack_url:
        targets.append(
            Target(
                "stack",
                args.stack_url.rstrip("/"),
                proxy_path,
                via_proxy(args.stack_endpoint),
                openai_answer,
            )
        )
    return targets


class Client:
    """One keep-alive HTTP connection, like one browser tab or one gateway connection."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.conn = None

    def post(self, path: str, body: dict) -> dict:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
            try:
                self.conn.request("POST", path, data, {"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                raw = resp.read()
                if resp.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                break
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        if resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {resp.status}: {raw[:300]!r}")
        return json.loads(raw)

    def post_stream(self, path: str, body: dict) -> tuple[dict, float]:
        """POST for a stream of server-sent events, on the keep-alive connection; the answer
        joined as an unstreamed one would be, and the seconds to the first piece of text."""
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
        start = time.perf_counter()
        try:
            self.conn.request("POST", path, data, {"Content-Type": "application/json"})
            resp = self.conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"{path}: HTTP {resp.status}: {resp.read()[:300]!r}")
            # As promptlab-eval reads it (an `error` event raises).
            streamed = read_stream(iter(resp.readline, b""), start)
            resp.read()  # the end of the body, so that the connection can carry the next request
            if resp.getheader("connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
        except BaseException:
            self.conn.close()
            self.conn = None
            raise
        answer = {"choices": [{"message": {"content": streamed.text}}], "usage": streamed.usage}
        return answer, streamed.first_token_ms / 1000


def measure_http(
    target: Target,
    concurrency: int,
    requests: int,
    reference: dict[str, str],
    server: Server | None = None,
) -> dict:
    """`requests` requests from `concurrency` closed-loop clients; `server`: the one holding the
    model, whose peak memory during the point is recorded."""
    if server is not None:
        server.reset_peak()
    point = _measure_http(target, concurrency, requests, reference)
    if server is not None:
        point["peak_rss_mb"] = server.memory()["peak_rss_mb"]
    return point


def _measure_http(
    target: Target, concurrency: int, requests: int, reference: dict[str, str]
) -> dict:
    latencies: list[float] = [0.0] * requests
    first_pieces: list[float] = [0.0] * requests
    answers: list[tuple[str, str, int]] = [("", "", 0)] * requests
    errors: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)

    def worker():
        client = Client(target.url)
        start.wait()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            prompt = PROMPTS[i % len(PROMPTS)]
            t = time.perf_counter()
            try:
                if target.stream:
                    body, first_pieces[i] = client.post_stream(target.path, target.body(prompt))
                else:
                    body = client.post(target.path, target.body(prompt))
                text, tokens = target.answer(body)
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(str(e)[:300])
                continue
            latencies[i] = time.perf_counter() - t
            answers[i] = (prompt, text, tokens)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    done = [a for a in answers if a[0]]
    return {
        "requests": requests,
        "errors": len(errors),
        "error_sample": errors[:3],
        "wall_s": wall,
        "rps": len(done) / wall,
        "tok_s": sum(a[2] for a in done) / wall,
        "latencies_ms": [x * 1000 for x, a in zip(latencies, answers, strict=True) if a[0]],
        "first_token_ms": [x * 1000 for x, a in zip(first_pieces, answers, strict=True) if a[0]]
        if target.stream
        else [],
        "completion_tokens": statistics.mean(a[2] for a in done) if done else 0,
        "exact": sum(reference.get(p) == text for p, text, _ in done) / max(1, len(done)),
    }


def measure_overhead(targets: list[Target], max_tokens: int, samples: int) -> dict:
    """Latency of one request at a time, the targets taking turns request by request (so that
    drifting load from other work hits them alike), in ms: the median per target, and the
    overhead of the gateway and the tracking proxy over `direct` as the median of the paired
    differences (same prompt, measured back to back), less exposed to the spread of generation
    times than a difference of medians."""
    import random

    clients = {t.name: Client(t.url) for t in targets}
    latencies: dict[str, list[float]] = {t.name: [] for t in targets}
    order = list(targets)
    for i in range(samples):
        random.shuffle(order)
        prompt = PROMPTS[i % len(PROMPTS)]
        for t in order:
            body = t.body(prompt)
            body = (
                body | {"json_data": body["json_data"] | {"max_tokens": max_tokens}}
                if "json_data" in body
                else body | {"max_tokens": max_tokens}
            )
            start = time.perf_counter()
            clients[t.name].post(t.path, body)
            latencies[t.name].append((time.perf_counter() - start) * 1000)
    medians = {name: statistics.median(v) for name, v in latencies.items()}
    direct = latencies.get("direct")
    paired = {
        name: statistics.median(x - d for x, d in zip(v, direct, strict=True))
        for name, v in latencies.items()
        if direct and name in ("gateway", "proxy")
    }
    return {"median_ms": medians, "over_direct_ms": paired}


def measure_short_during_long(
    target: Target, short_tokens: int, long_tokens: int, repeats: int = 5
) -> dict:
    """How long a short request takes alone, and sent while a long one generates (a quarter into
    it): with continuous batching it joins the long one at the next step and takes about its own
    generation time, instead of waiting for the long answer to end. Medians over `repeats`; each
    repeat measures the short request alone right before it is sent during a long one, so that
    a machine that slows down or speeds up meanwhile moves both figures alike."""

    def with_tokens(prompt: str, tokens: int) -> dict:
        body = target.body(prompt)
        if "json_data" in body:
            return body | {"json_data": body["json_data"] | {"max_tokens": tokens}}
        return body | {"max_tokens": tokens}

    def timed(client: Client, prompt: str, tokens: int) -> float:
        start = time.perf_counter()
        client.post(target.path, with_tokens(prompt, tokens))
        return time.perf_counter() - start

    a, b = Client(target.url), Client(target.url)
    long_alone = timed(b, PROMPTS[3], long_tokens)
    alone, during, long_ended_first = [], [], 0
    for _ in range(repeats):
        # Twice: the first one after a pair may wait BATCH_WINDOW_MS for the second request the
        # batcher expects (two were in flight just before); a user alone meets it only once.
        timed(a, PROMPTS[0], short_tokens)
        alone.append(timed(a, PROMPTS[0], short_tokens))
        ended = threading.Event()
        runner = threading.Thread(
            target=lambda ended=ended: (timed(b, PROMPTS[3], long_tokens), ended.set())
        )
        runner.start()
        time.sleep(long_alone / 4)
        during.append(timed(a, PROMPTS[0], short_tokens))
        long_ended_first += ended.is_set()
        runner.join()
    return {
        "short_alone_ms": statistics.median(alone) * 1000,
        "short_during_long_ms": statistics.median(during) * 1000,
        "long_alone_ms": long_alone * 1000,
        "long_ended_first": long_ended_first,
        "short_tokens": short_tokens,
        "long_tokens": long_tokens,
        "repeats": repeats,
    }
