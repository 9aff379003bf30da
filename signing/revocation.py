"""DCC revocation hashes, as the EU gateway (DCCG) distributes them, and the check a
verifier makes against downloaded revocation batches.

The gateway's ``RevocationHashTypeDto`` (dgc-gateway
``restapi/dto/revocation/RevocationHashTypeDto.java:28-37``) names three hash types, and
``RevocationBatchDto.java:66-69`` says an entry is the "Base64 encoded first 128 Bits of
the hash" (pattern ``^[A-Za-z0-9+/]{22}==$``):

* ``UCI``: SHA-256 over the UCI (the ``ci`` of the certificate's v/t/r entry, exactly as
  in the payload: ``URN:UVCI:`` prefix kept, no case change) encoded in UTF-8;
* ``COUNTRYCODEUCI``: SHA-256 over the country code followed by the UCI, both UTF-8, with
  nothing between; the country code is the CWT ``iss`` claim (claim 1);
* ``SIGNATURE``: SHA-256 over the COSE_Sign1 signature — for ECDSA (ES256/384/512) only
  its first half, ``r``, because verifiers compute it so (a DER re-encoding of an ECDSA
  signature changes ``s`` but not ``r``); for RSA (PS256) the whole signature.

The precise rules follow the independent implementations that agree with each other: the
Corona-Warn-App's ``RevocationCalculation.kt`` (corona-warn-app/cwa-app-android,
``covidcertificate/revocation/calculation/``: ``hash256(endIndex = 16)`` over the UCI, over
``header.issuer + uci``, and over ``signature.bisect()`` for ES256 / the whole signature for
PS256) and the EU verifier app's ``getDccSignatureSha256`` (dgca-verifier-app-android,
``revocation/.../Util.kt``). tests/signing/test_revocation.py checks all nine values of
CWA's ``RevocationCalculationSampleData.json``.

Pure: it takes an HC1 string (decoded by :func:`signing.verify.decode`, the one decoder)
or the decoded parts, and returns base64 strings.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signing import cwt
from signing.verify import OK, SKIPPED, decode

UCI, COUNTRYCODEUCI, SIGNATURE = "UCI", "COUNTRYCODEUCI", "SIGNATURE"
HASH_TYPES = (UCI, COUNTRYCODEUCI, SIGNATURE)
ECDSA_ALGS = frozenset({-7, -35, -36})  # ES256, ES384, ES512: the raw signature is r‖s
FAIL = "fail"
HASH_PATTERN = r"^[A-Za-z0-9+/]{22}==$"  # RevocationBatchDto.BatchEntryDto.hash


class RevocationError(ValueError):
    """A certificate or a revocation batch cannot be read for revocation; the message names
    the part (never personal data)."""


def h128(data: bytes) -> str:
    """The first 128 bits of SHA-256 over ``data``, standard base64 with padding (24 chars)."""
    return base64.b64encode(hashlib.sha256(data).digest()[:16]).decode("ascii")


def signature_input(signature: bytes, alg: int | None) -> bytes:
    """The bytes the SIGNATURE hash covers: ``r`` (the first half) of an ECDSA signature,
    the whole signature otherwise (RSA-PSS)."""
    if alg in ECDSA_ALGS:
        return signature[: len(signature) // 2]
    return signature


@dataclass(frozen=True)
class RevocationHashes:
    """The three revocation hashes of one certificate (base64 of 16 bytes each), and the
    issuing country they were computed with."""

    uci: str
    countrycodeuci: str
    signature: str
    country: str | None = None

    def of(self, hash_type: str) -> str:
        return {UCI: self.uci, COUNTRYCODEUCI: self.countrycodeuci, SIGNATURE: self.signature}[
            hash_type
        ]

    def as_dict(self) -> dict[str, str]:
        return {t: self.of(t) for t in HASH_TYPES}


def hashes_of(uci: str, country: str, signature: bytes, alg: int | None) -> RevocationHashes:
    """The three hashes from the decoded parts: the UCI (``ci``), the issuing country (CWT
    ``iss``), the raw COSE signature and the COSE ``alg``."""
    return RevocationHashes(
        uci=h128(uci.encode("utf-8")),
        countrycodeuci=h128((country + uci).encode("utf-8")),
        signature=h128(signature_input(signature, alg)),
        country=country,
    )


def uci_of(claims: dict[Any, Any]) -> str:
    """The ``ci`` of the one v/t/r entry of a CWT's DCC; :class:`RevocationError` otherwise."""
    try:
        dcc = cwt.dcc_of(claims)
    except Exception as exc:  # CwtError or a malformed claims map
        raise RevocationError(f"no DCC in the CWT claims ({type(exc).__name__})") from None
    for group in ("v", "t", "r"):
        entries = dcc.get(group) if isinstance(dcc, dict) else None
        if isinstance(entries, list) and entries and isinstance(entries[0], dict):
            ci = entries[0].get("ci")
            if isinstance(ci, str) and ci:
                return ci
            raise RevocationError(f"the {group} entry has no ci")
    raise RevocationError("the DCC holds no v, t or r entry")


def hashes_of_hc1(hc1: str) -> RevocationHashes:
    """The three revocation hashes of an HC1 string (the signature is not checked here).
    :class:`RevocationError` (a ValueError) when it cannot be decoded or lacks iss/ci."""
    from signing.verify import DecodeError

    try:
        msg, claims = decode(hc1)
    except DecodeError as exc:
        raise RevocationError(str(exc)) from None
    iss = claims.get(cwt.CLAIM_ISS)
    if not isinstance(iss, str) or not iss:
        raise RevocationError("no iss claim: the COUNTRYCODEUCI hash needs the issuing country")
    return hashes_of(uci_of(claims), iss, msg.signature, msg.alg)


def hashes_of_issued(hc1: str, uci: str) -> RevocationHashes:
    """The three hashes of a certificate just signed and verified, whose UCI the caller
    knows (the sign step has checked that the payload carries it): the decoder's layers
    down to the COSE message, and only the ``iss`` claim read from the CWT — about half
    the cost of :func:`hashes_of_hc1`, which checks the whole claims structure."""
    import cbor2

    from signing.verify import DecodeError, base45, cose_message, inflate, unprefix

    try:
        msg = cose_message(inflate(base45(unprefix(hc1))))
        claims = cbor2.loads(msg.payload)
    except (DecodeError, ValueError) as exc:
        raise RevocationError(f"cannot decode the certificate ({type(exc).__name__})") from None
    iss = claims.get(cwt.CLAIM_ISS) if isinstance(claims, dict) else None
    if not isinstance(iss, str) or not iss:
        raise RevocationError("no iss claim: the COUNTRYCODEUCI hash needs the issuing country")
    return hashes_of(uci, iss, msg.signature, msg.alg)


def revoked_check(hc1: Any, revoked: Collection[str]) -> tuple[str, str | None]:
    """The verifier's ``revoked`` check: ``("fail", reason)`` when any of the certificate's
    three hashes is in ``revoked`` (the entries of downloaded batches), ``("ok", None)``
    when none is, ``("skipped", reason)`` when the hashes cannot be computed (it does not
    decode)."""
    try:
        hashes = hashes_of_hc1(hc1)
    except (RevocationError, TypeError, AttributeError) as exc:
        return SKIPPED, f"revocation hashes cannot be computed: {exc}"
    hits = [t for t in HASH_TYPES if hashes.of(t) in revoked]
    if hits:
        return FAIL, f"listed in the revocation batches by {', '.join(hits)}"
    return OK, None


def add_revoked_check(verdict: Any, hc1: Any, revoked: Collection[str]) -> None:
    """Add the check ``revoked`` to a :class:`signing.verify.Verdict` (``bevis verify
    --revocations``): a revoked certificate fails it, and so the verdict."""
    state, reason = revoked_check(hc1, revoked)
    if state == FAIL:
        verdict.fail("revoked", reason or "revoked")
        verdict.valid = False
    else:
        verdict.checks["revoked"] = state


# --- revocation batches (the gateway's RevocationBatchDto) ------------------------------------


def batch_json(
    country: str, expires: str, kid: str, hash_type: str, entries: Iterable[str]
) -> bytes:
    """A ``RevocationBatchDto`` as UTF-8 JSON, deterministic (same batch → same bytes), in
    the field order the gateway's own tests write: country, expires, kid, hashType, entries."""
    dto = {
        "country": country,
        "expires": expires,
        "kid": kid,
        "hashType": hash_type,
        "entries": [{"hash": h} for h in entries],
    }
    return json.dumps(dto, separators=(",", ":"), ensure_ascii=True).encode("utf-8")


def batch_entries(payload: bytes | str | dict[str, Any]) -> list[str]:
    """The entry hashes of a RevocationBatchDto (JSON bytes/text or the parsed object)."""
    try:
        dto = json.loads(payload) if isinstance(payload, (bytes, str)) else payload
        return [str(e["hash"]) for e in dto["entries"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise RevocationError(f"not a revocation batch ({type(exc).__name__})") from None


def read_batches(directory: Path | str) -> set[str]:
    """Every entry hash of the revocation batches in a folder: ``<batch>.cms`` (base64 CMS
    SignedData over the batch JSON, as the gateway serves it: the signature must verify)
    and ``<batch>.json`` (the batch itself, used when no .cms of the same name is there).
    :class:`RevocationError` names the file that cannot be read."""
    from signing.cms import CmsError, parse_verify

    folder = Path(directory)
    if not folder.is_dir():
        raise RevocationError(f"{folder} is not a folder of revocation batches")
    out: set[str] = set()
    cms_stems = set()
    for path in sorted(folder.glob("*.cms")):
        try:
            message = parse_verify(path.read_bytes().strip())
        except CmsError as exc:
            raise RevocationError(f"{path.name}: {exc}") from None
        if not message.verified:
            raise RevocationError(f"{path.name}: the CMS signature does not verify")
        try:
            out.update(batch_entries(message.payload))
        except RevocationError as exc:
            raise RevocationError(f"{path.name}: {exc}") from None
        cms_stems.add(path.stem)
    for path in sorted(folder.glob("*.json")):
        if path.stem in cms_stems:
            continue
        try:
            out.update(batch_entries(path.read_bytes()))
        except RevocationError as exc:
            raise RevocationError(f"{path.name}: {exc}") from None
    return out
