"""The three DCC entry types — vaccination ``v``, test ``t``, recovery ``r`` — as checked dicts.

The NVR channel issues ``v`` in bulk (see :mod:`transforms.payloads`); these builders are
the single-record path and the one the test and recovery intake channels will use. Every
coded field is checked against its *active* value set (signing.dcc), so a builder never
returns an entry that may not be issued.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from signing import dcc

COVID_19 = "840539006"  # disease-agent-targeted
NAAT = "LP6464-4"  # test-type: nucleic acid amplification
RAT = "LP217198-3"  # test-type: rapid antigen test
NOT_DETECTED = "260415000"
DETECTED = "260373001"
# Commission Implementing Decision (EU) 2021/1073 Annex / Regulation (EU) 2021/953:
# a recovery certificate is valid from the 11th day after the first positive NAAT test,
# for at most 180 days after it.
RECOVERY_FROM_DAYS = 11
RECOVERY_MAX_DAYS = 180


def _active(vs: str, field: str, code: str) -> str:
    if code not in dcc.active_codes(vs):
        raise ValueError(f"{field} {code!r} is not an active code of {vs}")
    return code


def _iso_date(value: date | str, field: str) -> str:
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, date):
        return value.isoformat()
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f"{field} is not an ISO date") from None


def vaccination_entry(
    *, vp: str, mp: str, ma: str, dn: int, sd: int, dt: date | str, co: str, is_: str, ci: str
) -> dict[str, Any]:
    """A ``v`` entry for one vaccination event."""
    if not (1 <= dn <= 9 and 1 <= sd <= 9):
        raise ValueError("dn and sd must be 1..9")
    return {
        "tg": COVID_19,
        "vp": _active("vaccine-prophylaxis", "vp", vp),
        "mp": _active("vaccine-medicinal-product", "mp", mp),
        "ma": _active("vaccine-mah-manf", "ma", ma),
        "dn": dn,
        "sd": sd,
        "dt": _iso_date(dt, "dt"),
        "co": _active("country-2-codes", "co", co),
        "is": is_,
        "ci": ci,
    }


def test_entry(
    *,
    tt: str,
    sc: datetime,
    tr: str,
    co: str,
    is_: str,
    ci: str,
    nm: str | None = None,
    ma: str | None = None,
    tc: str | None = None,
) -> dict[str, Any]:
    """A ``t`` entry. ``nm`` names a NAAT test; ``ma`` is the RAT device id (EU common list,
    required for RAT); ``sc`` is the sample collection time (timezone-aware)."""
    _active("test-type", "tt", tt)
    if sc.tzinfo is None:
        raise ValueError("sc must be timezone-aware")
    if tt == RAT and not ma:
        raise ValueError("a rapid antigen test needs the device id (ma)")
    entry: dict[str, Any] = {
        "tg": COVID_19,
        "tt": tt,
        "sc": sc.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "tr": _active("test-result", "tr", tr),
        "co": _active("country-2-codes", "co", co),
        "is": is_,
        "ci": ci,
    }
    if nm:
        entry["nm"] = nm
    if ma:
        entry["ma"] = ma
    if tc:
        entry["tc"] = tc
    return entry


def recovery_entry(
    *,
    fr: date | str,
    co: str,
    is_: str,
    ci: str,
    df: date | str | None = None,
    du: date | str | None = None,
) -> dict[str, Any]:
    """An ``r`` entry from the date of the first positive NAAT test ``fr``; ``df``/``du``
    default to the longest validity the rules allow (fr+11 .. fr+180)."""
    first = date.fromisoformat(_iso_date(fr, "fr"))
    earliest = first + timedelta(days=RECOVERY_FROM_DAYS)
    latest = first + timedelta(days=RECOVERY_MAX_DAYS)
    valid_from = date.fromisoformat(_iso_date(df, "df")) if df else earliest
    valid_until = date.fromisoformat(_iso_date(du, "du")) if du else latest
    if valid_from < earliest:
        raise ValueError(f"df must be at least {RECOVERY_FROM_DAYS} days after fr")
    if valid_until > latest or valid_until < valid_from:
        raise ValueError(f"du must lie between df and {RECOVERY_MAX_DAYS} days after fr")
    return {
        "tg": COVID_19,
        "fr": first.isoformat(),
        "co": _active("country-2-codes", "co", co),
        "is": is_,
        "df": valid_from.isoformat(),
        "du": valid_until.isoformat(),
        "ci": ci,
    }


def payload(
    *,
    kind: str,
    entry: dict[str, Any],
    dob: str,
    fn: str = "",
    gn: str = "",
    ver: str = dcc.CURRENT_VERSION,
) -> dict[str, Any]:
    """A whole DCC payload around one entry, with names cleaned and transliterated."""
    from transforms.dates import normalise_dob
    from transforms.names import clean_name, transliterate

    if kind not in ("v", "t", "r"):
        raise ValueError(f"unknown entry kind {kind!r}")
    nam: dict[str, str] = {}
    for field, value in (("fn", fn), ("gn", gn)):
        cleaned = clean_name(value)
        if cleaned:
            nam[field] = cleaned
        mrz = transliterate(value)
        if mrz:
            nam[field + "t"] = mrz
    if "fnt" not in nam and "gnt" not in nam:
        raise ValueError("no name with a transliterable character")
    birth = normalise_dob(dob)
    if birth is None:
        raise ValueError("date of birth is not a (partial) ISO date in 1900-2099")
    return {"ver": ver, "nam": nam, "dob": birth, kind: [entry]}
