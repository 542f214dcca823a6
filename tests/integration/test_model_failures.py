"""First start and model failures (issue 14), on the session's compose stack.

A first start downloads the model in the background while the UI and the gateway answer, and a
prompt meanwhile is a 503 saying what the model is doing. Models come from a stand-in for the
Hugging Face Hub (hub_standin.py: none is reachable here) on this host, through HF_ENDPOINT.

Each problem that waiting cannot fix is given to the model server (the gateway and pyfunc are
recreated with it; the tracking server keeps running): `docker compose up --wait` fails within
FAIL_WITHIN_S, the model container has stopped with status 0 and is not restarted, its last log
line names the cause and the fix, a prompt through the UI's path is a 503 saying the same, and
the UI still answers and lists experiments. The stack is put back afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
from constants import SERVED_MODEL_NAME
from hub_standin import HubStandin, Repo
from reference import greedy_chat
from stack import docker_host_address

FAIL_WITHIN_S = 90


def unreadable(models_dir, hub):
    folder = models_dir / "unreadable"
    shutil.copytree(models_dir / SERVED_MODEL_NAME, folder, dirs_exist_ok=True)
    (folder / "model.safetensors").chmod(0o600)  # as `save_pretrained` run as root leaves it
    return {"MODELS": "/models/unreadable"}


def unknown_architecture(models_dir, hub):
    folder = models_dir / "future"
    shutil.copytree(models_dir / SERVED_MODEL_NAME, folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="llm-from-the-future", architectures=["FutureForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config))
    return {"MODELS": "/models/future"}


CASES = {
    # name: (environment for the stack (from the models folder and the Hub's URL), endpoint,
    #        words of the last log line and the 503)
    "unreadable file": (
        unreadable,
        "unreadable",
        [
            "cannot read the file /models/unreadable/model.safetensors",
            "uid 0",
            "mode 0600",
            "runs as uid 1000",
            "chmod -R a+rX $LOCAL_MODELS_DIR/unreadable",
        ],
    ),
    "missing folder": (
        lambda d, hub: {"MODELS": "/models/not-there"},
        "not-there",
        ["no such folder /models/not-there", "LOCAL_MODELS_DIR"],
    ),
    "unknown architecture": (
        unknown_architecture,
        "future",
        ["does not know the model type 'llm-from-the-future'", "FutureForCausalLM", "Fix:"],
    ),
    "larger than the memory": (
        lambda d, hub: {
            "MODELS": f"/models/{SERVED_MODEL_NAME}",
            "MODEL_MEMORY_BUDGET_GB": "0.00001",
        },
        SERVED_MODEL_NAME,
        ["need about", "GB are available to the model server", "MODEL_MEMORY_BUDGET_GB"],
    ),
    "no Hub and not in the cache": (
        lambda d, hub: {"MODELS": "llm-jp/not-in-the-cache", "HF_ENDPOINT": "http://127.0.0.1:9"},
        "not-in-the-cache",
        [
            "llm-jp/not-in-the-cache is not in the model cache",
            "http://127.0.0.1:9 cannot be reached",
            "HF_ENDPOINT",
            "MODEL_ID=/models/",
        ],
    ),
    "a repo that does not exist": (
        lambda d, hub: {"MODELS": "standin/does-not-exist", "HF_ENDPOINT": hub},
        "does-not-exist",
        ["the Hub has no model standin/does-not-exist", "check the name at", "HF_TOKEN"],
    ),
    "a gated repo without a token": (
        lambda d, hub: {"MODELS": "standin/gated", "HF_ENDPOINT": hub},
        "gated",
        ["standin/gated is gated", "accept them at", "HF_TOKEN=hf_..."],
    ),
    "a rejected token": (
        lambda d, hub: {"MODELS": "standin/gated", "HF_ENDPOINT": hub, "HF_TOKEN": "hf_revoked"},
        "gated",
        ["the Hub rejected HF_TOKEN", "401", "valid read token"],
    ),
}


def container(stack, service: str) -> dict:
    out = stack.compose("ps", "-a", "--format", "json", service).stdout.strip()
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert rows, f"no {service} container:\n{out}"
    inspect = subprocess.run(
        ["docker", "inspect", rows[0]["ID"]], capture_output=True, text=True, check=True
    )
    return json.loads(inspect.stdout)[0]


@pytest.fixture(scope="module")
def hub(stack):
    """The Hub stand-in on this host's Docker bridge address; its URL for HF_ENDPOINT."""
    model = stack.models_dir / SERVED_MODEL_NAME
    standin = HubStandin(
        repos={"standin/tiny-ja": Repo(model), "standin/gated": Repo(model, gated=True)}
    )
    server = standin.serve(docker_host_address())
    host, port = server.server_address[:2]
    yield standin, f"http://{host}:{port}"
    server.shutdown()


@pytest.fixture(scope="module")
def failing(stack):
    """Recreates the gateway and the model server with a case's settings; puts the stack back."""
    original = dict(stack.extra_env)

    def apply(env: dict, wait: bool = True) -> tuple[subprocess.CompletedProcess | None, float]:
        stack.extra_env.clear()
        stack.extra_env.update({**original, **env})
        if not wait:
            stack.compose("up", "-d", "--no-deps", "gateway", "pyfunc")
            return None, 0.0
        started = time.monotonic()
        up = stack.compose(
            "up",
            "-d",
            "--no-deps",
            "--wait",
            "--wait-timeout",
            str(FAIL_WITHIN_S + 60),
            "gateway",
            "pyfunc",
            check=False,
        )
        took = time.monotonic() - started
        # `up --wait` stops at the model's failure; the gateway was recreated beside it.
        stack.compose("up", "-d", "--no-deps", "--wait", "gateway")
        return up, took

    yield apply
    stack.extra_env.clear()
    stack.extra_env.update(original)
    up = stack.compose("up", "-d", "--no-deps", "--wait", "gateway", "pyfunc", check=False)
    assert up.returncode == 0, up.stdout[-3000:]


def test_a_healthy_model_server_says_so_in_its_healthcheck(stack):
    health = container(stack, "pyfunc")["State"]["Health"]
    assert health["Status"] == "healthy"
    assert health["Log"][-1]["Output"].startswith(f"ready: {SERVED_MODEL_NAME}, ")


@pytest.mark.parametrize("case", list(CASES))
def test_a_problem_waiting_cannot_fix_stops_the_model_fast_and_says_why_everywhere(
    stack, failing, hub, case
):
    make_env, endpoint, words = CASES[case]
    up, took = failing(make_env(stack.models_dir, hub[1]))

    assert up.returncode != 0, f"`up --wait` succeeded:\n{up.stdout[-2000:]}"
    assert took < FAIL_WITHIN_S, f"`up --wait` took {took:.0f} s to fail"
    state = container(stack, "pyfunc")["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0), state
    last = stack.compose("logs", "--no-log-prefix", "pyfunc").stdout.strip().splitlines()[-1]
    assert last.startswith("model server stopped: ") and all(w in last for w in words), last

    # Through the UI's path: the gateway is up, and the endpoint's 503 says why.
    status, body = stack.invoke(endpoint, {"messages": [{"role": "user", "content": "こんにちは"}]})
    text = json.dumps(body, ensure_ascii=False)
    assert (
        status == 503
        and "failed" in text
        and all(w.replace("$", "") in text.replace("$", "") for w in words)
    ), text
    # The UI answers and lists the experiments.
    status, body = stack.request(
        "POST", "ajax-api/2.0/mlflow/experiments/search", {"max_results": 10}
    )
    assert status == 200 and body["experiments"], body

    # No crash loop: still stopped a while later.
    time.sleep(5)
    state = container(stack, "pyfunc")
    assert state["State"]["Status"] == "exited" and state["RestartCount"] == 0, state["State"]


def test_a_first_start_downloads_in_the_background_and_rides_out_a_dropped_connection(
    stack, failing, hub, stack_reference_model
):
    standin, url = hub
    # About 6 s for the weights, and a connection that drops mid-file more often than
    # huggingface_hub retries on its own (5 times): the model server's own retry takes over.
    standin.bytes_per_s, standin.drops = 100_000, {"model.safetensors": 7}
    failing({"MODELS": "standin/tiny-ja", "HF_ENDPOINT": url}, wait=False)
    stack.compose("up", "-d", "--no-deps", "--wait", "gateway")

    seen: list[str] = []
    deadline = time.monotonic() + 240
    while True:
        status, body = stack.invoke(
            SERVED_MODEL_NAME,
            {"messages": [{"role": "user", "content": "こんにちは"}], "max_tokens": 4},
        )
        if status == 200:
            break
        assert status == 503 and time.monotonic() < deadline, body
        seen.append(json.dumps(body, ensure_ascii=False))
        # Meanwhile the UI answers and lists the experiments.
        listed, experiments = stack.request(
            "POST", "ajax-api/2.0/mlflow/experiments/search", {"max_results": 5}
        )
        assert listed == 200 and experiments["experiments"], experiments
        time.sleep(0.3)
    said = "\n".join(seen)
    logs = stack.compose("logs", "--no-log-prefix", "pyfunc").stdout
    assert "(standin/tiny-ja) is downloading" in said and " of 0.59 MB" in said, (
        said[:3000] + logs[-1500:]
    )
    assert "is retrying after a network error" in said and "RemoteProtocolError" in said, said

    up = stack.compose("up", "-d", "--no-deps", "--wait", "pyfunc", check=False)
    assert up.returncode == 0, up.stdout[-2000:]
    status, body = stack.invoke(
        SERVED_MODEL_NAME, {"messages": CHAT, "temperature": 0, "max_tokens": 8}
    )
    assert status == 200 and body["choices"][0]["message"]["content"] == greedy_chat(
        *stack_reference_model, CHAT, 8
    )
    logs = stack.compose("logs", "--no-log-prefix", "pyfunc").stdout
    assert "Downloading standin/tiny-ja: 0.59 of 0.59 MB" in logs, logs[-3000:]
    assert "Download of standin/tiny-ja interrupted" in logs and "retrying in 2 s" in logs, logs[
        -3000:
    ]
    # The files finished before the connection dropped were not downloaded again.
    gets = [
        path
        for method, path, _ in standin.log
        if method == "GET" and path.endswith("/tokenizer.json")
    ]
    assert len(gets) == 1, gets


CHAT = [{"role": "user", "content": "バナナは何色？"}]
