"""The opt-in TLS proxy in front of the UI (the `tls` profile)."""
