"""The proxy's certificate: the user's own, or one signed by a local CA made on first start.

The local CA (`ca.crt`, `ca.key`) is made once and kept on the `tls-ca` volume, so a browser or
`curl --cacert` that trusts it once keeps trusting the proxy across restarts. It can sign server
certificates only (`pathlen:0`) and only for the names of TLS_HOSTNAMES it was made for (name
constraints): a browser that trusts it trusts nothing else. Naming a host it was not made for
makes a new CA, to be trusted again. Only the one-shot `tls-init` service reads its key
(init.py); it issues the server certificate for TLS_HOSTNAMES at every start. Debian's `openssl`
does the cryptography: no Python package of ours handles a private key.
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


def name_constraints(hostnames: list[str]) -> str:
    """openssl's nameConstraints for exactly these names (a DNS name permits its subdomains too;
    `*.example.com` is `example.com`'s subdomains; an address is itself alone)."""
    permitted = []
    for name in hostnames:
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            permitted.append(f"permitted;DNS:{name.removeprefix('*.')}")
            continue
        mask = ipaddress.ip_address((1 << address.max_prefixlen) - 1)
        permitted.append(f"permitted;IP:{address}/{mask}")
    return "critical," + ",".join(permitted)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def ensure_local_ca(folder: Path, hostnames: list[str]) -> tuple[Path, Path, bool]:
    """The local CA's certificate and key in `folder`, and whether they were made now: kept while
    it was made for every name of `hostnames`, else made again for them."""
    crt, key, names = folder / "ca.crt", folder / "ca.key", folder / "ca.names"
    if crt.is_file() and key.is_file() and names.is_file():
        if set(hostnames) <= set(names.read_text().split()):
            return crt, key, False
    folder.mkdir(parents=True, exist_ok=True)
    key.unlink(missing_ok=True)
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
        "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-addext",
        f"nameConstraints={name_constraints(hostnames)}",
    )
    key.chmod(0o600)
    names.write_text(" ".join(hostnames) + "\n")
    return crt, key, True


def issue_server_certificate(
    ca: tuple[Path, Path, bool], hostnames: list[str], out: Path
) -> CertificatePair:
    """A server certificate for `hostnames`, signed by the local CA; the chain (server + CA) and
    its key written to `out`."""
    ca_crt, ca_key, _ = ca
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
    for scratch in (csr, ext, out / "ca.srl"):
        scratch.unlink(missing_ok=True)
    # The CA's certificate beside them, for users to trust (never its key).
    (out / "ca.crt").write_bytes(ca_crt.read_bytes())
    return CertificatePair(chain, key, generated=True)
