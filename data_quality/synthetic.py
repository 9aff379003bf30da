"""A fast synthetic extract (extract.parquet rows) with known defects, for the data-quality
tests and ``bevis bench validate``.

Independent of the register generator (jobs/devtools/seed.py): it builds extract rows directly,
vectorised, so a million rows take seconds, and it says which rows carry which defect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from data_quality.reasons import GENERATOR_DEFECT_KINDS, NO_VACCINATION

if TYPE_CHECKING:
    import pandas as pd

PRODUCTS = ("Comirnaty", "Spikevax", "Vaxzevria", "Jcovden", "Nuvaxovid")
PRODUCT_FROM = {  # first plausible vaccination day per product (after authorisation)
    "Comirnaty": date(2020, 12, 27),
    "Spikevax": date(2021, 1, 15),
    "Vaxzevria": date(2021, 2, 10),
    "Jcovden": date(2021, 4, 20),
    "Nuvaxovid": date(2022, 2, 1),
}
GIVEN = ("Anna", "Åsa", "Björn", "Lars-Erik", "Zoë", "Łukasz", "Øystein", "Maria Luisa")
FAMILY = ("Andersson", "Åström", "Öberg", "Müller-Lüdenscheidt", "Nguyễn", "O'Brien")

DEFECT_KINDS = (*GENERATOR_DEFECT_KINDS, NO_VACCINATION)


@dataclass
class SyntheticExtract:
    frame: pd.DataFrame  # extract.parquet columns (transforms.schemas.EXTRACT)
    defects: dict[str, list[tuple[str, str | None]]]  # kind -> [(order_id, event_id)]
    orders: int
    extracted_at: datetime
    snapshot_at: datetime


def luhn_digit(first9: str) -> str:
    total = 0
    for i, ch in enumerate(first9):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def _identity_numbers(rng, births: list[date], coordination) -> list[str]:
    out = []
    serials = rng.integers(0, 1000, size=len(births))
    for b, s, c in zip(births, serials, coordination, strict=True):
        day = b.day + (60 if c else 0)
        body = f"{b:%y}{b.month:02d}{day:02d}{s:03d}"
        out.append(f"{b:%Y}{b.month:02d}{day:02d}{s:03d}{luhn_digit(body)}")
    return out


def synthetic_extract(
    orders: int,
    seed: int = 0,
    defect_rate: float = 0.01,
    run_date: date = date(2023, 6, 1),
) -> SyntheticExtract:
    """``orders`` orders with 1-4 doses each; each defect kind hits about ``defect_rate``
    / (number of kinds) of the orders, one defect per affected order."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    doses = rng.integers(1, 5, size=orders)
    order_ids = np.array([f"O{seed:02d}{i:08d}" for i in range(orders)], dtype=object)
    birth_offsets = rng.integers(0, 365 * 90, size=orders)
    births = [date(1925, 1, 1) + timedelta(days=int(x)) for x in birth_offsets]
    coordination = rng.random(orders) < 0.03
    pnr = np.array(_identity_numbers(rng, births, coordination), dtype=object)
    pids = np.array([f"{i:032x}" for i in rng.integers(0, 2**62, size=orders)], dtype=object)
    product_idx = rng.integers(0, len(PRODUCTS), size=orders)
    rows = int(doses.sum())
    order_of_row = np.repeat(np.arange(orders), doses)
    dose_no = np.concatenate([np.arange(1, d + 1) for d in doses]) if orders else np.array([])
    start = np.array([PRODUCT_FROM[PRODUCTS[p]].toordinal() for p in product_idx])
    first = start + rng.integers(0, 150, size=orders)
    vday = first[order_of_row] + (dose_no - 1) * 80 + rng.integers(0, 20, size=rows)
    extracted_at = datetime(run_date.year, run_date.month, run_date.day, 6, 0, tzinfo=UTC)
    consent = pd.Timestamp(extracted_at) - pd.to_timedelta(
        rng.integers(1, 30 * 24, size=orders), unit="h"
    )
    frame = pd.DataFrame(
        {
            "order_id": order_ids[order_of_row],
            "pid": pids[order_of_row],
            "person_id": pnr[order_of_row],
            "requested_at": consent[order_of_row],
            "consent_at": consent[order_of_row],
            "cert_type": "v",
            "given_name": np.array(GIVEN, dtype=object)[rng.integers(0, len(GIVEN), orders)][
                order_of_row
            ],
            "family_name": np.array(FAMILY, dtype=object)[rng.integers(0, len(FAMILY), orders)][
                order_of_row
            ],
            "dob": np.array([b.isoformat() for b in births], dtype=object)[order_of_row],
            "protected_identity": False,
            "address_street": "Storgatan 1",
            "address_postcode": "11122",
            "address_city": "Stockholm",
            "event_id": [f"SVEVAC-{seed:02d}{i:09d}" for i in range(rows)],
            "vaccination_date": [date.fromordinal(int(x)) for x in vday],
            "vaccine": np.array(PRODUCTS, dtype=object)[product_idx][order_of_row],
            "batch_number": "FK1234",
            "dose_number": dose_no.astype("int16"),
            "care_provider_org": "2321000016",
            "county_code": "01",
            "municipality_code": "0180",
            "reported_at": pd.Timestamp(extracted_at) - pd.Timedelta(days=1),
        }
    )

    defects: dict[str, list[tuple[str, str | None]]] = {k: [] for k in DEFECT_KINDS}
    hit = rng.random(orders) < defect_rate
    kinds = rng.integers(0, len(DEFECT_KINDS), size=orders)
    first_row = np.concatenate([[0], np.cumsum(doses)[:-1]]) if orders else np.array([])
    extra_rows = []
    drop_rows: list[int] = []
    for o in np.flatnonzero(hit):
        kind = DEFECT_KINDS[kinds[o]]
        r0, n = int(first_row[o]), int(doses[o])
        r = r0 + int(rng.integers(0, n))  # the event that carries the defect
        oid = order_ids[o]
        ev = frame.at[r, "event_id"]
        rows_of_order = list(range(r0, r0 + n))
        if kind == "invalid_check_digit":
            p = frame.at[r0, "person_id"]
            bad = p[:-1] + str((int(p[-1]) + 1 + int(rng.integers(0, 9))) % 10)
            frame.loc[rows_of_order, "person_id"] = bad
            defects[kind].append((oid, None))
            continue
        if kind == "future_vaccination_date":
            r = r0 + n - 1  # the latest dose, so the history before it stays consistent
            ev = frame.at[r, "event_id"]
            frame.at[r, "vaccination_date"] = run_date + timedelta(days=int(rng.integers(1, 400)))
        elif kind == "before_authorisation":
            r = r0  # the first dose, moved before its product existed (after campaign start)
            ev = frame.at[r, "event_id"]
            frame.at[r, "vaccine"] = "Nuvaxovid"
            frame.at[r, "vaccination_date"] = date(2021, 3, 1)
            for rr in rows_of_order[1:]:
                frame.at[rr, "vaccination_date"] = max(
                    frame.at[rr, "vaccination_date"], date(2021, 3, 2) + timedelta(rr - r0)
                )
        elif kind == "unknown_product":
            frame.at[r, "vaccine"] = "Sputnik V"
        elif kind == "dose_out_of_range":
            frame.at[r, "dose_number"] = int(rng.choice([0, 42, -1]))
        elif kind == "duplicate_event":
            extra_rows.append(frame.loc[r].copy())
        elif kind == "missing_name":
            col = "given_name" if rng.random() < 0.5 else "family_name"
            frame.loc[rows_of_order, col] = "" if rng.random() < 0.5 else None
            ev = None
        elif kind == "dob_mismatch":
            b = date.fromisoformat(frame.at[r0, "dob"]) + timedelta(days=int(rng.integers(1, 900)))
            frame.loc[rows_of_order, "dob"] = b.isoformat()
            ev = None
        elif kind == "name_too_long":
            frame.loc[rows_of_order, "family_name"] = "Lindqvist-" * 9  # 90 characters
            ev = None
        elif kind == "no_vaccination":
            drop_rows.extend(rows_of_order[1:])
            for c in ("event_id", "vaccination_date", "vaccine", "batch_number", "dose_number"):
                frame.at[r0, c] = None
            ev = None
        defects[kind].append((oid, ev))
    if extra_rows:
        frame = pd.concat([frame, pd.DataFrame(extra_rows)], ignore_index=True)
    if drop_rows:
        frame = frame.drop(index=drop_rows).reset_index(drop=True)
    frame["dose_number"] = frame["dose_number"].astype("Int16")
    frame = frame.sort_values(["order_id", "vaccination_date"], kind="stable", na_position="first")
    return SyntheticExtract(
        frame=frame.reset_index(drop=True),
        defects=defects,
        orders=orders,
        extracted_at=extracted_at,
        snapshot_at=extracted_at - timedelta(hours=3),
    )


def to_table(frame: pd.DataFrame):
    """The frame as a pyarrow Table with the EXTRACT schema."""
    import pyarrow as pa

    from transforms.schemas import EXTRACT

    return pa.Table.from_pandas(frame, schema=EXTRACT, preserve_index=False)
