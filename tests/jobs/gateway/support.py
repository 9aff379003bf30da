"""Helpers for the gateway tests: countries' trusted parties (keys, certificates, PEM files),
signed bodies, and an HTTPS client that presents a country's TLS authentication certificate."""

from __future__ import annotations

import base64
import datetime as dt
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from jobs.gateway.simulator import (
    AUTHENTICATION,
    CSCA,
    ROLES,
    UPLOAD,
    GatewayStore,
    TrustedParty,
)
from signing import cms
from signing.keys import make_csca, make_gateway_cert

NOW = dt.datetime.now(dt.UTC)
HASHES = [base64.b64encode(bytes([b]) * 16).decode() for b in range(0x0A, 0x0F)]


def _pem_files(folder: Path, name: str, key: Any, cert: x509.Certificate) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    c, k = folder / f"{name}.pem", folder / f"{name}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return c, k


@dataclass
class Country:
    """One country's trusted parties: TLS authentication, upload, CSCA (with keys)."""

    code: str
    folder: Path
    auth_key: Any = None
    auth: x509.Certificate | None = None
    upload_key: Any = None
    upload: x509.Certificate | None = None
    csca: x509.Certificate | None = None
    csca_key: Any = None
    files: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def make(cls, code: str, folder: Path) -> Country:
        c = cls(code, folder / code)
        c.auth_key, c.auth = make_gateway_cert(code, "auth", NOW)
        c.upload_key, c.upload = make_gateway_cert(code, "upload", NOW)
        c.csca_key, c.csca = make_csca(code, NOW)
        c.files["auth_cert"], c.files["auth_key"] = _pem_files(c.folder, "auth", c.auth_key, c.auth)
        c.files["upload_cert"], c.files["upload_key"] = _pem_files(
            c.folder, "upload", c.upload_key, c.upload
        )
        return c

    def parties(self, roles: frozenset[str] = ROLES) -> list[TrustedParty]:
        assert self.auth and self.upload and self.csca
        return [
            TrustedParty(self.code, AUTHENTICATION, self.auth, roles),
            TrustedParty(self.code, UPLOAD, self.upload),
            TrustedParty(self.code, CSCA, self.csca),
        ]

    def set_roles(self, store: GatewayStore, *roles: str) -> None:
        assert self.auth
        store.add_party(TrustedParty(self.code, AUTHENTICATION, self.auth, frozenset(roles)))

    @property
    def auth_hash(self) -> str:
        assert self.auth
        return cms.thumbprint(self.auth)

    def sign(self, payload: bytes | str, key: Any = None, cert: Any = None) -> str:
        """Base64 CMS over the payload, by this country's upload certificate (or another)."""
        data = payload.encode() if isinstance(payload, str) else payload
        return cms.sign_b64(data, cert or self.upload, key or self.upload_key)

    def dsc(self, issuer: Country | None = None, country: str | None = None) -> x509.Certificate:
        """A fresh DSC of this country (or with another subject C), issued by a CSCA."""
        from cryptography.hazmat.primitives.asymmetric import ec

        from signing.keys import make_dsc

        ca = issuer or self
        key = ec.generate_private_key(ec.SECP256R1())
        return make_dsc(ca.csca_key, ca.csca, key.public_key(), country or self.code, NOW)

    def client(self, url: str, ca: Path, **kwargs: Any) -> httpx.Client:
        """HTTPS with this country's TLS authentication certificate."""
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(str(self.files["auth_cert"]), str(self.files["auth_key"]))
        return httpx.Client(base_url=url, verify=ctx, timeout=30, **kwargs)


def batch_dto(
    country: str = "EU",
    *,
    expires: dt.datetime | None = None,
    kid: str | None = "UNKNOWN_KID",
    hash_type: str | None = "SIGNATURE",
    entries: list[str] | None = None,
) -> dict[str, Any]:
    when = expires or (dt.datetime.now(dt.UTC) + dt.timedelta(days=7))
    return {
        "country": country,
        "expires": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kid": kid,
        "hashType": hash_type,
        "entries": [{"hash": h} for h in (HASHES if entries is None else entries)],
    }
