"""Vectorised checks of Swedish identity numbers (personnummer, samordningsnummer).

Deliberately an independent implementation from the one the extract uses to derive data
(transforms/identity.py): a check that shares the producer's code shares its bugs.

A 12-digit number is ``YYYYMMDDNNNC``: the birth date (for a samordningsnummer the day
plus 60), a serial number, and a Luhn check digit computed over the last ten digits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

_FORMAT = r"^(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]|6[0-9]|[78]\d|9[01])\d{4}$"


def luhn_ok_single(digits10: str) -> bool:
    """Luhn over ten digits (YYMMDDNNNC); scalar reference used in tests."""
    total = 0
    for i, ch in enumerate(digits10[:9]):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return (10 - total % 10) % 10 == int(digits10[9])


def identity_facts(pnr: pd.Series) -> pd.DataFrame:
    """Per identity number: ``format_ok`` (12 digits with a real calendar date in them),
    ``check_digit_ok`` (Luhn; NA where the format is wrong), ``coordination`` and
    ``birth_date`` (YYYY-MM-DD, YYYY-MM when a samordningsnummer has day 60, NA when the
    format is wrong)."""
    import numpy as np
    import pandas as pd

    s = pnr.astype("string").str.strip()
    shaped = s.str.fullmatch(_FORMAT).fillna(False).astype(bool).to_numpy()
    n = len(s)
    check = np.zeros(n, dtype=bool)
    coordination = np.zeros(n, dtype=bool)
    real_date = np.zeros(n, dtype=bool)
    birth = np.full(n, None, dtype=object)
    if shaped.any():
        idx = np.flatnonzero(shaped)
        raw = "".join(s.to_numpy()[idx].tolist()).encode("ascii")
        d = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 12).astype(np.int64) - 48
        ten = d[:, 2:12]
        weights = np.array([2, 1, 2, 1, 2, 1, 2, 1, 2], dtype=np.int64)
        prod = ten[:, :9] * weights
        prod = np.where(prod > 9, prod - 9, prod)
        check[idx] = (10 - prod.sum(axis=1) % 10) % 10 == ten[:, 9]
        year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
        month = d[:, 4] * 10 + d[:, 5]
        day = d[:, 6] * 10 + d[:, 7]
        coord = day > 60
        unknown_day = day == 60  # samordningsnummer for a person whose birth day is unknown
        true_day = np.where(day > 60, day - 60, day)
        stamp = pd.to_datetime(
            pd.Series(year * 10000 + month * 100 + np.where(unknown_day, 1, true_day)).astype(str),
            format="%Y%m%d",
            errors="coerce",
        )
        valid = stamp.notna().to_numpy()
        coordination[idx] = coord | unknown_day
        real_date[idx] = valid
        full = stamp.dt.strftime("%Y-%m-%d").to_numpy(dtype=object)
        month_only = stamp.dt.strftime("%Y-%m").to_numpy(dtype=object)
        birth[idx] = np.where(valid, np.where(unknown_day, month_only, full), None)
    format_ok = shaped & real_date
    return pd.DataFrame(
        {
            "format_ok": format_ok,
            "check_digit_ok": pd.array(np.where(format_ok, check, False), dtype="boolean"),
            "coordination": coordination,
            "birth_date": pd.array(np.where(format_ok, birth, None), dtype="string"),
        },
        index=pnr.index,
    ).assign(check_digit_ok=lambda f: f["check_digit_ok"].where(format_ok, pd.NA))
