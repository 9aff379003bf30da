"""The COVID-19 vaccines the NVR may report, and the day each was authorised in the EU.

A vaccination dated before its product's authorisation is a registration error. Dates are
the European Commission's (conditional) marketing authorisations, and for the adapted
vaccines the authorisation of that variant (EMA EPARs, Union Register of medicinal
products). Names are compared case- and space-insensitively; the EU product numbers
(the DCC ``mp`` codes) are accepted as well, since the NVR may report either.

When the mapping table of transforms/ (issue 5) knows more names for the same products,
those are accepted as known too (see :func:`known_products`).
"""

from __future__ import annotations

import re
from functools import cache

# canonical product -> EU authorisation date
AUTHORISED: dict[str, str] = {
    "comirnaty": "2020-12-21",
    "comirnaty original/omicron ba.1": "2022-09-01",
    "comirnaty original/omicron ba.4-5": "2022-09-12",
    "comirnaty omicron xbb.1.5": "2023-08-31",
    "spikevax": "2021-01-06",
    "spikevax bivalent original/omicron ba.1": "2022-09-01",
    "spikevax bivalent original/omicron ba.4-5": "2022-10-20",
    "spikevax xbb.1.5": "2023-09-15",
    "vaxzevria": "2021-01-29",
    "jcovden": "2021-03-11",
    "nuvaxovid": "2021-12-20",
    "vidprevtyn beta": "2022-11-10",
    "valneva": "2022-06-24",
    "bimervax": "2023-03-30",
}

ALIASES: dict[str, str] = {
    "covid-19 vaccine moderna": "spikevax",
    "covid-19 vaccine astrazeneca": "vaxzevria",
    "covid-19 vaccine janssen": "jcovden",
    "covid-19 vaccine valneva": "valneva",
    "eu/1/20/1528": "comirnaty",
    "eu/1/20/1507": "spikevax",
    "eu/1/21/1529": "vaxzevria",
    "eu/1/20/1525": "jcovden",
    "eu/1/21/1618": "nuvaxovid",
    "eu/1/21/1624": "valneva",
    "eu/1/21/1580": "vidprevtyn beta",
    "eu/1/22/1709": "bimervax",
}

_SPACES = re.compile(r"\s+")


def normalise(name: str) -> str:
    """Lower case, single spaces, trimmed: the key products are compared by."""
    return _SPACES.sub(" ", name.strip().casefold())


@cache
def _mapping_table_names() -> frozenset[str]:
    """Product names that the mapping table of transforms/ knows (empty until it exists)."""
    try:
        from transforms import products  # type: ignore[attr-defined]
    except Exception:  # the mapping area may not be built yet, or fail to load
        return frozenset()
    for attr in ("known_products", "product_names", "nvr_names"):
        fn = getattr(products, attr, None)
        if callable(fn):
            try:
                return frozenset(normalise(str(n)) for n in fn())
            except Exception:
                return frozenset()
    return frozenset()


def canonical(name: str) -> str:
    """The catalogue key of a reported product name (the normalised name when unknown)."""
    key = normalise(name)
    return ALIASES.get(key, key)


def known_products() -> frozenset[str]:
    """Every canonical key that counts as a known product."""
    return frozenset(AUTHORISED) | frozenset(ALIASES.values()) | _mapping_table_names()


def authorisation_dates() -> dict[str, str]:
    return dict(AUTHORISED)
