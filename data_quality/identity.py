"""Vectorised checks of Swedish identity numbers (personnummer, samordningsnummer).

Deliberately an independent implementation from the one the extract uses to derive data
(transforms/identity.py): a check that shares the producer's code shares its bugs.

A 12-digit number is ``YYYYMMDDNNNC``: the birth date (for a samordningsnummer the day
plus 60; day 60 means the birth day is unknown), a serial number, and a Luhn check digit
computed over the last ten digits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

_PNR = r"^(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]|6\d|[78]\d|9[01])\d{4}$"


def luhn_ok_single(digits10: str) -> bool:
    """Luhn over ten digits (YYMMDDNNNC); the scalar reference the tests compare with."""
    total = 0
    for i, ch in enumerate(digits10[:9]):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return (10 - total % 10) % 10 == int(digits10[9])


def _np(arr, fill) -> np.ndarray:
    """An Arrow array as numpy, nulls replaced by ``fill``."""
    import pyarrow.compute as pc

    return pc.fill_null(arr, fill).to_numpy(zero_copy_only=False)


def _valid_date(year, month, day) -> np.ndarray:
    """Vectorised: is (year, month, day) a calendar date? (day 0 = day unknown: valid)"""
    import numpy as np

    ok = (month >= 1) & (month <= 12) & (year >= 1) & (year <= 9999)
    m = np.where(ok, (year - 1970) * 12 + (month - 1), 0).astype("datetime64[M]")
    dim = ((m + 1).astype("datetime64[D]") - m.astype("datetime64[D]")).astype(np.int64)
    return ok & (day >= 0) & (day <= dim)


def _digits(strings: pa.Array, width: int) -> np.ndarray:
    """(n, width) int64 digits of strings that are known to be ``width`` ASCII digits."""
    import numpy as np
    import pyarrow as pa

    if isinstance(strings, pa.ChunkedArray):
        strings = (
            strings.combine_chunks() if strings.num_chunks else pa.array([], type=strings.type)
        )
    arr = strings.cast(pa.string())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[
        arr.offset : arr.offset + len(arr) + 1
    ]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return (data.reshape(-1, width) - 48).astype(np.int16)  # small: (n, width) int16


def identity_facts(pnr: pa.Array) -> dict[str, np.ndarray]:
    """Per identity number: ``format_ok`` (12 digits with a real date in them),
    ``check_digit_ok`` (Luhn over the last ten digits), ``birth`` (yyyymmdd as an int;
    dd = 0 for a samordningsnummer with day 60, birth day unknown)."""
    import numpy as np
    import pyarrow.compute as pc

    n = len(pnr)
    matched = pc.fill_null(pc.match_substring_regex(pnr, _PNR), False)
    shaped = matched.to_numpy(zero_copy_only=False).astype(bool)
    check = np.zeros(n, dtype=bool)
    real = np.zeros(n, dtype=bool)
    birth = np.zeros(n, dtype=np.int64)
    if shaped.any():
        idx = np.flatnonzero(shaped)
        d = _digits(pc.filter(pnr, matched), 12)
        ten = d[:, 2:12]
        prod = ten[:, :9] * np.array([2, 1, 2, 1, 2, 1, 2, 1, 2], dtype=np.int16)
        prod = np.where(prod > 9, prod - 9, prod)
        check[idx] = (10 - prod.sum(axis=1) % 10) % 10 == ten[:, 9]
        d = d[:, :8].astype(np.int64)  # the date digits, wide enough for yyyymmdd
        year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
        month = d[:, 4] * 10 + d[:, 5]
        day = d[:, 6] * 10 + d[:, 7]
        day = np.where(day >= 60, day - 60, day)  # samordningsnummer; 60 = day unknown
        real[idx] = _valid_date(year, month, day)
        birth[idx] = year * 10000 + month * 100 + day
    ok = shaped & real
    return {"format_ok": ok, "check_digit_ok": check & ok, "birth": np.where(ok, birth, 0)}
