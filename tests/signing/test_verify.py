"""Verification: every check can pass and can fail, and hostile input at every layer
yields a verdict with a reason, never an exception (hypothesis)."""

from __future__ import annotations

import datetime as dt
import json
import zlib

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signing import cose
from signing.base45 import b45encode
from signing.hcert import issue
from signing.keys import Signer, _file_sign, make_csca, make_dsc
from signing.verify import TrustStore, verify
from tests.conftest import REPO

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
SAMPLE = json.loads((REPO / "samples" / "payloads.jsonl").read_text().splitlines()[0])
TEST_PAYLOAD = {
    "ver": "1.3.3",
    "nam": {"fn": "Berg", "fnt": "BERG", "gn": "Ola", "gnt": "OLA"},
    "dob": "1980-01-01",
    "t": [
        {
            "tg": "840539006",
            "tt": "LP6464-4",
            "nm": "Roche LightCycler qPCR",
            "sc": "2021-06-01T10:00:00Z",
            "tr": "260415000",
            "tc": "Testcenter Stockholm",
            "co": "SE",
            "is": "Swedish eHealth Agency",
            "ci": "URN:UVCI:01:SE:EHM/TEST0000001#Q",
        }
    ],
}


def _signer(kind: str = "ec", types: str = "vtr") -> Signer:
    csca_key, csca = make_csca("SE", NOW)
    key = (
        ec.generate_private_key(ec.SECP256R1())
        if kind == "ec"
        else rsa.generate_private_key(65537, 2048)
    )
    dsc = make_dsc(csca_key, csca, key.public_key(), "SE", NOW, types=types)
    alg = "ES256" if kind == "ec" else "PS256"
    return Signer(dsc=dsc, alg=alg, _sign=_file_sign(key, alg))


@pytest.fixture(scope="module")
def es() -> Signer:
    return _signer("ec")


@pytest.fixture(scope="module")
def ps() -> Signer:
    return _signer("rsa")


def _iat_exp(days: int = 30) -> tuple[int, int]:
    iat = int(NOW.timestamp())
    return iat, iat + days * 86400


def test_valid_es256_and_ps256(es: Signer, ps: Signer) -> None:
    for signer in (es, ps):
        iat, exp = _iat_exp()
        v = verify(issue(SAMPLE, signer, iat=iat, exp=exp), trust=[signer.dsc], at=NOW)
        assert v.valid, v.reasons
        assert v.checks == dict.fromkeys(v.checks, "ok")
        assert v.payload == SAMPLE and v.iss == "SE" and (v.iat, v.exp) == (iat, exp)


def test_without_trust_signature_and_key_usage_are_skipped(es: Signer) -> None:
    v = verify(issue(SAMPLE, es, iat=_iat_exp()[0], exp=_iat_exp()[1]), at=NOW)
    assert v.checks == {
        "decode": "ok",
        "schema": "ok",
        "signature": "skipped",
        "expiry": "ok",
        "key_usage": "skipped",
    }
    assert v.valid


def test_signature_failures(es: Signer) -> None:
    iat, exp = _iat_exp()
    hc1 = issue(SAMPLE, es, iat=iat, exp=exp)
    other = _signer("ec")
    v = verify(hc1, trust=[other.dsc], at=NOW)
    assert (
        not v.valid and v.checks["signature"] == "fail" and "not in the trust list" in v.reasons[0]
    )
    # an impostor DSC registered under the right kid: the signature must not verify
    store = TrustStore()
    store.add(other.dsc, kid=es.kid)
    v = verify(hc1, trust=store, at=NOW)
    assert v.checks["signature"] == "fail" and "does not verify" in " ".join(v.reasons)
    # ...but with the genuine DSC also under that kid, it does: every candidate is tried
    store.add(es.dsc)
    v = verify(hc1, trust=store, at=NOW)
    assert v.valid and v.checks["signature"] == "ok", v.reasons


def test_tampered_payload_fails_signature(es: Signer) -> None:
    iat, exp = _iat_exp()
    payload = cbor2.dumps({1: "SE", 6: iat, 4: exp, -260: {1: SAMPLE}})
    msg = cbor2.loads(cose.sign1(payload, es)).value
    forged_payload = cbor2.dumps({1: "SE", 6: iat, 4: exp + 10 * 365 * 86400, -260: {1: SAMPLE}})
    forged = cbor2.dumps(cbor2.CBORTag(18, [msg[0], {}, forged_payload, msg[3]]))
    v = verify("HC1:" + b45encode(zlib.compress(forged)), trust=[es.dsc], at=NOW)
    assert v.checks["signature"] == "fail" and not v.valid


def test_kid_in_unprotected_header_and_untagged_message(es: Signer) -> None:
    iat, exp = _iat_exp()
    payload = cbor2.dumps({1: "SE", 6: iat, 4: exp, -260: {1: SAMPLE}})
    protected = cbor2.dumps({1: -7})
    sig = es.sign(cose.sig_structure(protected, payload))
    untagged = cbor2.dumps([protected, {4: es.kid}, payload, sig])
    v = verify("HC1:" + b45encode(zlib.compress(untagged)), trust=[es.dsc], at=NOW)
    assert v.valid, v.reasons


def test_expiry_at_a_clock(es: Signer) -> None:
    iat, exp = _iat_exp(30)
    hc1 = issue(SAMPLE, es, iat=iat, exp=exp)
    assert verify(hc1, trust=[es.dsc], at=NOW + dt.timedelta(days=29)).checks["expiry"] == "ok"
    late = verify(hc1, trust=[es.dsc], at=NOW + dt.timedelta(days=31))
    assert late.checks["expiry"] == "fail" and "expired" in late.reasons[0] and not late.valid
    early = verify(hc1, trust=[es.dsc], at=NOW - dt.timedelta(days=1))
    assert early.checks["expiry"] == "fail" and "future" in early.reasons[0]
    naive = verify(hc1, trust=[es.dsc], at=(NOW + dt.timedelta(days=1)).replace(tzinfo=None))
    assert naive.checks["expiry"] == "ok"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "2030-01-01", None, True])
def test_expiry_refuses_non_numeric_dates(es: Signer, bad) -> None:
    iat, _ = _iat_exp()
    payload = cbor2.dumps({1: "SE", 6: iat, 4: bad, -260: {1: SAMPLE}})
    hc1 = "HC1:" + b45encode(zlib.compress(cose.sign1(payload, es)))
    v = verify(hc1, trust=[es.dsc], at=NOW)
    assert not v.valid and v.exp is None
    if isinstance(bad, float):  # a number, but not a date: the expiry check fails
        assert v.checks["expiry"] == "fail" and v.checks["signature"] == "ok"
    else:  # not a NumericDate at all: the CWT does not decode
        assert v.checks["decode"] == "fail" and v.reasons[0].startswith("decode: cwt")


def test_key_usage_against_certificate_type() -> None:
    tests_only = _signer("ec", types="t")
    iat, exp = _iat_exp()
    v = verify(issue(SAMPLE, tests_only, iat=iat, exp=exp), trust=[tests_only.dsc], at=NOW)
    assert v.checks["key_usage"] == "fail" and "'v'" in v.reasons[0] and not v.valid
    v = verify(issue(TEST_PAYLOAD, tests_only, iat=iat, exp=exp), trust=[tests_only.dsc], at=NOW)
    assert v.checks["key_usage"] == "ok", v.reasons


def test_schema_and_value_set_failures(es: Signer) -> None:
    iat, exp = _iat_exp()
    bad = json.loads(json.dumps(SAMPLE))
    del bad["dob"]
    v = verify(issue(bad, es, iat=iat, exp=exp), trust=[es.dsc], at=NOW)
    assert v.checks["schema"] == "fail" and "dob" in v.reasons[0] and v.checks["signature"] == "ok"
    unknown = json.loads(json.dumps(SAMPLE))
    unknown["v"][0]["mp"] = "EU/9/99/9999"
    v = verify(issue(unknown, es, iat=iat, exp=exp), trust=[es.dsc], at=NOW)
    assert v.checks["schema"] == "fail" and "value set" in v.reasons[0]
    inactive = json.loads(json.dumps(SAMPLE))
    inactive["v"][0]["vp"] = "J07BX03"  # inactive for issuing, still a member for verifying
    assert verify(issue(inactive, es, iat=iat, exp=exp), trust=[es.dsc], at=NOW).valid
    old = json.loads(json.dumps(SAMPLE))
    old["ver"] = "9.9.9"
    v = verify(issue(old, es, iat=iat, exp=exp), trust=[es.dsc], at=NOW)
    assert v.checks["schema"] == "fail" and "unknown schema version" in v.reasons[0]


@pytest.mark.parametrize(
    ("text", "layer"),
    [
        ("HC2:NCFOXN", "prefix"),
        ("NCFOXN%TS3DH", "prefix"),
        ("HC1:ab", "base45"),
        ("HC1:" + b45encode(b"not zlib at all"), "zlib"),
        ("HC1:" + b45encode(zlib.compress(b"\x00" * 200_000)), "zlib"),  # inflation bomb
        ("HC1:" + b45encode(zlib.compress(cbor2.dumps("x"))), "cose"),
        ("HC1:" + b45encode(zlib.compress(cbor2.dumps(cbor2.CBORTag(98, [])))), "cose"),
        (None, "prefix"),
        (12, "prefix"),
    ],
)
def test_each_layer_names_its_failure(text, layer: str) -> None:
    v = verify(text)
    assert not v.valid and v.checks["decode"] == "fail"
    assert v.reasons[0].startswith(f"decode: {layer}"), v.reasons


# --- hostile input, layer by layer ---------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=5)
    ),
    max_leaves=15,
)
cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.binary(max_size=16)
    | st.text(max_size=12)
    | st.floats(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.integers(-300, 10) | st.text(max_size=4), inner, max_size=5)
    ),
    max_leaves=15,
)
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _assert_verdict(v) -> None:
    assert isinstance(v.valid, bool)
    assert set(v.checks.values()) <= {"ok", "fail", "skipped"}
    if not v.valid:
        assert v.reasons
    json.dumps(v.as_dict())  # always serialisable for `bevis verify`


@FAST
@given(st.text(max_size=200))
def test_hostile_text(text: str) -> None:
    _assert_verdict(verify(text))
    _assert_verdict(verify("HC1:" + text))


@FAST
@given(st.binary(max_size=300))
def test_hostile_base45_content(data: bytes) -> None:
    _assert_verdict(verify("HC1:" + b45encode(data)))


@FAST
@given(st.binary(max_size=300))
def test_hostile_compressed_content(data: bytes) -> None:
    _assert_verdict(verify("HC1:" + b45encode(zlib.compress(data))))


@FAST
@given(cbor_values, st.booleans())
def test_hostile_cose_structures(value, tagged: bool) -> None:
    data = cbor2.dumps(cbor2.CBORTag(18, value) if tagged else value)
    _assert_verdict(verify("HC1:" + b45encode(zlib.compress(data)), trust=[]))


@FAST
@given(cbor_values)
def test_hostile_cwt_claims_signed_by_a_trusted_key(claims) -> None:
    signer = _HOSTILE_SIGNER
    payload = cbor2.dumps(claims)
    hc1 = "HC1:" + b45encode(zlib.compress(cose.sign1(payload, signer)))
    v = verify(hc1, trust=[signer.dsc], at=NOW)
    _assert_verdict(v)
    assert not v.valid


@FAST
@given(json_values, st.integers(-(2**40), 2**40), st.integers(-(2**40), 2**40))
def test_hostile_dcc_in_a_genuine_certificate(dcc, iat: int, exp: int) -> None:
    signer = _HOSTILE_SIGNER
    payload = cbor2.dumps({1: "SE", 6: iat, 4: exp, -260: {1: dcc}})
    hc1 = "HC1:" + b45encode(zlib.compress(cose.sign1(payload, signer)))
    v = verify(hc1, trust=[signer.dsc], at=NOW)
    _assert_verdict(v)
    if isinstance(dcc, dict):
        assert v.checks["signature"] == "ok"
        assert v.checks["schema"] == "fail"


_HOSTILE_SIGNER = _signer("ec")


def test_pss_with_other_salt_length_is_refused(ps: Signer) -> None:
    """COSE PS256 fixes the salt at the hash length; other salts are not PS256."""
    iat, exp = _iat_exp()
    payload = cbor2.dumps({1: "SE", 6: iat, 4: exp, -260: {1: SAMPLE}})
    protected = cbor2.dumps({1: -37, 4: ps.kid})
    key = rsa.generate_private_key(65537, 2048)
    sig = key.sign(
        cose.sig_structure(protected, payload),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH),
        hashes.SHA256(),
    )
    data = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, sig]))
    v = verify("HC1:" + b45encode(zlib.compress(data)), trust=[ps.dsc], at=NOW)
    assert v.checks["signature"] == "fail"
