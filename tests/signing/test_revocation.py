"""Revocation hashes against an independent implementation's values (the Corona-Warn-App's
RevocationCalculationSampleData.json: two ES256 certificates from DE, one PS256 from LT),
bevis' own certificates, and the verifier's ``revoked`` check."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from signing.hcert import issue
from signing.keys import Signer, _file_sign, make_csca, make_dsc
from signing.revocation import (
    HASH_PATTERN,
    HASH_TYPES,
    RevocationError,
    batch_entries,
    batch_json,
    hashes_of,
    hashes_of_hc1,
    read_batches,
    revoked_check,
    signature_input,
)
from signing.verify import decode

VECTORS = json.loads((Path(__file__).parent / "data" / "revocation_cwa.json").read_text())[
    "vectors"
]
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
PAYLOAD = {
    "ver": "1.3.0",
    "nam": {"fn": "Berg", "fnt": "BERG", "gn": "Ola", "gnt": "OLA"},
    "dob": "1980-01-01",
    "v": [
        {
            "tg": "840539006",
            "vp": "1119349007",
            "mp": "EU/1/20/1528",
            "ma": "ORG-100030215",
            "dn": 2,
            "sd": 2,
            "dt": "2021-05-01",
            "co": "SE",
            "is": "Swedish eHealth Agency",
            "ci": "URN:UVCI:01:SE:EHM/V12907267LAJW#E",
        }
    ],
}


def _hex(b64: str) -> str:
    return base64.b64decode(b64).hex()


@pytest.mark.parametrize("vector", VECTORS, ids=[v["description"] for v in VECTORS])
def test_cwa_vectors(vector: dict) -> None:
    hashes = hashes_of_hc1(vector["barcodeData"])
    assert _hex(hashes.uci) == vector["expUCI"]
    assert _hex(hashes.countrycodeuci) == vector["expCOUNTRYCODEUCI"]
    assert _hex(hashes.signature) == vector["expSIGNATURE"]
    for t in HASH_TYPES:
        assert re.fullmatch(HASH_PATTERN, hashes.of(t)) and len(hashes.of(t)) == 24


def test_the_signature_rule_depends_on_the_algorithm() -> None:
    """ES256 hashes r only, PS256 the whole signature: the other rule gives other values
    (so the vectors above do tell the rules apart)."""
    for vector in VECTORS:
        msg, _claims = decode(vector["barcodeData"])
        whole = hashlib.sha256(msg.signature).digest()[:16].hex()
        half = hashlib.sha256(msg.signature[: len(msg.signature) // 2]).digest()[:16].hex()
        expected = vector["expSIGNATURE"]
        if msg.alg == -7:
            assert half == expected != whole
        else:
            assert msg.alg == -37 and whole == expected != half
    assert signature_input(b"rrrrssss", -7) == b"rrrr"
    assert signature_input(b"rrrrssss", -37) == b"rrrrssss"


def _signer(kind: str) -> Signer:
    csca_key, csca = make_csca("SE", NOW)
    key = (
        ec.generate_private_key(ec.SECP256R1())
        if kind == "ec"
        else rsa.generate_private_key(65537, 2048)
    )
    dsc = make_dsc(csca_key, csca, key.public_key(), "SE", NOW)
    alg = "ES256" if kind == "ec" else "PS256"
    return Signer(dsc=dsc, alg=alg, _sign=_file_sign(key, alg))


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_bevis_certificates(kind: str) -> None:
    """The hashes of a certificate bevis signs, recomputed by hand from its parts."""
    signer = _signer(kind)
    iat = int(NOW.timestamp())
    hc1 = issue(PAYLOAD, signer, iat=iat, exp=iat + 86400, iss="SE")
    msg, _claims = decode(hc1)
    ci = PAYLOAD["v"][0]["ci"]
    sig = msg.signature[:32] if kind == "ec" else msg.signature
    assert len(msg.signature) == (64 if kind == "ec" else 256)

    def b64(data: bytes) -> str:
        return base64.b64encode(hashlib.sha256(data).digest()[:16]).decode()

    got = hashes_of_hc1(hc1)
    assert got.as_dict() == {
        "UCI": b64(ci.encode()),
        "COUNTRYCODEUCI": b64(("SE" + ci).encode()),
        "SIGNATURE": b64(sig),
    }
    assert got == hashes_of(ci, "SE", msg.signature, msg.alg)


def test_revoked_check() -> None:
    signer = _signer("ec")
    iat = int(NOW.timestamp())
    hc1 = issue(PAYLOAD, signer, iat=iat, exp=iat + 86400, iss="SE")
    hashes = hashes_of_hc1(hc1)
    assert revoked_check(hc1, set()) == ("ok", None)
    assert revoked_check(hc1, {"CgoKCgoKCgoKCgoKCgoKCg=="}) == ("ok", None)
    for t in HASH_TYPES:
        state, reason = revoked_check(hc1, {hashes.of(t)})
        assert state == "fail" and t in (reason or "")
    state, reason = revoked_check("HC1:not base45 at all", {hashes.uci})
    assert state == "skipped" and reason
    assert revoked_check(None, {hashes.uci})[0] == "skipped"


def test_batch_json_is_deterministic_and_readable(tmp_path: Path) -> None:
    entries = ["CgoKCgoKCgoKCgoKCgoKCg==", "CwsLCwsLCwsLCwsLCwsLCw=="]
    one = batch_json("SE", "2031-01-01T00:00:00Z", "UNKNOWN_KID", "UCI", entries)
    assert one == batch_json("SE", "2031-01-01T00:00:00Z", "UNKNOWN_KID", "UCI", list(entries))
    assert json.loads(one) == {
        "country": "SE",
        "expires": "2031-01-01T00:00:00Z",
        "kid": "UNKNOWN_KID",
        "hashType": "UCI",
        "entries": [{"hash": h} for h in entries],
    }
    assert batch_entries(one) == entries
    (tmp_path / "b1.json").write_bytes(one)
    assert read_batches(tmp_path) == set(entries)
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(RevocationError, match=r"bad\.json"):
        read_batches(tmp_path)
    with pytest.raises(RevocationError):
        read_batches(tmp_path / "missing")
