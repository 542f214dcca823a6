"""Whether a tracking server is running on the volumes, asked the same way from `exec` and `run`.

`docker compose exec tracking ...` runs beside the server, which answers on loopback there; but
`docker compose run --rm --no-deps tracking ...` is a one-off container of its own, where nothing
listens on loopback while the real server may still run next to it. So the server is also asked by
its name on the compose network (topology.TRACKING), at every address the name resolves to. A name
that does not resolve (no container of that service is running), a refused connection or an
unreachable address mean "not running"; anything else (any HTTP answer, an accepted connection
that does not answer in time) means it may be writing, and the caller refuses.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import threading
from collections.abc import Sequence
from urllib.parse import urlsplit

from promptlab_stack.topology import TRACKING

# Loopback covers `exec` (and a server on the host in tests); the name covers `run`.
HEALTH_URLS: tuple[str, ...] = (
    f"http://127.0.0.1:{TRACKING.port}/health",
    f"{TRACKING.url}/health",
)
RESOLVE_TIMEOUT_S = 3.0
ANSWER_TIMEOUT_S = 2.0


def addresses(host: str, port: int, timeout: float = RESOLVE_TIMEOUT_S) -> list[str]:
    """Every address `host` resolves to ([] when it does not resolve within `timeout`): Docker's
    DNS answers a service name at once, so a slow answer is a name that is not a container's."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    found: list[str] = []

    def resolve() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return
        found.extend(dict.fromkeys(str(info[4][0]) for info in infos))

    # getaddrinfo has no timeout of its own; a daemon thread never holds the command's exit.
    resolver = threading.Thread(target=resolve, daemon=True)
    resolver.start()
    resolver.join(timeout)
    return list(found) if not resolver.is_alive() else []


def answers_at(address: str, port: int, host_header: str, path: str, timeout: float) -> bool:
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        try:
            connection.connect()
        except (ConnectionRefusedError, ConnectionResetError):
            return False
        except TimeoutError:
            return True  # a host that takes the packets but not the connection: maybe paused
        except OSError:
            return False  # unreachable: no host at that address
        try:
            connection.request("GET", path, headers={"Host": host_header})
            connection.getresponse().read(1024)
        except (OSError, http.client.HTTPException):
            pass  # something listens there and took the connection: a server, busy or not
        return True
    finally:
        connection.close()


def answering(urls: Sequence[str] | None = None, timeout: float = ANSWER_TIMEOUT_S) -> str | None:
    """Where a tracking server answers ("<url> (<address>)"), or None when none is running.

    `urls`: the health URLs to ask (HEALTH_URLS: loopback and the compose name)."""
    for url in HEALTH_URLS if urls is None else urls:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 80
        for address in addresses(host, port):
            if answers_at(address, port, parts.netloc, parts.path or "/", timeout):
                return f"{url} ({address})"
    return None
