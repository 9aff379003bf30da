"""Run the EU dgc-testdata vectors against our own decoder and verifier.

Each vector (a JSON file under ``<COUNTRY>/2DCode/raw/``, also in versioned sub-folders)
states EXPECTED* results per step; we run the same step with *our* functions
(signing.verify's layers, signing.base45, signing.cwt) and compare. Mismatches listed in
``known_issues.csv`` (upstream's file: test_name,country,test_set,reason) are expected
failures. The step → upstream test-name map keeps that file usable as it is.
"""

from __future__ import annotations

import base64
import binascii
import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509

from signing import verify as V
from signing.base45 import b45decode
from signing.cwt import CLAIM_HCERT, HCERT_EU_DCC, clean

# EXPECTED* key → the upstream pytest function names (known_issues.csv refers to these).
TEST_NAMES: dict[str, tuple[str, ...]] = {
    "EXPECTEDPICTUREDECODE": ("test_picture_decode",),
    "EXPECTEDUNPREFIX": ("test_un_prefix",),
    "EXPECTEDB45DECODE": ("test_b45decode",),
    "EXPECTEDCOMPRESSION": ("test_compression",),
    "EXPECTEDDECODE": ("test_cose_json", "test_cose_cbor"),
    "EXPECTEDVALIDJSON": ("test_cbor_json",),
    "EXPECTEDVERIFY": ("test_verification_check",),
    "EXPECTEDEXPIRATIONCHECK": ("test_expiration_check",),
    "EXPECTEDKEYUSAGE": ("test_expected_key_usage",),
    "EXPECTEDSCHEMAVALIDATION": ("test_cose_schema",),
    "EXPECTEDVALIDOBJECT": ("test_json_schema",),
    "EXPECTEDENCODE": ("test_json_cbor",),
}


class Skip(Exception):
    """The vector lacks the fields this step needs: not tested (as upstream skips)."""


@dataclass
class Outcome:
    file: str
    step: str
    expected: bool
    actual: bool | None
    detail: str = ""
    known_issue: str = ""

    @property
    def passed(self) -> bool:
        return self.actual == self.expected


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(o.passed for o in self.outcomes)

    @property
    def unexpected(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed and not o.known_issue]

    @property
    def expected_failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed and o.known_issue]

    @property
    def failed(self) -> int:
        return len(self.unexpected) + len(self.errors)

    @property
    def ok(self) -> bool:
        return self.failed == 0


# --- reading vectors ---------------------------------------------------------------------


def _upper_keys(d: Any) -> dict[str, Any]:
    return {str(k).upper(): v for k, v in d.items()} if isinstance(d, dict) else {}


def _as_bool(value: Any) -> bool | None:
    """EXPECTED* values: JSON booleans (some issuers wrote "true"/"false" strings)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def clock_of(ctx: dict[str, Any]) -> dt.datetime:
    """TESTCTX.VALIDATIONCLOCK (or its validationClockInstant twin); now when absent."""
    for key in ("VALIDATIONCLOCK", "VALIDATIONCLOCKINSTANT"):
        text = ctx.get(key)
        if isinstance(text, str) and text.strip():
            return parse_clock(text)
    return dt.datetime.now(dt.UTC)


def _unhex(value: Any) -> bytes:
    if not isinstance(value, str):
        raise Skip
    return binascii.unhexlify(value.strip())


def load_certificate(text: str) -> x509.Certificate:
    """TESTCTX.CERTIFICATE: base64 DER, sometimes with PEM armour or line breaks."""
    body = "".join(line for line in text.strip().splitlines() if "-----" not in line)
    der = base64.b64decode("".join(body.split()))
    return x509.load_der_x509_certificate(der)


def parse_clock(text: str) -> dt.datetime:
    try:
        clock = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        from dateutil.parser import isoparse

        clock = isoparse(text.strip())
    return clock if clock.tzinfo else clock.replace(tzinfo=dt.UTC)


def _normal(obj: Any) -> Any:
    """Order-free, date-format-free form for comparing DCC content (JSON vs CBOR)."""
    if isinstance(obj, dict):
        return sorted((str(k), _normal(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return sorted((_normal(v) for v in obj), key=repr)
    if isinstance(obj, str):
        try:
            when = dt.datetime.fromisoformat(obj.replace("Z", "+00:00"))
        except ValueError:
            return obj
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return obj


def _same_dcc(a: Any, b: Any) -> bool:
    return _normal(V.jsonable(a)) == _normal(V.jsonable(b))


# --- the steps (each returns whether the step succeeded on this vector) ------------------


class Vector:
    def __init__(self, data: dict[str, Any]) -> None:
        self.raw = _upper_keys(data)
        self.ctx = _upper_keys(self.raw.get("TESTCTX"))
        results = self.raw.get("EXPECTEDRESULTS", self.raw.get("EXPECTEDRESULT"))
        self.expected = {
            k: b for k, v in _upper_keys(results).items() if (b := _as_bool(v)) is not None
        }

    def need(self, *keys: str) -> list[Any]:
        values = [self.raw.get(k) for k in keys]
        if any(v is None for v in values):
            raise Skip
        return values

    def cert(self) -> x509.Certificate:
        text = self.ctx.get("CERTIFICATE")
        if not isinstance(text, str) or not text.strip():
            raise Skip
        return load_certificate(text)

    def message(self):
        (cose_hex,) = self.need("COSE")
        return V.cose_message(_unhex(cose_hex))

    def dcc(self) -> Any:
        return V.cwt.dcc_of(V.claims_of(self.message()))


def _picture(v: Vector) -> bool:
    code, prefix = v.need("2DCODE", "PREFIX")
    import zxingcpp
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(code))) as img:
        img.load()
        for candidate in _image_variants(img):
            found = zxingcpp.read_barcodes(candidate)
            if found:
                return found[0].text == prefix
        try:  # upstream's own decoder, when installed (dev dependency): a second opinion
            from pyzbar.pyzbar import decode as zbar_decode

            zbar_found = zbar_decode(img)
        except Exception:  # pyzbar or libzbar missing
            zbar_found = []
        if zbar_found:
            return zbar_found[0].data.decode("utf-8", errors="replace") == prefix
    return False


def _image_variants(img: Any) -> Iterator[Any]:
    """The picture as given, then friendlier versions for scanned or tightly cropped
    codes: greyscale, a white quiet zone added, and enlarged."""
    from PIL import ImageOps

    yield img
    grey = img.convert("L")
    yield grey
    padded = ImageOps.expand(grey, border=max(16, grey.width // 10), fill=255)
    yield padded
    yield padded.resize((padded.width * 2, padded.height * 2))


def _unprefix(v: Vector) -> bool:
    prefix, b45 = v.need("PREFIX", "BASE45")
    return V.unprefix(prefix) == b45


def _b45(v: Vector) -> bool:
    b45, compressed = v.need("BASE45", "COMPRESSED")
    return b45decode(b45) == _unhex(compressed)


def _compression(v: Vector) -> bool:
    cose_hex, compressed = v.need("COSE", "COMPRESSED")
    return V.inflate(_unhex(compressed)) == _unhex(cose_hex)


def _decode(v: Vector) -> bool:
    (json_obj,) = v.need("JSON")
    dcc = v.dcc()
    if not _same_dcc(dcc, json_obj):
        return False
    if v.raw.get("CBOR") is not None:
        cbor_obj = _cbor_dcc(v)
        return _same_dcc(dcc, cbor_obj)
    return True


def _cbor_dcc(v: Vector) -> Any:
    (cbor_hex,) = v.need("CBOR")
    obj = cbor2.loads(_unhex(cbor_hex))
    # The CBOR field holds either the DCC or the whole claims set.
    if isinstance(obj, dict) and CLAIM_HCERT in obj:
        obj = obj[CLAIM_HCERT][HCERT_EU_DCC]
    return obj


def _valid_json(v: Vector) -> bool:
    (json_obj,) = v.need("JSON")
    return _same_dcc(_cbor_dcc(v), json_obj)


def _verify(v: Vector) -> bool:
    msg = v.message()
    cert = v.cert()
    return msg.kid == V.kid_of(cert) and V.signature_ok(msg, [cert]) is not None


def _expiry(v: Vector) -> bool:
    claims = V.claims_of(v.message())
    return not V.expiry_problems(claims, clock_of(v.ctx), v.cert())


def _key_usage(v: Vector) -> bool:
    dcc = V.jsonable(v.dcc())
    if len(V.certificate_types(dcc)) != 1:
        return False
    return V.key_usage_problem(dcc, v.cert()) is None


def _schema(v: Vector) -> bool:
    from signing.dcc import schema_errors

    dcc = V.jsonable(v.dcc())
    return not schema_errors(dcc) and len(V.certificate_types(dcc)) == 1


def _valid_object(v: Vector) -> bool:
    from signing.dcc import schema_errors

    (json_obj,) = v.need("JSON")
    return not schema_errors(json_obj)


def _encode(v: Vector) -> bool:
    json_obj, _ = v.need("JSON", "CBOR")
    ours = cbor2.loads(cbor2.dumps(clean(json_obj)))
    return _same_dcc(ours, _cbor_dcc(v))


STEPS: dict[str, Callable[[Vector], bool]] = {
    "EXPECTEDPICTUREDECODE": _picture,
    "EXPECTEDUNPREFIX": _unprefix,
    "EXPECTEDB45DECODE": _b45,
    "EXPECTEDCOMPRESSION": _compression,
    "EXPECTEDDECODE": _decode,
    "EXPECTEDVALIDJSON": _valid_json,
    "EXPECTEDVERIFY": _verify,
    "EXPECTEDEXPIRATIONCHECK": _expiry,
    "EXPECTEDKEYUSAGE": _key_usage,
    "EXPECTEDSCHEMAVALIDATION": _schema,
    "EXPECTEDVALIDOBJECT": _valid_object,
    "EXPECTEDENCODE": _encode,
}


def run_step(step: str, vector: Vector) -> tuple[bool | None, str]:
    """(succeeded, detail); succeeded None when the vector lacks the step's fields.
    Any exception means the step did not succeed on this input."""
    try:
        return STEPS[step](vector), ""
    except Skip:
        return None, "not enough data"
    except Exception as exc:
        return False, f"{type(exc).__name__}: {str(exc)[:160]}"


# --- discovery and known issues -----------------------------------------------------------


def _in_2dcode(path: Path) -> bool:
    return any(part.lower() == "2dcode" for part in path.resolve().parts[:-1])


def discover(root: Path) -> Iterator[Path]:
    """Candidate vector files: every JSON below ``root`` (any depth, so versioned and
    key-variant sub-folders count). Files under a ``2DCode`` folder are vectors by
    position (unreadable ones are errors); elsewhere a JSON is a vector only when it
    carries EXPECTEDRESULTS (so DIR may be the whole repository, a country or a raw
    folder, and schema or value-set files are ignored)."""
    yield from sorted(p for p in Path(root).rglob("*.json") if p.is_file())


def country_and_set(root: Path, path: Path) -> tuple[str, str]:
    """(country, test set) as upstream's known_issues.csv names them: the folder in front
    of ``2DCode`` and the file's stem."""
    parts = path.resolve().parts
    lowered = [p.lower() for p in parts]
    if "2dcode" in lowered:
        i = lowered.index("2dcode")
        if i > 0:
            return parts[i - 1], path.stem
    rel = path.relative_to(root).parts
    return (rel[0] if len(rel) > 1 else Path(root).resolve().name), path.stem


def load_known_issues(root: Path) -> dict[tuple[str, str, str], str]:
    """Upstream's known_issues.csv: in DIR, DIR/tests, below DIR, or in a parent of DIR
    (when DIR is one country of a checkout). All files found are merged."""
    root = Path(root).resolve()
    near = [
        d / n
        for d in (root, *list(root.parents)[:3])
        for n in ("known_issues.csv", "tests/known_issues.csv")
    ]
    candidates = dict.fromkeys([*near, *sorted(root.rglob("known_issues.csv"))])
    issues: dict[tuple[str, str, str], str] = {}
    for candidate in candidates:
        if candidate.is_file():
            with candidate.open(newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    key = (
                        (row.get("test_name") or "").strip(),
                        (row.get("country") or "").strip(),
                        (row.get("test_set") or "").strip(),
                    )
                    issues[key] = (row.get("reason") or "known issue").strip()
    return issues


def known_issue(
    issues: dict[tuple[str, str, str], str], step: str, country: str, test_set: str
) -> str:
    for test in TEST_NAMES.get(step, ()):
        for key in (
            (test, country, test_set),
            (test, country, ""),
            ("", country, test_set),
            ("", country, ""),
        ):
            if key in issues:
                return issues[key]
    return ""


def run(root: Path) -> Report:
    root = Path(root)
    report = Report()
    issues = load_known_issues(root)
    for path in discover(root):
        rel = path.relative_to(root).as_posix()
        by_position = _in_2dcode(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except Exception as exc:
            if by_position:
                report.errors.append(f"{rel}: unreadable vector ({type(exc).__name__})")
            continue
        if not isinstance(data, dict):
            continue
        if not by_position and not any(str(k).upper().startswith("EXPECTEDRESULT") for k in data):
            continue
        vector = Vector(data)
        if not vector.expected:
            continue
        country, test_set = country_and_set(root, path)
        for step, expected in vector.expected.items():
            if step not in STEPS:
                continue
            actual, detail = run_step(step, vector)
            if actual is None:
                continue
            outcome = Outcome(rel, step, expected, actual, detail)
            if not outcome.passed:
                outcome.known_issue = known_issue(issues, step, country, test_set)
            report.outcomes.append(outcome)
    return report
