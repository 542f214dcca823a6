"""Bring the compose stack up on the tiny model and talk to it the way the UI does."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from constants import (
    JUDGE_MODEL_NAME,
    REPO,
    SECOND_MODEL_NAME,
    SECOND_MODEL_SHAPE,
    SERVED_MODEL_NAME,
)
from loopback import free_port

PROJECT = "promptlab-it"


@dataclass
class Stack:
    models_dir: Path
    profile: str = "pyfunc"  # comma-separated: "pyfunc,tls" starts both profiles
    project: str = PROJECT
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    compose_files: tuple[str, ...] = ("docker-compose.yml",)

    @property
    def compose_command(self) -> list[str]:
        """`docker compose` with this stack's files and profiles, before the subcommand."""
        files = [a for f in self.compose_files for a in ("-f", str(REPO / f))]
        profiles = [a for p in self.profile.split(",") for a in ("--profile", p)]
        return ["docker", "compose", *files, *profiles]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "COMPOSE_PROJECT_NAME": self.project,
            "IMAGE_PREFIX": "promptlab-test",
            "BASE_IMAGE": os.environ.get("BASE_IMAGE", "python:3.11-slim"),
            "LOCAL_MODELS_DIR": str(self.models_dir),
            # Two models with different tokenizers and chat templates, side by side, and a judge.
            "MODELS": ",".join(
                f"/models/{m}" for m in (SERVED_MODEL_NAME, SECOND_MODEL_NAME, JUDGE_MODEL_NAME)
            ),
            "MODEL_ID": f"/models/{SERVED_MODEL_NAME}",
            "MLFLOW_PORT": str(self.port),
            "MODEL_START_PERIOD": "300s",
            "DEFAULT_MAX_NEW_TOKENS": "32",
            **self.extra_env,
        }

    def compose(
        self, *args: str, check: bool = True, timeout: float = 1800
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.compose_command, *args],
            cwd=REPO,
            env=self.env,
            check=check,
            timeout=timeout,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def exec_tracking(
        self, *args: str, stdin: bytes = b"", timeout: float = 600
    ) -> subprocess.CompletedProcess:
        """A command in the tracking container, as `docker compose exec -T tracking ...` runs it."""
        return subprocess.run(
            [*self.compose_command, "exec", "-T", "tracking", *args],
            cwd=REPO,
            env=self.env,
            input=stdin,
            capture_output=True,
            timeout=timeout,
        )

    def up(self) -> None:
        # The containers run as uid 1000: the model folder must be readable by others.
        for path in [self.models_dir, *self.models_dir.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        build = self.compose("build", check=False)
        if build.returncode != 0:
            raise RuntimeError(f"docker compose build failed:\n{build.stdout[-6000:]}")
        up = self.compose("up", "-d", "--wait", "--wait-timeout", "600", check=False)
        if up.returncode != 0:
            raise RuntimeError(f"docker compose up failed:\n{up.stdout[-3000:]}\n{self.logs()}")

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "80", check=False).stdout[-8000:]

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", check=False, timeout=300)

    # -- the UI's REST calls ------------------------------------------------------------------
    @property
    def login(self) -> dict[str, str]:
        """The admin's Basic login when the stack runs with basic auth (an admin password set),
        as a browser sends it; the user is `admin` unless the stack names another."""
        password = self.env.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")
        if not password:
            return {}
        user = self.env.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin"
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def request(self, method: str, path: str, body=None, query=None) -> tuple[int, dict | str]:
        url = f"{self.url}/{path.lstrip('/')}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        req = urllib.request.Request(
            url,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", **self.login},
        )
        try:
            with urllib.request.urlopen(req, timeout=300) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        text = raw.decode("utf-8")
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text

    def gateway_endpoints(self) -> tuple[int, dict]:
        return self.request(
            "GET", "ajax-api/2.0/mlflow/gateway-proxy", query={"gateway_path": "api/2.0/endpoints"}
        )

    def invoke(self, endpoint: str, payload: dict) -> tuple[int, dict]:
        return self.request(
            "POST",
            "ajax-api/2.0/mlflow/gateway-proxy",
            {"gateway_path": f"gateway/{endpoint}/invocations", "json_data": payload},
        )

    def ai_gateway(self, what: str) -> list[dict]:
        """The built-in AI Gateway's `endpoints`, `secrets` or `model-definitions`, as its UI lists
        them."""
        status, body = self.request("GET", f"ajax-api/3.0/mlflow/gateway/{what}/list")
        assert status == 200, body
        return body.get(what.replace("-", "_"), [])

    def wait_for_ai_gateway_endpoints(self, names: list[str], timeout: float = 90) -> None:
        """Until the endpoints the stack registered in the built-in AI Gateway are `names`
        (sorted)."""

        def registered() -> list[str]:
            return sorted(
                e["name"]
                for e in self.ai_gateway("endpoints")
                if {"key": "promptlab-stack.managed", "value": "true"} in e.get("tags", [])
            )

        deadline = time.monotonic() + timeout
        while (seen := registered()) != names:
            assert time.monotonic() < deadline, (
                f"AI Gateway endpoints {seen}, expected {names}\n{self.logs()}"
            )
            time.sleep(1)

    def create_experiment(self, name: str) -> str:
        status, body = self.request(
            "POST", "ajax-api/2.0/mlflow/experiments/create", {"name": name}
        )
        assert status == 200, body
        return body["experiment_id"]

    def artifact_bytes(self, run_id: str, path: str) -> bytes:
        query = urllib.parse.urlencode({"path": path, "run_uuid": run_id})
        req = urllib.request.Request(f"{self.url}/get-artifact?{query}", headers=self.login)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.read()


@contextmanager
def running_stack(tmp_path_factory, **stack_args):
    """A stack on a freshly built tiny model; always torn down with its volumes."""
    from make_tiny_model import build_judge_model, build_tiny_model

    if not docker_available():
        raise RuntimeError("the compose tests need a running Docker engine (see .ci/run)")
    models = tmp_path_factory.mktemp(f"models-{stack_args.get('project', PROJECT)}")
    build_tiny_model(models / SERVED_MODEL_NAME)
    build_tiny_model(models / SECOND_MODEL_NAME, **SECOND_MODEL_SHAPE)
    build_judge_model(models / JUDGE_MODEL_NAME)
    stack = Stack(models, **stack_args)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def reference_model(stack: Stack, name: str = SERVED_MODEL_NAME):
    """One of the stack's own model folders loaded with plain transformers, for greedy
    comparisons."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = stack.models_dir / name
    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()


def docker_host_address() -> str:
    """This host's address on Docker's default bridge: where host.docker.internal points, and
    where a container reaches a server the tests run on this host."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "docker0"], capture_output=True, text=True, check=True
    )
    return out.stdout.split("inet ")[1].split("/")[0]


def docker_available() -> bool:
    return (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    )


# A system prompt, an earlier exchange and a question, as a user's chat in the UI grows.
CONVERSATION = [
    {"role": "system", "content": "あなたは果物の専門家です。"},
    {"role": "user", "content": "こんにちは"},
    {"role": "assistant", "content": "こんにちは！何でも聞いてください。"},
    {"role": "user", "content": "バナナは何色？"},
]


def assert_whole_conversation_reaches_the_model(stack: Stack, endpoint: str, reference) -> None:
    """Greedy on the whole conversation: the answer only equals plain transformers' if every
    message, the system prompt included, reached the model through the stack."""
    from reference import greedy_chat

    status, body = stack.invoke(
        endpoint, {"messages": CONVERSATION, "temperature": 0, "max_tokens": 10}
    )
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == greedy_chat(*reference, CONVERSATION, 10)
