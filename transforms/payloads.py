"""Validated NVR rows → DCC vaccination payloads, vectorised (pandas + pyarrow compute).

One certificate per order, showing the person's latest dose. Per-value work (name
transliteration, product lookup, dob) runs once per *distinct* value; the JSON text is
assembled column-wise with pyarrow string kernels, so no Python code runs per row except
the UVCI hash. Orders that cannot be mapped come back as quarantine entries (reason codes
from docs/decisions/mapping.md), never as exceptions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from signing import dcc
from transforms import products as prod
from transforms.entries import COVID_19

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

MAPPING_FAILED = "mapping_failed"
# what the payload row needs from the order's latest extract row
PERSON_COLUMNS = [
    "order_id", "pid", "person_id", "given_name", "family_name", "dob", "protected_identity",
    "address_street", "address_postcode", "address_city", "event_id", "vaccination_date",
    "county_code",
]  # fmt: skip
NO_VACCINATION = "no_vaccination"


@dataclass(frozen=True)
class MapConfig:
    """What the payloads depend on besides the records (from settings)."""

    uvci_key: bytes
    country: str = "SE"
    issuer_name: str = "Swedish eHealth Agency"
    uvci_issuer: str = "EHM"
    ver: str = dcc.CURRENT_VERSION


@dataclass
class Mapped:
    """The result of :func:`map_frame`."""

    payloads: pa.Table  # transforms.schemas.PAYLOADS
    quarantine: pd.DataFrame  # reason_code, pid, order_id, event_id, detail
    product_table_version: str


def _json_strings(values: pd.Series) -> pa.Array:
    """JSON string literals, computed once per distinct value (names need escaping)."""
    import pyarrow as pa

    arr = pa.array(values, pa.string()).dictionary_encode()
    literals = pa.array(
        [json.dumps(v, ensure_ascii=False) for v in arr.dictionary.to_pylist()], pa.string()
    )
    return literals.take(arr.indices)


def _field(name: str, literal: pa.Array, present: pa.Array) -> pa.Array:
    """``"name":<literal>,`` where present, else ''."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.binary_join_element_wise(pa.scalar(f'"{name}":'), literal, pa.scalar(","), "")
    return pc.if_else(present, text, pa.scalar(""))


def build_json(people: pd.DataFrame, cfg: MapConfig) -> pa.Array:
    """The payload JSON per row of ``people`` (one row per order, all fields ready).

    Assembled column-wise by Arrow's string kernels; only the distinct names pass through
    ``json.dumps``. Transliterated names (``^[A-Z<]*$``), codes, dates and UVCIs need no
    escaping."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def col(name: str) -> pa.Array:
        return pa.array(people[name], pa.string())

    def lit(text: str) -> pa.Scalar:
        return pa.scalar(text, pa.string())

    def quoted(name: str) -> pa.Array:
        return pc.binary_join_element_wise(lit('"'), col(name), lit('"'), "")

    def present(name: str) -> pa.Array:
        return pc.not_equal(col(name), lit(""))

    nam = pc.utf8_rtrim(
        pc.binary_join_element_wise(
            _field("fn", _json_strings(people["fn"]), present("fn")),
            _field("fnt", quoted("fnt"), present("fnt")),
            _field("gn", _json_strings(people["gn"]), present("gn")),
            _field("gnt", quoted("gnt"), present("gnt")),
            "",
        ),
        characters=",",
    )
    dn = pc.cast(pa.array(people["dn"].to_numpy()), pa.string())
    sd = pc.cast(pa.array(people["sd"].to_numpy()), pa.string())
    issuer = json.dumps(cfg.issuer_name, ensure_ascii=False)
    return pc.binary_join_element_wise(
        lit(f'{{"ver":"{cfg.ver}","nam":{{'),
        nam,
        lit('},"dob":"'),
        col("dob"),
        lit(f'","v":[{{"tg":"{COVID_19}","vp":"'),
        col("vp"),
        lit('","mp":"'),
        col("mp"),
        lit('","ma":"'),
        col("ma"),
        lit('","dn":'),
        dn,
        lit(',"sd":'),
        sd,
        lit(',"dt":"'),
        col("dt"),
        lit(f'","co":"{cfg.country}","is":{issuer},"ci":"'),
        col("uvci"),
        lit('"}]}'),
        "",
    )


def _entries(frame: pd.DataFrame, mask, reason: str, detail) -> pd.DataFrame:
    """Quarantine entries for the rows of ``frame`` selected by ``mask``; ``detail`` is one
    text for all, or one per selected row."""
    import pandas as pd

    sel = frame.loc[mask, ["order_id", "event_id", "pid"]]

    def ids(column: str):
        values = sel[column].astype(object)
        return values.where(values.notna(), None).to_numpy(dtype=object)

    out = pd.DataFrame(
        {
            "reason_code": reason,
            "pid": ids("pid"),
            "order_id": ids("order_id"),
            "event_id": ids("event_id"),
        },
        dtype=object,
    )
    out["detail"] = detail if isinstance(detail, str) else list(detail)
    return out


def map_frame(rows: pd.DataFrame, cfg: MapConfig) -> Mapped:
    """Map validated extract rows (transforms.schemas.EXTRACT columns) to payload rows.

    Quarantine policy (CONTRACTS.md): a failing row holds back its whole order; the entries
    name the failing rows. Reasons: ``no_vaccination`` (order without an NVR event),
    ``unknown_product`` / ``inactive_product`` (product table and active value sets),
    ``mapping_failed`` (not a vaccination order, no dose date, no primary series, more than
    nine doses, no transliterable name, unusable date of birth).
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from transforms import dates, doses, names, uvci
    from transforms.schemas import PAYLOADS

    table = prod.load_products()
    rows = rows.reset_index(drop=True)
    rows["vaccination_date"] = pd.to_datetime(rows["vaccination_date"]).astype("datetime64[s]")
    problems: list[pd.DataFrame] = []

    not_v = (rows["cert_type"].fillna("") != "v").to_numpy()
    problems.append(
        _entries(
            rows,
            not_v,
            MAPPING_FAILED,
            "certificate type "
            + rows.loc[not_v, "cert_type"].fillna("?").astype(str)
            + " has no source in the NVR",
        )
    )
    no_event = rows["event_id"].isna().to_numpy() & ~not_v
    problems.append(_entries(rows, no_event, NO_VACCINATION, "no vaccination event in the NVR"))
    live = ~not_v & ~no_event
    no_date = live & rows["vaccination_date"].isna().to_numpy()
    problems.append(_entries(rows, no_date, MAPPING_FAILED, "vaccination event without a date"))
    live &= ~no_date

    resolved = prod.resolve_products(rows["vaccine"])
    status = resolved["status"].to_numpy(dtype=object)
    for reason in (prod.UNKNOWN, prod.INACTIVE):
        bad = live & (status == reason)
        what = "not in the product table" if reason == prod.UNKNOWN else "has an inactive code"
        reported = rows.loc[bad, "vaccine"].fillna("(none)").astype(str).str.slice(0, 60)
        detail = "vaccine '" + reported + f"' {what} (products {table.version})"
        problems.append(_entries(rows, bad, reason, detail))
        live &= ~bad

    # a failing row holds back its whole order
    failed_orders = pd.unique(pd.concat([p["order_id"] for p in problems], ignore_index=True))
    if len(failed_orders):
        live &= ~rows["order_id"].isin(failed_orders).to_numpy()

    events = rows.loc[live, ["order_id", "event_id", "vaccination_date"]].copy()
    events["primary_doses"] = resolved.loc[live, "primary_doses"].to_numpy()
    latest = doses.latest_doses(events)
    people = rows.loc[latest["row"].to_numpy(), PERSON_COLUMNS].reset_index(drop=True)
    people = people.join(
        resolved.loc[latest["row"].to_numpy(), ["mp", "ma", "vp"]].reset_index(drop=True)
    )
    people["dn"] = latest["dn"].to_numpy()
    people["sd"] = latest["sd"].to_numpy()
    people["fn"] = names.clean_names(people["family_name"])
    people["gn"] = names.clean_names(people["given_name"])
    people["fnt"] = names.transliterate_names(people["family_name"])
    people["gnt"] = names.transliterate_names(people["given_name"])
    people["dob_dcc"] = dates.normalise_dobs(people["dob"])

    dose_problem = latest["problem"].to_numpy(dtype=object)
    detail = np.full(len(people), None, dtype=object)
    no_name = (people["fnt"] == "").to_numpy() & (people["gnt"] == "").to_numpy()
    detail[no_name] = "no name with a transliterable character"
    detail[people["dob_dcc"].isna().to_numpy()] = (
        "date of birth is not a (partial) date in 1900-2099"
    )
    has_dose_problem = pd.notna(dose_problem)
    detail[has_dose_problem] = dose_problem[has_dose_problem]
    bad = pd.notna(detail)
    problems.append(_entries(people, bad, MAPPING_FAILED, detail[bad]))
    people = people.loc[~bad].reset_index(drop=True)

    people["dob"] = people["dob_dcc"]
    vdate = people["vaccination_date"].to_numpy().astype("datetime64[D]")
    people["dt"] = np.datetime_as_string(vdate, unit="D").astype(object)
    people["uvci"] = uvci.uvcis(
        people["order_id"], people["event_id"], cfg.uvci_key, cfg.country, cfg.uvci_issuer
    )
    payload_json = build_json(people, cfg)

    out = pa.table(
        {
            "order_id": pa.array(people["order_id"], pa.string()),
            "pid": pa.array(people["pid"], pa.string()),
            "uvci": pa.array(people["uvci"], pa.string()),
            "cert_type": pa.array(np.full(len(people), "v", dtype=object), pa.string()),
            "payload_json": payload_json,
            "person_id": pa.array(people["person_id"], pa.string()),
            "protected_identity": pa.array(people["protected_identity"], pa.bool_()),
            "address_street": pa.array(people["address_street"], pa.string()),
            "address_postcode": pa.array(people["address_postcode"], pa.string()),
            "address_city": pa.array(people["address_city"], pa.string()),
            "county": pa.array(people["county_code"], pa.string()),
            "age_band": pa.array(
                dates.age_bands(people["dob"], people["vaccination_date"]), pa.string()
            ),
            "product": pa.array(people["mp"], pa.string()),
            "dn": pa.array(people["dn"].to_numpy(), pa.int16()),
            "sd": pa.array(people["sd"].to_numpy(), pa.int16()),
            "vaccination_date": pa.array(vdate, pa.date32()),
        },
        schema=PAYLOADS,
    )
    quarantine = pd.concat(problems, ignore_index=True)
    return Mapped(payloads=out, quarantine=quarantine, product_table_version=table.version)
