"""Dates of the DCC: date of birth (complete or partial), age bands, and the validity policy.

The population register gives ``YYYY-MM-DD``; for some people (often samordningsnummer
holders) it has only ``YYYY-MM`` or ``YYYY``, which the DCC schema allows
(``^((19|20)\\d\\d(-\\d\\d){0,2}){0,1}$``); unknown parts written as ``00`` are dropped.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

_DOB = re.compile(r"^(?P<y>(19|20)\d\d)(-(?P<m>\d\d)(-(?P<d>\d\d))?)?$")

# Age bands as in the Public Health Agency's COVID-19 vaccination statistics.
AGE_BANDS: tuple[tuple[int, int | None, str], ...] = (
    (0, 11, "0-11"),
    (12, 15, "12-15"),
    (16, 17, "16-17"),
    (18, 29, "18-29"),
    (30, 39, "30-39"),
    (40, 49, "40-49"),
    (50, 59, "50-59"),
    (60, 69, "60-69"),
    (70, 79, "70-79"),
    (80, 89, "80-89"),
    (90, None, "90+"),
)
UNKNOWN_AGE = "unknown"


def normalise_dob(value: str | None) -> str | None:
    """The DCC ``dob`` of a register date: YYYY-MM-DD, YYYY-MM or YYYY; None if unusable."""
    if value is None:
        return None
    value = value.strip()
    m = _DOB.match(value)
    if not m:
        return None
    y, mo, d = m.group("y"), m.group("m"), m.group("d")
    if mo is None or mo == "00":
        return y
    if not 1 <= int(mo) <= 12:
        return None
    if d is None or d == "00":
        return f"{y}-{mo}"
    try:
        datetime(int(y), int(mo), int(d))
    except ValueError:
        return None
    return f"{y}-{mo}-{d}"


def normalise_dobs(values: pd.Series) -> pd.Series:
    """Vectorised :func:`normalise_dob` (once per distinct value)."""
    import numpy as np
    import pandas as pd

    cat = pd.Categorical(values.astype("string"))
    mapped = [normalise_dob(c) for c in cat.categories] + [None]
    codes = cat.codes.copy()
    codes[codes < 0] = len(mapped) - 1
    return pd.Series(np.asarray(mapped, dtype=object)[codes], index=values.index, dtype=object)


def age_bands(dob: pd.Series, at: pd.Series) -> pd.Series:
    """Age band at the date ``at`` (e.g. the vaccination date) for complete dates of birth;
    ``unknown`` for partial or missing ones (a year alone cannot place a person in a band)."""
    import numpy as np
    import pandas as pd

    full = dob.where(dob.str.len() == 10)
    born = pd.to_datetime(full, format="%Y-%m-%d", errors="coerce")
    when = pd.to_datetime(at, errors="coerce")
    years = when.dt.year - born.dt.year
    before_birthday = (when.dt.month < born.dt.month) | (
        (when.dt.month == born.dt.month) & (when.dt.day < born.dt.day)
    )
    age = (years - before_birthday.astype("Int64")).to_numpy(dtype="float64", na_value=np.nan)
    labels = np.full(len(dob), UNKNOWN_AGE, dtype=object)
    for lo, hi, label in AGE_BANDS:
        sel = (age >= lo) & (age <= (hi if hi is not None else np.inf))
        labels[sel] = label
    return pd.Series(labels, index=dob.index, dtype=object)


def validity(issued_at: datetime, days: int) -> tuple[int, int]:
    """(iat, exp) in epoch seconds for the validity policy ``days`` (settings.validity_days).

    The signer caps ``exp`` at the DSC's notAfter (signing.hcert.validity); this is the policy
    half only."""
    if days < 1:
        raise ValueError("validity must be at least one day")
    if issued_at.tzinfo is None:
        raise ValueError("issued_at must be timezone-aware")
    iat = int(issued_at.astimezone(UTC).timestamp())
    exp = int((issued_at + timedelta(days=days)).astimezone(UTC).timestamp())
    return iat, exp
