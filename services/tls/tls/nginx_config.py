"""nginx's configuration for the TLS proxy: a pure function of the settings and the certificate.

nginx runs as the unprivileged app user with a read-only root file system, so every path it
writes (pid file, temporary request bodies) is under /tmp, and it listens on an unprivileged port.
Request bodies are bounded by MAX_REQUEST_MB here too (nginx answers 413), and nginx waits for the
tracking server a little longer than the tracking server waits for a generation (timings.py).
"""

from __future__ import annotations

from promptlab_stack.timings import tls_proxy_timeout
from promptlab_stack.topology import TLS, TRACKING
from tls.certificates import CertificatePair
from tls.settings import TlsSettings

LISTEN_PORT = TLS.port
UPSTREAM = f"{TRACKING.name}:{TRACKING.port}"
# nginx's own answer, for the container's healthcheck (docker-compose.yml).
HEALTH_PATH = "/tls-health"
DOCKER_DNS = "127.0.0.11"
RUN_DIR = "/tmp/nginx"
# Mozilla's "intermediate" TLS 1.2 suites without DHE (no dhparam file to keep).
CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
CONNECTIONS_PER_CLIENT = 64
REQUESTS_PER_S = 50
REQUEST_BURST = 200


def render(
    settings: TlsSettings,
    certificate: CertificatePair,
    upstream: str = UPSTREAM,
    port: int = LISTEN_PORT,
    run_dir: str = RUN_DIR,
    resolver: str = DOCKER_DNS,
) -> str:
    timeout = tls_proxy_timeout(settings.generation_timeout_seconds)
    body_kb = max(1, settings.max_request_bytes // 1024)
    return f"""\
worker_processes auto;
pid {run_dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}

http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {run_dir}/client_body;
    proxy_temp_path {run_dir}/proxy;
    fastcgi_temp_path {run_dir}/fastcgi;
    uwsgi_temp_path {run_dir}/uwsgi;
    scgi_temp_path {run_dir}/scgi;
    # MAX_REQUEST_MB, as every other hop.
    client_max_body_size {body_kb}k;
    # Per client address: connections open at once and requests a second (the UI opens a few
    # dozen at a page load: the burst), past which nginx answers 429.
    limit_conn_zone $binary_remote_addr zone=per_client:10m;
    limit_req_zone $binary_remote_addr zone=per_client_rate:10m rate={REQUESTS_PER_S}r/s;
    limit_conn_status 429;
    limit_req_status 429;

    # Docker's DNS, asked again every 10 s: a recreated tracking container gets a new address,
    # and nginx would otherwise keep the one it resolved at start.
    resolver {resolver} valid=10s ipv6=off;

    server {{
        # `listen ... http2`: Debian bookworm's nginx 1.22 predates the `http2` directive.
        listen {port} ssl http2;
        ssl_certificate {certificate.certificate};
        ssl_certificate_key {certificate.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        # TLS 1.2: forward-secret AEAD suites only (no CBC, no SHA-1); TLS 1.3's are all AEAD.
        ssl_ciphers {CIPHERS};
        ssl_prefer_server_ciphers off;
        limit_conn per_client {CONNECTIONS_PER_CLIENT};
        limit_req zone=per_client_rate burst={REQUEST_BURST} nodelay;
        ssl_session_cache shared:TLS:10m;
        add_header Strict-Transport-Security "max-age=31536000" always;

        # The container's healthcheck: nginx itself serving TLS, not the tracking server behind it
        # (compose orders the start on tracking's own health; a proxy that turned unhealthy
        # whenever tracking restarts failed `up --wait` while a database was being upgraded).
        location = {HEALTH_PATH} {{
            access_log off;
            default_type text/plain;
            return 200 "ok\n";
        }}

        location / {{
            set $tracking http://{upstream};
            proxy_pass $tracking;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_read_timeout {timeout}s;
            proxy_send_timeout {timeout}s;
            # Answers (and the UI's large artifact downloads) pass through as they come.
            proxy_buffering off;
            proxy_request_buffering on;
        }}
    }}
}}
"""
