"""The facts the ``nvr_extract`` suite checks, computed vectorised from extract.parquet.

GX then asserts them (see data_quality/suites.py). The frame returned here is what GX
sees: row identity (row, order id, event id, pseudonymous id) and non-identifying facts
only — booleans, the canonical product key, the dose number, the longest name's length.
Booleans are NA where a check does not apply (an order with no vaccination has no
vaccination date to check), and GX skips NA values.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from data_quality import products
from data_quality.identity import identity_facts

if TYPE_CHECKING:
    import pandas as pd

INDEX_COLUMNS = ("row", "order_id", "event_id", "pid")
EARLIEST_BIRTH_YEAR = 1890
MAX_DOSE = 9
MAX_NAME_LENGTH = 80  # DCC schema: fn, gn maxLength 80

# only these columns of extract.parquet are read (no address, no care provider)
EXTRACT_COLUMNS = (
    "order_id",
    "pid",
    "person_id",
    "consent_at",
    "given_name",
    "family_name",
    "dob",
    "event_id",
    "vaccination_date",
    "vaccine",
    "dose_number",
)


def _dob_start(dob: pd.Series) -> pd.Series:
    """First day of the period a (possibly partial) date of birth names; NaT if garbage."""
    import pandas as pd

    s = dob.astype("string").str.strip()
    full = pd.to_datetime(s.where(s.str.len() == 10), format="%Y-%m-%d", errors="coerce")
    month = pd.to_datetime(s.where(s.str.len() == 7), format="%Y-%m", errors="coerce")
    year = pd.to_datetime(s.where(s.str.len() == 4), format="%Y", errors="coerce")
    return full.fillna(month).fillna(year)


def nvr_facts(
    extract: pd.DataFrame,
    run_date: date,
    campaign_start: date,
    extracted_at: pd.Timestamp | None,
) -> pd.DataFrame:
    """The GX frame for ``nvr_extract``: one row per extract row, same order."""
    import numpy as np
    import pandas as pd

    n = len(extract)
    idx = extract.index
    has_event = extract["event_id"].notna().to_numpy()

    def where_event(values) -> pd.arrays.BooleanArray:
        arr = pd.array(np.asarray(values, dtype=bool), dtype="boolean")
        arr[~has_event] = pd.NA
        return arr

    # identity number and date of birth ----------------------------------------------------
    ident = identity_facts(extract["person_id"])
    run_ts = pd.Timestamp(run_date)
    vdate = pd.to_datetime(extract["vaccination_date"], errors="coerce")
    if getattr(vdate.dt, "tz", None) is not None:
        vdate = vdate.dt.tz_localize(None)
    vdate = vdate.astype("datetime64[ns]")
    dob_start = _dob_start(extract["dob"]).astype("datetime64[ns]")
    dob_plausible = (
        dob_start.notna()
        & (dob_start.dt.year >= EARLIEST_BIRTH_YEAR)
        & (dob_start <= run_ts)
        & (vdate.isna() | (dob_start <= vdate))
    ).to_numpy(dtype=bool)

    dob = extract["dob"].astype("string").str.strip()
    derived = ident["birth_date"]
    comparable = ident["format_ok"].to_numpy(dtype=bool) & (dob.str.len().fillna(0) > 0).to_numpy(
        dtype=bool
    )
    same = (dob == derived).fillna(False).to_numpy(dtype=bool)
    # partial dates: a YYYY-MM in the register agrees with a full date in the number, and a
    # samordningsnummer with day 60 (birth day unknown) agrees with any day of its month
    dob_prefix = np.zeros(n, dtype=bool)
    derived_o, dob_o = derived.to_numpy(dtype=object), dob.to_numpy(dtype=object)
    for i in np.flatnonzero(~same & comparable):  # rare: partial dates and mismatches
        a, b = derived_o[i], dob_o[i]
        dob_prefix[i] = (
            isinstance(a, str) and isinstance(b, str) and (a.startswith(b) or b.startswith(a))
        )
    dob_matches = pd.array(same | dob_prefix, dtype="boolean")
    dob_matches[~comparable] = pd.NA

    # names ------------------------------------------------------------------------------
    def clean(col: str) -> pd.Series:
        return extract[col].astype("string").str.normalize("NFC").str.strip()

    given, family = clean("given_name"), clean("family_name")
    g_len = given.str.len().fillna(0).astype("int64")
    f_len = family.str.len().fillna(0).astype("int64")
    names_present = ((g_len > 0) & (f_len > 0)).to_numpy(dtype=bool)
    longest = np.maximum(g_len.to_numpy(), f_len.to_numpy())

    # consent ----------------------------------------------------------------------------
    consent = pd.to_datetime(extract["consent_at"], utc=True, errors="coerce")
    consent_ok = consent.notna()
    if extracted_at is not None:
        consent_ok &= consent <= extracted_at
    consent_ok = consent_ok.to_numpy(dtype=bool)

    # product and dates ------------------------------------------------------------------
    vaccine = extract["vaccine"].astype("string")
    uniques = vaccine.dropna().unique()
    canon = {v: products.canonical(v) for v in uniques}
    product = vaccine.map(canon).astype("string")
    product[~has_event] = pd.NA
    auth_dates = {k: pd.Timestamp(v) for k, v in products.authorisation_dates().items()}
    auth = product.map(auth_dates)
    auth = pd.to_datetime(auth, errors="coerce").astype("datetime64[ns]")

    not_future = where_event((vdate <= run_ts).to_numpy(dtype=bool) | vdate.isna().to_numpy())
    after_start = where_event((vdate >= pd.Timestamp(campaign_start)).to_numpy(dtype=bool))
    after_auth = pd.array((vdate >= auth).to_numpy(dtype=bool), dtype="boolean")
    after_auth[~(has_event & auth.notna().to_numpy() & vdate.notna().to_numpy())] = pd.NA

    # dose -------------------------------------------------------------------------------
    dose = pd.array(extract["dose_number"].astype("Int16"), dtype="Int16")
    dose_reported = dose.copy()
    dose_reported[has_event & dose_reported.isna()] = -1
    dose_in_range = (
        has_event
        & (dose_reported.fillna(-1).to_numpy() >= 1)
        & (dose_reported.fillna(-1).to_numpy() <= MAX_DOSE)
    )

    # duplicates -------------------------------------------------------------------------
    keys = pd.DataFrame({"o": extract["order_id"], "e": extract["event_id"]}, index=idx)
    dup_event = keys.duplicated(keep=False).to_numpy() & has_event
    keys2 = pd.DataFrame({"o": extract["order_id"], "d": vdate, "p": product}, index=idx)
    dup_day = keys2.duplicated(keep=False).to_numpy() & has_event & vdate.notna().to_numpy()
    duplicated = dup_event | dup_day

    # history: dose numbers rise with the dates, over the rows no other check rejects ------
    eligible = (
        has_event
        & ~duplicated
        & dose_in_range
        & vdate.notna().to_numpy()
        & np.asarray(not_future.fillna(True), dtype=bool)
        & np.asarray(after_start.fillna(True), dtype=bool)
        & np.asarray(after_auth.fillna(True), dtype=bool)
    )
    consistent = pd.array(np.full(n, pd.NA), dtype="boolean")
    if eligible.any():
        h = pd.DataFrame(
            {
                "o": extract["order_id"].to_numpy()[eligible],
                "d": vdate.to_numpy()[eligible],
                "n": dose_reported.to_numpy(dtype="int64", na_value=-1)[eligible],
                "pos": np.flatnonzero(eligible),
            }
        ).sort_values(["o", "d", "n"], kind="stable")
        prev_n = h.groupby("o", sort=False)["n"].shift()
        prev_d = h.groupby("o", sort=False)["d"].shift()
        ok = prev_n.isna() | ((h["n"] > prev_n) & (h["d"] > prev_d))
        consistent[h["pos"].to_numpy()] = ok.to_numpy(dtype=bool)

    return pd.DataFrame(
        {
            "row": np.arange(n, dtype="int64"),
            "order_id": extract["order_id"].astype("string").to_numpy(),
            "event_id": extract["event_id"].astype("string").to_numpy(),
            "pid": extract["pid"].astype("string").to_numpy(),
            "identity_number_format_ok": ident["format_ok"].to_numpy(dtype=bool),
            "identity_number_check_digit_ok": ident["check_digit_ok"].array,
            "dob_plausible": dob_plausible,
            "dob_matches_identity_number": dob_matches,
            "names_present": names_present,
            "longest_name_length": longest.astype("int64"),
            "consent_before_extraction": consent_ok,
            "product": product.to_numpy(),
            "vaccination_not_in_future": not_future,
            "vaccination_after_campaign_start": after_start,
            "vaccination_after_authorisation": after_auth,
            "dose_number": dose_reported,
            "dose_consistent_with_history": consistent,
            "event_not_duplicated": where_event(~duplicated),
        }
    ).assign(product=lambda f: f["product"].astype("string"))
