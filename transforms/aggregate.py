"""Privacy-safe aggregates: small-count suppression with secondary (complementary) suppression.

Why: issuance statistics are published to analysts and beyond. A count of 1-4 people in a
county/age band/day cell can single people out, so such cells are withheld (*primary
suppression*, threshold ``t``, default 5). Withholding them is not enough when the table
also publishes totals: a row total minus the published cells of that row gives the withheld
cell back. So further cells are withheld (*secondary suppression*) until no withheld cell can
be computed from what is published.

The model (the usual one of statistical disclosure control, e.g. the tau-Argus handbook):

* A *cell* is a count keyed by a set of ``(dimension, value)`` pairs; a missing dimension
  means "all values" — so ``()`` is the grand total and ``(("county", "01"),)`` the county
  margin of every table that has a county dimension. Tables that share a dimension share
  their margin cells, which keeps linked tables consistent (a margin withheld in one table
  is withheld in all of them).
* A *relation* says a total equals the sum of its parts (a row, a column, the margins).
* Primary: every cell with ``0 < count < t`` (zeros count nobody and are published as 0,
  unless ``suppress_zeros``).
* Secondary, in two passes:
  1. the classic heuristic: while a relation has exactly one withheld member, also withhold
     its best other member (smallest non-zero interior count first, totals last);
  2. an exact audit: the published values fix a withheld cell iff its unit vector lies in
     the row space of the relation matrix restricted to the withheld cells (equivalently:
     every solution of the homogeneous system is zero at that cell). Any such cell gets a
     further complement from one of its relations; repeat until no withheld cell is fixed.
  Pass 2 catches what the heuristic misses (e.g. a withheld cell that is a "bridge"
  between two otherwise protected cycles of a 2-D table).

Interval (bounds) disclosure beyond exact recovery is out of scope; preferring non-zero
complements keeps the feasible ranges open in both directions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product as cartesian

import numpy as np

Key = tuple[tuple[str, str], ...]
ALL = "All"  # label of a margin in published tables

MAX_TRIES = 40  # candidates tried per fixed cell in pass 2 before taking the best-ranked one
PUBLISHED = ""
PRIMARY = "primary"
SECONDARY = "secondary"
LINKED = "linked"  # withheld because an equal count is withheld elsewhere


def key_of(**dims: object) -> Key:
    """A cell key from dimension values (order-independent; values as strings)."""
    return tuple(sorted((d, str(v)) for d, v in dims.items()))


@dataclass(frozen=True)
class Relation:
    """``total`` equals the sum of ``parts``."""

    total: Key
    parts: tuple[Key, ...]

    @property
    def members(self) -> tuple[Key, ...]:
        return (self.total, *self.parts)


@dataclass
class Suppressed:
    """The outcome of :func:`suppress`: every cell's true count and its status."""

    counts: dict[Key, int]
    status: dict[Key, str]
    relations: list[Relation] = field(default_factory=list)
    threshold: int = 5

    def published(self, key: Key) -> int | None:
        """The published count of a cell, or None if withheld."""
        return None if self.status[key] else self.counts[key]

    @property
    def withheld(self) -> set[Key]:
        return {k for k, s in self.status.items() if s}


def linked_cells(
    counts: Mapping[Key, int], tables: Sequence[Sequence[str]]
) -> tuple[dict[Key, int], list[Relation]]:
    """Cells and relations of linked tables computed from microdata-level counts.

    ``counts`` maps a key over *all* dimensions (one per combination that occurs) to its
    count; each entry of ``tables`` names the dimensions of one published table (1 or 2).
    Every table gets its full grid (combinations that do not occur are cells with 0), its
    margins and the grand total; margins with the same dimensions are shared.
    """
    micro = [(dict(k), int(v)) for k, v in counts.items()]
    aggregates: dict[tuple[str, ...], dict[Key, int]] = {}
    for dims in tables:
        dims = tuple(dims)
        agg = aggregates.setdefault(dims, {})
        for kd, v in micro:
            k = tuple(sorted((d, kd[d]) for d in dims))
            agg[k] = agg.get(k, 0) + v
    return table_cells(aggregates)


def table_cells(
    aggregates: Mapping[tuple[str, ...], Mapping[Key, int]],
) -> tuple[dict[Key, int], list[Relation]]:
    """As :func:`linked_cells`, from each table's own aggregate (dims → {key: count}), e.g.
    one ``GROUP BY`` per table — much cheaper than microdata. The tables must describe the
    same population: a shared margin or total that differs between tables is an error."""
    cells: dict[Key, int] = {}
    relations: list[Relation] = []
    seen_rel: set[tuple[Key, tuple[Key, ...]]] = set()

    def add_relation(total: Key, parts: Iterable[Key]) -> None:
        parts_t = tuple(sorted(parts))
        if (total, parts_t) not in seen_rel:
            seen_rel.add((total, parts_t))
            relations.append(Relation(total, parts_t))

    def put(key: Key, value: int) -> None:
        if key in cells and cells[key] != value:
            raise ValueError(f"tables disagree on cell {key}: {cells[key]} != {value}")
        cells[key] = value

    if not aggregates:
        return {(): 0}, []
    for dims, agg in aggregates.items():
        dims = tuple(dims)
        if not 1 <= len(dims) <= 2:
            raise ValueError(f"a published table has 1 or 2 dimensions, got {dims}")
        agg = {tuple(sorted(k)): int(v) for k, v in agg.items()}
        put((), sum(agg.values()))
        levels = {d: sorted({dict(k)[d] for k in agg}) for d in dims}
        if len(dims) == 1:
            (d,) = dims
            for v in levels[d]:
                put(((d, v),), agg.get(((d, v),), 0))
            add_relation((), [((d, v),) for v in levels[d]])
            continue
        a, b = dims

        def kk(va: str, vb: str, a: str = a, b: str = b) -> Key:
            return tuple(sorted(((a, va), (b, vb))))

        for va, vb in cartesian(levels[a], levels[b]):
            put(kk(va, vb), agg.get(kk(va, vb), 0))
        for va in levels[a]:
            put(((a, va),), sum(cells[kk(va, vb)] for vb in levels[b]))
            add_relation(((a, va),), [kk(va, vb) for vb in levels[b]])
        for vb in levels[b]:
            put(((b, vb),), sum(cells[kk(va, vb)] for va in levels[a]))
            add_relation(((b, vb),), [kk(va, vb) for va in levels[a]])
        add_relation((), [((a, va),) for va in levels[a]])
        add_relation((), [((b, vb),) for vb in levels[b]])
    return cells, relations


def _preference(key: Key, value: int) -> tuple[int, int, int]:
    """Lower is a better complement: non-zero before zero, interior before margins, small
    before large (least information lost)."""
    return (value == 0, -len(key), value)


def _ranked(candidates: set[Key], counts: Mapping[Key, int]) -> list[Key]:
    """Complement candidates, best first; the grand total only when nothing else is left."""
    return sorted(candidates, key=lambda m: (m == (), _preference(m, counts[m]), m))


def determined_cells(
    cells: Mapping[Key, int], relations: Sequence[Relation], withheld: set[Key]
) -> set[Key]:
    """The withheld cells whose value follows exactly from the published cells and the
    relations (linear algebra over the reals; the audit of pass 2)."""
    if not withheld:
        return set()
    order = sorted(withheld)
    index = {k: i for i, k in enumerate(order)}
    rows = []
    for r in relations:
        if not any(m in index for m in r.members):
            continue
        row = np.zeros(len(order))
        if r.total in index:
            row[index[r.total]] = -1.0
        for p in r.parts:
            if p in index:
                row[index[p]] += 1.0
        if row.any():
            rows.append(row)
    if not rows:
        return set()
    a = np.vstack(rows)
    _, s, vt = np.linalg.svd(a, full_matrices=True)
    rank = int((s > 1e-9 * max(1.0, s[0])).sum())
    null = vt[rank:].T  # columns span the null space
    if null.size == 0:
        return set(order)
    norms = np.linalg.norm(null, axis=1)
    return {order[i] for i in np.flatnonzero(norms < 1e-8)}


def suppress(
    cells: Mapping[Key, int],
    relations: Sequence[Relation],
    threshold: int = 5,
    suppress_zeros: bool = False,
    withhold: Iterable[Key] = (),
) -> Suppressed:
    """Primary and secondary suppression (see the module docstring). Pure; deterministic.
    ``withhold``: cells to withhold from the start whatever their value (``linked``), e.g.
    because an equal count is withheld in another table."""
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    for k, v in cells.items():
        if v < 0:
            raise ValueError(f"negative count {v} in cell {k}")
    counts = {k: int(v) for k, v in cells.items()}
    status = {
        k: PRIMARY if (0 < v < threshold or (suppress_zeros and v == 0)) else PUBLISHED
        for k, v in counts.items()
    }
    for k in withhold:
        if k in status and not status[k]:
            status[k] = LINKED
    by_member: dict[Key, list[Relation]] = {}
    for r in relations:
        for m in r.members:
            if m not in counts:
                raise ValueError(f"relation names unknown cell {m}")
            by_member.setdefault(m, []).append(r)

    def complement(rels: Iterable[Relation]) -> Key | None:
        candidates = {m for r in rels for m in r.members if not status[m]}
        if not candidates:
            return None
        return min(candidates, key=lambda m: (_preference(m, counts[m]), m))

    # Pass 1: no relation with exactly one withheld member.
    changed = True
    while changed:
        changed = False
        for r in relations:
            if sum(1 for m in r.members if status[m]) == 1:
                c = complement([r])
                if c is not None:
                    status[c] = SECONDARY
                    changed = True
    # Pass 2: exact audit. For a cell the published values still fix, withhold the best
    # candidate (by preference; the grand total last) that actually frees it, trying the
    # cell's own relations first, then every relation touching a withheld cell.
    while True:
        withheld = {k for k, s in status.items() if s}
        fixed = determined_cells(counts, relations, withheld)
        if not fixed:
            break
        target = min(fixed)
        own = _ranked(
            {m for r in by_member.get(target, []) for m in r.members if not status[m]}, counts
        )
        near = _ranked(
            {
                m
                for r in relations
                if any(status[x] for x in r.members)
                for m in r.members
                if not status[m]
            },
            counts,
        )
        if not near:
            break  # everything withheld; nothing can be fixed any more
        choice = None
        own_set = set(own)
        for c in [*own, *(m for m in near if m not in own_set)][:MAX_TRIES]:
            if target not in determined_cells(counts, relations, withheld | {c}):
                choice = c
                break
        status[choice if choice is not None else (own or near)[0]] = SECONDARY
    return Suppressed(counts, status, list(relations), threshold)


def suppress_tables(
    counts: Mapping[Key, int],
    tables: Sequence[Sequence[str]],
    threshold: int = 5,
    suppress_zeros: bool = False,
    withhold: Iterable[Key] = (),
) -> Suppressed:
    """:func:`linked_cells` then :func:`suppress`: the one call the reports make."""
    cells, relations = linked_cells(counts, tables)
    return suppress(cells, relations, threshold, suppress_zeros, withhold)


def suppress_together(
    problems: Sequence[tuple[Mapping[Key, int], Sequence[Relation]]],
    equal: Sequence[tuple[int, Key, int, Key]],
    threshold: int = 5,
) -> list[Suppressed]:
    """Suppress several problems (cells + relations each, from :func:`linked_cells` or
    :func:`table_cells`) whose cells are partly equal across problems — e.g. successful
    delivery attempts and certificates by outcome. ``equal`` lists ``(problem i, key in i,
    problem j, key in j)``. Whenever one side of a pair is withheld, the other side is
    withheld too and its problem suppressed again; repeated until nothing changes
    (monotone, so it ends)."""
    forced: list[set[Key]] = [set() for _ in problems]
    built = list(problems)
    while True:
        results = [
            suppress(cells, rels, threshold, withhold=forced[i])
            for i, (cells, rels) in enumerate(built)
        ]
        changed = False
        for i, ki, j, kj in equal:
            if ki not in results[i].status or kj not in results[j].status:
                continue
            if results[i].status[ki] and not results[j].status[kj]:
                forced[j].add(kj)
                changed = True
            elif results[j].status[kj] and not results[i].status[ki]:
                forced[i].add(ki)
                changed = True
        if not changed:
            return results


def table_rows(result: Suppressed, dims: Sequence[str], value: str = "count") -> list[dict]:
    """The published rows of one table (interior cells, margins and the grand total) as
    dicts: one column per dimension (``"All"`` for a margin), ``value`` (None if withheld)
    and ``suppressed`` ('' | 'primary' | 'secondary')."""
    dims = tuple(dims)
    keys = [k for k in result.counts if {d for d, _ in k} <= set(dims)]
    rows = []
    for k in sorted(keys, key=lambda k: (len(k) < len(dims), k)):
        kd = dict(k)
        row: dict[str, str | int | None] = {d: kd.get(d, ALL) for d in dims}
        row[value] = result.published(k)
        row["suppressed"] = result.status[k]
        rows.append(row)
    return rows
