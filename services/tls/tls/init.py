"""The `tls-init` one-shot service: before the proxy starts, the server certificate for
TLS_HOSTNAMES, signed by the local CA (certificates.py), written to the tls-certs volume that the
proxy reads. The only process that reads the CA's key; it has no network.

With your own certificate in TLS_CERT_DIR there is nothing to make. A bad setting ends it with
status 2, so that the proxy, which waits for it to succeed, does not start.
"""

from __future__ import annotations

import sys
from pathlib import Path

from promptlab_stack.settings import SettingsError
from tls.certificates import ensure_local_ca, issue_server_certificate, user_certificate
from tls.settings import TlsSettings

CERT_DIR = Path("/certs")  # TLS_CERT_DIR, mounted read-only
CA_DIR = Path("/tls-ca")  # the tls-ca volume: the CA and its key
OUT_DIR = Path("/tls-certs")  # the tls-certs volume: what the proxy reads


def main(cert_dir: Path = CERT_DIR, ca_dir: Path = CA_DIR, out_dir: Path = OUT_DIR) -> int:
    try:
        settings = TlsSettings.from_env()
        certificate = user_certificate(cert_dir)
    except (SettingsError, ValueError) as e:
        print(f"tls-init stopped: settings error: {e}", file=sys.stderr)
        return 2
    if certificate is not None:
        print(
            f"tls-init: the proxy uses {certificate.certificate} from TLS_CERT_DIR", file=sys.stderr
        )
        return 0
    crt, key, made = ensure_local_ca(ca_dir, settings.hostnames)
    issue_server_certificate((crt, key, made), settings.hostnames, out_dir)
    news = "a new local CA (trust it again)" if made else "the local CA"
    print(
        f"tls-init: certificate for {', '.join(settings.hostnames)} signed by {news}; trust it "
        "with: docker compose cp tls:/tls-ca/ca.crt promptlab-ca.crt",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
