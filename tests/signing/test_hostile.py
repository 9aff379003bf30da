"""Hostile input to the HCERT core (issue 14, item 7): every payload and every HC1 gets a
verdict or a refusal of its own — a >4300-digit integer, nesting 10,000 deep in JSON and in
CBOR, a lone surrogate, names with control or bidi-override characters, exp/iat out of
range — and the good ones around them are still signed and still valid."""

from __future__ import annotations

import datetime as dt
import json
import time
import zlib
from pathlib import Path

import cbor2
import pytest

from signing import cose
from signing.base45 import b45encode
from signing.hcert import sign_checked, validity
from signing.keys import KeySource, file_signer, init_dev_keys
from signing.verify import verify
from tests.conftest import REPO

GOOD = (REPO / "samples" / "payloads.jsonl").read_text().splitlines()[0]
PAYLOAD = json.loads(GOOD)
FN = PAYLOAD["nam"]["fn"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hostile") / "keys"
    init_dev_keys(d)
    return d


def _with_name(fn: str) -> str:
    p = json.loads(GOOD)
    p["nam"]["fn"] = fn
    return json.dumps(p)


HOSTILE_LINES = {
    "big_int": GOOD.replace('"ver"', '"x": ' + "9" * 5000 + ', "ver"', 1),
    "deep_json": "[" * 10_000 + "]" * 10_000,
    "deep_json_object": '{"ver": ' + '{"a": ' * 10_000 + "1" + "}" * 10_000 + "}",
    "nested_50": '{"ver": "1.3.0", "x": ' + "[" * 50 + "]" * 50 + "}",
    "lone_surrogate": GOOD.replace(FN, FN + "\\ud800", 1),
    "escaped_nul": GOOD.replace(FN, FN + "\\u0000", 1),
    "escaped_esc": GOOD.replace(FN, "\\u001b[31m" + FN, 1),
    "raw_del": _with_name(FN + "\x7f"),
    "bidi_override": _with_name("\u202e" + FN),
    "bidi_isolate": _with_name(FN + "\u2066x\u2069"),
    "line_feed": _with_name(FN + "\nX"),
}
EXPECTED_REASON = {
    "big_int": "more than 4300 digits",
    "deep_json": "nested deeper",
    "deep_json_object": "nested deeper",
    "nested_50": "nested deeper than 16 levels",
    "lone_surrogate": "nam/fn: lone surrogate",
    "escaped_nul": "nam/fn: control character",
    "escaped_esc": "nam/fn: control character",
    "raw_del": "nam/fn: control character",
    "bidi_override": "nam/fn: bidirectional control character",
    "bidi_isolate": "nam/fn: bidirectional control character",
    "line_feed": "nam/fn: control character",
}


def _all_or_fail(lines: list[str], iat: int, exp: int, keys: Path, workers: int) -> list:
    try:
        results = sign_checked(
            lines, iat=iat, exp=exp, keys=KeySource(key_dir=keys), workers=workers
        )
    except Exception as exc:
        pytest.fail(f"sign_checked raised {type(exc).__name__}: 0 of {len(lines)} got a result")
    assert len(results) == len(lines)
    return results


def test_each_hostile_payload_is_refused_alone_and_the_good_ones_are_signed(keys: Path) -> None:
    """Before: the deep JSON raised RecursionError and the surrogate UnicodeEncodeError out
    of sign_checked — no payload of the file got a result; the names with controls and
    bidi overrides were signed."""
    signer = file_signer(keys)
    iat, exp = validity(signer, int(time.time()), 30)
    names = list(HOSTILE_LINES)
    lines = [GOOD]
    for name in names:
        lines += [HOSTILE_LINES[name], GOOD]
    results = _all_or_fail(lines, iat, exp, keys, workers=1)
    good = results[0::2]
    assert all(hc1 and not reasons for hc1, reasons in good), good
    assert all(verify(hc1, trust=[signer.dsc]).valid for hc1, _ in good)
    for name, (hc1, reasons) in zip(names, results[1::2], strict=True):
        assert hc1 is None, name
        assert any(EXPECTED_REASON[name] in r for r in reasons), (name, reasons)
        assert FN not in " ".join(reasons), name  # refusals never quote the name


def test_hostile_payloads_in_a_pool_are_refused_alone(keys: Path) -> None:
    """The same through the process pool (≥512 payloads): one bad payload must not cost a
    whole chunk its certificates."""
    signer = file_signer(keys)
    iat, exp = validity(signer, int(time.time()), 30)
    lines = [GOOD] * 600
    bad = {7: HOSTILE_LINES["deep_json"], 300: HOSTILE_LINES["lone_surrogate"]}
    for i, line in bad.items():
        lines[i] = line
    results = _all_or_fail(lines, iat, exp, keys, workers=2)
    assert [i for i, (hc1, _) in enumerate(results) if hc1 is None] == sorted(bad)
    assert sum(1 for hc1, _ in results if hc1) == 598


def test_structure_and_text_checks_name_fields_never_values() -> None:
    from signing.cwt import structure_problem
    from signing.dcc import text_problems

    assert structure_problem({"a": [[[1]]]}, max_depth=3) == "nested deeper than 3 levels"
    assert structure_problem({"a": 2**70}) == "holds an integer beyond 64 bits"
    assert structure_problem(PAYLOAD) is None
    problems = text_problems({"nam": {"fn": "A\u202eB", "Svensson": {"x": "\x00"}}})
    assert problems == ["nam/?/?: control character (Unicode Cc)", "nam/fn: bidirectional "
                        "control character (U+202A-U+202E, U+2066-U+2069)"]  # fmt: skip
    assert "Svensson" not in " ".join(problems)


# --- verify -----------------------------------------------------------------------------


def _hc1(claims: bytes, signer) -> str:
    return "HC1:" + b45encode(zlib.compress(cose.sign1(claims, signer)))


def _claims(dcc=PAYLOAD, iat: object = None, exp: object = None) -> bytes:
    now = int(time.time())
    return cbor2.dumps(
        {
            1: "SE",
            6: now if iat is None else iat,
            4: now + 86400 if exp is None else exp,
            -260: {1: dcc},
        }
    )


def _deep_cbor(depth: int) -> bytes:
    """A claims map whose DCC holds ``depth`` nested arrays (CBOR 0x81 = array of 1)."""
    enc = cbor2.dumps
    now = int(time.time())
    head = b"\xa4" + enc(1) + enc("SE") + enc(6) + enc(now) + enc(4) + enc(now + 86400)
    dcc = b"\xa2" + enc("ver") + enc("1.3.0") + enc("deep") + b"\x81" * depth + b"\x00"
    return head + enc(-260) + b"\xa1" + enc(1) + dcc


@pytest.mark.parametrize(
    ("case", "check", "reason"),
    [
        ("bignum_in_dcc", "schema", "the DCC holds an integer beyond 64 bits"),
        ("deep_cbor_10000", "decode", "cwt: CWT payload is not CBOR"),
        ("deep_cbor_300", "schema", "the DCC nested deeper than 14 levels"),
        ("exp_10e400", "expiry", "claim exp is out of range"),
        ("exp_5000_digits", "expiry", "claim exp is out of range"),
        ("iat_negative_huge", "expiry", "claim iat is out of range"),
        ("exp_float_1e300", "expiry", "claim exp is out of range"),
        ("exp_year_10000", "expiry", "claim exp is out of range"),
    ],
)
def test_verify_gives_a_reason_for_hostile_claims(keys: Path, case, check, reason) -> None:
    """Before: exp=10**400 → 'decode: unexpected OverflowError' (math.isfinite of a big
    int); a bignum in the DCC gave a verdict that could not be printed as JSON."""
    signer = file_signer(keys)
    claims = {
        "bignum_in_dcc": lambda: _claims({**PAYLOAD, "x": 10**5000}),
        "deep_cbor_10000": lambda: _deep_cbor(10_000),
        "deep_cbor_300": lambda: _deep_cbor(300),
        "exp_10e400": lambda: _claims(exp=10**400),
        "exp_5000_digits": lambda: _claims(exp=10**5000),
        "iat_negative_huge": lambda: _claims(iat=-(10**30)),
        "exp_float_1e300": lambda: _claims(exp=1e300),
        "exp_year_10000": lambda: _claims(exp=253402300800),
    }[case]()
    v = verify(_hc1(claims, signer), trust=[signer.dsc])
    assert not v.valid and v.checks[check] == "fail", v.reasons
    assert any(reason in r for r in v.reasons), v.reasons
    assert not any("unexpected" in r for r in v.reasons), v.reasons
    json.dumps(v.as_dict())  # every verdict can be printed
    if check != "decode":  # decoded: the signature is still checked
        assert v.checks["decode"] == "ok" and v.checks["signature"] == "ok"
    if check == "expiry":
        assert v.iat is None or v.exp is None
    if check == "schema":
        assert v.payload is None  # not shown: it cannot be walked or printed safely


def test_verify_keeps_in_range_dates() -> None:
    at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    from signing.verify import expiry_problems

    ok = {6: int(at.timestamp()) - 10, 4: int(at.timestamp()) + 10}
    assert expiry_problems(ok, at, None) == []
    assert expiry_problems({6: 0, 4: 253402300799}, at, None) == []
