"""Dates of birth, age bands, validity policy, and the v/t/r entry builders."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from signing.dcc import payload_errors
from transforms import entries
from transforms.dates import age_bands, normalise_dob, normalise_dobs, validity
from transforms.uvci import derive_key, uvci_for

CI = uvci_for("ord-1", "ev-1", derive_key(b"k"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1964-01-01", "1964-01-01"),
        ("1964-01", "1964-01"),
        ("1964", "1964"),
        ("1964-00-00", "1964"),
        ("1964-05-00", "1964-05"),
        (" 2001-02-28 ", "2001-02-28"),
        ("2001-02-29", None),
        ("1964-13-01", None),
        ("1899-01-01", None),
        ("64-01-01", None),
        ("", None),
        (None, None),
    ],
)
def test_dob(value: str | None, expected: str | None) -> None:
    assert normalise_dob(value) == expected


def test_dob_vectorised() -> None:
    s = pd.Series(["1964-00-00", None, "1964-00-00", "2001-02-29"], index=[3, 4, 5, 6])
    assert normalise_dobs(s).tolist() == ["1964", None, "1964", None]


def test_age_bands_at_the_vaccination_date() -> None:
    dob = pd.Series(
        ["2005-06-15", "2005-06-15", "1950-01-01", "1930", "1990-03", None, "1921-01-01"]
    )
    at = pd.Series(
        pd.to_datetime(
            [
                "2023-06-14",
                "2023-06-15",
                "2021-05-01",
                "2021-05-01",
                "2021-05-01",
                "2021-05-01",
                "2021-05-01",
            ]
        )
    )
    assert age_bands(dob, at).tolist() == [
        "16-17",
        "18-29",
        "70-79",
        "unknown",
        "unknown",
        "unknown",
        "90+",
    ]


def test_validity_policy() -> None:
    now = datetime(2023, 1, 31, 12, 0, tzinfo=UTC)
    iat, exp = validity(now, 365)
    assert iat == int(now.timestamp())
    assert exp - iat == 365 * 86400
    with pytest.raises(ValueError):
        validity(datetime(2023, 1, 1), 365)
    with pytest.raises(ValueError):
        validity(now, 0)


def _payload(kind: str, entry: dict) -> dict:
    return entries.payload(kind=kind, entry=entry, dob="1964-01-01", fn="Åström", gn="Märta")


def test_vaccination_entry_validates() -> None:
    e = entries.vaccination_entry(
        vp="1119349007", mp="EU/1/20/1528", ma="ORG-100030215", dn=3, sd=3,
        dt=date(2022, 1, 10), co="SE", is_="Swedish eHealth Agency", ci=CI,
    )  # fmt: skip
    p = _payload("v", e)
    assert payload_errors(p) == []
    assert p["nam"] == {"fn": "Åström", "fnt": "AASTROEM", "gn": "Märta", "gnt": "MAERTA"}
    with pytest.raises(ValueError, match="not an active code"):
        entries.vaccination_entry(
            vp="1119349007", mp="NVX-CoV2373", ma="ORG-100032020", dn=1, sd=2,
            dt="2022-01-10", co="SE", is_="x", ci=CI,
        )  # fmt: skip


def test_test_entries_validate() -> None:
    sc = datetime(2021, 8, 1, 10, 30, tzinfo=UTC)
    naat = entries.test_entry(
        tt=entries.NAAT, nm="Roche LightCycler qPCR", sc=sc, tr=entries.NOT_DETECTED,
        tc="Testcenter Solna", co="SE", is_="Swedish eHealth Agency", ci=CI,
    )  # fmt: skip
    rat = entries.test_entry(
        tt=entries.RAT, ma="1232", sc=sc, tr=entries.NOT_DETECTED, co="SE",
        is_="Swedish eHealth Agency", ci=CI,
    )  # fmt: skip
    for e in (naat, rat):
        assert payload_errors(_payload("t", e)) == []
    assert naat["sc"] == "2021-08-01T10:30:00Z"
    with pytest.raises(ValueError, match="device id"):
        entries.test_entry(tt=entries.RAT, sc=sc, tr=entries.DETECTED, co="SE", is_="x", ci=CI)
    with pytest.raises(ValueError, match="not an active code"):
        entries.test_entry(tt="LP0000-0", sc=sc, tr=entries.DETECTED, co="SE", is_="x", ci=CI)
    with pytest.raises(ValueError, match="timezone"):
        entries.test_entry(
            tt=entries.NAAT, sc=datetime(2021, 8, 1), tr=entries.DETECTED, co="SE", is_="x", ci=CI
        )


def test_recovery_entry_validity_window() -> None:
    fr = date(2021, 6, 1)
    r = entries.recovery_entry(fr=fr, co="SE", is_="Swedish eHealth Agency", ci=CI)
    assert r["df"] == (fr + timedelta(days=11)).isoformat()
    assert r["du"] == (fr + timedelta(days=180)).isoformat()
    assert payload_errors(_payload("r", r)) == []
    with pytest.raises(ValueError, match="at least 11 days"):
        entries.recovery_entry(fr=fr, df=fr + timedelta(days=5), co="SE", is_="x", ci=CI)
    with pytest.raises(ValueError, match="180 days"):
        entries.recovery_entry(fr=fr, du=fr + timedelta(days=200), co="SE", is_="x", ci=CI)


def test_payload_needs_a_transliterable_name_and_a_date() -> None:
    e = entries.recovery_entry(fr="2021-06-01", co="SE", is_="x", ci=CI)
    only_family = entries.payload(kind="r", entry=e, dob="1964", fn="Öberg")
    assert only_family["nam"] == {"fn": "Öberg", "fnt": "OEBERG"}
    assert payload_errors(only_family) == []
    with pytest.raises(ValueError, match="transliterable"):
        entries.payload(kind="r", entry=e, dob="1964", fn="李")
    with pytest.raises(ValueError, match="date of birth"):
        entries.payload(kind="r", entry=e, dob="64", fn="Öberg")
