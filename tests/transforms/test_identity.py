"""Identity numbers and pseudonyms (transforms/identity.py): pure functions."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from transforms.identity import (
    dob_from_identity_number,
    dob_from_identity_numbers,
    is_coordination_number,
    is_valid_identity_number,
    is_valid_identity_numbers,
    luhn_digit,
    luhn_ok,
    luhn_ok_many,
    pseudonymise,
)

# Skatteverket's documented test number and a few hand-checked ones.
VALID = ["198112189876", "811218-9876", "19121212-1212".replace("-", ""), "121212+1212"]


def test_luhn_known_numbers() -> None:
    assert luhn_ok("198112189876")
    assert luhn_ok("811218-9876")
    assert not luhn_ok("198112189875")
    assert not luhn_ok("19811218987")  # 11 digits
    assert not luhn_ok("19811218-98x6")
    assert luhn_digit("811218987") == 6


@pytest.mark.parametrize(
    ("pnr", "dob"),
    [
        ("198112189876", "1981-12-18"),
        ("811218-9876", "1981-12-18"),
        ("121212+1212", "1912-12-12"),  # '+': aged 100 or more
        ("191212121212", "1912-12-12"),
        ("198112789876", "1981-12-18"),  # samordningsnummer: day + 60
        ("19811260" + "9876", "1981-12"),  # samordningsnummer, day unknown
        ("198113189876", None),  # month 13
        ("198102309876", None),  # 30 February
        ("199002300000", None),
        ("garbage", None),
    ],
)
def test_dob_from_identity_number(pnr: str, dob: str | None) -> None:
    assert dob_from_identity_number(pnr) == dob


def test_ten_digit_century_is_relative_to_today() -> None:
    today = dt.date(2026, 11, 22)
    assert dob_from_identity_number("261121-1234", today) == "2026-11-21"
    assert dob_from_identity_number("261123-1234", today) == "1926-11-23"  # not yet born in 2026
    assert dob_from_identity_number("261121+1234", today) == "1926-11-21"


def test_coordination_numbers() -> None:
    nine = "811278987"
    pnr = "19" + nine + str(luhn_digit(nine))
    assert is_coordination_number(pnr)
    assert is_valid_identity_number(pnr)
    assert not is_coordination_number("198112189876")


def _numbers(n: int, seed: int = 7) -> list[str]:
    """Random well-formed and malformed numbers, for comparing vector and scalar paths."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        y, m, d = rng.integers(1900, 2025), rng.integers(0, 14), rng.integers(0, 93)
        nine = f"{y % 100:02d}{m:02d}{d:02d}{rng.integers(0, 1000):03d}"
        check = luhn_digit(nine) if rng.random() < 0.8 else rng.integers(0, 10)
        out.append(f"{y // 100}{nine}{check}")
    return [*out, "811218-9876", "121212+1212", "", "x" * 12]


def test_vectorised_agrees_with_scalar() -> None:
    values = _numbers(3000)
    assert luhn_ok_many(values) == [luhn_ok(v) for v in values]
    assert dob_from_identity_numbers(values) == [dob_from_identity_number(v) for v in values]
    assert is_valid_identity_numbers(values) == [is_valid_identity_number(v) for v in values]


def test_vectorised_keeps_container_kind() -> None:
    s = pd.Series(["198112189876", "198112189875"], index=[10, 20])
    out = luhn_ok_many(s)
    assert isinstance(out, pd.Series) and list(out.index) == [10, 20]
    assert out.tolist() == [True, False]
    arr = pa.array(["198112189876", None])
    dobs = dob_from_identity_numbers(arr)
    assert isinstance(dobs, pa.Array) and dobs.to_pylist() == ["1981-12-18", None]


def test_pseudonymise_stable_keyed_same_shape() -> None:
    a = pseudonymise("198112189876", b"key-1")
    assert len(a) == 32 and int(a, 16) >= 0
    assert pseudonymise("198112189876", b"key-1") == a
    assert pseudonymise("198112189876", b"key-2") != a
    assert "198112189876" not in a
    s = pd.Series(["198112189876", None], index=[5, 6])
    out = pseudonymise(s, b"key-1")
    assert list(out.index) == [5, 6] and out.iloc[0] == a and pd.isna(out.iloc[1])
    arr = pseudonymise(pa.array(["198112189876"]), "key-1")
    assert isinstance(arr, pa.Array) and arr.to_pylist() == [a]
    assert pseudonymise(["198112189876"], b"key-1") == [a]
