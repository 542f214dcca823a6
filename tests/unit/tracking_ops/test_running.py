"""Whether a tracking server runs (services/tracking-ops/tracking_ops/running.py), asked as
`promptlab-restore` asks from a one-off `docker compose run` container: by the service's name, at
every address it resolves to, as well as on loopback. Here a loopback HTTP server stands in for the
running tracking server and `localhost` for its compose name."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from loopback import free_port

from promptlab_stack.topology import TRACKING
from tracking_ops import running


class Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


@contextmanager
def health_server(host: str = "127.0.0.1"):
    server = ThreadingHTTPServer((host, free_port()), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_the_check_asks_the_compose_name_as_well_as_loopback():
    assert running.HEALTH_URLS == (
        f"http://127.0.0.1:{TRACKING.port}/health",
        f"{TRACKING.url}/health",
    )


def test_a_server_is_found_by_name_at_any_address_the_name_resolves_to():
    # Listening on 127.0.0.1 only: `localhost` may resolve to ::1 first, which refuses; the check
    # goes on to the next address, as it must when the one-off container shares the name.
    with health_server() as port:
        url = f"http://localhost:{port}/health"
        found = running.answering([f"http://127.0.0.1:{free_port()}/health", url])
        assert found == f"{url} (127.0.0.1)"


def test_any_http_answer_counts_as_running():
    with health_server() as port:
        assert running.answering([f"http://localhost:{port}/not-health"])


def test_nothing_listening_and_a_name_that_does_not_resolve_mean_not_running():
    started = time.monotonic()
    assert (
        running.answering(
            [f"http://127.0.0.1:{free_port()}/health", "http://no-such-service.invalid:5000/health"]
        )
        is None
    )
    assert time.monotonic() - started < running.RESOLVE_TIMEOUT_S + 2 * running.ANSWER_TIMEOUT_S


def test_a_server_that_takes_the_connection_but_does_not_answer_counts_as_running():
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    try:
        port = listener.getsockname()[1]
        assert running.answering([f"http://127.0.0.1:{port}/health"], timeout=0.5)
    finally:
        listener.close()
