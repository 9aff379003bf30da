"""Issuing HCERTs: the claims as the specification wants them, validity bounded by the DSC,
and sign_many over a real process pool."""

from __future__ import annotations

import datetime as dt
import json
import time
import unicodedata
import zlib
from pathlib import Path

import cbor2
import pytest

from jobs.settings import get_settings
from signing import cose
from signing.base45 import b45decode
from signing.hcert import ValidityError, issue, sign_checked, sign_many, validity
from signing.keys import file_signer, init_dev_keys
from signing.verify import verify
from tests.conftest import REPO

SAMPLES = [json.loads(x) for x in (REPO / "samples" / "payloads.jsonl").read_text().splitlines()]


@pytest.fixture
def keys(bevis_env: Path) -> Path:
    init_dev_keys(bevis_env / "keys")
    return bevis_env / "keys"


def _claims(hc1: str) -> tuple[cose.Sign1, dict]:
    assert hc1.startswith("HC1:")
    msg = cose.decode(zlib.decompress(b45decode(hc1[4:])))
    return msg, cbor2.loads(msg.payload)


def test_issue_builds_spec_claims(keys: Path) -> None:
    signer = file_signer(keys)
    iat, exp = validity(signer, int(time.time()), 365)
    payload = json.loads(json.dumps(SAMPLES[0]))
    payload["nam"]["fn"] = unicodedata.normalize("NFD", "Åström")  # decomposed on input
    payload["nam"]["gnt"] = None  # JSON null for an optional field
    payload["v"][0]["dn"] = 2.0  # a float from a dataframe
    payload["v"][0]["sd"] = 2
    msg, claims = _claims(issue(payload, signer, iat=iat, exp=exp))
    assert msg.tagged and msg.alg == -7 and msg.protected[4] == signer.kid
    assert msg.unprotected == {}
    assert set(claims) == {1, 4, 6, -260}
    assert claims[1] == "SE"
    assert type(claims[6]) is int and type(claims[4]) is int
    assert claims[4] - claims[6] == 365 * 86400
    dcc = claims[-260][1]
    assert dcc["nam"]["fn"] == "Åström" and unicodedata.is_normalized("NFC", dcc["nam"]["fn"])
    assert "gnt" not in dcc["nam"]
    assert type(dcc["v"][0]["dn"]) is int
    raw = zlib.decompress(b45decode(issue(payload, signer, iat=iat, exp=exp)[4:]))
    assert b"\xf6" not in cbor2.dumps(dcc) and cose.decode(raw).payload == msg.payload
    v = verify(issue(SAMPLES[0], signer, iat=iat, exp=exp), trust=[signer.dsc])
    assert v.valid, v.reasons
    assert v.payload == SAMPLES[0]


def test_validity_is_capped_at_dsc_not_after(keys: Path) -> None:
    signer = file_signer(keys)
    iat = signer.not_after - 10 * 86400
    assert validity(signer, iat, 365) == (iat, signer.not_after)
    iat2, exp2 = validity(signer, signer.not_before, 30)
    assert exp2 - iat2 == 30 * 86400


def test_iat_outside_dsc_validity_is_refused(keys: Path) -> None:
    signer = file_signer(keys)
    with pytest.raises(ValidityError, match="before the DSC's notBefore"):
        validity(signer, signer.not_before - 1, 30)
    with pytest.raises(ValidityError, match="expired"):
        validity(signer, signer.not_after, 30)
    with pytest.raises(ValidityError, match="beyond the DSC's notAfter"):
        issue(SAMPLES[0], signer, iat=signer.not_before, exp=signer.not_after + 1)
    with pytest.raises(ValidityError, match="before the DSC's notBefore"):
        issue(SAMPLES[0], signer, iat=signer.not_before - 3600, exp=signer.not_before + 3600)


@pytest.mark.slow
def test_sign_many_pool_matches_and_verifies(keys: Path) -> None:
    settings = get_settings()
    signer = file_signer(keys)
    iat, exp = validity(signer, int(time.time()), 30)
    lines = [json.dumps(SAMPLES[i % len(SAMPLES)]) for i in range(600)]
    pooled = sign_many(
        lines, iat=iat, exp=exp, keys=settings.key_source(), workers=2, chunk_size=128
    )
    assert len(pooled) == 600
    for i in (0, 1, 299, 599):  # order preserved; ECDSA is randomised, so compare content
        v = verify(pooled[i], trust=[signer.dsc])
        assert v.valid, v.reasons
        assert v.payload == SAMPLES[i % len(SAMPLES)]
        assert (v.iat, v.exp) == (iat, exp)


def test_sign_checked_refuses_bad_payloads(keys: Path) -> None:
    signer = file_signer(keys)
    iat, exp = validity(signer, int(time.time()), 30)
    bad_schema = json.loads(json.dumps(SAMPLES[1]))
    bad_schema["nam"]["fnt"] = "johansson"  # lower case breaks the ICAO pattern
    inactive = json.loads(json.dumps(SAMPLES[2]))
    inactive["v"][0]["vp"] = "J07BX03"  # deprecated, inactive code
    results = sign_checked(
        [json.dumps(SAMPLES[0]), json.dumps(bad_schema), "{not json", inactive],
        iat=iat,
        exp=exp,
        keys=get_settings().key_source(),
    )
    assert results[0][0] and results[0][1] == []
    assert results[1][0] is None and any("nam/fnt" in r for r in results[1][1])
    assert "johansson" not in " ".join(results[1][1])  # reasons never quote personal data
    assert results[2][0] is None and "not JSON" in results[2][1][0]
    assert results[3][0] is None and "not active" in results[3][1][0]


def test_pkcs_dates_are_unix_seconds(keys: Path) -> None:
    signer = file_signer(keys)
    assert signer.not_before == int(signer.dsc.not_valid_before_utc.timestamp())
    assert (
        abs(signer.not_before - (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).timestamp()) < 60
    )


def test_compression_is_standard_zlib_and_as_small(keys: Path) -> None:
    """zlib-ng's fast level must stay a standard stream (stdlib inflates it) and cost at
    most a few bytes against stdlib level 9."""
    from signing.hcert import _compress

    signer = file_signer(keys)
    iat, exp = validity(signer, int(time.time()), 30)
    for payload in SAMPLES:
        hc1 = issue(payload, signer, iat=iat, exp=exp)
        packed = b45decode(hc1[4:])
        cose_bytes = zlib.decompress(packed)
        assert packed[0] == 0x78  # zlib header, deflate with 32 KiB window
        assert len(_compress(cose_bytes)) <= len(zlib.compress(cose_bytes, 9)) * 1.03 + 2
