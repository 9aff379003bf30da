"""Schema by ``ver`` with formats, and value-set membership (active for issuance)."""

from __future__ import annotations

import copy
import json

import pytest

from signing import dcc
from tests.conftest import DCC

SE = json.loads((DCC / "testdata/SE/2DCode/raw/1.json").read_text())["JSON"]


def test_all_published_versions_are_vendored() -> None:
    shared = {p.name for p in (DCC / "schema/versions").iterdir() if p.is_dir()}
    assert shared <= set(dcc.schema_versions())
    assert dcc.CURRENT_VERSION in dcc.schema_versions()


def test_swedish_vector_is_valid() -> None:
    assert dcc.payload_errors(SE, active_only=False) == []


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda p: p["v"][0].__setitem__("dt", "2021-13-45"), "dt"),
        (lambda p: p["nam"].__setitem__("fnt", "löv"), "fnt"),
        (lambda p: p.__setitem__("ver", "9.9.9"), "unknown schema version"),
        (lambda p: p["v"][0].__setitem__("mp", "NOT-A-PRODUCT"), "not in value set"),
        (lambda p: p["v"][0].__setitem__("dn", "2"), "dn"),
    ],
)
def test_errors_name_the_field(mutate, needle) -> None:
    p = copy.deepcopy(SE)
    mutate(p)
    assert any(needle in e for e in dcc.payload_errors(p)), dcc.payload_errors(p)


def test_inactive_code_refused_for_issuance_only() -> None:
    inactive = [c for c, v in dcc.valueset("vaccine-medicinal-product").items() if not v["active"]]
    assert inactive, "value sets 2.12 mark some products inactive"
    p = copy.deepcopy(SE)
    p["v"][0]["mp"] = inactive[0]
    assert any("not active" in e for e in dcc.value_set_errors(p))
    assert dcc.value_set_errors(p, active_only=False) == []


def test_patch_versions_map_to_their_line() -> None:
    assert dcc.schema_version_for("1.3.0") == "1.3.0"
    assert dcc.schema_version_for("1.3.7") == "1.3.3"
    assert dcc.schema_version_for("2.0.0") is None
