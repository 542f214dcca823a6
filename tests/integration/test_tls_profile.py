"""`--profile tls`: HTTPS in front of the UI, checked with curl against the session stack's proxy.

The stack makes its own certificate, signed by a local CA on the tls-ca volume; curl trusts that
CA only when told to (`--cacert`), exactly as a user's browser or script would.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from constants import CHAT_ENDPOINT as CHAT
from constants import QUESTION
from reference import greedy_chat


@pytest.fixture(scope="module")
def ca_file(stack, tmp_path_factory):
    path = tmp_path_factory.mktemp("tls") / "promptlab-ca.crt"
    stack.compose("cp", "tls:/tls-ca/ca.crt", str(path))
    return path


def https_url(stack, path: str) -> str:
    return f"https://localhost:{stack.env['TLS_PORT']}/{path.lstrip('/')}"


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "120", *args],
        capture_output=True,
        text=True,
    )


def test_https_with_the_local_ca_reaches_the_ui_and_a_prompt_is_answered(
    stack, ca_file, stack_reference_model
):
    r = curl("--cacert", str(ca_file), "--include", https_url(stack, "/health"))
    assert r.returncode == 0, r.stderr
    assert (
        r.stdout.startswith("HTTP/2 200")
        and "strict-transport-security: max-age=31536000" in r.stdout.lower()
    )
    messages = [{"role": "user", "content": QUESTION}]
    body = {
        "gateway_path": f"gateway/{CHAT}/invocations",
        "json_data": {"messages": messages, "temperature": 0, "max_tokens": 8},
    }
    r = curl(
        "--cacert",
        str(ca_file),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        json.dumps(body),
        https_url(stack, "/ajax-api/2.0/mlflow/gateway-proxy"),
    )
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["choices"][0]["message"]["content"] == greedy_chat(
        *stack_reference_model, messages, 8
    )


def test_a_client_that_does_not_trust_the_ca_or_speaks_old_tls_is_refused(stack, ca_file):
    untrusted = curl(https_url(stack, "/health"))
    assert untrusted.returncode == 60, untrusted  # curl: "SSL certificate problem"
    old = curl(
        "--cacert", str(ca_file), "--tlsv1.1", "--tls-max", "1.1", https_url(stack, "/health")
    )
    assert old.returncode != 0, old


def test_the_proxy_bounds_bodies_and_keeps_its_ca_across_a_restart(stack, ca_file):
    payload = (
        b'{"gateway_path": "gateway/x/invocations", "json_data": {"prompt": "'
        + b"x" * 9_000_000
        + b'"}}'
    )
    big = subprocess.run(
        [
            "curl",
            "--silent",
            "--cacert",
            str(ca_file),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
            https_url(stack, "/ajax-api/2.0/mlflow/gateway-proxy"),
        ],
        input=payload,
        capture_output=True,
        timeout=120,
    )
    assert big.stdout == b"413", big
    before = ca_file.read_bytes()
    stack.compose("restart", "tls")
    stack.compose("up", "-d", "--wait", "tls")
    again = ca_file.with_name("again.crt")
    stack.compose("cp", "tls:/tls-ca/ca.crt", str(again))
    assert again.read_bytes() == before  # browsers that trust it keep trusting the proxy
    r = curl("--cacert", str(ca_file), https_url(stack, "/health"))
    assert r.returncode == 0 and r.stdout.strip() == "OK", r
