"""The facts the ``nvr_extract`` suite checks, computed vectorised from extract.parquet.

GX then asserts them (see data_quality/suites.py). The frame GX sees is compact and holds
no personal data: a row number (row identity; it maps back to order id, event id and
pseudonymous id), booleans, the canonical product (categorical), the dose number and the
longest name's length. Booleans are NA where a check does not apply (an order with no
vaccination has no vaccination date to check); GX skips NA values.

Strings are handled with Arrow compute kernels and numbers with numpy: at a million rows
the per-element Python of ``pandas.Series.str`` and the cost of string columns inside GX
dominated (figures in docs/decisions/data-quality.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

from data_quality import products
from data_quality.identity import _np, _valid_date, identity_facts

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

INDEX_COLUMNS = ("row",)
IDENTITY_COLUMNS = ("order_id", "event_id", "pid")
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

_DOB = r"^\d{4}(?:-\d{2}(?:-\d{2})?)?$"
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@dataclass
class NvrFacts:
    frame: pd.DataFrame  # what GX validates (no personal data)
    identity: pa.Table  # order_id, event_id, pid per row (same order)


def _contiguous(values):
    """One Array from a ChunkedArray (dictionary encoding must see one dictionary)."""
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks else pa.array([], type=values.type)
    return values


def _days(d: date) -> int:
    return d.toordinal() - _EPOCH_ORDINAL


def _bools(values, mask=None) -> pd.arrays.BooleanArray:
    """A nullable boolean array: NA where ``mask`` is False."""
    import numpy as np
    import pandas as pd

    arr = pd.array(np.asarray(values, dtype=bool), dtype="boolean")
    if mask is not None:
        arr[~np.asarray(mask, dtype=bool)] = pd.NA
    return arr


def _dob(dob: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(parsed, value, length): value is yyyymmdd / yyyymm / yyyy as an int by length."""
    import numpy as np
    import pyarrow.compute as pc

    s = pc.utf8_trim_whitespace(dob)
    shaped = _np(pc.match_substring_regex(s, _DOB), False).astype(bool)
    length = _np(pc.utf8_length(s), 0).astype(np.int64)
    digits = pc.replace_substring(pc.if_else(shaped, s, "0"), "-", "")
    value = _np(pc.cast(digits, "int64"), 0).astype(np.int64)
    year = np.where(length == 10, value // 10000, np.where(length == 7, value // 100, value))
    month = np.where(length == 10, value // 100 % 100, np.where(length == 7, value % 100, 1))
    day = np.where(length == 10, value % 100, 1)
    parsed = shaped & _valid_date(year, month, np.maximum(day, 1)) & (day >= 1)
    return parsed, value, length


def _dob_start_days(value: np.ndarray, length: np.ndarray) -> np.ndarray:
    import numpy as np

    year = np.where(length == 10, value // 10000, np.where(length == 7, value // 100, value))
    month = np.where(length == 10, value // 100 % 100, np.where(length == 7, value % 100, 1))
    day = np.where(length == 10, value % 100, 1)
    year = np.clip(year, 1, 9999)
    month = np.clip(month, 1, 12)
    m = ((year - 1970) * 12 + (month - 1)).astype("datetime64[M]").astype("datetime64[D]")
    return m.astype(np.int64) + np.clip(day, 1, 31) - 1


# Unicode category Cc (NUL, ESC, CR, LF ...) and the bidirectional embeddings, overrides
# and isolates (U+202A-U+202E, U+2066-U+2069): a name holding one could reorder or hide
# what a PDF, a mailbox or a print-house sheet shows. RE2 syntax (Arrow's regex engine).
_FORBIDDEN_IN_NAME = r"[\p{Cc}\x{202A}-\x{202E}\x{2066}-\x{2069}]"


def _name_characters_ok(names: pa.Array) -> np.ndarray:
    """True where a name holds no forbidden character (an absent name is not judged here)."""
    import pyarrow.compute as pc

    return ~_np(pc.match_substring_regex(names, _FORBIDDEN_IN_NAME), False).astype(bool)


def _name_length(names: pa.Array) -> np.ndarray:
    import numpy as np
    import pyarrow.compute as pc

    clean = pc.utf8_trim_whitespace(pc.utf8_normalize(names, "NFC"))
    return _np(pc.utf8_length(clean), 0).astype(np.int64)


def nvr_facts(
    table: pa.Table,
    run_date: date,
    campaign_start: date,
    extracted_at: datetime | None,
) -> NvrFacts:
    """The GX frame for ``nvr_extract``: one row per extract row, same order."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    # no combine_chunks() of the whole table (a copy of every string): compute kernels take
    # chunked columns; only the columns that are dictionary-encoded are made contiguous
    t = table.select(list(EXTRACT_COLUMNS))
    n = t.num_rows
    col = {name: t.column(name) for name in EXTRACT_COLUMNS}
    for name in ("order_id", "event_id", "vaccine"):
        col[name] = _contiguous(col[name])
    has_event = _np(pc.is_valid(col["event_id"]), False).astype(bool)

    # identity number and date of birth ----------------------------------------------------
    ident = identity_facts(col["person_id"])
    vdays = _np(pc.cast(col["vaccination_date"], pa.int32()), -(10**6)).astype(np.int64)
    has_date = has_event & (vdays > -(10**6))
    run_day = _days(run_date)

    parsed, dob_value, dob_len = _dob(col["dob"])
    dob_start = _dob_start_days(dob_value, dob_len)
    dob_year = np.where(
        dob_len == 10, dob_value // 10000, np.where(dob_len == 7, dob_value // 100, dob_value)
    )
    dob_plausible = (
        parsed
        & (dob_year >= EARLIEST_BIRTH_YEAR)
        & (dob_start <= run_day)
        & (~has_date | (dob_start <= vdays))
    )
    birth = ident["birth"]
    comparable = ident["format_ok"] & parsed
    day_unknown = birth % 100 == 0
    matches = np.where(
        dob_len == 10,
        np.where(day_unknown, dob_value // 100 == birth // 100, dob_value == birth),
        np.where(dob_len == 7, dob_value == birth // 100, dob_value == birth // 10000),
    )

    # names ------------------------------------------------------------------------------
    g_len = _name_length(col["given_name"])
    f_len = _name_length(col["family_name"])

    # consent ----------------------------------------------------------------------------
    consent_ok = _np(pc.is_valid(col["consent_at"]), False).astype(bool)
    if extracted_at is not None:
        before = pc.less_equal(
            col["consent_at"], pa.scalar(extracted_at, pa.timestamp("us", "UTC"))
        )
        consent_ok &= _np(before, False).astype(bool)

    # product and dates ------------------------------------------------------------------
    encoded = pc.dictionary_encode(col["vaccine"])
    reported = encoded.dictionary.to_pylist()
    canon = [products.canonical(v) for v in reported]
    categories, inverse = np.unique(np.array(canon or [""], dtype=object), return_inverse=True)
    codes = _np(encoded.indices, -1).astype(np.int64)
    product_codes = np.where(codes >= 0, inverse[np.maximum(codes, 0)] if canon else -1, -1)
    product_codes[~has_event] = -1
    product = pd.Categorical.from_codes(product_codes, categories=list(categories))
    auth_by_cat = np.array(
        [
            _days(date.fromisoformat(products.authorisation_dates()[c]))
            if c in products.authorisation_dates()
            else -(10**6)
            for c in categories
        ],
        dtype=np.int64,
    )
    auth = np.where(product_codes >= 0, auth_by_cat[np.maximum(product_codes, 0)], -(10**6))
    has_auth = has_date & (auth > -(10**6))

    not_future = has_date & (vdays <= run_day) | (has_event & ~has_date)
    after_start = has_date & (vdays >= _days(campaign_start))
    after_auth = vdays >= auth

    # dose -------------------------------------------------------------------------------
    dose = _np(pc.cast(col["dose_number"], pa.int64()), -1).astype(np.int64)
    dose_in_range = has_event & (dose >= 1) & (dose <= MAX_DOSE)

    # duplicates (integer keys: factorised order and event ids) --------------------------
    order_code = _np(pc.dictionary_encode(col["order_id"]).indices, -1).astype(np.int64)
    event_code = _np(pc.dictionary_encode(col["event_id"]).indices, -1).astype(np.int64)
    key_event = pd.Series(order_code * (int(event_code.max(initial=0)) + 2) + event_code + 1)
    dup_event = key_event.duplicated(keep=False).to_numpy() & has_event
    key_day = pd.Series((order_code << 24) + ((vdays + 2**15) << 8) + (product_codes + 1))
    dup_day = key_day.duplicated(keep=False).to_numpy() & has_date
    duplicated = dup_event | dup_day

    # history: dose numbers rise with the dates, over the rows no other check rejects ------
    eligible = has_date & ~duplicated & dose_in_range & not_future & after_start
    eligible &= ~has_auth | after_auth
    consistent = np.zeros(n, dtype=bool)
    if eligible.any():
        pos = np.flatnonzero(eligible)
        o, d, k = order_code[pos], vdays[pos], dose[pos]
        order = np.lexsort((k, d, o))
        pos, o, d, k = pos[order], o[order], d[order], k[order]
        same = np.r_[False, o[1:] == o[:-1]]
        prev_k = np.r_[0, k[:-1]]
        prev_d = np.r_[0, d[:-1]]
        consistent[pos] = ~same | ((k > prev_k) & (d > prev_d))

    frame = pd.DataFrame(
        {
            "row": np.arange(n, dtype=np.int64),
            "vaccination_present": has_event,
            "identity_number_format_ok": ident["format_ok"],
            "identity_number_check_digit_ok": _bools(ident["check_digit_ok"], ident["format_ok"]),
            "dob_plausible": dob_plausible,
            "dob_matches_identity_number": _bools(matches, comparable),
            "names_present": (g_len > 0) & (f_len > 0),
            "longest_name_length": np.maximum(g_len, f_len),
            "names_valid_characters": _name_characters_ok(col["given_name"])
            & _name_characters_ok(col["family_name"]),
            "consent_before_extraction": consent_ok,
            "product": product,
            "vaccination_not_in_future": _bools(not_future, has_event),
            "vaccination_after_campaign_start": _bools(after_start, has_event),
            "vaccination_after_authorisation": _bools(after_auth, has_auth),
            "dose_number": np.where(has_event, dose, np.nan),
            "dose_consistent_with_history": _bools(consistent, eligible),
            "event_not_duplicated": _bools(~duplicated, has_event),
        }
    )
    identity = pa.table({c: col[c] for c in IDENTITY_COLUMNS})
    return NvrFacts(frame=frame, identity=identity)
