"""UVCIs: the published Luhn mod N example, determinism, no personal data, uniqueness."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.uvci import (
    CHARSET,
    MAX_LEN,
    derive_key,
    is_valid_uvci,
    luhn_mod_n_check,
    uvci_for,
    uvcis,
)

KEY = derive_key(b"test-key")


def test_published_example_checks() -> None:
    # DCC schema FAQ "UVCI checksum" / examples/Luhn-Mod-N
    assert luhn_mod_n_check("URN:UVCI:01:NL:187/37512422923") == "Z"
    assert is_valid_uvci("URN:UVCI:01:NL:187/37512422923#Z")
    assert not is_valid_uvci("URN:UVCI:01:NL:187/37512422924#Z")
    assert not is_valid_uvci("URN:UVCI:01:NL:187/37512422923")


def test_shape_and_determinism() -> None:
    u = uvci_for("ord-1", "SVEVAC-1", KEY)
    assert u.startswith("URN:UVCI:01:SE:EHM/")
    assert len(u) <= MAX_LEN and is_valid_uvci(u)
    assert u == uvci_for("ord-1", "SVEVAC-1", KEY)
    assert u != uvci_for("ord-1", "SVEVAC-2", KEY)
    assert u != uvci_for("ord-2", "SVEVAC-1", KEY)
    assert u != uvci_for("ord-1", "SVEVAC-1", derive_key(b"other"))
    # the separator keeps ("a", "bc") and ("ab", "c") apart
    assert uvci_for("a", "bc", KEY) != uvci_for("ab", "c", KEY)


def test_carries_no_identifier_of_the_record() -> None:
    order, event, pnr = "ord-000123", "SVEVAC-0000009876", "199001011234"
    u = uvci_for(order, event, KEY)
    for secret in (order.upper(), event, pnr, "000123", "9876", "1990"):
        assert secret not in u


def test_vectorised_equals_scalar_and_keeps_index() -> None:
    orders = pd.Series([f"ord-{i}" for i in range(500)], index=range(1000, 1500))
    events = pd.Series([f"ev-{i % 7}" for i in range(500)], index=range(1000, 1500))
    out = uvcis(orders, events, KEY)
    assert list(out.index) == list(orders.index)
    assert out.tolist() == [uvci_for(o, e, KEY) for o, e in zip(orders, events, strict=True)]
    assert uvcis(orders.iloc[:0], events.iloc[:0], KEY).tolist() == []


def test_bad_issuer_segment_is_refused() -> None:
    with pytest.raises(ValueError, match="not allowed"):
        uvcis(pd.Series(["o"]), pd.Series(["e"]), KEY, issuer="eh-m")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30), st.text(max_size=30))
def test_every_uvci_validates(order_id: str, event_id: str) -> None:
    u = uvci_for(order_id, event_id, KEY)
    assert is_valid_uvci(u)
    assert set(u) <= set(CHARSET) | {"#"}


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=CHARSET, min_size=1, max_size=40),
    st.integers(min_value=0),
    st.sampled_from(CHARSET),
)
def test_check_character_catches_single_substitutions(body: str, pos: int, ch: str) -> None:
    i = pos % len(body)
    if body[i] == ch:
        return
    wrong = body[:i] + ch + body[i + 1 :]
    assert luhn_mod_n_check(wrong) != luhn_mod_n_check(body)


@pytest.mark.slow
def test_a_million_uvcis_are_unique_and_valid() -> None:
    n = 1_000_000
    orders = pd.Series([f"ord-{i:09d}" for i in range(n)])
    events = pd.Series([f"SVEVAC-{i % 997}" for i in range(n)])
    out = uvcis(orders, events, KEY)
    assert out.nunique() == n
    sample = out.iloc[:: n // 2000]
    assert all(is_valid_uvci(u) for u in sample)
