"""The curated product table against the EU value sets, and the vectorised lookup."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from signing import dcc
from transforms import products as prod


def test_table_agrees_with_value_sets_and_encoding_instructions() -> None:
    table = prod.load_products()
    assert table.version != "unversioned"
    assert prod.table_problems(table) == []


def test_every_nvr_product_of_the_swedish_campaign_is_issuable() -> None:
    table = prod.load_products()
    for name in ("Comirnaty", "Spikevax", "Vaxzevria", "Jcovden", "Nuvaxovid"):
        p = table.by_key[prod.normalise_vaccine(name)]
        assert prod.is_issuable(p), name
        assert p.npl_id and len(p.npl_id) == 14
    assert table.by_key["jcovden"].primary_doses == 1
    assert table.by_key["comirnaty"].primary_doses == 2


def test_seeder_products_resolve_by_name_and_npl_id() -> None:
    """The register generator draws its products and NPL-ids from its own list; each must
    resolve to the same codes here (unknown ones must not)."""
    ref = pytest.importorskip("jobs.devtools.seed_names")
    table = prod.load_products()
    for name, (npl, _authorised, series) in ref.PRODUCTS.items():
        by_name = table.by_key[prod.normalise_vaccine(name)]
        by_npl = table.by_key[npl]
        assert by_name == by_npl
        assert by_name.primary_doses == series
    for name in ref.UNKNOWN_PRODUCTS:
        assert prod.normalise_vaccine(name) not in table.by_key


def test_resolve_vectorised_statuses() -> None:
    values = pd.Series(
        [
            "Comirnaty",
            "  comirnaty ",
            "20201222100013",
            "COVID-19 Vaccine Janssen",
            "NVX-CoV2373",
            "Vidprevtyn",
            "Sputnik V",
            None,
        ],
        index=range(10, 18),
    )
    out = prod.resolve_products(values)
    assert list(out.index) == list(range(10, 18))
    assert out["status"].tolist() == [
        "ok",
        "ok",
        "ok",
        "ok",
        "ok",
        "inactive_product",
        "unknown_product",
        "unknown_product",
    ]
    assert out["mp"].tolist()[:5] == [
        "EU/1/20/1528",
        "EU/1/20/1528",
        "EU/1/20/1528",
        "EU/1/20/1525",
        "EU/1/21/1618",
    ]
    assert out["primary_doses"].tolist()[:4] == [2, 2, 2, 1]
    assert (out.loc[out["status"] != "ok", "primary_doses"] == -1).all()


def test_a_code_the_eu_deactivates_stops_issuance(tmp_path: Path) -> None:
    """Whether a code is issuable comes from the value sets at run time: a table row whose
    code is inactive there (here the deprecated NVX-CoV2373 code) is inactive_product."""
    src = Path(prod.__file__).parent / "data" / "products.csv"
    text = src.read_text("utf-8").replace(
        "NVX-CoV2373,,Nuvaxovid,EU/1/21/1618,", "NVX-CoV2373,,NVX-CoV2373,NVX-CoV2373,"
    )
    path = tmp_path / "products.csv"
    path.write_text(text, "utf-8")
    table = prod.load_products(path)
    assert "NVX-CoV2373" not in dcc.active_codes("vaccine-medicinal-product")
    out = prod.resolve_products(pd.Series(["NVX-CoV2373", "Nuvaxovid"]), table)
    assert out["status"].tolist() == ["inactive_product", "ok"]


def test_bad_table_rows_are_named(tmp_path: Path) -> None:
    path = tmp_path / "products.csv"
    header = "nvr_name,npl_id,product,mp,ma,vp,primary_doses,authorised_from,note\n"
    path.write_text(header + "X,123,Comirnaty,EU/1/20/1528,ORG-100030215,1119349007,2,,\n")
    with pytest.raises(ValueError, match="row 1: npl_id must have 14 digits"):
        prod.load_products(path)
    path.write_text(
        header
        + "X,,Comirnaty,EU/1/20/1528,ORG-100030215,1119349007,2,,\n"
        + "x,,Spikevax,EU/1/20/1507,ORG-100031184,1119349007,2,,\n"
    )
    with pytest.raises(ValueError, match="two products"):
        prod.load_products(path)
    path.write_text(header + "Y,,Comirnaty,EU/1/20/1507,ORG-100030215,1119349007,2,,\n")
    problems = prod.table_problems(prod.load_products(path))
    assert any("encoding instructions say 'EU/1/20/1528'" in p for p in problems)


def test_known_products_and_authorisation_dates_cover_names_and_npl_ids() -> None:
    known = prod.known_products()
    assert {"comirnaty", "covid-19 vaccine janssen", "20201222100013", "vidprevtyn"} <= known
    assert "sputnik v" not in known
    dates = prod.authorised_from()
    assert dates["20210312100015"] == dates["jcovden"] == "2021-03-11"
    assert "vidprevtyn" not in dates  # never authorised
