"""Helpers for the delivery drills: test certificates made with ``cryptography``, the
ledger's side of a batch and the operator's side (the simulator's ``GET /_admin/messages``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

# Retries, backoff and the breaker made fast for tests (the policy is unchanged).
FAST = {
    "mailbox_backoff_s": 0.01,
    "mailbox_backoff_max_s": 0.5,
    "mailbox_max_attempts": 4,
    "mailbox_breaker_threshold": 5,
    "mailbox_breaker_cooldown_s": 0.05,
    "simulator_retry_after_s": 0.02,
    "workers": 1,
}

LEDGERS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def ledger_overrides(ledger: str, request: pytest.FixtureRequest) -> dict[str, str]:
    return {"ledger_url": request.getfixturevalue("pg_url")} if ledger == "postgres" else {}


def operator_messages(sim_url: str, **client) -> dict[str, dict]:
    """The operator's side: idempotency key → {operator, stored_at}, over the socket."""
    with httpx.Client(timeout=10, **client) as c:
        resp = c.get(f"{sim_url}/_admin/messages")
    resp.raise_for_status()
    return {m["idempotency_key"]: m for m in resp.json()["messages"]}


def ledger_rows(batch_id: str, url: str):
    """(certificates, deliveries) of a batch: (uvci, outcome, reason) and attempt rows."""
    from sqlalchemy import select

    from jobs.db import engine
    from jobs.ledger.models import Certificate, Delivery

    with engine(url).connect() as conn:
        certs = conn.execute(
            select(Certificate.uvci, Certificate.outcome, Certificate.outcome_reason).where(
                Certificate.batch_id == batch_id
            )
        ).all()
        deliveries = conn.execute(
            select(
                Delivery.uvci,
                Delivery.attempt,
                Delivery.channel,
                Delivery.status,
                Delivery.operator,
                Delivery.idempotency_key,
                Delivery.receipt,
                Delivery.reason,
            )
            .where(Delivery.batch_id == batch_id)
            .order_by(Delivery.id)
        ).all()
    return certs, deliveries


def audit(batch_id: str, url: str, messages: dict[str, dict]) -> dict[str, int]:
    """Both sides of a batch against each other; returns outcomes counted. Asserts:
    every message at the operator has a digital attempt row with its key in the ledger;
    no certificate whose key is at the operator is PAPER (a second copy); every DIGITAL
    certificate's key is at the operator; attempts are numbered 1..k without gaps."""
    from jobs.ids import idempotency_key

    certs, deliveries = ledger_rows(batch_id, url)
    keyed = {d.idempotency_key for d in deliveries if d.channel == "digital" and d.idempotency_key}
    key_of = {u: idempotency_key(u) for u, _, _ in certs}
    ours = set(key_of.values())
    at_operator = {k for k in messages if k in ours}
    assert at_operator <= keyed, f"{len(at_operator - keyed)} messages without an attempt row"
    outcomes: dict[str, int] = {}
    for uvci, outcome, _ in certs:
        name = outcome.value if outcome is not None else "pending"
        outcomes[name] = outcomes.get(name, 0) + 1
        if name == "PAPER":
            assert key_of[uvci] not in messages, f"{uvci}: printed and at the operator"
        if name == "DIGITAL":
            assert key_of[uvci] in messages, f"{uvci}: DIGITAL but not at the operator"
    per_cert: dict[str, list[int]] = {}
    for d in deliveries:
        per_cert.setdefault(d.uvci, []).append(d.attempt)
    assert all(sorted(a) == list(range(1, len(a) + 1)) for a in per_cert.values())
    return outcomes


def printed_at_operator(batch_id: str, url: str, messages: dict[str, dict]) -> tuple[int, int]:
    """(PAPER certificates whose message the operator holds, messages of the batch held)."""
    from jobs.ids import idempotency_key

    certs, _ = ledger_rows(batch_id, url)
    ours = {idempotency_key(u): o for u, o, _ in certs}
    held = [k for k in messages if k in ours]
    return sum(1 for k in held if ours[k] is not None and ours[k].value == "PAPER"), len(held)


# --------------------------------------------------------------------------- certificates
@dataclass(frozen=True)
class Pki:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate from it,
    and a second, unrelated CA (the "wrong CA"). All PEM files in one folder."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(cert, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _ca(cn: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(ca_key, ca_cert, cn: str, server: bool):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = _key()
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("bevis test CA")
    _, other_cert = _ca("some other CA")
    server_key, server_cert = _leaf(ca_key, ca_cert, "mailbox operator (test)", server=True)
    client_key, client_cert = _leaf(ca_key, ca_cert, "bevis sender (test)", server=False)
    pki = Pki(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        other_ca=folder / "other-ca.pem",
    )
    _write_cert(ca_cert, pki.ca)
    _write_cert(other_cert, pki.other_ca)
    _write_cert(server_cert, pki.server_cert)
    _write_key(server_key, pki.server_key)
    _write_cert(client_cert, pki.client_cert)
    _write_key(client_key, pki.client_key)
    return pki
