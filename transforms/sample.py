"""Synthetic frames in the shape of transforms.schemas.EXTRACT, for tests and ``bevis bench map``.

Vectorised (numpy), deterministic for a seed, with the hard cases of the real register:
Swedish and foreign names (å ä ö é ü ł ø ễ, hyphens, apostrophes, double and very long
names), partial dates of birth, homologous and heterologous series, Jcovden and its
boosters, products given by name (several spellings) or NPL-id. Not a register: the
seeder (jobs/devtools/seed.py) builds the real synthetic sources; this only feeds the map step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

GIVEN_NAMES = (
    "Anna", "Åsa", "Björn", "Örjan", "Märta", "Karl-Johan", "Lars Erik", "Maria", "Élise",
    "Zoë", "Łukasz", "Øystein", "Jürgen", "Thị Hồng", "Anne-Sophie", "Per Olof", "Ebba",
    "Göran", "Ulla-Britt", "Siân", "Ægir", "François", "José María", "Dženana", "Şükrü",
    "Mohammed", "Aino", "Nils", "Ingrid", "Ólafur",
)  # fmt: skip
FAMILY_NAMES = (
    "Andersson", "Åström", "Öberg", "Müller-Lüdenscheidt", "O'Connor", "Nguyễn", "Lindqvist",
    "Sjöström", "af Klercker", "von Essen", "Ødegaard", "Błaszczykowski", "D'Angelo",
    "Järvinen", "Strauß", "Çelik", "Kovačević", "Pérez García", "Hägg", "Wiśniewski",
    "Bergström-Ångström-Lindqvist-Öhrnberg-Wallenius-Sjödin-Hammarskjöld-Fredriksson",
    "Trần", "Ljungberg", "Yılmaz", "Dvořák", "Karlsson", "Næss", "Þórsdóttir",
)  # fmt: skip

# (products of the doses in order, days between doses)
HISTORIES: tuple[tuple[tuple[str, ...], tuple[int, ...]], ...] = (
    (("Comirnaty",), ()),
    (("Comirnaty", "Comirnaty"), (21,)),
    (("Comirnaty", "Comirnaty", "Comirnaty"), (21, 180)),
    (("Comirnaty", "Comirnaty", "Comirnaty", "Comirnaty Original/Omicron BA.4-5"), (21, 180, 300)),
    (("Spikevax", "Spikevax"), (28,)),
    (("COVID-19 Vaccine Moderna", "Spikevax", "Spikevax"), (28, 200)),
    (("Vaxzevria", "Comirnaty"), (84,)),
    (("Vaxzevria", "Vaxzevria", "Spikevax"), (84, 180)),
    (("Jcovden",), ()),
    (("Jcovden", "Comirnaty"), (90,)),
    (("COVID-19 Vaccine Janssen", "Jcovden", "Spikevax"), (60, 180)),
    (("Nuvaxovid", "Nuvaxovid"), (21,)),
    (("20201222100013", "20201222100013"), (21,)),
    (("20210107100012", "20210107100012", "20220913100011"), (28, 400)),
    (("comirnaty ", "COMIRNATY"), (21,)),
)


def extract_frame(orders: int, seed: int = 0) -> pd.DataFrame:
    """A frame with the EXTRACT columns: ``orders`` orders with 1-4 events each."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    hist = rng.integers(0, len(HISTORIES), orders)
    lengths = np.array([len(h[0]) for h in HISTORIES])[hist]
    total = int(lengths.sum())
    order_idx = np.repeat(np.arange(orders), lengths)
    starts = np.cumsum(lengths) - lengths
    dose_idx = np.arange(total) - np.repeat(starts, lengths)

    max_len = max(len(h[0]) for h in HISTORIES)
    product_grid = np.array(
        [list(h[0]) + [""] * (max_len - len(h[0])) for h in HISTORIES], dtype=object
    )
    gap_grid = np.zeros((len(HISTORIES), max_len), dtype=np.int64)
    for i, (_, gaps) in enumerate(HISTORIES):
        gap_grid[i, 1 : 1 + len(gaps)] = np.cumsum(gaps)
    h_row = hist[order_idx]
    first_day = (np.datetime64("2021-03-01") + rng.integers(0, 150, orders)).astype("datetime64[D]")
    vdate = first_day[order_idx] + gap_grid[h_row, dose_idx]

    birth = np.datetime64("1925-01-01") + rng.integers(0, 365 * 80, orders)
    dob = pd.Series(pd.to_datetime(birth).strftime("%Y-%m-%d"), dtype=object)
    partial = rng.random(orders)
    dob[partial < 0.01] = dob[partial < 0.01].str[:4]
    dob[(partial >= 0.01) & (partial < 0.02)] = dob[(partial >= 0.01) & (partial < 0.02)].str[:7]

    given = np.array(GIVEN_NAMES, dtype=object)[rng.integers(0, len(GIVEN_NAMES), orders)]
    family = np.array(FAMILY_NAMES, dtype=object)[rng.integers(0, len(FAMILY_NAMES), orders)]
    ids = np.char.zfill(np.arange(orders).astype(str), 9).astype(object)
    order_ids = "ord-" + ids
    ts = pd.Timestamp("2022-06-01", tz="UTC")
    county = np.char.zfill(rng.integers(1, 26, total).astype(str), 2).astype(object)

    frame = pd.DataFrame(
        {
            "order_id": order_ids[order_idx],
            "pid": ("p" + ids)[order_idx],
            "person_id": ("199" + ids)[order_idx],  # 12 digits, not a valid pnr
            "requested_at": ts,
            "consent_at": ts,
            "cert_type": "v",
            "given_name": given[order_idx],
            "family_name": family[order_idx],
            "dob": dob.to_numpy()[order_idx],
            "protected_identity": (rng.random(orders) < 0.002)[order_idx],
            "address_street": "Storgatan 1",
            "address_postcode": "11122",
            "address_city": "Stockholm",
            "event_id": "SVEVAC-" + np.char.zfill(np.arange(total).astype(str), 10).astype(object),
            "vaccination_date": pd.Series(vdate).dt.date.to_numpy(),
            "vaccine": product_grid[h_row, dose_idx],
            "batch_number": "FF1234",
            "dose_number": (dose_idx + 1).astype(np.int16),
            "care_provider_org": "2321000016",
            "county_code": county,
            "municipality_code": county + "80",
            "reported_at": ts,
        }
    )
    return frame


def extract_table(orders: int, seed: int = 0):
    """:func:`extract_frame` as a pyarrow Table with the EXTRACT schema."""
    import pyarrow as pa

    from transforms.schemas import EXTRACT

    return pa.Table.from_pandas(extract_frame(orders, seed), schema=EXTRACT, preserve_index=False)
