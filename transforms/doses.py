"""Dose number ``dn`` and series ``sd`` of the latest dose, from a person's NVR history.

The rules (sources in docs/decisions/mapping.md):

* The primary series length ``s`` is that of the product of the person's FIRST dose
  (a heterologous series, e.g. Vaxzevria then Comirnaty, completes the series that the
  first product started; the certificate shows the product of the latest dose).
* ``n`` = the number of doses in the history, counted in date order.
* Primary series (n ≤ s): ``dn = n``, ``sd = s`` — 1/2, 2/2, 1/1 (Jcovden).
* Booster after a single-dose primary series (s = 1, n > 1): ``dn = n``, ``sd = 1`` —
  2/1 for the first booster after Jcovden, 3/1 for the next (Commission Implementing
  Decision (EU) 2021/2301).
* Booster after a multi-dose primary series (s ≥ 2, n > s): ``dn = sd = n`` — 3/3, 4/4
  (same decision).
* A first dose of a booster-only product (s = 0) starts no series: the order cannot be
  mapped (quarantine ``mapping_failed``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

MAX_DOSES = 9  # the schema allows dn/sd 1..9


def dose_numbers(n: int, s: int) -> tuple[int, int]:
    """(dn, sd) of the n-th dose of a history whose first product has an s-dose series."""
    if s < 1:
        raise ValueError("the first dose is a booster-only product: no primary series")
    if n < 1:
        raise ValueError("no dose")
    if n <= s:
        return n, s
    if s == 1:
        return n, 1
    return n, n


def latest_doses(events: pd.DataFrame) -> pd.DataFrame:
    """One row per order: the latest event and its dn/sd.

    ``events`` needs ``order_id``, ``event_id``, ``vaccination_date`` and ``primary_doses``
    (of that event's product). Returns a frame indexed by order_id with ``row`` (the
    index label of the latest event in ``events``), ``doses`` (n), ``series`` (s), ``dn``,
    ``sd`` and ``problem`` (None, or why no certificate can be made).
    """
    import numpy as np
    import pandas as pd

    ordered = events[["order_id", "vaccination_date", "event_id", "primary_doses"]].sort_values(
        ["order_id", "vaccination_date", "event_id"], kind="stable"
    )
    ordered["_row"] = ordered.index
    grouped = ordered.groupby("order_id", sort=False)
    agg = grouped.agg(
        doses=("_row", "size"), series=("primary_doses", "first"), row=("_row", "last")
    )
    n = agg["doses"].to_numpy().astype(np.int64)
    s = agg["series"].to_numpy().astype(np.int64)

    dn = n.copy()
    sd = np.where(n <= s, s, np.where(s == 1, 1, n))
    problem = np.full(len(n), None, dtype=object)
    problem[dn > MAX_DOSES] = f"more than {MAX_DOSES} doses"
    problem[s < 1] = "first dose is a booster-only product (no primary series)"
    out = pd.DataFrame(
        {
            "row": agg["row"].to_numpy(),
            "doses": n.astype(np.int16),
            "series": s.astype(np.int16),
            "dn": np.clip(dn, 1, MAX_DOSES).astype(np.int16),
            "sd": np.clip(sd, 1, MAX_DOSES).astype(np.int16),
            "problem": problem,
        },
        index=agg.index,
    )
    return out
