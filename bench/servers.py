"""The servers under test, started on loopback from this Python environment with the commands and
settings the images run (each service's `start` module), plus `transformers serve` as the peer."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from scripts.loopback import free_port

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
ENDPOINT = "tiny-ja"
PEER_ENDPOINT = "tiny-ja-transformers-cb"


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
        self.proc = subprocess.Popen(
            self.argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )

    def wait(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.proc.returncode}); see "
                    f"{self.logs / (self.name + '.log')}"
                )
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

    def _pids(self) -> list[int]:
        return [
            int(p)
            for p in subprocess.run(
                ["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True
            ).stdout.split()
        ]

    def reset_peak(self) -> None:
        """Start a new peak-memory measurement (Linux: writing 5 to clear_refs resets VmHWM)."""
        for pid in self._pids():
            reset_peak(pid)

    def memory(self) -> dict:
        """Processes in the server's group and their resident memory (one model copy or not);
        the peak since the last `reset_peak`."""
        pids = self._pids()
        rss = hwm = 0
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            rss += int(fields.get("VmRSS", "0 kB").split()[0])
            hwm += int(fields.get("VmHWM", "0 kB").split()[0])
        return {
            "processes": len(pids),
            "rss_mb": round(rss / 1024),
            "peak_rss_mb": round(hwm / 1024),
        }


def reset_peak(pid: int | str = "self") -> None:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb(pid: int | str = "self") -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return round(int(fields.get("VmHWM", "0 kB").split()[0]) / 1024)


def pyfunc_server(
    name: str, model_dir: Path, work: Path, logs: Path, env: dict[str, str]
) -> Server:
    """The model image's start.py: save the pyfunc model with the settings from `env`, then
    `mlflow models serve` with the environment it derives, on loopback."""
    from pyfunc_server.settings import ModelServerSettings
    from pyfunc_server.start import save, server_command, server_environment

    settings = ModelServerSettings.from_env(
        {"DEFAULT_MAX_NEW_TOKENS": "32", **env}, model_id=str(model_dir), served_model_name=ENDPOINT
    )
    # These two are in the saved settings (the MLmodel file), which the server reads.
    env = {k: v for k, v in env.items() if k not in ("TORCH_THREADS", "PREPACK_WEIGHTS")}
    save(work / f"{name}-model", settings)
    port = free_port()
    return Server(
        name,
        server_command(work / f"{name}-model", host="127.0.0.1", port=port),
        port,
        "/ping",
        logs,
        {**env, **server_environment(settings, work / f"{name}-model")},
    )


def gateway_server(
    work: Path,
    logs: Path,
    pyfunc_url: str | None,
    peer_url: str | None,
    model_dir: Path,
    backend: str = "pyfunc",
) -> Server:
    """The gateway image's start.py on loopback: its config for the pyfunc profile (our model
    server at `pyfunc_url`; the llamacpp profile's engine there with `backend="llamacpp"`), plus
    the one the vLLM/TGI profiles render, pointed at `transformers serve`, so that the peer sits
    behind the same gateway and tracking server."""
    from gateway.render_config import BACKEND_URLS, local_endpoints, render, to_yaml, validate
    from gateway.settings import GatewaySettings
    from gateway.start import server_command, server_environment

    settings = GatewaySettings.from_env({}, model_backend=backend, served_model_name=ENDPOINT)
    endpoints = (
        render(settings, {**BACKEND_URLS, backend: pyfunc_url})["endpoints"] if pyfunc_url else []
    )
    if peer_url:
        # OpenAI's API under /v1, like vLLM; transformers serve wants the model's path as its name.
        peer = GatewaySettings(model_id=str(model_dir), served_model_name=PEER_ENDPOINT)
        for endpoint in local_endpoints(peer, "vllm", peer_url):
            endpoint["model"]["name"] = str(model_dir)
            endpoints.append(endpoint)
    config = {"endpoints": endpoints}
    validate(config)
    (work / "gateway.yaml").write_text(to_yaml(config), encoding="utf-8")
    port = free_port()
    return Server(
        "gateway",
        server_command(work / "gateway.yaml", host="127.0.0.1", port=port),
        port,
        "/health",
        logs,
        server_environment(settings),
    )


def tracking_server(work: Path, logs: Path, gateway_url: str) -> Server:
    """The tracking image's start.py on loopback, with a fresh database."""
    from tracking.settings import TrackingSettings
    from tracking.start import server_command, server_environment

    db = work / "tracking"
    shutil.rmtree(db, ignore_errors=True)
    (db / "artifacts").mkdir(parents=True)
    settings = TrackingSettings.from_env({}, mlflow_deployments_target=gateway_url)
    port = free_port()
    command = server_command(
        settings, db_dir=db, artifacts_dir=db / "artifacts", host="127.0.0.1", port=port
    )
    return Server(
        "tracking",
        command,
        port,
        "/health",
        logs,
        {
            **server_environment(settings, db_dir=db, auth_config_path=db / "basic_auth.ini"),
            "MLFLOW_DEPLOYMENTS_TARGET": gateway_url,
        },
    )


def start_servers(args, model_dir: Path, work: Path, servers: dict[str, Server]) -> None:
    """Start the servers, adding each to `servers` as it starts (the caller stops them all)."""
    logs = work / "logs"
    want = set(args.targets)
    batch_env = {
        k: str(v)
        for k, v in (
            ("BATCH_WINDOW_MS", args.window_ms),
            ("MAX_BATCH_SIZE", args.max_batch),
            ("TORCH_THREADS", args.torch_threads),
            ("PREPACK_WEIGHTS", args.prepack_weights),
        )
        if v is not None
    }
    ours = bool(want & {"direct", "gateway", "proxy", "proxy-stream", "gateway-stream"})
    if ours:
        servers["direct"] = pyfunc_server("pyfunc", model_dir, work, logs, batch_env)
    if want & {"transformers-cb", "proxy-transformers-cb"}:
        port = free_port()
        servers["transformers"] = Server(
            "transformers-cb",
            [
                str(BIN / "transformers"),
                "serve",
                "--continuous-batching",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--device",
                "cpu",
                # Its KV cache is otherwise sized from the machine's free memory (14 GB for the tiny
                # model, more than the machine has for the real-shape one); 512 blocks and 1024
                # tokens
                # per step hold far more than 16 rows of these prompts and answers.
                "--cb-num-blocks",
                "512",
                "--cb-max-batch-tokens",
                "1024",
                str(model_dir),
            ],
            # The OpenMP setting pyfunc_server's loading picks for itself, for a fair comparison.
            port,
            "/health",
            logs,
            {"OMP_WAIT_POLICY": "PASSIVE"},
        )
    if want & {"gateway", "proxy", "proxy-transformers-cb", "proxy-stream", "gateway-stream"}:
        servers["gateway"] = gateway_server(
            work,
            logs,
            servers["direct"].url if ours else None,
            servers["transformers"].url if "proxy-transformers-cb" in want else None,
            model_dir,
        )
    if want & {"proxy", "proxy-transformers-cb", "proxy-stream"}:
        servers["tracking"] = tracking_server(work, logs, servers["gateway"].url)
    if "pyfunc-unbatched" in want:
        servers["unbatched"] = pyfunc_server(
            "pyfunc-unbatched", model_dir, work, logs, {**batch_env, "MAX_BATCH_SIZE": "1"}
        )
    for s in servers.values():
        if args.torch_threads and s.name == "transformers-cb":
            s.env["OMP_NUM_THREADS"] = str(args.torch_threads)
        s.start()
    for s in servers.values():
        s.wait()
        print(f"  {s.name} ready on {s.url}", flush=True)
