"""dn/sd rules (docs/decisions/mapping.md) on single histories and vectorised."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from transforms.doses import dose_numbers, latest_doses
from transforms.products import load_products, normalise_vaccine


@pytest.mark.parametrize(
    ("n", "s", "expected"),
    [
        (1, 2, (1, 2)),  # first dose of a two-dose series
        (2, 2, (2, 2)),  # series complete
        (3, 2, (3, 3)),  # first booster after a two-dose series
        (4, 2, (4, 4)),  # second booster
        (1, 1, (1, 1)),  # Jcovden single dose
        (2, 1, (2, 1)),  # booster after Jcovden
        (3, 1, (3, 1)),  # second booster after Jcovden
    ],
)
def test_rules(n: int, s: int, expected: tuple[int, int]) -> None:
    assert dose_numbers(n, s) == expected


def test_booster_only_product_cannot_start_a_series() -> None:
    with pytest.raises(ValueError, match="booster-only"):
        dose_numbers(1, 0)


def _history(order: str, products: list[str], start: date = date(2021, 4, 1)) -> list[dict]:
    table = load_products().by_key
    return [
        {
            "order_id": order,
            "event_id": f"{order}-e{i}",
            "vaccination_date": start + timedelta(days=60 * i),
            "primary_doses": table[normalise_vaccine(p)].primary_doses,
            "product": p,
        }
        for i, p in enumerate(products)
    ]


CASES = {
    "one-of-two": (["Comirnaty"], 1, 2),
    "two-of-two": (["Spikevax", "Spikevax"], 2, 2),
    "mixed-primary": (["Vaxzevria", "Comirnaty"], 2, 2),
    "booster": (["Comirnaty", "Comirnaty", "Spikevax"], 3, 3),
    "bivalent-booster": (
        ["Comirnaty", "Comirnaty", "Comirnaty", "Comirnaty Original/Omicron BA.4-5"],
        4,
        4,
    ),
    "jcovden": (["Jcovden"], 1, 1),
    "jcovden-booster": (["Jcovden", "Comirnaty"], 2, 1),
    "jcovden-two-boosters": (["COVID-19 Vaccine Janssen", "Jcovden", "Spikevax"], 3, 1),
    "nuvaxovid": (["Nuvaxovid", "Nuvaxovid"], 2, 2),
}


def test_latest_dose_per_order_vectorised() -> None:
    rows = []
    for order, (products, _, _) in CASES.items():
        rows += _history(order, products)
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=3)  # order must not matter
    frame.index = frame.index + 100
    out = latest_doses(frame).set_index("order_id")
    for order, (products, dn, sd) in CASES.items():
        got = out.loc[order]
        assert (got["dn"], got["sd"]) == (dn, sd), order
        latest = frame.loc[got["row"]]
        assert latest["event_id"] == f"{order}-e{len(products) - 1}"
        assert latest["product"] == products[-1]
        assert got["problem"] is None or pd.isna(got["problem"])


def test_problems_are_reported_not_raised() -> None:
    rows = _history("b", ["Bimervax", "Comirnaty"]) + _history("many", ["Comirnaty"] * 10)
    out = latest_doses(pd.DataFrame(rows)).set_index("order_id")
    assert "booster-only" in out.loc["b", "problem"]
    assert "more than 9" in out.loc["many", "problem"]


def test_same_day_ties_are_broken_by_event_id() -> None:
    rows = _history("t", ["Comirnaty", "Comirnaty"])
    rows[1]["vaccination_date"] = rows[0]["vaccination_date"]
    out = latest_doses(pd.DataFrame(rows[::-1]))
    assert pd.DataFrame(rows[::-1]).loc[out["row"].iloc[0], "event_id"] == "t-e1"


def test_an_event_listed_twice_counts_once() -> None:
    rows = _history("d", ["Comirnaty", "Comirnaty"])
    frame = pd.DataFrame([*rows, dict(rows[1])])
    out = latest_doses(frame).set_index("order_id")
    assert (out.loc["d", "dn"], out.loc["d", "sd"]) == (2, 2)
