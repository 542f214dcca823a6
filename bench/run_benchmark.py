"""Throughput and latency of the pyfunc model server, alone and behind the UI's path.

Starts, on loopback and from this Python environment (the same code and pinned versions as the
images), the three services of docker-compose.yml's pyfunc profile:

    pyfunc    `mlflow models serve` of the saved hf_pyfunc model, one worker (as serve.py)
    gateway   `mlflow gateway start`, config from local_llm_gateway.render_config (as start.py)
    tracking  `mlflow server --app-name promptlab-utf8`, MLFLOW_DEPLOYMENTS_TARGET=gateway
              (as services/tracking/start.sh)

plus, for comparison, `transformers serve --continuous-batching` on the same model, and the same
pyfunc server with batching off (MAX_BATCH_SIZE=1: one prompt at a time). Then, for every
concurrency level, a fixed number of greedy chat requests (32 new tokens) is sent by that many
closed-loop clients to:

    direct      pyfunc  POST /invocations
    gateway     gateway POST /gateway/<endpoint>/invocations
    proxy       tracking POST /ajax-api/2.0/mlflow/gateway-proxy  (what the Prompt Engineering UI calls)
    stack       optional: the same proxy call on a running compose stack (--stack-url)
    transformers-cb        transformers serve POST /v1/chat/completions
    proxy-transformers-cb  the same, behind the same tracking server and gateway (OpenAI provider)
    pyfunc-unbatched       pyfunc with MAX_BATCH_SIZE=1, POST /invocations
    in-process  model.generate on `concurrency` left-padded prompts at once: the limit

Rounds interleave the targets so that noise from other work on the machine hits them alike;
numbers are medians over rounds. The overhead of the gateway and of the tracking proxy is then
measured one request at a time, the targets taking turns request by request. Results go to
bench/results/ (git-ignored): results.json, results.md and results.png, and the servers' logs
under work/logs/. The exit status is 0 when every target in results.md is met.

    /opt/venv-dev/bin/python bench/run_benchmark.py            # tiny model, built on the fly
    /opt/venv-dev/bin/python bench/run_benchmark.py --model-dir /path/to/model --rounds 5
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# As hf_pyfunc's generator does in the model server: idle OpenMP threads sleep rather than spin
# (before torch is imported here, for the in-process runs; the servers inherit it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "model"), str(REPO / "gateway")]

PROMPTS = [
    "りんごは何色ですか？",
    "東京は日本の首都です。富士山はどこにありますか？",
    "こんにちは",
    "The quick brown fox jumps over the lazy dog. What does the fox do?",
    "空は青く、海も青い。日本語の文章を書いてください。",
    "MLflow tracks experiments; the gateway routes prompts to models. What does MLflow do?",
    "カタカナとひらがなと漢字を使います。絵文字も😀使えます。",
    "What colour is an apple?",
]
ENDPOINT = "tiny-ja"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the servers ----------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    health: str
    logs: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{self.name}.log", "wb")
        # Own process group: stop() ends the server and its children (uvicorn workers) only.
        # The venv's bin first: `mlflow models serve` runs `uvicorn` from PATH.
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **self.env}
        self.proc = subprocess.Popen(self.argv, env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)

    def wait(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see "
                                   f"{self.logs / (self.name + '.log')}")
            try:
                with urllib.request.urlopen(self.url + self.health, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} did not become healthy in {timeout:.0f} s")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = (self.logs / f"{self.name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} died (exit {self.proc.returncode}):\n{tail}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def memory(self) -> dict:
        """Processes in the server's group and their resident memory (one model copy or not)."""
        pids = [int(p) for p in subprocess.run(["pgrep", "-g", str(self.proc.pid)],
                                               capture_output=True, text=True).stdout.split()]
        rss = hwm = 0
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            rss += int(fields.get("VmRSS", "0 kB").split()[0])
            hwm += int(fields.get("VmHWM", "0 kB").split()[0])
        return {"processes": len(pids), "rss_mb": round(rss / 1024), "peak_rss_mb": round(hwm / 1024)}


def save_pyfunc_model(model_dir: Path, path: Path, env: dict[str, str]) -> None:
    """As serve.py does, from the container environment `env` (the server gets `env` too)."""
    from hf_pyfunc.serve import model_config_from_env, save

    save(path, model_config_from_env({"MODEL_ID": str(model_dir), "SERVED_MODEL_NAME": ENDPOINT,
                                      "DEFAULT_MAX_NEW_TOKENS": "32", **env}))


PEER_ENDPOINT = "tiny-ja-transformers-cb"


def render_gateway_config(pyfunc_url: str | None, peer_url: str | None, model_dir: Path, path: Path) -> None:
    """The gateway config render_config.py writes for the pyfunc profile (our model server), plus
    one for the vLLM/TGI profiles pointed at `transformers serve`, for the peer behind the same
    gateway and tracking server."""
    from local_llm_gateway.render_config import local_endpoints, render, to_yaml, validate

    endpoints = []
    if pyfunc_url:
        env = {"MODEL_BACKEND": "pyfunc", "PYFUNC_URL": pyfunc_url, "SERVED_MODEL_NAME": ENDPOINT}
        endpoints += render(env)["endpoints"]
    if peer_url:
        # OpenAI's API under /v1, like vLLM; transformers serve wants the model path as the name.
        peer = local_endpoints({"VLLM_URL": peer_url, "MODEL_ID": str(model_dir),
                                "SERVED_MODEL_NAME": ""}, "vllm")
        peer[0]["name"], peer[1]["name"] = PEER_ENDPOINT, f"{PEER_ENDPOINT}-completions"
        peer[0]["model"]["name"] = peer[1]["model"]["name"] = str(model_dir)
        endpoints += peer
    config = {"endpoints": endpoints}
    validate(config)
    path.write_text(to_yaml(config), encoding="utf-8")


def pyfunc_server(name: str, model_path: Path, logs: Path, env: dict[str, str]) -> Server:
    port = free_port()
    # serve.py's command, on loopback; the timeout is compose's GENERATION_TIMEOUT_SECONDS.
    return Server(name, [str(BIN / "mlflow"), "models", "serve", "-m", str(model_path),
                         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
                         "--workers", "1"],
                  port, "/ping", logs, {"MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": "300", **env})


# -- the clients ----------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    url: str
    path: str
    body: callable  # prompt -> JSON body
    answer: callable  # response JSON -> (text, completion tokens)


def chat_body(prompt: str, max_tokens: int) -> dict:
    return {"messages": [{"role": "user", "content": prompt}], "temperature": 0.0,
            "max_tokens": max_tokens}


def openai_answer(body: dict) -> tuple[str, int]:
    return body["choices"][0]["message"]["content"], body["usage"]["completion_tokens"]


def http_targets(servers: dict[str, Server], args, model_dir: Path) -> list[Target]:
    n = args.max_tokens
    proxy_path = "/ajax-api/2.0/mlflow/gateway-proxy"

    def chat(p):
        return chat_body(p, n)

    def via_proxy(endpoint):  # what the Prompt Engineering UI sends
        return lambda p: {"gateway_path": f"gateway/{endpoint}/invocations", "json_data": chat_body(p, n)}

    def peer(p):
        return {"model": str(model_dir), **chat_body(p, n)}

    candidates = [
        ("direct", "direct", "/invocations", chat),
        ("gateway", "gateway", f"/gateway/{ENDPOINT}/invocations", chat),
        ("proxy", "tracking", proxy_path, via_proxy(ENDPOINT)),
        ("transformers-cb", "transformers", "/v1/chat/completions", peer),
        ("proxy-transformers-cb", "tracking", proxy_path, via_proxy(PEER_ENDPOINT)),
        ("pyfunc-unbatched", "unbatched", "/invocations", chat),
    ]
    targets = [Target(name, servers[server].url, path, body, openai_answer)
               for name, server, path, body in candidates
               if name in args.targets and server in servers]
    if args.stack_url:
        targets.append(Target("stack", args.stack_url.rstrip("/"), proxy_path,
                              via_proxy(args.stack_endpoint), openai_answer))
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


def measure_http(target: Target, concurrency: int, requests: int, reference: dict[str, str]) -> dict:
    latencies: list[float] = [0.0] * requests
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
                text, tokens = target.answer(client.post(target.path, target.body(prompt)))
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
        "latencies_ms": [x * 1000 for x, a in zip(latencies, answers) if a[0]],
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
            body = body | {"json_data": body["json_data"] | {"max_tokens": max_tokens}} if "json_data" in body \
                else body | {"max_tokens": max_tokens}
            start = time.perf_counter()
            clients[t.name].post(t.path, body)
            latencies[t.name].append((time.perf_counter() - start) * 1000)
    medians = {name: statistics.median(v) for name, v in latencies.items()}
    direct = latencies.get("direct")
    paired = {name: statistics.median(x - d for x, d in zip(v, direct))
              for name, v in latencies.items() if direct and name in ("gateway", "proxy")}
    return {"median_ms": medians, "over_direct_ms": paired}


class InProcess:
    """`model.generate` on `concurrency` left-padded prompts at once: what batching can reach."""

    def __init__(self, model_dir: Path, max_tokens: int):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.max_tokens = max_tokens
        self.ids = {p: self._encode(p) for p in PROMPTS}

    def _encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                       add_generation_prompt=True, return_dict=True)["input_ids"])

    def generate(self, prompts: list[str]) -> list[str]:
        batch = self.tokenizer.pad({"input_ids": [self.ids[p] for p in prompts]}, padding=True,
                                   return_tensors="pt")
        with self.torch.inference_mode():
            out = self.model.generate(**batch, do_sample=False, max_new_tokens=self.max_tokens,
                                      pad_token_id=self.tokenizer.pad_token_id)
        width = batch["input_ids"].shape[1]
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]

    def reference(self) -> dict[str, str]:
        """Each prompt alone, greedy: the answer every server should give."""
        return {p: self.generate([p])[0] for p in PROMPTS}

    def measure(self, concurrency: int, requests: int, reference: dict[str, str]) -> dict:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(requests)]
        latencies, exact = [], 0
        t0 = time.perf_counter()
        for i in range(0, requests, concurrency):
            chunk = prompts[i:i + concurrency]
            t = time.perf_counter()
            texts = self.generate(chunk)
            latencies += [(time.perf_counter() - t) * 1000] * len(chunk)
            exact += sum(reference[p] == x for p, x in zip(chunk, texts))
        wall = time.perf_counter() - t0
        return {"requests": requests, "errors": 0, "error_sample": [], "wall_s": wall,
                "rps": requests / wall, "latencies_ms": latencies,
                "completion_tokens": self.max_tokens, "exact": exact / requests}


# -- the run --------------------------------------------------------------------------------
def start_servers(args, model_dir: Path, work: Path, servers: dict[str, Server]) -> None:
    """Start the servers, adding each to `servers` as it starts (the caller stops them all)."""
    logs = work / "logs"
    want = set(args.targets)
    batch_env = {k: str(v) for k, v in (("BATCH_WINDOW_MS", args.window_ms),
                                         ("MAX_BATCH_SIZE", args.max_batch)) if v is not None}
    ours = bool(want & {"direct", "gateway", "proxy"})
    peer = bool(want & {"transformers-cb", "proxy-transformers-cb"})
    if ours:
        model_path = work / "pyfunc-model"
        save_pyfunc_model(model_dir, model_path, batch_env)
        servers["direct"] = pyfunc_server("pyfunc", model_path, logs, batch_env)
    if peer:
        port = free_port()
        servers["transformers"] = Server(
            "transformers-cb",
            [str(BIN / "transformers"), "serve", "--continuous-batching", "--host", "127.0.0.1",
             "--port", str(port), "--device", "cpu", str(model_dir)],
            # The OpenMP setting hf_pyfunc's generator picks for itself, for a fair comparison.
            port, "/health", logs, {"OMP_WAIT_POLICY": "PASSIVE"})
    if want & {"gateway", "proxy", "proxy-transformers-cb"}:
        port = free_port()
        config = work / "gateway.yaml"
        render_gateway_config(servers["direct"].url if ours else None,
                              servers["transformers"].url if "proxy-transformers-cb" in want else None,
                              model_dir, config)
        # start.py's command and server settings (GATEWAY_WORKERS defaults to 2).
        from local_llm_gateway.start import server_environment

        servers["gateway"] = Server("gateway", [str(BIN / "mlflow"), "gateway", "start",
                                                "--config-path", str(config), "--host", "127.0.0.1",
                                                "--port", str(port), "--workers", "2"],
                                    port, "/health", logs, server_environment(os.environ))
    if want & {"proxy", "proxy-transformers-cb"}:
        port = free_port()
        db = work / "tracking"
        shutil.rmtree(db, ignore_errors=True)
        db.mkdir(parents=True)
        # services/tracking/start.sh's command (MLFLOW_WORKERS defaults to 2).
        servers["tracking"] = Server(
            "tracking",
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "2", "--backend-store-uri", f"sqlite:///{db}/mlflow.db",
             "--artifacts-destination", str(db / "artifacts"), "--serve-artifacts",
             "--app-name", "promptlab-utf8", "--uvicorn-opts", "--timeout-worker-healthcheck 60"],
            port, "/health", logs, {"MLFLOW_DEPLOYMENTS_TARGET": servers["gateway"].url,
                                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    if "pyfunc-unbatched" in want:
        model_path = work / "pyfunc-model-unbatched"
        save_pyfunc_model(model_dir, model_path, {"MAX_BATCH_SIZE": "1"})
        servers["unbatched"] = pyfunc_server("pyfunc-unbatched", model_path, logs, {"MAX_BATCH_SIZE": "1"})
    for s in servers.values():
        if args.torch_threads:
            s.env["OMP_NUM_THREADS"] = str(args.torch_threads)
        s.start()
    for s in servers.values():
        s.wait()
        print(f"  {s.name} ready on {s.url}", flush=True)


def summarize(points: list[dict]) -> dict:
    """Median over rounds of requests/s; latency percentiles over all rounds' requests."""
    lat = sorted(x for p in points for x in p["latencies_ms"])
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] if lat else None  # noqa: E731
    return {
        "rps": statistics.median(p["rps"] for p in points),
        "rps_rounds": [round(p["rps"], 2) for p in points],
        "latency_ms_p50": statistics.median(lat) if lat else None,
        "latency_ms_p90": q(0.9),
        "errors": sum(p["errors"] for p in points),
        "error_sample": [e for p in points for e in p["error_sample"]][:3],
        "completion_tokens": statistics.mean(p["completion_tokens"] for p in points),
        "exact": statistics.mean(p["exact"] for p in points),
    }


def check_targets(results: dict, concurrency: list[int], overhead: dict | None = None) -> list[dict]:
    r = results
    checks = []

    def rps(name, c):
        return r.get(name, {}).get(str(c), {}).get("rps")

    def p50(name, c):
        return r.get(name, {}).get(str(c), {}).get("latency_ms_p50")

    if 1 in concurrency and 8 in concurrency:
        for name in ("proxy", "direct"):
            if rps(name, 1) and rps(name, 8):
                speedup = rps(name, 8) / rps(name, 1)
                checks.append({"target": f"8 concurrent vs 1 at a time ({name}) >= 4x",
                               "value": f"{speedup:.2f}x", "met": speedup >= 4})
    if 8 in concurrency:
        # Like for like (both behind tracking + gateway, both direct), then the UI's path against
        # the peer without any proxy in front.
        for ours, peer in (("proxy", "proxy-transformers-cb"), ("direct", "transformers-cb"),
                           ("proxy", "transformers-cb")):
            if rps(ours, 8) and rps(peer, 8):
                ratio = rps(ours, 8) / rps(peer, 8)
                checks.append({"target": f"{ours} at c=8 >= {peer} at c=8",
                               "value": f"{rps(ours, 8):.1f} vs {rps(peer, 8):.1f} req/s ({ratio:.2f}x)",
                               "met": ratio >= 1})
    for tokens, figures in sorted((overhead or {}).items(), key=lambda kv: -int(kv[0])):
        medians, paired = figures["median_ms"], figures["over_direct_ms"]
        for name in ("gateway", "proxy"):
            if name in paired:
                checks.append({"target": f"{name} overhead over direct, median of paired "
                                         f"differences, one at a time, {tokens} new tokens <= 10 ms",
                               "value": f"{paired[name]:.1f} ms (medians {medians[name]:.1f} vs "
                                        f"{medians['direct']:.1f})",
                               "met": paired[name] <= 10})
    return checks


def write_reports(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    conc = report["config"]["concurrency"]
    res = report["results"]
    lines = [f"# Benchmark: {report['config']['model']}", "",
             f"{report['config']['requests']} greedy chat requests per point, "
             f"{report['config']['max_tokens']} new tokens, median of {report['config']['rounds']} rounds; "
             f"{report['machine']}.", "",
             "Requests/s by concurrency:", "",
             "| target | " + " | ".join(f"c={c}" for c in conc) + " | p50 ms c=1 | p50 ms c=8 | answers exact |",
             "|---|" + "---:|" * len(conc) + "---:|---:|---:|"]
    for name, points in res.items():
        cells = [f"{points[str(c)]['rps']:.1f}" + (f" ({points[str(c)]['errors']} err)" if points[str(c)]["errors"] else "")
                 if str(c) in points else "" for c in conc]
        lat = [f"{points[str(c)]['latency_ms_p50']:.1f}" if str(c) in points and points[str(c)]["latency_ms_p50"] else ""
               for c in (1, 8)]
        exact = statistics.mean(p["exact"] for p in points.values())
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {lat[0]} | {lat[1]} | {exact:.0%} |")
    if report.get("overhead_ms"):
        names = list(next(iter(report["overhead_ms"].values()))["median_ms"])
        lines += ["", "Latency one request at a time, the targets taking turns (ms): median, and in "
                      "brackets the median of paired differences to direct:", "",
                  "| new tokens | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for tokens, figures in report["overhead_ms"].items():
            cells = [f"{figures['median_ms'][n]:.1f}" + (f" (+{figures['over_direct_ms'][n]:.1f})"
                                                         if n in figures["over_direct_ms"] else "")
                     for n in names]
            lines.append(f"| {tokens} | " + " | ".join(cells) + " |")
    lines += ["", "Targets:", ""]
    lines += [f"- [{'x' if c['met'] else ' '}] {c['target']}: {c['value']}" for c in report["checks"]]
    if report.get("memory"):
        lines += ["", "Server memory after the sweep (processes in the server's group, resident MB):", ""]
        lines += [f"- {k}: {v['processes']} processes, {v['rss_mb']} MB now, {v['peak_rss_mb']} MB peak"
                  for k, v in report["memory"].items()]
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, points in res.items():
        cs = [c for c in conc if str(c) in points]
        a.plot(cs, [points[str(c)]["rps"] for c in cs], marker="o", label=name)
        b.plot(cs, [points[str(c)]["latency_ms_p50"] for c in cs], marker="o", label=name)
    for ax, title in ((a, "requests/s"), (b, "median latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(conc, [str(c) for c in conc])
        ax.set_xlabel("concurrent requests")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    b.set_yscale("log")
    a.legend(fontsize=8)
    fig.suptitle(f"{report['config']['model']}: {report['config']['max_tokens']} new tokens, greedy")
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=120)


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
        from make_tiny_model import build_tiny_model

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
