"""The `tls` profile's proxy: its settings, its certificates (made with this machine's openssl, as
the image's Debian openssl makes them) and the nginx config it renders. nginx itself runs in the
compose tests (tests/integration/test_tls_profile.py)."""

from __future__ import annotations

import subprocess

import pytest


def test_hostnames_default_to_loopback_and_a_bad_one_names_the_knob():
    from promptlab_stack.settings import SettingsError
    from tls.settings import TlsSettings

    assert TlsSettings.from_env({}).hostnames == ["localhost", "127.0.0.1"]
    assert TlsSettings.from_env({"TLS_HOSTNAMES": "mlflow.example.com, 10.0.0.5"}).hostnames == [
        "mlflow.example.com",
        "10.0.0.5",
    ]
    with pytest.raises(SettingsError, match="TLS_HOSTNAMES='bad name'"):
        TlsSettings.from_env({"TLS_HOSTNAMES": "bad name"})


def test_the_local_ca_is_made_once_and_signs_a_server_certificate_for_every_name(tmp_path):
    from tls.certificates import ensure_local_ca, issue_server_certificate

    names = ["localhost", "127.0.0.1", "mlflow.example.com"]
    ca = ensure_local_ca(tmp_path / "ca", names)
    first = ca[0].read_bytes()
    again = ensure_local_ca(tmp_path / "ca", names[:2])
    assert again[0].read_bytes() == first and not again[2]  # kept, not made again
    assert oct(ca[1].stat().st_mode & 0o777) == "0o600"
    pair = issue_server_certificate(ca, names, tmp_path / "run")
    assert not (tmp_path / "run" / "ca.key").exists()
    assert (tmp_path / "run" / "ca.crt").read_bytes() == first
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca[0]), str(tmp_path / "run" / "server.crt")],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    sans = subprocess.run(
        ["openssl", "x509", "-in", str(pair.certificate), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (
        "DNS:localhost" in sans
        and "IP Address:127.0.0.1" in sans
        and "DNS:mlflow.example.com" in sans
    )
    assert pair.certificate.read_bytes().endswith(first)  # the chain ends with the CA


def openssl_text(path) -> str:
    return subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_the_local_ca_signs_server_certificates_for_its_names_only(tmp_path):
    from tls.certificates import ensure_local_ca, issue_server_certificate

    ca = ensure_local_ca(tmp_path / "ca", ["mlflow.example.com", "192.0.2.7"])
    first = ca[0].read_bytes()
    text = openssl_text(ca[0])
    assert "CA:TRUE, pathlen:0" in text and "Name Constraints: critical" in text
    # A certificate for another name, signed with the CA's own key, is not valid under it.
    issue_server_certificate(ca, ["evil.example.net"], tmp_path / "evil")
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca[0]), str(tmp_path / "evil" / "server.crt")],
        capture_output=True,
        text=True,
    )
    assert verify.returncode != 0 and "subtree" in verify.stdout + verify.stderr, verify
    for names in (["mlflow.example.com"], ["api.mlflow.example.com", "192.0.2.7"]):
        out = tmp_path / names[0]
        issue_server_certificate(ca, names, out)
        ok = subprocess.run(
            ["openssl", "verify", "-CAfile", str(ca[0]), str(out / "server.crt")],
            capture_output=True,
            text=True,
        )
        assert ok.returncode == 0, ok.stderr
    # A name it was not made for: a new CA (to be trusted again), made for all of them.
    remade = ensure_local_ca(tmp_path / "ca", ["mlflow.example.com", "10.0.0.5"])
    assert remade[2] and remade[0].read_bytes() != first


def test_tls_init_issues_the_certificate_where_the_proxy_reads_it(tmp_path, monkeypatch):
    from tls.init import main

    monkeypatch.setenv("TLS_HOSTNAMES", "mlflow.example.com,127.0.0.1")
    (tmp_path / "certs").mkdir()
    assert main(tmp_path / "certs", tmp_path / "ca", tmp_path / "issued") == 0
    issued = sorted(p.name for p in (tmp_path / "issued").iterdir())
    assert issued == ["ca.crt", "server.crt", "tls.crt", "tls.key"]
    assert oct((tmp_path / "issued" / "tls.key").stat().st_mode & 0o777) == "0o600"
    assert "DNS:mlflow.example.com" in openssl_text(tmp_path / "issued" / "server.crt")
    monkeypatch.setenv("TLS_HOSTNAMES", "two words")
    assert main(tmp_path / "certs", tmp_path / "ca", tmp_path / "issued") == 2


def test_the_users_certificate_needs_both_files(tmp_path):
    from tls.certificates import user_certificate

    assert user_certificate(tmp_path) is None
    (tmp_path / "tls.crt").write_text("x")
    with pytest.raises(ValueError, match="needs both tls.crt and tls.key; found only tls.crt"):
        user_certificate(tmp_path)
    (tmp_path / "tls.key").write_text("x")
    pair = user_certificate(tmp_path)
    assert pair.certificate == tmp_path / "tls.crt" and not pair.generated


def test_nginx_bounds_bodies_like_every_hop_and_waits_longer_than_the_ui_proxy(tmp_path):
    from promptlab_stack.timings import ui_proxy_timeout
    from tls.certificates import CertificatePair
    from tls.nginx_config import render
    from tls.settings import TlsSettings

    settings = TlsSettings.from_env({"MAX_REQUEST_MB": "2", "GENERATION_TIMEOUT_SECONDS": "100"})
    config = render(settings, CertificatePair(tmp_path / "c.crt", tmp_path / "c.key", True))
    assert "client_max_body_size 1953k;" in config  # 2,000,000 bytes
    timeout = int(config.split("proxy_read_timeout ")[1].split("s;")[0])
    assert timeout > ui_proxy_timeout(100)
    assert "listen 8443 ssl http2;" in config and "ssl_protocols TLSv1.2 TLSv1.3;" in config
    assert (
        f"ssl_certificate {tmp_path / 'c.crt'};" in config and "X-Forwarded-Proto https" in config
    )
    # Every path nginx writes is on the tmpfs (the root file system is read-only).
    for line in config.splitlines():
        if "_path " in line or line.startswith("pid "):
            assert " /tmp/" in line, line


def test_nginx_offers_only_forward_secret_aead_suites_and_limits_each_client(tmp_path):
    from tls.certificates import CertificatePair
    from tls.nginx_config import render
    from tls.settings import TlsSettings

    config = render(TlsSettings(), CertificatePair(tmp_path / "c.crt", tmp_path / "c.key", True))
    ciphers = config.split("ssl_ciphers ")[1].split(";")[0].split(":")
    assert ciphers and all(c.startswith("ECDHE-") for c in ciphers)
    assert all("GCM" in c or "CHACHA20" in c for c in ciphers), ciphers  # no CBC, no SHA-1 MAC
    assert "limit_conn per_client 64;" in config
    assert "limit_req zone=per_client_rate burst=200 nodelay;" in config
    assert "limit_req_status 429;" in config and "limit_conn_status 429;" in config


def test_the_healthcheck_path_is_answered_by_nginx_itself(tmp_path):
    """The container is healthy when nginx serves TLS, whatever the tracking server is doing."""
    import re

    from tls.certificates import CertificatePair
    from tls.nginx_config import HEALTH_PATH, render
    from tls.settings import TlsSettings

    config = render(TlsSettings(), CertificatePair(tmp_path / "c.crt", tmp_path / "c.key", True))
    block = re.search(r"location = " + re.escape(HEALTH_PATH) + r" \{(.*?)\}", config, re.S)
    assert block and "return 200" in block.group(1) and "proxy_pass" not in block.group(1)
