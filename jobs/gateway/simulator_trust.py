"""The gateway simulator's signer-certificate and trust-list endpoints, with the gateway's
rules (SignerCertificateController, SignerInformationService, TrustListController,
TrustListService):

* ``POST /signerCertificate``: base64 CMS whose content is the DSC's DER, signed by the
  country's UPLOAD certificate; the DSC's subject has exactly one C, the authenticated
  country; it is signed by one of the country's CSCAs; an existing one is 409 0x002, a kid
  (the first 8 bytes of its SHA-256) already taken 400; other failures 400 0x004. The
  detached form of the CMS is stored: it is the trust list's ``signature`` of the DSC.
* ``DELETE /signerCertificate`` (and ``POST /signerCertificate/delete``): the same CMS; an
  unknown DSC is 404 0x005; the row stays, its signature dropped (rawData null in a delta).
* ``GET /trustList[/{type}[/{country}]]``: kid, timestamp, country, certificateType,
  thumbprint, signature, rawData — AUTHENTICATION, UPLOAD and CSCA signed (detached CMS over
  the DER) by the simulator's trust anchor, which clients pin; DSCs signed by their
  country's upload certificate. If-Modified-Since for a delta, ``page``/``pagesize``.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from jobs.gateway.simulator_app import Problem, authenticate
from jobs.gateway.simulator_store import (
    AUTHENTICATION,
    CSCA,
    UPLOAD,
    GatewayStore,
    now_utc,
    parse_instant,
)
from signing import cms

DSC = "DSC"
TYPES = (AUTHENTICATION, UPLOAD, CSCA, DSC)
BAD_DSC = (
    "Possible reasons: Wrong Format, no CMS, not the correct signing alg missing attributes, "
    "invalid signature, certificate not signed by known CA"
)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


async def _dsc_message(request: Request) -> tuple[cms.SignedMessage, x509.Certificate, str]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/cms":
        raise Problem(415, "0x000", "Unsupported Media Type", ctype, "application/cms")
    body = await request.body()
    try:
        message = cms.parse_verify(body)
    except cms.CmsError as exc:
        raise Problem(400, "0x402", str(exc)) from None
    try:
        dsc = x509.load_der_x509_certificate(message.payload)
    except ValueError:
        raise Problem(
            400, "0x402", "CMS Message payload needs to be a DER encoded X509 certificate"
        ) from None
    if not message.verified:
        raise Problem(
            400,
            "0x009",
            "Invalid CMS Signature",
            "",
            "Signature of CMS signed certificate is not validating content of CMS package",
        )
    return message, dsc, body.decode("ascii", errors="replace")


def _checked(
    store: GatewayStore, message: cms.SignedMessage, dsc: x509.Certificate, country: str
) -> str | None:
    """Why the DSC is refused (SignerInformationService's content checks), or None."""
    if store.party_roles(cms.thumbprint(message.signer), country, UPLOAD) is None:
        return "Uploader certificate is not a registered upload certificate of your country"
    cs = dsc.subject.get_attributes_for_oid(x509.oid.NameOID.COUNTRY_NAME)
    if len(cs) != 1 or cs[0].value != country:
        return "Uploaded certificate has no or another country than your authentication"
    cscas = [p.cert for p, _at in store.parties() if p.type == CSCA and p.country == country]
    for csca in cscas:
        try:
            dsc.verify_directly_issued_by(csca)
            return None
        except Exception:  # InvalidSignature, another issuer name, another key type
            continue
    return "Uploaded certificate is not signed by a CSCA of your country"


def add_trust_routes(
    app: FastAPI, store: GatewayStore, anchor: x509.Certificate, anchor_key: Any
) -> None:
    """Register the signer-certificate and trust-list endpoints on the simulator's app."""

    @app.post("/signerCertificate")
    async def upload_dsc(request: Request):
        country, auth = authenticate(request, store, role=None)
        message, dsc, body = await _dsc_message(request)
        thumbprint = cms.thumbprint(dsc)
        problem = _checked(store, message, dsc, country)
        if problem is None:
            existing = store.signer(thumbprint)
            if existing is not None and existing["signature"] is not None:
                raise Problem(
                    409, "0x002", "You cant upload an existing certificate.", "", thumbprint
                )
            taken = [
                s
                for s in store.signers()
                if s["thumbprint"] != thumbprint and s["thumbprint"][:16] == thumbprint[:16]
            ]
            if taken:
                problem = "A certificate with the same kid exists"
        if problem is not None:
            store.audit(
                country, auth, "BAD_REQUEST", "postVerificationInformation triggered BAD_REQUEST"
            )
            raise Problem(400, "0x004", BAD_DSC, "", problem)
        raw = base64.b64encode(_der(dsc)).decode()
        store.add_signer(thumbprint, country, raw, cms.detached(body))
        store.audit(country, auth, "CREATED", "Created Signer Information")
        return Response(status_code=201)

    async def delete_dsc(request: Request):
        country, auth = authenticate(request, store, role=None)
        message, dsc, _body = await _dsc_message(request)
        thumbprint = cms.thumbprint(dsc)
        if store.party_roles(cms.thumbprint(message.signer), country, UPLOAD) is None:
            store.audit(
                country, auth, "BAD_REQUEST", "revokeVerificationInformation triggered BAD_REQUEST"
            )
            raise Problem(400, "0x007", BAD_DSC, "", "not an upload certificate of your country")
        found = store.signer(thumbprint)
        if found is None or found["country"] != country or found["signature"] is None:
            store.audit(
                country,
                auth,
                "EXIST_CHECK_FAILED",
                "revokeVerificationInformation triggered EXIST_CHECK_FAILED",
            )
            raise Problem(
                404, "0x005", "The certificate doesn't exists in the database.", "", thumbprint
            )
        store.delete_signer(thumbprint)
        store.audit(country, auth, "DELETED", "Revoked Signer Information")
        return Response(status_code=204)

    app.add_api_route("/signerCertificate", delete_dsc, methods=["DELETE"])
    app.add_api_route("/signerCertificate/delete", delete_dsc, methods=["POST"])

    def entries(request: Request, kind: str | None, country: str | None) -> list[dict[str, Any]]:
        header = request.headers.get("if-modified-since")
        try:
            since = parse_instant(header) if header else None
        except ValueError:
            raise Problem(
                400, "0x001", "Validation Error", header or "", "If-Modified-Since"
            ) from None
        out = []
        for party, created in store.parties():
            if since is not None and created < since:
                continue
            der = _der(party.cert)
            signature = cms.sign_b64(der, anchor, anchor_key, detached=True)
            out.append(_entry(party.country, party.type, der, created, signature))
        for s in store.signers():
            deleted = s["deleted"]
            if since is None and s["signature"] is None:
                continue
            if since is not None and s["created"] < since and (deleted is None or deleted < since):
                continue
            der = base64.b64decode(s["raw_data"])
            entry = _entry(s["country"], DSC, der, s["created"], s["signature"])
            if s["signature"] is None:
                entry["rawData"] = None
            out.append(entry)
        out = [
            e
            for e in out
            if (kind is None or e["certificateType"] == kind)
            and (country is None or e["country"] == country)
        ]
        out.sort(key=lambda e: e["kid"])
        page, size = request.query_params.get("page"), request.query_params.get("pagesize")
        if page is not None or size is not None:
            try:
                p, n = int(page or 0), int(size or 100)
            except ValueError:
                raise Problem(400, "0x001", "Validation Error", "", "page, pagesize") from None
            out = out[p * n : (p + 1) * n]
        return out

    def _kind(value: str) -> str:
        kind = value.upper()
        if kind not in TYPES:
            raise Problem(400, "0x001", "Validation Error", value, "type")
        return kind

    def _country(value: str) -> str:
        if len(value) != 2:
            raise Problem(400, "0x001", "Validation Error", value, "country")
        return value.upper()

    @app.get("/trustList")
    async def trust_list(request: Request):
        authenticate(request, store, role=None)
        return JSONResponse(entries(request, None, None))

    @app.get("/trustList/{kind}")
    async def trust_list_type(kind: str, request: Request):
        authenticate(request, store, role=None)
        return JSONResponse(entries(request, _kind(kind), None))

    @app.get("/trustList/{kind}/{country}")
    async def trust_list_type_country(kind: str, country: str, request: Request):
        authenticate(request, store, role=None)
        return JSONResponse(entries(request, _kind(kind), _country(country)))


def _entry(
    country: str, kind: str, der: bytes, created: Any, signature: str | None
) -> dict[str, Any]:
    import hashlib

    digest = hashlib.sha256(der).digest()
    return {
        "kid": base64.b64encode(digest[:8]).decode(),
        "timestamp": created.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        "country": country,
        "certificateType": kind,
        "thumbprint": digest.hex(),
        "signature": signature,
        "rawData": base64.b64encode(der).decode(),
    }


def trust_anchor(folder: Any) -> tuple[x509.Certificate, Any]:
    """The simulator's trust anchor (made once in ``folder``: ta.pem, ta.key): it signs the
    trust list's AUTHENTICATION, UPLOAD and CSCA entries; clients pin ta.pem."""
    import datetime as dt
    from pathlib import Path

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "ta.pem", folder / "ta.key"
    if cert_path.is_file() and key_path.is_file():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return cert, serialization.load_pem_private_key(key_path.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "bevis gateway simulator trust anchor")]
    )
    now = now_utc()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key
