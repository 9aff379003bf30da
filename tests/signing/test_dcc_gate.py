"""The issuance gate: fastjsonschema (hot path) must judge every payload exactly as
jsonschema (the reference, which also gives the reasons) does."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signing.dcc import (
    _all_codes_active,
    _fast_valid,
    _validator,
    issuance_problems,
    schema_version_for,
    value_set_errors,
    valueset,
)
from tests.conftest import DCC, REPO

SAMPLES = [json.loads(x) for x in (REPO / "samples" / "payloads.jsonl").read_text().splitlines()]


def _vector_payloads() -> list[dict]:
    out = []
    for path in sorted((DCC / "testdata").rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("JSON"), dict):
            out.append(data["JSON"])
    return out


def _agree(payload) -> None:
    version = schema_version_for(str(payload.get("ver"))) if isinstance(payload, dict) else None
    if version is None:
        return
    assert _fast_valid(version, payload) == _validator(version).is_valid(payload)


def test_agree_on_every_eu_vector_payload() -> None:
    payloads = _vector_payloads()
    assert len(payloads) > 80
    for p in payloads:
        _agree(p)


def test_samples_pass_the_gate() -> None:
    for p in SAMPLES:
        assert issuance_problems(p) == []


FIELDS = [
    ("ver",),
    ("dob",),
    ("nam", "fn"),
    ("nam", "fnt"),
    ("nam", "gn"),
    ("nam", "gnt"),
    ("nam",),
    ("v", 0, "tg"),
    ("v", 0, "vp"),
    ("v", 0, "mp"),
    ("v", 0, "ma"),
    ("v", 0, "dn"),
    ("v", 0, "sd"),
    ("v", 0, "dt"),
    ("v", 0, "co"),
    ("v", 0, "is"),
    ("v", 0, "ci"),
    ("v", 0),
    ("v",),
    ("t",),
    ("extra",),
]
values = (
    st.none()
    | st.booleans()
    | st.integers(-3, 100)
    | st.floats(allow_nan=False)
    | st.text(max_size=90)
    | st.sampled_from(
        [
            "2021-02-30",
            "2021-13-01",
            "2021-06-01",
            "2021-06-01T10:00:00Z",
            "1980",
            "1980-05",
            "",
            "ABC<DEF",
            "1.3.3",
            "9.0.0",
            "URN:UVCI:01:SE:X",
            "x" * 81,
        ]
    )
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
MISSING = object()


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(SAMPLES),
    st.lists(st.tuples(st.sampled_from(FIELDS), values | st.just(MISSING)), max_size=3),
)
def test_agree_on_mutated_payloads(base: dict, mutations) -> None:
    payload = copy.deepcopy(base)
    for path, value in mutations:
        target = payload
        try:
            for key in path[:-1]:
                target = target[key]
            if value is MISSING:
                target.pop(path[-1], None) if isinstance(target, dict) else None
            else:
                target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    _agree(payload)
    if issuance_problems(payload) == []:
        assert _validator(schema_version_for(payload["ver"])).is_valid(payload)


CODES = sorted(
    {
        code
        for name in (
            "vaccine-medicinal-product",
            "vaccine-prophylaxis",
            "vaccine-mah-manf",
            "test-manf-example",
            "test-type",
            "test-result",
            "country-2-codes",
        )
        for code in valueset(name)
    }
    | {"XX-unknown", ""}
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["v", "t", "r"]),
    st.dictionaries(
        st.sampled_from(["tg", "vp", "mp", "ma", "co", "tt", "tr"]),
        st.sampled_from(CODES) | st.integers(),
        max_size=4,
    ),
)
def test_value_set_gate_agrees_with_value_set_errors(kind: str, entry: dict) -> None:
    payload = {kind: [entry]}
    assert _all_codes_active(payload) == (value_set_errors(payload, active_only=True) == [])


@pytest.mark.parametrize("ver", ["1.0.0", "1.2.1", "1.3.0"])
def test_older_schema_versions_compile(ver: str) -> None:
    payload = copy.deepcopy(SAMPLES[0])
    payload["ver"] = ver
    _agree(payload)
