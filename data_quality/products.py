"""Which vaccines the NVR may report, and from which day each was authorised in the EU.

One source of truth: the curated product table of transforms/ (transforms/data/products.csv,
maintained by data engineers, also used by the map step). If data quality kept its own
list, a product the suite accepts could still be unmappable (or the other way round).
Lookup keys are the table's: normalised names (trimmed, single spaces, case-folded) and
NPL-ids.
"""

from __future__ import annotations

from functools import cache


def canonical(name: str) -> str:
    """The lookup key of a reported vaccine string."""
    from transforms.products import normalise_vaccine

    return normalise_vaccine(name)


@cache
def known_products() -> frozenset[str]:
    """Every lookup key that counts as a known product (issuable or not)."""
    from transforms.products import known_products as table_keys

    return frozenset(table_keys())


@cache
def authorisation_dates() -> dict[str, str]:
    """Lookup key → EU authorisation date (YYYY-MM-DD)."""
    from transforms.products import authorised_from

    return dict(authorised_from())
