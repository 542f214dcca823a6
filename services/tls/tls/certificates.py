"""The proxy's certificate: the user's own, or one signed by a local CA made on first start.

The local CA (`ca.crt`, `ca.key`) is made once and kept on the `tls-ca` volume, so a browser or
`curl --cacert` that trusts it once keeps trusting the proxy across restarts; the server
certificate is issued again at every start for the names in TLS_HOSTNAMES (they may change) and
lives in memory-backed /tmp only. Debian's `openssl` does the cryptography: no Python package of
ours handles a private key.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

CA_DAYS = 3650
SERVER_DAYS = 825  # the most browsers accept for a server certificate


@dataclass(frozen=True)
class CertificatePair:
    certificate: Path  # the chain nginx sends
    key: Path
    generated: bool  # made here, signed by the local CA


def user_certificate(folder: Path) -> CertificatePair | None:
    """The user's `tls.crt` and `tls.key` in `folder` (TLS_CERT_DIR), if both are there."""
    crt, key = folder / "tls.crt", folder / "tls.key"
    if crt.is_file() and key.is_file():
        return CertificatePair(crt, key, generated=False)
    if crt.exists() or key.exists():
        raise ValueError(
            f"TLS_CERT_DIR needs both tls.crt and tls.key; found only "
            f"{(crt if crt.exists() else key).name}"
        )
    return None


def subject_alt_names(hostnames: list[str]) -> str:
    """`DNS:name` for host names, `IP:address` for addresses, as openssl's subjectAltName wants."""
    entries = []
    for name in hostnames:
        try:
            entries.append(f"IP:{ipaddress.ip_address(name)}")
        except ValueError:
            entries.append(f"DNS:{name}")
    return ",".join(entries)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def ensure_local_ca(folder: Path) -> tuple[Path, Path]:
    """The local CA's certificate and key in `folder`, made on the first call."""
    crt, key = folder / "ca.crt", folder / "ca.key"
    if crt.is_file() and key.is_file():
        return crt, key
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(crt),
        "-days",
        str(CA_DAYS),
        "-subj",
        "/CN=promptlab local CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    key.chmod(0o600)
    return crt, key


def issue_server_certificate(
    ca: tuple[Path, Path], hostnames: list[str], out: Path
) -> CertificatePair:
    """A server certificate for `hostnames`, signed by the local CA; the chain (server + CA) and
    its key written to `out`."""
    ca_crt, ca_key = ca
    out.mkdir(parents=True, exist_ok=True)
    key, csr, crt, ext = out / "tls.key", out / "tls.csr", out / "server.crt", out / "tls.ext"
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={hostnames[0]}",
    )
    ext.write_text(
        f"subjectAltName={subject_alt_names(hostnames)}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_crt),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-CAserial",
        str(out / "ca.srl"),
        "-out",
        str(crt),
        "-days",
        str(SERVER_DAYS),
        "-sha256",
        "-extfile",
        str(ext),
    )
    chain = out / "tls.crt"
    chain.write_bytes(crt.read_bytes() + ca_crt.read_bytes())
    key.chmod(0o600)
    return CertificatePair(chain, key, generated=True)
