"""TLS proxy entrypoint: read the settings, check that the tracking server asks for a login, pick
the certificate (yours, or the one tls-init issued), render nginx's config, exec nginx in the
foreground (it drains its connections on docker stop's SIGQUIT: see the
compose file's stop_signal)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from promptlab_stack.settings import SettingsError
from promptlab_stack.stop import stop_service
from tls.certificates import CertificatePair, user_certificate
from tls.nginx_config import RUN_DIR, render
from tls.settings import TlsSettings
from tls.tracking_auth import basic_auth_on

CERT_DIR = Path("/certs")  # TLS_CERT_DIR, mounted read-only
# The tls-certs volume, read-only: the certificate tls-init issued, and the CA's certificate for
# users to trust (`docker compose cp tls:/tls-ca/ca.crt .`); never the CA's key.
ISSUED_DIR = Path("/tls-ca")
CONFIG = Path(RUN_DIR) / "nginx.conf"


def main() -> int:
    try:
        settings = TlsSettings.from_env()
        certificate = user_certificate(CERT_DIR)
    except (SettingsError, ValueError) as e:
        return stop_service("tls proxy", f"settings error: {e}")
    if not settings.tls_allow_no_auth:
        auth = basic_auth_on()
        if auth is None:  # compose starts the proxy once tracking is healthy: try again
            print("tls proxy: the tracking server did not answer; restarting", file=sys.stderr)
            return 1
        if not auth:
            return stop_service(
                "tls proxy",
                "basic auth is off on the tracking server, and this proxy would serve every "
                "experiment to whoever reaches it: set MLFLOW_AUTH_ADMIN_PASSWORD (basic auth), "
                "or TLS_ALLOW_NO_AUTH=true to serve it without a login on purpose",
            )
    if certificate is None:
        certificate = CertificatePair(
            ISSUED_DIR / "tls.crt", ISSUED_DIR / "tls.key", generated=True
        )
        if not certificate.certificate.is_file():
            return stop_service(
                "tls proxy",
                "no certificate: the tls-init service makes it (docker compose logs tls-init)",
            )
        print(f"tls proxy: using the certificate tls-init issued ({ISSUED_DIR})", file=sys.stderr)
    else:
        print(f"tls proxy: using {certificate.certificate} from TLS_CERT_DIR", file=sys.stderr)
    Path(RUN_DIR).mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(render(settings, certificate))
    os.execvp("nginx", ["nginx", "-c", str(CONFIG), "-e", "stderr", "-g", "daemon off;"])


if __name__ == "__main__":
    sys.exit(main())
