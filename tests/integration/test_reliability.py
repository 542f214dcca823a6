"""Bad input, crashes and restarts lose nothing and explain themselves (the pyfunc stack).

Fault tests stop, kill and restart containers of this test's own compose project and talk only
to its published loopback port. Each test leaves the stack healthy for the next one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from arena_client import answers, battle, leaderboard, vote
from constants import CHAT_ENDPOINT as CHAT
from constants import REPO, SECOND_MODEL_NAME
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

USER = [{"role": "user", "content": "りんごは何色ですか？"}]


def wait_healthy(stack, service: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = stack.compose("ps", "--format", "json", service, check=False).stdout.strip()
        rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        if rows and all(r.get("Health") == "healthy" for r in rows):
            return
        time.sleep(1)
    raise AssertionError(f"{service} did not become healthy again:\n{stack.logs()}")


def ui_answers(stack) -> bool:
    status, _ = stack.invoke(CHAT, {"messages": USER, "temperature": 0, "max_tokens": 4})
    return status == 200


def create_promptlab_run(stack, experiment_id: str, value: str) -> str:
    status, body = stack.request(
        "POST",
        "ajax-api/2.0/mlflow/runs/create-promptlab-run",
        {
            "experiment_id": experiment_id,
            "tags": [],
            "prompt_template": "{{ x }}は何色？",
            "prompt_parameters": [{"key": "x", "value": value}],
            "model_route": CHAT,
            "model_parameters": [{"key": "temperature", "value": 0}],
            "model_input": f"{value}は何色？",
            "model_output": "赤",
            "model_output_parameters": [],
            "mlflow_version": "3.17.2",
        },
    )
    assert status == 200, body
    return body["run"]["info"]["run_id"]


def run_is_intact(stack, run_id: str, value: str) -> None:
    status, body = stack.request("GET", "ajax-api/2.0/mlflow/runs/get", query={"run_id": run_id})
    assert status == 200, body
    params = {p["key"]: p["value"] for p in body["run"]["data"]["params"]}
    assert params["prompt_template"] == "{{ x }}は何色？"
    table = json.loads(stack.artifact_bytes(run_id, "eval_results_table.json"))
    assert table["data"][0][0] == value


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "endpoint, payload, status, words",
    [
        (CHAT, {"messages": USER, "temperature": 5}, 422, "temperature"),
        (CHAT, {"messages": USER, "max_tokens": -5}, 422, "max_tokens"),
        (CHAT, {"messages": "りんご"}, 422, "messages"),
        ("no-such-endpoint", {"messages": USER}, 404, "no-such-endpoint"),
        (
            CHAT,
            {"messages": [{"role": "user", "content": "りんご " * 400}], "max_tokens": 4},
            400,
            "context is 512 tokens",
        ),
    ],
)
def test_bad_input_is_a_fast_4xx_that_names_the_problem(stack, endpoint, payload, status, words):
    started = time.monotonic()
    got, body = stack.invoke(endpoint, payload)
    elapsed = time.monotonic() - started
    assert got == status, body
    assert words in body["message"], body
    assert elapsed < 3, f"took {elapsed:.2f}s"


def test_broken_json_is_a_400(stack):
    req = urllib.request.Request(
        f"{stack.url}/ajax-api/2.0/mlflow/gateway-proxy",
        data=b'{"gateway_path": ',
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400


def test_json_nested_too_deep_and_a_flood_of_empty_messages_are_400s_naming_the_problem(stack):
    nested = b"[" * 5_000 + b"]" * 5_000
    body = b'{"gateway_path": "gateway/' + CHAT.encode() + b'/invocations", "json_data": '
    req = urllib.request.Request(
        f"{stack.url}/ajax-api/2.0/mlflow/gateway-proxy",
        data=body + b'{"messages": [], "extra": ' + nested + b"}}",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400 and b"nested more than 500 levels" in e.value.read()
    status, answer = stack.invoke(CHAT, {"messages": [{"role": "user", "content": ""}] * 50_000})
    assert status == 400, answer
    assert "counting the template's text for its 50,000 messages" in answer["message"], answer


def test_prompt_longer_than_the_context_names_both_token_counts(stack):
    status, body = stack.invoke(CHAT, {"messages": [{"role": "user", "content": "りんご " * 400}]})
    assert status == 400
    assert "tokens long" in body["message"] and "512 tokens" in body["message"]


def test_a_prompt_far_past_the_context_is_refused_before_it_is_tokenized(stack):
    status, body = stack.invoke(
        CHAT, {"messages": [{"role": "user", "content": "りんご" * 100_000}]}
    )
    assert status == 400, body
    assert "bytes of text, more than fits the model's context of 512 tokens" in body["message"]


def test_oversized_and_cross_origin_requests_are_refused(stack):
    def post(body: bytes, content_type: str) -> tuple[int, dict]:
        req = urllib.request.Request(
            f"{stack.url}/ajax-api/2.0/mlflow/gateway-proxy",
            data=body,
            method="POST",
            headers={"Content-Type": content_type},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    big = json.dumps(
        {
            "gateway_path": f"gateway/{CHAT}/invocations",
            "json_data": {"messages": [{"role": "user", "content": "x" * 9_000_000}]},
        }
    ).encode()
    status, body = post(big, "application/json")
    assert status == 413 and "MAX_REQUEST_MB" in body["message"], body
    # A page on another site can POST text/plain without a CORS preflight: refused.
    small = json.dumps(
        {"gateway_path": f"gateway/{CHAT}/invocations", "json_data": {"messages": USER}}
    ).encode()
    status, body = post(small, "text/plain")
    assert status == 415, body
    assert ui_answers(stack)


def test_huge_max_tokens_is_capped_to_the_context(stack):
    status, body = stack.invoke(
        f"{CHAT}-completions", {"prompt": "りんご " * 100, "temperature": 0, "max_tokens": 10**9}
    )
    assert status == 200, body
    assert body["usage"]["total_tokens"] == 512


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    json_data=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=30),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=12,
    ),
    content=st.text(max_size=80),
)
def test_random_json_and_unicode_never_break_the_proxy(stack, json_data, content):
    """Property: any JSON body gets an answer or a 4xx, never a 5xx; any Unicode text is
    answered."""
    status, body = stack.invoke(CHAT, json_data)
    assert status < 500, (json_data, body)
    status, body = stack.invoke(
        CHAT,
        {"messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": 2},
    )
    assert status == 200, (content, body)


# -- faults -------------------------------------------------------------------------------------
def test_model_server_down_is_a_503_naming_it_and_the_ui_stays_usable(stack):
    stack.compose("stop", "pyfunc")
    try:
        status, body = stack.invoke(CHAT, {"messages": USER})
        assert status == 503, body
        assert "pyfunc" in body["message"] and (
            "starting" in body["message"] or "down" in body["message"]
        )
        # The service and the cause, never an internal URL or exception text.
        assert "http://" not in body["message"] and ":8080" not in body["message"], body
        status, endpoints = stack.gateway_endpoints()
        assert status == 200 and endpoints["endpoints"]
        stack.create_experiment(f"モデル停止中 {time.time()}")
    finally:
        stack.compose("start", "pyfunc")
        wait_healthy(stack, "pyfunc")
    assert ui_answers(stack)


def test_killed_model_process_comes_back_by_restart_policy(stack):
    container = stack.compose("ps", "-q", "pyfunc").stdout.strip()
    pid = int(
        subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Pid}}", container],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    os.kill(pid, signal.SIGKILL)  # a crash, not a `docker stop`
    time.sleep(2)
    wait_healthy(stack, "pyfunc")
    restarts = subprocess.run(
        ["docker", "inspect", "-f", "{{.RestartCount}}", container],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert int(restarts) >= 1
    assert ui_answers(stack)


def test_docker_stop_lets_the_requests_in_flight_finish(stack):
    def long_request(temperature: float):
        status, body = stack.invoke(
            f"{CHAT}-completions",
            {"prompt": "りんご", "temperature": temperature, "max_tokens": 480},
        )
        return status, body, time.monotonic()

    # Four full batches (MAX_BATCH_SIZE 16, the rest queued) of 480 tokens each: seconds of work
    # even for the tiny model, so that generation is still going on when SIGTERM comes (8
    # requests were once all answered within the half second before it).
    requests = 64
    temperatures = [round(0.2 * (i % 8), 1) for i in range(requests)]
    with ThreadPoolExecutor(requests) as pool:
        futures = [pool.submit(long_request, t) for t in temperatures]
        time.sleep(1.0)  # every request has reached the model server
        stop_sent = time.monotonic()
        stack.compose("stop", "pyfunc")
        results = [f.result(timeout=300) for f in futures]
    try:
        assert [status for status, _, _ in results] == [200] * requests, results
        tokens = [body["usage"]["completion_tokens"] for _, body, _ in results]
        assert all(n == 480 for n, t in zip(tokens, temperatures, strict=True) if t == 0), tokens
        assert all(n > 0 for n in tokens), tokens
        # Not vacuous: generation was still going on when SIGTERM was sent.
        assert max(done for _, _, done in results) > stop_sent
    finally:
        stack.compose("start", "pyfunc")
        wait_healthy(stack, "pyfunc")


def test_restarted_tracking_server_keeps_every_run(stack):
    experiment_id = stack.create_experiment(f"再起動 {time.time()}")
    run_id = create_promptlab_run(stack, experiment_id, "ぶどう")
    stack.compose("restart", "tracking")
    wait_healthy(stack, "tracking")
    run_is_intact(stack, run_id, "ぶどう")


def test_down_without_volumes_keeps_data(stack):
    experiment_id = stack.create_experiment(f"down {time.time()}")
    run_id = create_promptlab_run(stack, experiment_id, "もも")
    stack.compose("down")
    stack.up()
    run_is_intact(stack, run_id, "もも")


def test_a_backup_taken_while_running_brings_every_run_back_after_its_volumes_are_gone(stack):
    experiment_id = stack.create_experiment(f"backup {time.time()}")
    run_ids = {
        value: create_promptlab_run(stack, experiment_id, value) for value in ("かき", "なし")
    }
    # A blind comparison's vote (two traces and their feedback) goes with them.
    status, found = battle(
        stack,
        {
            "experiment_id": experiment_id,
            "prompt": "かきは何色？",
            "endpoints": [CHAT, SECOND_MODEL_NAME],
            "max_tokens": 4,
        },
    )
    assert status == 200, found
    assert vote(stack, experiment_id, answers(found)[0], "B")[0] == 200
    backup = stack.exec_tracking("promptlab-backup")
    assert backup.returncode == 0 and backup.stdout[:512].strip(), backup.stderr.decode()[-2000:]
    assert "promptlab-backup:" in backup.stderr.decode()

    # Lose the tracking server's data: its containers (the server, the one-shot db-upgrade) and
    # both of its volumes.
    stack.compose("rm", "-sfv", "tracking", "db-upgrade")
    for volume in ("mlflow-db", "mlflow-artifacts"):
        subprocess.run(
            ["docker", "volume", "rm", f"{stack.project}_{volume}"], check=True, capture_output=True
        )
    stack.compose("up", "-d", "--no-deps", "--wait", "tracking")
    status, _ = stack.request(
        "GET", "ajax-api/2.0/mlflow/runs/get", query={"run_id": run_ids["かき"]}
    )
    assert status == 404

    def restore_as_documented(data: bytes) -> subprocess.CompletedProcess:
        """The README's command: a one-off container of its own, where nothing listens on
        loopback even while the server runs beside it."""
        return subprocess.run(
            [
                *stack.compose_command,
                *("run", "--rm", "-T", "--no-deps", "tracking", "promptlab-restore"),
            ],
            cwd=REPO,
            env=stack.env,
            input=data,
            capture_output=True,
            timeout=300,
        )

    refused = stack.exec_tracking("promptlab-restore", stdin=backup.stdout)
    assert refused.returncode == 2 and "stop it first" in refused.stderr.decode()
    refused = restore_as_documented(backup.stdout)
    assert refused.returncode == 2, refused.stderr.decode()[-2000:]
    assert "the tracking server is running" in refused.stderr.decode()
    assert "stop it first" in refused.stderr.decode()
    stack.compose("stop", "tracking")
    # A backup cut short (a full disk, a broken copy) changes nothing and says so.
    cut = restore_as_documented(backup.stdout[: len(backup.stdout) // 2])
    assert cut.returncode == 1 and "nothing was changed" in cut.stderr.decode(), cut.stderr
    restore = restore_as_documented(backup.stdout)
    assert restore.returncode == 0, restore.stderr.decode()[-2000:]
    assert "files restored from a full backup" in restore.stderr.decode()
    stack.compose("up", "-d", "--no-deps", "--wait", "tracking")
    for value, run_id in run_ids.items():
        run_is_intact(stack, run_id, value)
    assert leaderboard(stack, experiment_id)["human"]["votes"] == 1


# -- load ---------------------------------------------------------------------------------------
def test_200_requests_at_concurrency_16_without_failure_or_lost_run(stack):
    experiment_id = stack.create_experiment(f"負荷 {time.time()}")

    def one(i: int):
        status, body = stack.invoke(
            CHAT,
            {
                "messages": [{"role": "user", "content": f"質問{i}"}],
                "temperature": 0,
                "max_tokens": 8,
            },
        )
        run_id = create_promptlab_run(stack, experiment_id, f"値{i}") if i % 4 == 0 else None
        return status, body, run_id

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(200)))
    failures = [(s, b) for s, b, _ in results if s != 200]
    assert not failures, failures[:3]
    run_ids = {r for _, _, r in results if r}
    assert len(run_ids) == 50
    status, body = stack.request(
        "POST",
        "ajax-api/2.0/mlflow/runs/search",
        {"experiment_ids": [experiment_id], "max_results": 1000},
    )
    assert {r["info"]["run_id"] for r in body["runs"]} == run_ids


def test_160_prompts_at_once_with_the_defaults_are_answered_or_refused_fast(stack):
    """Overload with the settings a user gets: past MAX_QUEUED_REQUESTS (64) a prompt gets a 429
    with Retry-After through the gateway and the UI proxy at once (not a timeout minutes later);
    every accepted prompt is answered. 160 is twice what the model server admits for one model
    (MAX_BATCH_SIZE 16 + MAX_QUEUED_REQUESTS 64). They are sent at the same moment and each asks
    for DEFAULT_MAX_NEW_TOKENS (256; the tiny model never stops early), so that the model server
    cannot finish the first prompts before the last arrive: with 48 tokens each, the tiny model
    once answered all 160 while they were still coming (CI of e50522e)."""
    prompts = 160
    together = threading.Barrier(prompts)

    def one(i: int):
        body = json.dumps(
            {
                "gateway_path": f"gateway/{CHAT}/invocations",
                "json_data": {
                    "messages": [{"role": "user", "content": f"質問{i}"}],
                    "temperature": 0,
                    "max_tokens": 256,
                },
            }
        )
        request = urllib.request.Request(
            f"{stack.url}/ajax-api/2.0/mlflow/gateway-proxy",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        together.wait(timeout=60)
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=300) as r:
                return r.status, json.loads(r.read()), None, time.monotonic() - started
        except urllib.error.HTTPError as e:
            return (
                e.code,
                json.loads(e.read()),
                e.headers.get("Retry-After"),
                time.monotonic() - started,
            )

    with ThreadPoolExecutor(prompts) as pool:
        results = list(pool.map(one, range(prompts)))
    answered = [b for s, b, _, _ in results if s == 200]
    refused = [(b, retry, took) for s, b, retry, took in results if s == 429]
    assert len(answered) + len(refused) == prompts, [
        (s, b) for s, b, _, _ in results if s not in (200, 429)
    ][:3]
    assert refused and answered, (len(answered), len(refused))
    assert all(b["choices"][0]["message"]["content"] is not None for b in answered)
    for body, retry, _took in refused:
        assert (
            retry == "1"
            and "MAX_QUEUED_REQUESTS=64" in body["message"]
            and "busy" in body["message"]
        ), body
    print(
        f"overload: {len(answered)} answered, {len(refused)} refused, slowest refusal "
        f"{max(t for _, _, t in refused):.2f} s"
    )
    assert max(t for _, _, t in refused) < 5


# -- exposure -----------------------------------------------------------------------------------
def test_only_the_ui_is_published_and_containers_run_as_non_root(stack):
    for service in ("tracking", "endpoint-sync", "gateway", "pyfunc", "tls"):
        container = stack.compose("ps", "-q", service).stdout.strip()
        ports = json.loads(
            subprocess.run(
                ["docker", "inspect", "-f", "{{json .NetworkSettings.Ports}}", container],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        published = {k: v for k, v in (ports or {}).items() if v}
        if service == "tracking":
            assert [b["HostIp"] for b in published["5000/tcp"]] == ["127.0.0.1"]
        elif service == "tls":  # the opt-in HTTPS proxy in front of the UI
            assert [b["HostIp"] for b in published["8443/tcp"]] == ["127.0.0.1"]
        else:
            assert published == {}, f"{service} is published: {published}"
        uid = stack.compose("exec", "-T", service, "id", "-u").stdout.strip()
        assert uid == "1000", f"{service} runs as uid {uid}"
    touch = stack.compose("exec", "-T", "pyfunc", "touch", "/models/x", check=False)
    assert touch.returncode != 0 and "Read-only" in touch.stdout


def test_every_service_of_ours_is_locked_down_and_its_code_is_not_writable(stack):
    for service in ("tracking", "endpoint-sync", "gateway", "pyfunc", "tls"):
        container = stack.compose("ps", "-q", service).stdout.strip()
        host = json.loads(
            subprocess.run(
                ["docker", "inspect", "-f", "{{json .HostConfig}}", container],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert host["CapDrop"] == ["ALL"] and "no-new-privileges:true" in host["SecurityOpt"], (
            service
        )
        assert host["ReadonlyRootfs"] is True and host["PidsLimit"] == 1024, service
        assert host["LogConfig"]["Config"] == {"max-size": "10m", "max-file": "3"}, service
        # The app user can write its scratch space, not the root file system or its own code.
        assert stack.compose("exec", "-T", service, "touch", "/tmp/x", check=False).returncode == 0
        # Its home too (basic auth writes its config there).
        assert (
            stack.compose(
                "exec", "-T", service, "sh", "-c", "touch $HOME/x", check=False
            ).returncode
            == 0
        ), service
        for path in ("/opt/venv/bin/python", "/usr/local/x"):
            touch = stack.compose("exec", "-T", service, "touch", path, check=False)
            assert touch.returncode != 0, f"{service} can write {path}"


def test_no_secret_reaches_an_image_layer(stack):
    """HF_TOKEN and OPENAI_API_KEY are run-time environment only: not in any layer or image env."""
    for service in ("tracking", "gateway", "pyfunc", "tls"):
        image = f"{stack.env['IMAGE_PREFIX']}/{service}:latest"
        history = subprocess.run(
            ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        env = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{json .Config.Env}}", image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for secret in ("HF_TOKEN", "OPENAI_API_KEY"):
            assert secret not in history and secret not in env, f"{secret} in {image}"
