"""A simulator of the EU DCC gateway's revocation-list endpoints, for local work and tests:
a real HTTPS server (FastAPI on uvicorn) with the gateway's own rules.

* **Mutual TLS as the gateway's load balancer does it** (software design, "Authentication"):
  a client without a certificate the TLS bundle trusts is refused in the handshake; for the
  others the server itself writes ``X-SSL-Client-SHA256`` (base64 SHA-256 of the client
  certificate's DER) and ``X-SSL-Client-DN`` from the real peer certificate, replacing any
  the client sent. The app then authenticates exactly like the gateway's
  ``CertificateAuthenticationFilter``: thumbprint normalised (hex, base64, URL-encoded
  base64), the DN parsed naively, its ``C`` the country; the pair (thumbprint, C) must be a
  registered AUTHENTICATION trusted party (401 0x402), and hold the endpoint's role
  (RevocationListReader / RevocationUploader / RevocationDeleter, else 403 0x403).
* ``POST /revocation-list``, ``DELETE /revocation-list`` (and ``POST /revocation-list/delete``),
  ``GET /revocation-list`` (If-Modified-Since, strictly newer, 1000 a page, ``more``, 204 when
  nothing is newer) and ``GET /revocation-list/{batchId}``, with the checks in the gateway's
  order (``CertificateRevocationListController`` and ``RevocationListService``): CMS parse
  (400 0x402), signature (400 0x260), the signer registered as the country's UPLOAD
  certificate (403), JSON (400), expires in the future (400), the DTO constraints — country
  of 2, kid of 11–12, 1–1000 entries, each hash ``^[A-Za-z0-9+/]{22}==$`` — (400), the batch's
  country the authenticated one (403). Errors are the gateway's ProblemReportDto
  ``{code, problem, sendValue, details}``.
* The signer-certificate (DSC upload and delete) and trust-list endpoints:
  jobs/gateway/simulator_trust.py; the simulator's trust anchor (``tls/ta.pem``) signs the
  trust list's AUTHENTICATION, UPLOAD and CSCA entries.
* What it receives is kept in SQLite (``gateway_sim_db``) for inspection: trusted parties,
  batches (the CMS exactly as uploaded) and audit events; ``GET /_admin/batches`` and
  ``/_admin/audit`` show them, ``POST /_admin/cleanup`` runs the gateway's daily clean-up
  (expired batches marked deleted), ``POST /_admin/hold`` holds upload answers (drills).

Where the real gateway answers 500 on a null ``hashType`` or ``entries`` (a
NullPointerException), the simulator answers 400 like the other constraint failures.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jobs.gateway.simulator_app import DN_HEADER, THUMBPRINT_HEADER, create_app
from jobs.gateway.simulator_store import (
    AUTHENTICATION,
    CSCA,
    DELETER,
    READER,
    ROLES,
    UPLOAD,
    UPLOADER,
    GatewayStore,
    TrustedParty,
    now_utc,
)
from jobs.settings import Settings, get_settings

__all__ = [
    "AUTHENTICATION",
    "CSCA",
    "DELETER",
    "READER",
    "ROLES",
    "UPLOAD",
    "UPLOADER",
    "Gateway",
    "GatewayStore",
    "TrustedParty",
    "create_app",
    "development_parties",
    "running_gateway",
    "serve",
]


# --- mutual TLS as the load balancer does it ---------------------------------------------------


def load_balancer_headers(der: bytes) -> list[tuple[bytes, bytes]]:
    """The headers the gateway's load balancer forwards for a verified client certificate."""
    cert = x509.load_der_x509_certificate(der)
    return [
        (THUMBPRINT_HEADER.encode(), base64.b64encode(hashlib.sha256(der).digest())),
        (
            DN_HEADER.encode(),
            urllib.parse.quote(cert.subject.rfc4514_string(), safe="=, ").encode(),
        ),
    ]


def with_client_certificate(app: Any, der: bytes | None) -> Any:
    """Wrap the ASGI app for one connection: drop the authentication headers the client sent
    and set them from its verified certificate (so they cannot be spoofed)."""

    async def wrapped(scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            names = (THUMBPRINT_HEADER.encode(), DN_HEADER.encode())
            headers = [(k, v) for k, v in scope["headers"] if k.lower() not in names]
            if der is not None:
                headers += load_balancer_headers(der)
            extensions = {**(scope.get("extensions") or {}), "tls": {"client_cert_der": der}}
            scope = {**scope, "headers": headers, "extensions": extensions}
        await app(scope, receive, send)

    return wrapped


def _protocol_class():
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class MutualTlsProtocol(H11Protocol):
        """h11 with the peer certificate read after the TLS handshake (uvicorn puts no TLS
        details into the ASGI scope)."""

        def connection_made(self, transport):  # type: ignore[override]
            super().connection_made(transport)
            sslobj = transport.get_extra_info("ssl_object")
            der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
            self.app = with_client_certificate(self.app, der)

    return MutualTlsProtocol


# --- development TLS material and trusted parties ---------------------------------------------


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)


def server_tls(folder: Path, hosts: Iterable[str] = ("localhost", "127.0.0.1")) -> dict[str, Path]:
    """A development CA and a server certificate for ``hosts`` in ``folder`` (made once,
    kept): {"ca": ca.pem, "cert": server.pem, "key": server.key}. Clients trust ``ca``."""
    import ipaddress

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    if all(p.is_file() for p in paths.values()):
        return paths
    now = now_utc()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bevis gateway simulator CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bevis gateway simulator")])
        )
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(
        paths["key"],
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _write(paths["cert"], cert.public_bytes(serialization.Encoding.PEM))
    _write(paths["ca"], ca.public_bytes(serialization.Encoding.PEM))
    return paths


def country_of(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)
    if len(values) != 1:
        raise ValueError("a trusted party's certificate names exactly one country (C)")
    return str(values[0].value)


def development_parties(key_dir: Path) -> list[TrustedParty]:
    """The trusted parties `bevis keys init-dev` made in ``key_dir``: the TLS authentication
    certificate (all three revocation roles), the upload certificate, the CSCA."""
    from signing.keys import AUTH_FILE, CSCA_FILE, GATEWAY_DIR, UPLOAD_FILE

    out = []
    for path, kind in (
        (key_dir / GATEWAY_DIR / AUTH_FILE, AUTHENTICATION),
        (key_dir / GATEWAY_DIR / UPLOAD_FILE, UPLOAD),
        (key_dir / CSCA_FILE, CSCA),
    ):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; run 'bevis keys init-dev'")
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        roles = ROLES if kind == AUTHENTICATION else frozenset()
        out.append(TrustedParty(country_of(cert), kind, cert, roles))
    return out


def client_bundle(store: GatewayStore, path: Path) -> Path:
    """The TLS bundle of the load balancer: every AUTHENTICATION certificate (self-signed
    client certificates are their own anchors)."""
    pems = b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in store.certificates(AUTHENTICATION)
    )
    if not pems:
        raise ValueError("no AUTHENTICATION trusted party: no client could connect")
    _write(path, pems)
    return path


@dataclass
class Gateway:
    """A running simulator: its URL, its store, the CA its clients trust (TLS) and the
    trust anchor they pin (the trust list's signatures)."""

    url: str
    store: GatewayStore
    ca: Path
    trust_anchor: Path


def _app(store: GatewayStore, folder: Path) -> Any:
    """The revocation-list app with the signer-certificate and trust-list endpoints."""
    from jobs.gateway.simulator_trust import add_trust_routes, trust_anchor

    app = create_app(store)
    add_trust_routes(app, store, *trust_anchor(folder / "tls"))
    return app


def _uvicorn_config(app: Any, tls: dict[str, Path], bundle: Path, **kwargs: Any):
    import uvicorn

    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        http=_protocol_class(),
        ssl_certfile=str(tls["cert"]),
        ssl_keyfile=str(tls["key"]),
        ssl_ca_certs=str(bundle),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        **kwargs,
    )


def _prepare(
    folder: Path, parties: Iterable[TrustedParty], db: Path | str | None
) -> tuple[GatewayStore, dict[str, Path], Path]:
    store = GatewayStore(db if db is not None else folder / "gateway-sim.db")
    for party in parties:
        store.add_party(party)
    tls = server_tls(folder / "tls")
    return store, tls, client_bundle(store, folder / "tls" / "client-bundle.pem")


@contextlib.contextmanager
def running_gateway(
    folder: Path,
    parties: Iterable[TrustedParty],
    *,
    db: Path | str | None = None,
    host: str = "127.0.0.1",
) -> Iterator[Gateway]:
    """Serve the simulator over mutual TLS on a free loopback port in a background thread
    (tests and drills)."""
    import uvicorn

    store, tls, bundle = _prepare(folder, parties, db)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    url = f"https://{host}:{sock.getsockname()[1]}"
    server = uvicorn.Server(_uvicorn_config(_app(store, folder), tls, bundle))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("gateway simulator did not start")
        time.sleep(0.02)
    try:
        yield Gateway(url, store, tls["ca"], folder / "tls" / "ta.pem")
    finally:
        store.hold_uploads.clear()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        store.close()


def serve(
    host: str = "127.0.0.1",
    port: int = 8788,
    settings: Settings | None = None,
    announce: Any = None,
) -> None:
    """Run the simulator in the foreground (``bevis simulator gateway``), the development
    keys' country registered as trusted parties; ``announce(gateway)`` is called once it is
    set up (its URL, store and the CA its clients must trust)."""
    import uvicorn

    s = settings or get_settings()
    folder = s.resolved_data_dir() / "gateway-sim"
    parties = development_parties(s.resolved_key_dir())
    store, tls, bundle = _prepare(folder, parties, s.gateway_sim_db)
    gateway = Gateway(f"https://{host}:{port}", store, tls["ca"], folder / "tls" / "ta.pem")
    app = _app(store, folder)
    if announce is not None:
        announce(gateway)
    try:
        uvicorn.Server(_uvicorn_config(app, tls, bundle, host=host, port=port)).run()
    finally:
        store.close()
