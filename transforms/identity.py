"""Swedish identity numbers (personnummer, samordningsnummer) and pseudonymous person ids.

Pure functions, no database. The NVR and the order e-service key people by a 12-digit
identity number ``YYYYMMDDNNNC``; forms with 10 digits and a separator (``YYMMDD-NNNC``, or
``YYMMDD+NNNC`` for people aged 100 or more) are accepted too. The check digit ``C`` is the
Luhn digit over the 10-digit form. A samordningsnummer (coordination number) is a
personnummer whose day is increased by 60; day 60 itself means "day unknown".

Downstream the person travels under a pseudonymous id — an HMAC-SHA256 of the 12-digit
identity number keyed by ``settings.pseudonym_key`` — so joins, logs and reports never need
the identity number itself.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

_FORM = re.compile(r"^(\d{2})?(\d{6})([-+]?)(\d{4})$")
PID_LENGTH = 32


def _split(pnr: str) -> tuple[str | None, str, str, str] | None:
    """(century or None, YYMMDD, separator, NNNC) or None when the shape is wrong."""
    if not isinstance(pnr, str):
        return None
    m = _FORM.match(pnr.strip())
    if not m:
        return None
    century, yymmdd, sep, tail = m.groups()
    if century is not None and sep == "+":
        return None  # '+' only makes sense in the 10-digit form
    return century, yymmdd, sep, tail


def luhn_ok(pnr: str) -> bool:
    """True when the last digit is the Luhn check digit of the 10-digit form."""
    parts = _split(pnr)
    if parts is None:
        return False
    _, yymmdd, _, tail = parts
    digits = yymmdd + tail
    total = 0
    for i, ch in enumerate(digits[:9]):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return (10 - total % 10) % 10 == int(digits[9])


def luhn_digit(nine_digits: str) -> int:
    """The Luhn check digit for ``YYMMDDNNN`` (used by the generator and by tests)."""
    total = 0
    for i, ch in enumerate(nine_digits):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return (10 - total % 10) % 10


def is_coordination_number(pnr: str) -> bool:
    """True for a well-formed samordningsnummer (day 60-91)."""
    parts = _split(pnr)
    return parts is not None and 60 <= int(parts[1][4:6]) <= 91


def _century(yy: int, mm: int, dd: int, sep: str, today: dt.date) -> int:
    """Century of a 10-digit number: the latest birth year not after today, 100 years
    further back when the separator is '+'."""
    year = today.year - (today.year - yy) % 100
    try:
        born = dt.date(year, mm, max(dd, 1))
    except ValueError:
        born = dt.date(year, mm, 1)
    if born > today:
        year -= 100
    if sep == "+":
        year -= 100
    return year // 100


def dob_from_identity_number(pnr: str, today: dt.date | None = None) -> str | None:
    """Date of birth as ``YYYY-MM-DD`` (``YYYY-MM`` for a samordningsnummer with an unknown
    day), or None when the number is malformed or names no real date. Coordination numbers
    give their day minus 60."""
    parts = _split(pnr)
    if parts is None:
        return None
    century, yymmdd, sep, _ = parts
    yy, mm, dd = int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:6])
    if dd >= 60:
        dd -= 60
    if not 1 <= mm <= 12:
        return None
    cc = (
        int(century) if century is not None else _century(yy, mm, dd, sep, today or dt.date.today())
    )
    year = cc * 100 + yy
    if dd == 0:
        return f"{year:04d}-{mm:02d}" if is_coordination_number(pnr) else None
    try:
        return dt.date(year, mm, dd).isoformat()
    except ValueError:
        return None


def is_valid_identity_number(pnr: str) -> bool:
    """Well-formed, names a real birth date (or an unknown day of a coordination number),
    and carries the right check digit."""
    return luhn_ok(pnr) and dob_from_identity_number(pnr) is not None


# --- vectorised -----------------------------------------------------------------------------


def _to_list(values: Any) -> list:
    if hasattr(values, "to_pylist"):  # pyarrow Array / ChunkedArray
        return values.to_pylist()
    if hasattr(values, "tolist"):  # pandas Series, numpy array
        return values.tolist()
    return list(values)


def _like(values: Any, out: list | np.ndarray, dtype: Any = None) -> Any:
    """Return ``out`` in the container kind of ``values`` (Series keeps its index)."""
    if hasattr(values, "to_pylist"):
        import pyarrow as pa

        return pa.array(out, type=dtype)
    if hasattr(values, "index") and hasattr(values, "iloc"):
        import pandas as pd

        return pd.Series(out, index=values.index, name=getattr(values, "name", None))
    if isinstance(values, np.ndarray):
        return np.asarray(out)
    return out.tolist() if isinstance(out, np.ndarray) else list(out)


def _digits12(values: list) -> tuple[np.ndarray, np.ndarray]:
    """(N x 12 digit matrix, mask of rows that are plain 12-digit strings)."""
    arr = np.array([v if isinstance(v, str) else "" for v in values], dtype="U12")
    ok = np.char.str_len(arr) == 12
    ok &= np.char.isdigit(arr)
    raw = np.where(ok, arr, "000000000000").astype("S12")
    digits = np.frombuffer(raw.tobytes(), dtype=np.uint8).reshape(-1, 12) - ord("0")
    return digits.astype(np.int16), ok


def luhn_ok_many(values: Any) -> Any:
    """Vectorised :func:`luhn_ok` over a pandas Series, pyarrow array, numpy array or list."""
    items = _to_list(values)
    if not items:
        return _like(values, np.zeros(0, dtype=bool))
    digits, plain = _digits12(items)
    d = digits[:, 2:11].copy()
    d[:, ::2] *= 2
    d = np.where(d > 9, d - 9, d)
    check = (10 - d.sum(axis=1) % 10) % 10
    out = plain & (check == digits[:, 11])
    for i in np.flatnonzero(~plain):  # other shapes (10 digits, separators): scalar path
        out[i] = luhn_ok(items[i]) if isinstance(items[i], str) else False
    return _like(values, out)


def dob_from_identity_numbers(values: Any, today: dt.date | None = None) -> Any:
    """Vectorised :func:`dob_from_identity_number` (None where invalid)."""
    items = _to_list(values)
    if not items:
        return _like(values, [])
    digits, plain = _digits12(items)
    year = digits[:, 0] * 1000 + digits[:, 1] * 100 + digits[:, 2] * 10 + digits[:, 3]
    month = digits[:, 4] * 10 + digits[:, 5]
    day = digits[:, 6] * 10 + digits[:, 7]
    day = np.where(day >= 60, day - 60, day)
    valid = plain & (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)
    # Real calendar check via datetime64: a day that overflows its month changes the month.
    ys = np.where(valid, year, 2000).astype("U4")
    ms = np.char.zfill(np.where(valid, month, 1).astype("U2"), 2)
    ds = np.char.zfill(np.where(valid, day, 1).astype("U2"), 2)
    iso = np.char.add(np.char.add(np.char.add(ys, "-"), np.char.add(ms, "-")), ds)
    month_start = np.char.add(np.char.add(ys, "-"), ms).astype("datetime64[M]")
    first = month_start.astype("datetime64[D]")
    days_in_month = ((month_start + 1).astype("datetime64[D]") - first).astype(int)
    valid &= day <= days_in_month
    out: list[str | None] = [
        s if v else None for s, v in zip(iso.tolist(), valid.tolist(), strict=True)
    ]
    for i in np.flatnonzero(~valid):  # day-60 coordination numbers, 10-digit forms, invalid
        out[i] = dob_from_identity_number(items[i], today) if isinstance(items[i], str) else None
    return _like(values, out)


def is_valid_identity_numbers(values: Any) -> Any:
    """Vectorised :func:`is_valid_identity_number`."""
    items = _to_list(values)
    luhn = np.asarray(_to_list(luhn_ok_many(items)), dtype=bool)
    dobs = dob_from_identity_numbers(items)
    out = luhn & np.array([d is not None for d in dobs], dtype=bool)
    return _like(values, out)


def pseudonymise(person_ids: Any, key: bytes | str) -> Any:
    """Pseudonymous id(s): HMAC-SHA256 keyed by ``key`` over the identity number, hex,
    first 32 characters. Same shape as the input (str, list, numpy, pandas, pyarrow);
    None stays None. Stable for a key, unlinkable without it."""
    k = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if isinstance(person_ids, str):
        return hmac.digest(k, person_ids.encode("utf-8"), "sha256").hex()[:PID_LENGTH]
    items: Iterable = _to_list(person_ids)
    digest = hmac.digest
    out = [
        digest(k, (v if isinstance(v, str) else str(v)).encode("utf-8"), "sha256").hex()[
            :PID_LENGTH
        ]
        if isinstance(v, str | int) and not isinstance(v, bool)
        else None  # None, NaN, pd.NA: missing stays missing
        for v in items
    ]
    if hasattr(person_ids, "to_pylist"):
        import pyarrow as pa

        return pa.array(out, type=pa.string())
    return _like(person_ids, out)
