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


def test_the_tls_proxy_will_not_serve_the_ui_without_a_login_unless_told(stack):
    """On the session stack (no basic auth): the proxy as `docker compose run` starts it without
    TLS_ALLOW_NO_AUTH stops at once, naming the fix, and is not restarted."""
    done = stack.compose(
        "run", "--rm", "-T", "-e", "TLS_ALLOW_NO_AUTH=false", "tls", check=False, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("tls proxy stopped: basic auth is off on the tracking server"), last
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in last and "TLS_ALLOW_NO_AUTH=true" in last


def test_cbc_suites_are_refused_and_a_flood_from_one_client_gets_429_with_the_defaults(
    stack, ca_file
):
    import ssl
    import time
    import urllib.error
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    cbc = curl(
        "--cacert",
        str(ca_file),
        "--tlsv1.2",
        "--tls-max",
        "1.2",
        "--ciphers",
        "ECDHE-RSA-AES128-SHA",
        https_url(stack, "/health"),
    )
    assert cbc.returncode != 0, cbc  # the handshake fails: nginx offers no CBC suite
    context = ssl.create_default_context(cafile=str(ca_file))

    def get(_: int) -> int:
        try:
            with urllib.request.urlopen(
                https_url(stack, "/health"), timeout=60, context=context
            ) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(get, range(600)))
    assert set(statuses) == {200, 429}, sorted(set(statuses))
    assert statuses.count(200) >= 200  # the burst a page load needs is never refused
    time.sleep(6)  # the client's rate is back for the next tests
