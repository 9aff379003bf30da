"""NVR product → EU value-set codes, from the curated table ``transforms/data/products.csv``.

The NVR receives the vaccine as a product name (in several historical spellings) or as an
NPL-id. The table maps each to ``mp``/``ma``/``vp`` and the product's primary-series
length. Whether a code may be *issued* is decided at run time by the EU value sets' active
flag, so a code the EU deprecates stops issuance without a table edit: the record is
quarantined as ``inactive_product``; a vaccine the table does not know is
``unknown_product``. Neither is a crash.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from signing import dcc

if TYPE_CHECKING:
    import pandas as pd

OK = "ok"
UNKNOWN = "unknown_product"
INACTIVE = "inactive_product"

_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class Product:
    """One row of the product table."""

    nvr_name: str
    npl_id: str | None
    product: str  # the product's name in the EU encoding instructions
    mp: str
    ma: str
    vp: str
    primary_doses: int  # 0 = booster only
    authorised_from: str | None
    note: str


@dataclass(frozen=True)
class ProductTable:
    """The loaded table plus its version (from the ``# version:`` header line)."""

    version: str
    products: tuple[Product, ...]

    @property
    def by_key(self) -> dict[str, Product]:
        """Lookup key (normalised name or NPL-id) → product."""
        return _index(self)


def normalise_vaccine(value: str) -> str:
    """The lookup key of an NVR vaccine string: trimmed, whitespace collapsed, case-folded."""
    return _WS.sub(" ", value.strip()).casefold()


@cache
def _index(table: ProductTable) -> dict[str, Product]:
    index: dict[str, Product] = {}
    for p in table.products:
        for key in (normalise_vaccine(p.nvr_name), p.npl_id):
            if not key:
                continue
            if key in index and index[key] != p:
                raise ValueError(f"product table: key {key!r} maps to two products")
            index[key] = p
    return index


def _default_path() -> Path:
    return Path(str(resources.files("transforms").joinpath("data", "products.csv")))


@cache
def load_products(path: Path | None = None) -> ProductTable:
    """Read and check the product table; raises ValueError naming the bad row."""
    path = path or _default_path()
    version = "unversioned"
    lines = []
    with open(path, encoding="utf-8", newline="") as fh:
        for line in fh:
            if line.startswith("#"):
                m = re.match(r"#\s*version:\s*(\S+)", line)
                if m:
                    version = m.group(1)
                continue
            lines.append(line)
    products = []
    for i, row in enumerate(csv.DictReader(lines), start=1):
        try:
            p = Product(
                nvr_name=row["nvr_name"].strip(),
                npl_id=(row["npl_id"] or "").strip() or None,
                product=row["product"].strip(),
                mp=row["mp"].strip(),
                ma=row["ma"].strip(),
                vp=row["vp"].strip(),
                primary_doses=int(row["primary_doses"]),
                authorised_from=(row["authorised_from"] or "").strip() or None,
                note=(row.get("note") or "").strip(),
            )
        except (KeyError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path.name} data row {i}: {exc}") from exc
        if p.npl_id is not None and not re.fullmatch(r"\d{14}", p.npl_id):
            raise ValueError(f"{path.name} data row {i}: npl_id must have 14 digits")
        products.append(p)
    table = ProductTable(version=version, products=tuple(products))
    _index(table)  # raises on ambiguous keys
    return table


def known_products(table: ProductTable | None = None) -> frozenset[str]:
    """Every lookup key the table knows — normalised names and NPL-ids — whether issuable
    or not (for the nvr_extract suite's ``unknown_product`` check)."""
    return frozenset((table or load_products()).by_key)


def authorised_from(table: ProductTable | None = None) -> dict[str, str]:
    """Lookup key (normalised name or NPL-id) → EU authorisation date (YYYY-MM-DD), for the
    ``before_authorisation`` check; keys without a date are left out."""
    return {
        k: p.authorised_from
        for k, p in (table or load_products()).by_key.items()
        if p.authorised_from
    }


def table_problems(table: ProductTable | None = None) -> list[str]:
    """Rows that disagree with the EU value sets or encoding instructions (empty = good)."""
    table = table or load_products()
    problems = []
    instructions = dcc.encoding_instructions()
    for p in table.products:
        where = f"{p.nvr_name!r}"
        for field, vs in (
            ("mp", "vaccine-medicinal-product"),
            ("ma", "vaccine-mah-manf"),
            ("vp", "vaccine-prophylaxis"),
        ):
            if getattr(p, field) not in dcc.valueset(vs):
                problems.append(f"{where}: {field} {getattr(p, field)!r} not in {vs}")
        ins = instructions.get(p.product)
        if ins is None:
            problems.append(f"{where}: product {p.product!r} not in the encoding instructions")
            continue
        code = ins["vaccine-code"].removesuffix(" (deprecated)")
        if code != p.mp:
            problems.append(f"{where}: mp {p.mp!r} but encoding instructions say {code!r}")
        if ins["vaccine-manufacturer"] != p.ma:
            problems.append(
                f"{where}: ma {p.ma!r} but instructions say {ins['vaccine-manufacturer']!r}"
            )
        if p.vp not in ins["sct-codes"]:
            problems.append(f"{where}: vp {p.vp!r} not among {ins['sct-codes']}")
        if not 0 <= p.primary_doses <= 3:
            problems.append(f"{where}: primary_doses {p.primary_doses} out of 0..3")
    return problems


def is_issuable(p: Product) -> bool:
    """All three codes active in the current value sets."""
    return (
        p.mp in dcc.active_codes("vaccine-medicinal-product")
        and p.ma in dcc.active_codes("vaccine-mah-manf")
        and p.vp in dcc.active_codes("vaccine-prophylaxis")
    )


def resolve_products(vaccine: pd.Series, table: ProductTable | None = None) -> pd.DataFrame:
    """Vectorised lookup of NVR vaccine strings (names or NPL-ids).

    Returns a frame aligned with ``vaccine``: ``status`` (ok | unknown_product |
    inactive_product), ``mp``, ``ma``, ``vp``, ``primary_doses`` (-1 when not ok) and
    ``authorised_from``. Only distinct values are looked up, so the cost is per product,
    not per row.
    """
    import pandas as pd

    table = table or load_products()
    index = table.by_key
    codes = pd.Series(pd.Categorical(vaccine.astype("string")))
    cats = list(codes.cat.categories)
    rows: list[tuple[str, str | None, str | None, str | None, int, str | None]] = []
    for value in cats:
        p = index.get(normalise_vaccine(value)) if value is not None else None
        if p is None:
            rows.append((UNKNOWN, None, None, None, -1, None))
        elif not is_issuable(p):
            rows.append((INACTIVE, p.mp, p.ma, p.vp, -1, p.authorised_from))
        else:
            rows.append((OK, p.mp, p.ma, p.vp, p.primary_doses, p.authorised_from))
    rows.append((UNKNOWN, None, None, None, -1, None))  # for missing values (code -1)
    lookup = pd.DataFrame(
        rows, columns=["status", "mp", "ma", "vp", "primary_doses", "authorised_from"]
    )
    pos = codes.cat.codes.to_numpy().copy()
    pos[pos < 0] = len(cats)
    out = lookup.iloc[pos].reset_index(drop=True)
    out.index = vaccine.index
    out["primary_doses"] = out["primary_doses"].astype("int16")
    return out
