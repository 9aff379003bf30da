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
    (of that event's product). Returns a frame (orders in order of first appearance) with
    ``order_id``, ``row`` (the index label of the latest event in ``events``), ``doses`` (n),
    ``series`` (s), ``dn``, ``sd`` and ``problem`` (None, or why no certificate can be
    made). Events of an order are ordered by date, ties by event id; an event id listed twice
    counts once. Pure numpy/Arrow after one factorisation of the ids: no per-group Python.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    order_code, order_uniques = pd.factorize(events["order_id"], sort=False)
    days = pd.to_datetime(events["vaccination_date"]).to_numpy().astype("datetime64[D]")
    keys = pa.table(
        {
            "o": pa.array(order_code),
            "d": pa.array(days.astype(np.int64)),
            "e": pa.array(events["event_id"], pa.string()),
        }
    )
    perm = pc.sort_indices(
        keys, sort_keys=[("o", "ascending"), ("d", "ascending"), ("e", "ascending")]
    ).to_numpy()
    codes = order_code[perm]
    n_orders = len(order_uniques)
    starts = (
        np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        if len(codes)
        else np.array([], dtype=np.int64)
    )
    ends = np.r_[starts[1:], len(codes)] - 1 if len(codes) else np.array([], dtype=np.int64)
    # the same event listed twice is one dose, not two
    repeated = np.zeros(len(codes), dtype=bool)
    if len(codes) > 1:
        ev = keys["e"].take(perm)
        same = pc.equal(ev.slice(1), ev.slice(0, len(codes) - 1)).to_numpy(zero_copy_only=False)
        repeated[1:] = (codes[1:] == codes[:-1]) & same
    n = (
        np.add.reduceat((~repeated).astype(np.int64), starts)
        if len(codes)
        else np.array([], dtype=np.int64)
    )
    primary = events["primary_doses"].to_numpy().astype(np.int64)
    s = primary[perm[starts]]
    labels = events.index.to_numpy()

    dn = n.copy()
    sd = np.where(n <= s, s, np.where(s == 1, 1, n))
    problem = np.full(n_orders, None, dtype=object)
    problem[dn > MAX_DOSES] = f"more than {MAX_DOSES} doses"
    problem[s < 1] = "first dose is a booster-only product (no primary series)"
    return pd.DataFrame(
        {
            "order_id": np.asarray(order_uniques, dtype=object),
            "row": labels[perm[ends]],
            "doses": n.astype(np.int16),
            "series": s.astype(np.int16),
            "dn": np.clip(dn, 1, MAX_DOSES).astype(np.int16),
            "sd": np.clip(sd, 1, MAX_DOSES).astype(np.int16),
            "problem": pd.Series(problem, dtype=object),
        }
    )
