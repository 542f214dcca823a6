"""The TLS proxy's settings, read once at start (start.py)."""

from __future__ import annotations

from pydantic import Field

from promptlab_stack.settings import GenerationTimeout, RequestLimit, TlsAddress


class TlsSettings(GenerationTimeout, RequestLimit, TlsAddress):
    # The proxy serves the UI beyond loopback: without basic auth on the tracking server that
    # opens every experiment to whoever reaches it, so it refuses to start unless told so.
    tls_allow_no_auth: bool = Field(False, description="true or false")
