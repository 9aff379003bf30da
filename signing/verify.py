"""Verify HC1 strings layer by layer and say, per check, what held and what did not.

Every layer is its own function (unprefix, Base45, zlib, COSE, CWT, signature, expiry, key
usage, schema) so the conformance runner can test each against the EU test vectors, and
``verify`` composes them into a :class:`Verdict`. Hostile input never raises out of
``verify``: anything unexpected becomes a failed check with a reason.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from signing import cose, cwt
from signing.base45 import b45decode
from signing.keys import EKU_OIDS, kid_of, load_trust

PREFIXES = ("HC1:",)
OK, FAIL, SKIPPED = "ok", "fail", "skipped"
CHECKS = ("decode", "schema", "signature", "expiry", "key_usage")
MAX_INFLATED = 64 * 1024  # a DCC is ~1 kB; refuse zlib bombs


class DecodeError(ValueError):
    """One layer of the HC1 chain could not be decoded; the message names the layer."""


@dataclass
class Verdict:
    """The outcome of verifying one HC1. ``valid`` is true when no check failed; a check
    that could not run (no trust material → signature, key usage) is ``skipped``."""

    valid: bool = False
    checks: dict[str, str] = field(default_factory=lambda: dict.fromkeys(CHECKS, SKIPPED))
    reasons: list[str] = field(default_factory=list)
    payload: dict[str, Any] | None = None
    kid: str | None = None
    iat: int | None = None
    exp: int | None = None
    iss: str | None = None

    def fail(self, check: str, reason: str) -> None:
        self.checks[check] = FAIL
        self.reasons.append(f"{check}: {reason}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "checks": dict(self.checks),
            "reasons": list(self.reasons),
            "kid": self.kid,
            "iss": self.iss,
            "iat": self.iat,
            "exp": self.exp,
            "payload": self.payload,
        }


class TrustStore:
    """DSCs indexed by kid. Several DSCs may share a kid (8 bytes of a hash collide, and
    member states re-issued certificates): each is tried."""

    def __init__(self, certs: Iterable[x509.Certificate] = ()) -> None:
        self.by_kid: dict[bytes, list[x509.Certificate]] = {}
        for cert in certs:
            self.add(cert)

    def add(self, cert: x509.Certificate, kid: bytes | None = None) -> None:
        self.by_kid.setdefault(kid or kid_of(cert), []).append(cert)

    def candidates(self, kid: bytes | None) -> list[x509.Certificate]:
        return self.by_kid.get(kid, []) if kid else []

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_kid.values())

    @classmethod
    def of(cls, trust: Any) -> TrustStore | None:
        if trust is None or isinstance(trust, TrustStore):
            return trust
        if isinstance(trust, (str, Path)):
            return cls(load_trust(trust))
        if isinstance(trust, x509.Certificate):
            return cls([trust])
        return cls(trust)


# --- the layers ---------------------------------------------------------------------------


def unprefix(text: Any) -> str:
    if not isinstance(text, str):
        raise DecodeError(f"prefix: input is {type(text).__name__}, not text")
    text = text.strip()
    for prefix in PREFIXES:
        if text.startswith(prefix):
            return text[len(prefix) :]
    raise DecodeError(f"prefix: does not start with {' or '.join(PREFIXES)}")


def base45(text: str) -> bytes:
    try:
        return b45decode(text)
    except ValueError as exc:
        raise DecodeError(f"base45: {exc}") from None


def inflate(data: bytes) -> bytes:
    """zlib-decompress (bounded). HCERT mandates compression, so uncompressed data fails."""
    try:
        d = zlib.decompressobj()
        out = d.decompress(data, MAX_INFLATED)
        if d.unconsumed_tail:
            raise DecodeError(f"zlib: inflates beyond {MAX_INFLATED} bytes")
        if not d.eof:
            raise DecodeError("zlib: truncated stream")
        return out
    except zlib.error as exc:
        raise DecodeError(f"zlib: {exc}") from None


def cose_message(data: bytes) -> cose.Sign1:
    try:
        return cose.decode(data)
    except cose.CoseError as exc:
        raise DecodeError(f"cose: {exc}") from None


def claims_of(msg: cose.Sign1) -> dict[Any, Any]:
    try:
        return cwt.decode_claims(msg.payload)
    except cwt.CwtError as exc:
        raise DecodeError(f"cwt: {exc}") from None


def jsonable(value: Any) -> Any:
    """The DCC as JSON would carry it (some issuers CBOR-tag dates; bytes never belong)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def decode(hc1: str) -> tuple[cose.Sign1, dict[Any, Any]]:
    """The COSE message and CWT claims of an HC1 string; :class:`DecodeError` otherwise."""
    msg = cose_message(inflate(base45(unprefix(hc1))))
    return msg, claims_of(msg)


def decode_dcc(hc1: str) -> dict[str, Any]:
    """The DCC payload inside an HC1 string as JSON would carry it, for display: decoded
    layer by layer like :func:`verify`, but the signature is NOT checked.
    :class:`DecodeError` (a ValueError) names the layer that failed."""
    _msg, claims = decode(hc1)
    return jsonable(cwt.dcc_of(claims))


def signature_ok(msg: cose.Sign1, certs: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The first of ``certs`` whose key verifies the signature, else None."""
    for cert in certs:
        try:
            cose.verify_signature(msg, cert.public_key())
            return cert
        except Exception:  # InvalidSignature, unsupported key, malformed numbers
            continue
    return None


def _ts(cert: x509.Certificate, attr: str) -> int:
    return int(getattr(cert, f"{attr}_utc").timestamp())


def expiry_problems(
    claims: dict[Any, Any], at: dt.datetime, dsc: x509.Certificate | None
) -> list[str]:
    """Why the certificate is not valid at ``at`` (empty list when it is): iat ≤ at ≤ exp,
    and, with the DSC known, notBefore ≤ iat and exp ≤ notAfter."""
    raw_iat, raw_exp = claims.get(cwt.CLAIM_IAT), claims.get(cwt.CLAIM_EXP)
    iat, exp = _numeric_date(raw_iat), _numeric_date(raw_exp)
    if exp is None:
        return [_date_missing("exp", raw_exp)]
    if iat is None:
        return [_date_missing("iat", raw_iat)]
    now = at.timestamp()
    problems = []
    if now > exp:
        problems.append(f"expired at {_iso(exp)} (clock {at.isoformat()})")
    if now < iat:
        problems.append(f"issued in the future at {_iso(iat)} (clock {at.isoformat()})")
    if dsc is not None:
        if iat < _ts(dsc, "not_valid_before"):
            problems.append("issued before the DSC's notBefore")
        if exp > _ts(dsc, "not_valid_after"):
            problems.append("exp beyond the DSC's notAfter")
    return problems


def _numeric_date(value: Any) -> float | None:
    """A CWT NumericDate (int or float) that names a date (1970 to 9999), else None. Big
    integers are compared as integers: float() of one raises OverflowError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if 0 <= value <= cwt.NUMERIC_DATE_MAX else None


def _date_missing(name: str, value: Any) -> str:
    """Why a claim is no NumericDate: absent or not a number, or out of range."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"claim {name} is out of range (not a date between 1970 and 9999)"
    return f"no valid {name} claim"


def _iso(ts: float) -> str:
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return str(ts)


def certificate_types(dcc: Any) -> list[str]:
    return [k for k in ("v", "t", "r") if isinstance(dcc, dict) and k in dcc]


def dsc_ekus(dsc: x509.Certificate) -> set[str]:
    """The DSC's extended key usage OIDs (empty when it has none). Some member-state test
    DSCs carry an empty EKU sequence that cryptography refuses to parse; asn1crypto reads
    it (as no OIDs), anything else unreadable raises ValueError."""
    try:
        eku = dsc.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        return {o.dotted_string for o in eku}
    except x509.ExtensionNotFound:
        return set()
    except ValueError:
        from asn1crypto import x509 as asn1_x509
        from cryptography.hazmat.primitives.serialization import Encoding

        cert = asn1_x509.Certificate.load(dsc.public_bytes(Encoding.DER))
        value = cert.extended_key_usage_value
        return {oid.dotted for oid in value} if value is not None else set()


def key_usage_problem(dcc: Any, dsc: x509.Certificate) -> str | None:
    """None when the DSC may sign this certificate type. A DSC without extended key usage
    may sign every type; one with it only the types whose OID (either arc) it lists — as
    the EU test vectors expect, other EKU OIDs alone do not grant HCERT types."""
    try:
        ekus = dsc_ekus(dsc)
    except Exception as exc:  # malformed extension
        return f"unreadable extended key usage ({type(exc).__name__})"
    types = certificate_types(dcc)
    if len(types) != 1:
        return f"certificate holds {len(types)} entry types, expected exactly one of v, t, r"
    if ekus and not ekus & set(EKU_OIDS[types[0]]):
        return f"DSC is not allowed to sign type {types[0]!r} certificates"
    return None


def schema_problems(dcc: Any) -> list[str]:
    """Schema (by the payload's ``ver``) and value-set membership (inactive codes are fine
    in a certificate already issued). Reasons name fields and rules, never values."""
    from signing.dcc import redacted_schema_errors, value_set_errors

    errors = redacted_schema_errors(dcc)
    if not errors:
        types = certificate_types(dcc)
        if len(types) != 1:
            errors.append(f"holds {len(types)} entry types, expected exactly one of v, t, r")
        errors += value_set_errors(dcc, active_only=False)
    return errors


# --- the whole chain ------------------------------------------------------------------------


def verify(
    hc1: Any, trust: Any = None, at: dt.datetime | None = None, max_depth: int = cwt.MAX_DEPTH
) -> Verdict:
    """Verify one HC1 string. ``trust``: DSCs (list, TrustStore, PEM file or folder) or
    None to skip the signature and key-usage checks; ``at``: the clock (default now);
    ``max_depth``: the deepest nesting of the claims map (and the DCC in it) accepted."""
    store = TrustStore.of(trust)  # a bad trust path is the caller's error: raise it
    verdict = Verdict()
    try:
        _verify(verdict, hc1, store, at or dt.datetime.now(dt.UTC), max_depth)
    except Exception as exc:  # last line of defence: a verdict, never a crash
        verdict.fail("decode", f"unexpected {type(exc).__name__}")
    verdict.valid = FAIL not in verdict.checks.values()
    return verdict


def _verify(
    v: Verdict, hc1: Any, trust: TrustStore | None, at: dt.datetime, max_depth: int
) -> None:
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    try:
        msg, claims = decode(hc1)
    except DecodeError as exc:
        v.fail("decode", str(exc))
        return
    v.checks["decode"] = OK
    kid = msg.kid
    v.kid = base64.b64encode(kid).decode() if kid else None
    iss, iat, exp = claims.get(cwt.CLAIM_ISS), claims.get(cwt.CLAIM_IAT), claims.get(cwt.CLAIM_EXP)
    v.iss = iss if isinstance(iss, str) else None
    iat_date, exp_date = _numeric_date(iat), _numeric_date(exp)
    v.iat = None if iat_date is None else int(iat_date)
    v.exp = None if exp_date is None else int(exp_date)
    # a DCC nested too deeply or holding a bignum is not walked (nor shown): its schema
    # check fails with the reason; signature and expiry are still checked
    unsafe = cwt.structure_problem(cwt.dcc_of(claims), max(1, max_depth - 2))
    dcc = None if unsafe else jsonable(cwt.dcc_of(claims))
    v.payload = dcc

    problems = [f"the DCC {unsafe}"] if unsafe else schema_problems(dcc)
    if problems:
        v.fail("schema", "; ".join(problems[:5]))
    else:
        v.checks["schema"] = OK

    dsc = None
    if trust is not None:
        if kid is None:
            v.fail("signature", "no kid in the COSE headers")
        else:
            candidates = trust.candidates(kid)
            if not candidates:
                v.fail("signature", f"kid {v.kid} is not in the trust list")
            else:
                dsc = signature_ok(msg, candidates)
                if dsc is None:
                    alg = msg.alg if msg.alg is None else cose.ALG_NAMES.get(msg.alg, msg.alg)
                    v.fail(
                        "signature",
                        f"{alg} signature does not verify with the DSC(s) of kid {v.kid}",
                    )
                else:
                    v.checks["signature"] = OK

    problems = expiry_problems(claims, at, dsc)
    if problems:
        v.fail("expiry", "; ".join(problems))
    else:
        v.checks["expiry"] = OK

    if dsc is not None and dcc is not None:
        problem = key_usage_problem(dcc, dsc)
        if problem:
            v.fail("key_usage", problem)
        else:
            v.checks["key_usage"] = OK
