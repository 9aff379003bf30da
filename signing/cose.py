"""COSE_Sign1 (RFC 9052) as HCERT uses it: built directly on cbor2 + cryptography.

Issuing is the hot path, so the message is assembled here rather than with pycose (which
signs ES256 with the pure-Python ``ecdsa`` package, ~30x slower; see
docs/decisions/signing.md). pycose remains the independent implementation the tests check
us against in both directions.

Decoding accepts what real verifiers meet: tagged (18) or untagged arrays, an empty
protected header, and ``kid`` in the protected or the unprotected bucket.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

COSE_SIGN1_TAG = 18
CWT_TAG = 61
HEADER_ALG = 1
HEADER_KID = 4

# COSE algorithm identifiers (IANA): the two HCERT allows, plus the wider ECDSA/PSS family
# that some issuers' test material uses.
ALGORITHMS: dict[str, int] = {
    "ES256": -7,
    "ES384": -35,
    "ES512": -36,
    "PS256": -37,
    "PS384": -38,
    "PS512": -39,
}
ALG_NAMES = {v: k for k, v in ALGORITHMS.items()}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_EC_SIZES = {"ES256": 32, "ES384": 48, "ES512": 66}


class CoseError(ValueError):
    """The bytes are not a COSE_Sign1 message we can read."""


class RawSigner(Protocol):
    alg: str
    kid: bytes

    def sign(self, data: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Sign1:
    """A decoded COSE_Sign1 message."""

    protected_raw: bytes
    protected: dict[Any, Any]
    unprotected: dict[Any, Any]
    payload: bytes
    signature: bytes
    tagged: bool = field(default=True)

    @property
    def alg(self) -> int | None:
        alg = self.protected.get(HEADER_ALG, self.unprotected.get(HEADER_ALG))
        return alg if isinstance(alg, int) else None

    @property
    def kid(self) -> bytes | None:
        """kid from the protected header, else from the unprotected one (both occur)."""
        kid = self.protected.get(HEADER_KID)
        if kid is None:
            kid = self.unprotected.get(HEADER_KID)
        return bytes(kid) if isinstance(kid, (bytes, bytearray)) else None

    def to_be_signed(self) -> bytes:
        return sig_structure(self.protected_raw, self.payload)


def _bstr(data: bytes) -> bytes:
    """CBOR byte string (major type 2) with its length head."""
    n = len(data)
    if n < 24:
        head = bytes((0x40 | n,))
    elif n < 0x100:
        head = bytes((0x58, n))
    elif n < 0x10000:
        head = b"\x59" + n.to_bytes(2, "big")
    else:
        head = b"\x5a" + n.to_bytes(4, "big")
    return head + data


_SIG1_HEAD = b"\x84\x6aSignature1"  # array(4), text(10) "Signature1"


def sig_structure(protected_raw: bytes, payload: bytes) -> bytes:
    """The Sig_structure for COSE_Sign1 with empty external AAD: the CBOR of
    ["Signature1", protected, h'', payload], assembled by hand on the hot path
    (byte-identical to cbor2's encoding; tested)."""
    return b"".join((_SIG1_HEAD, _bstr(protected_raw), b"\x40", _bstr(payload)))


def encode_sign1(protected_raw: bytes, payload: bytes, signature: bytes) -> bytes:
    """Tagged COSE_Sign1 18([protected, {}, payload, signature]) (byte-identical to
    cbor2's encoding; tested)."""
    return b"".join((b"\xd2\x84", _bstr(protected_raw), b"\xa0", _bstr(payload), _bstr(signature)))


def protected_header(alg: str, kid: bytes) -> bytes:
    """Serialized protected header {alg, kid}; computed once per signer."""
    return cbor2.dumps({HEADER_ALG: ALGORITHMS[alg], HEADER_KID: kid})


def sign1(payload: bytes, signer: RawSigner, protected_raw: bytes | None = None) -> bytes:
    """A tagged COSE_Sign1 over ``payload`` (no CWT tag 61, as HCERT requires)."""
    if protected_raw is None:
        protected_raw = protected_header(signer.alg, signer.kid)
    signature = signer.sign(sig_structure(protected_raw, payload))
    return encode_sign1(protected_raw, payload, signature)


def decode(data: bytes) -> Sign1:
    """Parse a COSE_Sign1 (tag 18, optionally inside CWT tag 61, or untagged)."""
    try:
        obj = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises many kinds on hostile input
        raise CoseError(f"not CBOR: {type(exc).__name__}") from None
    tagged = False
    if isinstance(obj, cbor2.CBORTag) and obj.tag == CWT_TAG:
        obj = obj.value
    if isinstance(obj, cbor2.CBORTag):
        if obj.tag != COSE_SIGN1_TAG:
            raise CoseError(f"CBOR tag {obj.tag} is not COSE_Sign1 (18)")
        obj, tagged = obj.value, True
    # cbor2 ≥ 6 decodes the content of a tag immutably: tuples and frozendicts.
    if not isinstance(obj, (list, tuple)) or len(obj) != 4:
        raise CoseError("COSE_Sign1 must be an array of 4 elements")
    protected_raw, unprotected, payload, signature = obj
    if not isinstance(protected_raw, bytes):
        raise CoseError("protected header is not a byte string")
    if not isinstance(unprotected, Mapping):
        raise CoseError("unprotected header is not a map")
    unprotected = dict(unprotected)
    if not isinstance(payload, bytes):
        raise CoseError("payload is not a byte string (detached payloads are not HCERT)")
    if not isinstance(signature, bytes):
        raise CoseError("signature is not a byte string")
    if protected_raw:
        try:
            protected = cbor2.loads(protected_raw)
        except Exception as exc:
            raise CoseError(f"protected header is not CBOR: {type(exc).__name__}") from None
        if not isinstance(protected, Mapping):
            raise CoseError("protected header is not a map")
        protected = dict(protected)
    else:
        protected = {}
    return Sign1(protected_raw, protected, unprotected, payload, signature, tagged)


def verify_signature(msg: Sign1, public_key: Any) -> None:
    """Raise :class:`InvalidSignature` unless ``msg`` is signed by ``public_key``.

    ES*: the raw r‖s signature of RFC 9053 §2.1; PS*: RSASSA-PSS with MGF1 of the same hash
    and a salt as long as the hash (RFC 8230)."""
    alg = msg.alg
    name = ALG_NAMES.get(alg) if alg is not None else None
    if name is None:
        raise InvalidSignature(f"unsupported COSE algorithm {msg.alg!r}")
    hash_alg = _HASHES[name[2:]]()
    data = msg.to_be_signed()
    if name.startswith("ES"):
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise InvalidSignature(f"{name} needs an EC key")
        size = _EC_SIZES[name]
        if len(msg.signature) != 2 * size:
            raise InvalidSignature(f"{name} signature must be {2 * size} bytes r‖s")
        r = int.from_bytes(msg.signature[:size], "big")
        s = int.from_bytes(msg.signature[size:], "big")
        public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hash_alg))
    else:
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise InvalidSignature(f"{name} needs an RSA key")
        pss = padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)
        public_key.verify(msg.signature, data, pss, hash_alg)
