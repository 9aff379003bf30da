"""CMS SignedData (RFC 5652) as the EU gateway takes and gives it.

The gateway's uploads — revocation batches, DSCs — are base64 CMS SignedData with the
payload **encapsulated** (eContentType id-data), exactly one certificate (the signer's
upload certificate) and exactly one SignerInfo (dgc-lib ``SignedMessageBuilder`` /
``SignedMessageParser``); its trust list carries **detached** signatures over certificates.

Built with cryptography's PKCS7 builder — with ``PKCS7Options.Binary``, without which
OpenSSL canonicalises LF to CRLF in the signed content — and verified with asn1crypto plus
cryptography (cryptography has no CMS verification). ``openssl cms -verify -binary`` accepts
what :func:`sign` writes (tests/signing/test_cms.py runs the real binary).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

# the gateway's parse failures (CmsStringMessageConverter.java:57-88), all 400 0x402
INVALID_BASE64 = "Invalid Base64 CMS Message"
INVALID_CMS = "Could not parse CMS Message"
INVALID_BODY = "CMS Message needs to have binary data as body."
INVALID_CERT = "CMS Message needs to contain exactly one X509 certificate"
INVALID_SIGNER_INFO = "CMS Message needs to have exactly 1 signer information."

_DIGESTS: dict[str, Any] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class CmsError(ValueError):
    """The message is not a CMS SignedData the gateway would parse; the text is the
    gateway's own message for that failure."""


@dataclass(frozen=True)
class SignedMessage:
    """A parsed CMS SignedData: its content, its one certificate, and whether the
    signature verifies with that certificate's key (a parse failure raises instead)."""

    payload: bytes
    signer: x509.Certificate
    verified: bool


def sign(payload: bytes, cert: x509.Certificate, key: Any, *, detached: bool = False) -> bytes:
    """DER CMS SignedData over ``payload``, signed by ``key`` (SHA-256; ECDSA or RSA
    PKCS#1 v1.5 as dgc-lib), ``cert`` the only certificate; encapsulated unless ``detached``."""
    options = [pkcs7.PKCS7Options.Binary, pkcs7.PKCS7Options.NoCapabilities]
    if detached:
        options.append(pkcs7.PKCS7Options.DetachedSignature)
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(payload)
        .add_signer(cert, key, hashes.SHA256())
        .sign(serialization.Encoding.DER, options)
    )


def sign_b64(payload: bytes, cert: x509.Certificate, key: Any, *, detached: bool = False) -> str:
    """:func:`sign` as the gateway's HTTP body: standard base64, no line breaks."""
    return base64.b64encode(sign(payload, cert, key, detached=detached)).decode("ascii")


def parse_verify(body: bytes | str, detached_content: bytes | None = None) -> SignedMessage:
    """Parse a base64 CMS SignedData (the gateway's rules, in its order) and check its
    signature with its one certificate. :class:`CmsError` when it is no such message; a
    signature that does not verify is ``verified=False`` (the gateway answers 0x260)."""
    from asn1crypto import cms as acms

    raw = body.encode("ascii", "replace") if isinstance(body, str) else bytes(body)
    try:
        der = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise CmsError(INVALID_BASE64) from None
    try:
        info = acms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise ValueError("not signed-data")
        signed = info["content"]
        encap = signed["encap_content_info"]
        signer_infos = signed["signer_infos"]
        _ = signer_infos.native, signed["certificates"].native  # parse every part now
    except Exception:  # asn1crypto raises ValueError, TypeError, KeyError on garbage
        raise CmsError(INVALID_CMS) from None
    if encap["content_type"].native != "data":
        raise CmsError(INVALID_BODY)
    payload = detached_content if detached_content is not None else encap["content"].native
    if not isinstance(payload, bytes):
        raise CmsError(INVALID_BODY)
    certs = list(signed["certificates"]) if signed["certificates"] else []
    if len(certs) != 1 or certs[0].name != "certificate":
        raise CmsError(INVALID_CERT)
    try:
        cert = x509.load_der_x509_certificate(certs[0].chosen.dump())
    except ValueError:
        raise CmsError(INVALID_CERT) from None
    if len(signer_infos) != 1:
        raise CmsError(INVALID_SIGNER_INFO)
    return SignedMessage(payload, cert, _verified(signer_infos[0], certs[0].chosen, cert, payload))


def _verified(si: Any, asn1_cert: Any, cert: x509.Certificate, payload: bytes) -> bool:
    try:
        sid = si["sid"]
        if sid.name == "issuer_and_serial_number":
            ok = (
                sid.chosen["serial_number"].native == cert.serial_number
                and sid.chosen["issuer"].dump() == asn1_cert.issuer.dump()
            )
        else:
            ok = sid.chosen.native == asn1_cert.key_identifier
        if not ok:
            return False
        digest = si["digest_algorithm"]["algorithm"].native
        if digest not in _DIGESTS:
            return False
        attrs = si["signed_attrs"]
        if len(attrs):
            md = [a for a in attrs if a["type"].native == "message_digest"]
            content_digest = hashlib.new(digest, payload).digest()
            if len(md) != 1 or md[0]["values"][0].native != content_digest:
                return False
            signed_bytes = attrs.untag().dump()  # re-tagged as SET OF (RFC 5652 §5.4)
        else:
            signed_bytes = payload
        algo = si["signature_algorithm"].signature_algo
        _verify_signature(cert.public_key(), si["signature"].native, signed_bytes, digest, algo)
        return True
    except (InvalidSignature, ValueError, TypeError, KeyError):
        return False


def _verify_signature(public_key: Any, sig: bytes, data: bytes, digest: str, algo: str) -> None:
    h = _DIGESTS[digest]()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(sig, data, ec.ECDSA(h))
    elif isinstance(public_key, rsa.RSAPublicKey):
        if algo == "rsassa_pss":
            pss = padding.PSS(mgf=padding.MGF1(h), salt_length=padding.PSS.AUTO)
            public_key.verify(sig, data, pss, h)
        else:
            public_key.verify(sig, data, padding.PKCS1v15(), h)
    else:
        raise InvalidSignature("unsupported key type")


def detached(body: bytes | str) -> str:
    """The detached form of a base64 CMS SignedData (its content taken out, the signature
    kept), base64 — what the gateway stores from a DSC upload and serves in its trust list."""
    from asn1crypto import cms as acms

    raw = body.encode("ascii") if isinstance(body, str) else body
    try:
        info = acms.ContentInfo.load(base64.b64decode(raw, validate=True), strict=True)
        encap = info["content"]["encap_content_info"]
        info["content"]["encap_content_info"] = acms.ContentInfo(
            {"content_type": encap["content_type"].native}
        )
        return base64.b64encode(info.dump(force=True)).decode("ascii")
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise CmsError(INVALID_CMS) from None


def thumbprint(cert: x509.Certificate) -> str:
    """The gateway's certificate thumbprint: lowercase hex SHA-256 of the DER."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def gateway_kid(cert: x509.Certificate) -> str:
    """The gateway's kid: base64 of the first 8 bytes of SHA-256 over the DER."""
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    return base64.b64encode(digest[:8]).decode("ascii")
