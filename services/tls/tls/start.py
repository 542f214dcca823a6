"""TLS proxy entrypoint: read the settings, pick or make the certificate, render nginx's config,
exec nginx in the foreground (it drains its connections on docker stop's SIGQUIT: see the
compose file's stop_signal)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from promptlab_stack.settings import SettingsError
from promptlab_stack.stop import stop_service
from tls.certificates import ensure_local_ca, issue_server_certificate, user_certificate
from tls.nginx_config import RUN_DIR, render
from tls.settings import TlsSettings

CERT_DIR = Path("/certs")  # TLS_CERT_DIR, mounted read-only
CA_DIR = Path("/tls-ca")  # the tls-ca volume
CONFIG = Path(RUN_DIR) / "nginx.conf"


def main() -> int:
    try:
        settings = TlsSettings.from_env()
        certificate = user_certificate(CERT_DIR)
    except (SettingsError, ValueError) as e:
        return stop_service("tls proxy", f"settings error: {e}")
    if certificate is None:
        ca = ensure_local_ca(CA_DIR)
        certificate = issue_server_certificate(ca, settings.hostnames, Path(RUN_DIR) / "certs")
        print(
            f"tls proxy: certificate for {', '.join(settings.hostnames)} signed by the local CA "
            f"({ca[0]}; trust it with: docker compose cp tls:{ca[0]} promptlab-ca.crt)",
            file=sys.stderr,
        )
    else:
        print(f"tls proxy: using {certificate.certificate} from TLS_CERT_DIR", file=sys.stderr)
    Path(RUN_DIR).mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(render(settings, certificate))
    os.execvp("nginx", ["nginx", "-c", str(CONFIG), "-e", "stderr", "-g", "daemon off;"])


if __name__ == "__main__":
    sys.exit(main())
