"""The TLS proxy's settings, read once at start (start.py)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from promptlab_stack.settings import GenerationTimeout, RequestLimit, checked_by, comma_list


def check_hostnames(value: str) -> None:
    names = comma_list(value)
    if not names:
        raise ValueError("name at least one host name or IP address")
    for name in names:
        if not all(c.isalnum() or c in "-.:*" for c in name):
            raise ValueError(f"{name!r} is not a host name or IP address")


class TlsSettings(GenerationTimeout, RequestLimit):
    # The names the generated certificate is valid for (ignored with your own certificate).
    tls_hostnames: Annotated[str, checked_by(check_hostnames)] = Field(
        "localhost,127.0.0.1", description="comma-separated host names or IP addresses"
    )

    @property
    def hostnames(self) -> list[str]:
        return comma_list(self.tls_hostnames)
