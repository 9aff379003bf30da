"""The synthetic register's generator: persons, NVR histories and orders, chunk by chunk.

Fills the sources database with a population register, NVR vaccination histories that look
like Sweden 2021-2023, and certificate orders with every consent situation; injects defects
of named kinds at a known rate and writes a manifest with the truth (order ids and event ids
only, never identity data) to ``<data_dir>/seed-manifest.json``.

Deterministic for a seed: persons are generated in fixed-size chunks, each with its own
random stream derived from (seed, chunk number). Generation is vectorised with numpy and
loaded in bulk: COPY on PostgreSQL, executemany in big transactions on SQLite.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from data_quality.reasons import GENERATOR_DEFECT_KINDS
from jobs.devtools import seed_names as ref

CHUNK = 50_000  # persons per chunk: fixed, part of the determinism contract
AS_OF = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)  # orders are placed in the weeks before this
EPOCH = np.datetime64("1970-01-01", "D")
LAST_VACCINATION = np.datetime64("2023-12-31", "D")

DEFECT_KINDS = GENERATOR_DEFECT_KINDS  # the reason codes data quality quarantines them under
ORDER_CATEGORIES = (
    "consented",
    "reconsented",
    "no_vaccination",
    "duplicate_order",
    "no_consent",
    "withdrawn",
    "fulfilled",
)
# Shares of vaccinated persons by what they did in the e-service (rest: consented).
_ORDER_SHARES = {
    "none": 0.08,
    "no_consent": 0.015,
    "withdrawn": 0.01,
    "reconsented": 0.003,
    "fulfilled": 0.01,
    "duplicate_order": 0.01,
}
_UNVACCINATED_ORDERING = 0.03  # share of unvaccinated persons who order anyway

PRODUCT_NAMES = tuple(ref.PRODUCTS)
_P = {name: i for i, name in enumerate(PRODUCT_NAMES)}
_AUTH = np.array(
    [(np.datetime64(ref.PRODUCTS[n][1], "D") - EPOCH).astype(np.int64) for n in PRODUCT_NAMES],
    dtype=np.int64,
)


@dataclass
class Manifest:
    """The truth about a seeded register (counts; order and event ids of injected defects)."""

    seed: int
    persons: int
    defect_rate: float
    url: str = ""
    events: int = 0
    orders: int = 0
    persons_without_order: int = 0
    order_categories: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(ORDER_CATEGORIES, 0)
    )
    expected_extract: dict[str, int] = field(default_factory=dict)
    defects: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {k: [] for k in DEFECT_KINDS}
    )
    nvr_snapshot_at: str = ""
    seconds: float = 0.0

    @property
    def defect_orders(self) -> int:
        return sum(len(v) for v in self.defects.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["defect_orders"] = self.defect_orders
        return d


def _days(s: str) -> int:
    return int((np.datetime64(s, "D") - EPOCH).astype(np.int64))


def _luhn_check(nine: np.ndarray) -> np.ndarray:
    """Luhn digits for an int64 array of 9-digit numbers YYMMDDNNN."""
    digits = np.stack([(nine // 10 ** (8 - i)) % 10 for i in range(9)], axis=1)
    digits[:, ::2] *= 2
    digits = np.where(digits > 9, digits - 9, digits)
    return (10 - digits.sum(axis=1) % 10) % 10


def _pick(rng: np.random.Generator, options: tuple | list, n: int, p=None) -> np.ndarray:
    arr = np.array(options, dtype=object)
    if p is not None:
        p = np.asarray(p, dtype=float)
        p = p / p.sum()
    return arr[rng.choice(len(arr), size=n, p=p)]


def _join(a: np.ndarray, sep: str, b: np.ndarray) -> np.ndarray:
    return np.array(
        [x + sep + y for x, y in zip(a.tolist(), b.tolist(), strict=True)], dtype=object
    )


class Generator:
    """Holds the state that spans chunks (serial counters, id sequences, defect quota)."""

    def __init__(self, seed: int, defect_rate: float) -> None:
        self.seed = seed
        self.defect_rate = defect_rate
        self.serials = np.zeros(140 * 12 * 100, dtype=np.int32)
        self.next_order = 1
        self.next_event = 1
        self.eligible_seen = 0
        self.defects_made = 0
        self.kind_cursor = 0
        self.duplicate_persons: list[int] = []
        counties = ref.COUNTIES
        self.county_codes = np.array([c[0] for c in counties], dtype=object)
        self.county_weights = np.array([c[2] for c in counties], dtype=float)
        self.county_weights /= self.county_weights.sum()
        self.municipalities = [[m.split(" ", 1) for m in c[3].split("|")] for c in counties]
        self.region_org = [self._org_number(232100 * 1000 + 10 + i) for i in range(len(counties))]
        self.county_system = [
            ref.REPORTING_SYSTEMS[(i * 5 + 3) % len(ref.REPORTING_SYSTEMS)]
            for i in range(len(counties))
        ]

    @staticmethod
    def _org_number(nine: int) -> str:
        return f"{nine:09d}{int(_luhn_check(np.array([nine]))[0])}"

    # --- persons -----------------------------------------------------------------------
    def persons(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        years = np.arange(1916, 2010)
        w = np.where(years < 1926, 0.01, np.where(years < 1945, 0.15 + (years - 1926) * 0.045, 1.0))
        w = np.where(years > 2002, 0.8, w)
        year = rng.choice(years, size=n, p=w / w.sum())
        start = np.array(
            [
                (np.datetime64(f"{y}-01-01", "D") - EPOCH).astype(np.int64)
                for y in range(1916, 2010)
            ],
            dtype=np.int64,
        )[year - 1916]
        length = np.where((year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0)), 366, 365)
        born = start + (rng.random(n) * length).astype(np.int64)
        bdate = (EPOCH + born).astype("datetime64[D]")
        months = bdate.astype("datetime64[M]")
        month = (months.astype(np.int64) % 12) + 1
        day = (bdate - months.astype("datetime64[D]")).astype(np.int64) + 1

        coord = rng.random(n) < 0.02
        unknown_day = coord & (rng.random(n) < 0.05)
        dd = np.where(coord, np.where(unknown_day, 60, day + 60), day)
        key = ((year - 1900) * 12 + (month - 1)) * 100 + dd
        order = np.argsort(key, kind="stable")
        sk = key[order]
        first = np.r_[0, np.flatnonzero(sk[1:] != sk[:-1]) + 1]
        group_start = np.repeat(first, np.diff(np.r_[first, n]))
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n) - group_start
        idx = self.serials[key] + rank
        if idx.max(initial=0) >= 1000:
            raise RuntimeError("more than 1000 persons share a birth date; lower --persons")
        np.add.at(self.serials, key, 1)
        serial = (idx * 337 + (key * 7919) % 1000) % 1000
        nine = (year % 100) * 10_000_000 + month * 100_000 + dd * 1000 + serial
        check = _luhn_check(nine)
        pnr_num = year * 10**8 + month * 10**6 + dd * 10**4 + serial * 10 + check
        person_id = pnr_num.astype("U12").astype(object)
        male = (serial % 10) % 2 == 1

        # names
        foreign = rng.random(n) < 0.12
        given = np.where(
            male, _pick(rng, ref.GIVEN_MALE, n), _pick(rng, ref.GIVEN_FEMALE, n)
        ).astype(object)
        second = np.where(male, _pick(rng, ref.GIVEN_MALE, n), _pick(rng, ref.GIVEN_FEMALE, n))
        double = (rng.random(n) < 0.3) & (second != given)
        given = np.where(double, _join(given, " ", second), given)
        family = _pick(rng, ref.FAMILY, n)
        barrel = rng.random(n) < 0.04
        family = np.where(barrel, _join(family, "-", _pick(rng, ref.FAMILY, n)), family)
        origins = list(ref.FOREIGN_WEIGHTS)
        origin = _pick(rng, origins, n, p=list(ref.FOREIGN_WEIGHTS.values()))
        for o in origins:
            m = foreign & (origin == o)
            k = int(m.sum())
            if k:
                gs, fs = ref.FOREIGN[o]
                given[m] = _pick(rng, gs, k)
                family[m] = _pick(rng, fs, k)
        long_ = rng.random(n) < 0.005
        given[long_] = _pick(rng, ref.LONG_GIVEN, int(long_.sum()))
        long_f = rng.random(n) < 0.005
        family[long_f] = _pick(rng, ref.LONG_FAMILY, int(long_f.sum()))

        dob = bdate.astype("U10").astype(object)
        dob[unknown_day] = bdate[unknown_day].astype("datetime64[M]").astype("U7").astype(object)

        county = rng.choice(len(self.county_codes), size=n, p=self.county_weights)
        muni_idx = (rng.random(n) * np.array([len(self.municipalities[c]) for c in county])).astype(
            int
        )
        city = np.array(
            [self.municipalities[c][m][1] for c, m in zip(county, muni_idx, strict=True)],
            dtype=object,
        )
        muni = np.array(
            [self.municipalities[c][m][0] for c, m in zip(county, muni_idx, strict=True)],
            dtype=object,
        )
        street = _join(
            _pick(rng, ref.STREETS, n), " ", rng.integers(1, 150, n).astype("U3").astype(object)
        )
        flat = rng.random(n) < 0.4
        street = np.where(
            flat,
            _join(street, " lgh ", rng.integers(1001, 1705, n).astype("U4").astype(object)),
            street,
        )
        pc_first = np.array([int(self.county_codes[c]) % 9 + 1 for c in county])
        postcode = _join(
            (pc_first * 100 + rng.integers(0, 100, n)).astype("U3").astype(object),
            " ",
            np.char.zfill(rng.integers(0, 100, n).astype("U2"), 2).astype(object),
        )
        protected = rng.random(n) < 0.003
        for arr in (street, postcode, city):
            arr[protected] = None
        out = {
            "person_id": person_id,
            "given_name": given,
            "family_name": family,
            "dob": dob,
            "address_street": street,
            "address_postcode": postcode,
            "address_city": city,
            "protected_identity": protected,
            # not stored: used for histories and defects
            "_year": year,
            "_coord": coord,
            "_county": county,
            "_muni": muni,
            "_born": born,
        }
        # Rows in identity-number order: the registers' primary-key B-trees are filled in
        # order (fast bulk load) and a person's NVR events end up adjacent on disk.
        by_pnr = np.argsort(person_id.astype("U12"), kind="stable")
        return {k: v[by_pnr] for k, v in out.items()}

    # --- vaccination histories ------------------------------------------------------------
    def histories(
        self, rng: np.random.Generator, p: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        n = len(p["person_id"])
        age = 2021 - p["_year"]
        grp = np.select([age >= 80, age >= 65, age >= 18], [0, 1, 2], 3)
        vaccinated = rng.random(n) > np.array([0.03, 0.04, 0.12, 0.4])[grp]

        def window(lo: list[str], hi: list[str]) -> np.ndarray:
            a = np.array([_days(x) for x in lo])[grp]
            b = np.array([_days(x) for x in hi])[grp]
            return a + (rng.random(n) * (b - a + 1)).astype(np.int64)

        slots = 7
        date = np.zeros((n, slots), dtype=np.int64)
        prod = np.zeros((n, slots), dtype=np.int64)
        has = np.zeros((n, slots), dtype=bool)

        # dose 1
        date[:, 0] = window(
            ["2021-01-04", "2021-02-15", "2021-04-15", "2021-08-15"],
            ["2021-03-15", "2021-05-10", "2021-08-31", "2021-11-30"],
        )
        r = rng.random(n)
        p1 = np.where(
            grp <= 1,
            np.select([r < 0.85, r < 0.95], [_P["Comirnaty"], _P["Spikevax"]], _P["Vaxzevria"]),
            np.select(
                [r < 0.72, r < 0.88, r < 0.97],
                [_P["Comirnaty"], _P["Spikevax"], _P["Vaxzevria"]],
                _P["Jcovden"],
            ),
        )
        p1 = np.where(grp == 3, _P["Comirnaty"], p1)
        date[:, 0] = np.where(
            p1 == _P["Vaxzevria"], np.maximum(date[:, 0], _days("2021-02-15")), date[:, 0]
        )
        date[:, 0] = np.where(
            p1 == _P["Jcovden"], np.maximum(date[:, 0], _days("2021-05-03")), date[:, 0]
        )
        date[:, 0] = np.maximum(date[:, 0], _AUTH[p1] + 7)  # never before authorisation
        prod[:, 0] = p1
        has[:, 0] = vaccinated

        # dose 2 of the primary series (Jcovden: single dose)
        gap = np.select(
            [p1 == _P["Comirnaty"], p1 == _P["Spikevax"], p1 == _P["Vaxzevria"]],
            [np.where(grp <= 1, 21, 42), np.full(n, 28), np.full(n, 70)],
            56,
        )
        gap = np.where(grp == 3, 56, gap) + rng.integers(0, 22, n)
        date[:, 1] = date[:, 0] + gap
        hetero = (p1 == _P["Vaxzevria"]) & (grp == 2) & (rng.random(n) < 0.9)
        prod[:, 1] = np.where(hetero, _P["Comirnaty"], p1)
        has[:, 1] = has[:, 0] & (p1 != _P["Jcovden"]) & (rng.random(n) < 0.96)

        # boosters: (window per group, share per group, products and shares, minimum gap)
        mrna = ([_P["Comirnaty"], _P["Spikevax"]], [0.72, 0.28])
        boosters = (
            (
                ["2021-09-15", "2021-11-01", "2022-01-01", "2099-01-01"],
                ["2021-11-15", "2021-12-31", "2022-03-15", "2099-01-01"],
                [0.92, 0.88, 0.6, 0.0],
                ([_P["Comirnaty"], _P["Spikevax"], _P["Nuvaxovid"]], [0.7, 0.27, 0.03]),
                120,
            ),
            (
                ["2022-04-01", "2022-05-01", "2022-05-01", "2099-01-01"],
                ["2022-05-31", "2022-06-30", "2022-06-30", "2099-01-01"],
                [0.85, 0.6, 0.03, 0.0],
                mrna,
                90,
            ),
            (
                ["2022-09-15", "2022-10-01", "2022-10-01", "2099-01-01"],
                ["2022-11-30", "2022-12-15", "2022-12-15", "2099-01-01"],
                [0.75, 0.7, 0.08, 0.0],
                (
                    [
                        _P["Comirnaty Original/Omicron BA.4-5"],
                        _P["Spikevax bivalent Original/Omicron BA.4-5"],
                    ],
                    [0.75, 0.25],
                ),
                90,
            ),
            (
                ["2023-04-01", "2023-05-01", "2099-01-01", "2099-01-01"],
                ["2023-05-31", "2023-05-31", "2099-01-01", "2099-01-01"],
                [0.6, 0.0, 0.0, 0.0],
                mrna,
                90,
            ),
            (
                ["2023-09-15", "2023-10-01", "2023-10-15", "2099-01-01"],
                ["2023-11-30", "2023-11-30", "2023-12-15", "2099-01-01"],
                [0.55, 0.5, 0.02, 0.0],
                ([_P["Comirnaty"]], [1.0]),
                90,
            ),
        )
        prev_date = np.where(has[:, 1], date[:, 1], date[:, 0])
        prev_has = has[:, 0]
        for i, (lo, hi, share, (prods, pshare), min_gap) in enumerate(boosters, start=2):
            d = np.maximum(window(lo, hi), prev_date + min_gap)
            pr = np.array(prods)[rng.choice(len(prods), size=n, p=pshare)]
            d = np.maximum(d, _AUTH[pr] + 7)
            ok = (
                prev_has
                & (rng.random(n) < np.array(share)[grp])
                & (d <= int((LAST_VACCINATION - EPOCH).astype(np.int64)))
            )
            date[:, i], prod[:, i], has[:, i] = d, pr, ok
            prev_date = np.where(ok, d, prev_date)
            prev_has = ok

        dose = np.cumsum(has, axis=1)
        rows, cols = np.nonzero(has)
        m = len(rows)
        ev_county = np.where(
            rng.random(m) < 0.92,
            p["_county"][rows],
            rng.choice(len(self.county_codes), size=m, p=self.county_weights),
        )
        muni_idx = (
            rng.random(m) * np.array([len(self.municipalities[c]) for c in ev_county])
        ).astype(int)
        muni = np.array(
            [self.municipalities[c][k][0] for c, k in zip(ev_county, muni_idx, strict=True)],
            dtype=object,
        )
        private = rng.random(m) < 0.15
        priv = rng.integers(0, len(ref.PRIVATE_PROVIDERS), m)
        provider = np.array(
            [
                ref.PRIVATE_PROVIDERS[k][0] if pv else f"Region {ref.COUNTIES[c][1]}"
                for pv, k, c in zip(private, priv, ev_county, strict=True)
            ],
            dtype=object,
        )
        org = np.array(
            [
                ref.PRIVATE_PROVIDERS[k][1] if pv else self.region_org[c]
                for pv, k, c in zip(private, priv, ev_county, strict=True)
            ],
            dtype=object,
        )
        system = np.array([self.county_system[c] for c in ev_county], dtype=object)
        other = rng.random(m) < 0.2
        system[other] = _pick(rng, ref.REPORTING_SYSTEMS, int(other.sum()))
        pr = prod[rows, cols]
        vdate = date[rows, cols]
        name = np.array(PRODUCT_NAMES, dtype=object)[pr]
        npl = np.array([ref.PRODUCTS[x][0] for x in PRODUCT_NAMES], dtype=object)[pr]
        vaccine = np.where(rng.random(m) < 0.3, npl, name)
        prefix = np.array([ref.BATCH_PREFIX[x] for x in PRODUCT_NAMES], dtype=object)[pr]
        batch = _join(prefix, "", (1000 + (vdate // 9) % 9000).astype("U4").astype(object))
        lag = np.select([rng.random(m) < 0.7, rng.random(m) < 0.66], [0, 1], rng.integers(2, 11, m))
        reported = (vdate + lag) * 86400 + rng.integers(8 * 3600, 18 * 3600, m)
        ids = np.arange(self.next_event, self.next_event + m, dtype=np.int64)
        self.next_event += m
        return {
            "id": ids,
            "person_id": p["person_id"][rows],
            "vaccination_date": vdate,
            "vaccine": vaccine,
            "batch_number": batch,
            "dose_number": dose[rows, cols].astype(np.int16),
            "care_provider": provider,
            "care_provider_org": org,
            "county_code": self.county_codes[ev_county],
            "municipality_code": muni,
            "reporting_system": system,
            "reporting_ref": np.char.zfill(ids.astype("U12"), 12).astype(object),
            "reported_at": reported,
            "_person": rows,
            "_product": pr,
            "_vaccinated": vaccinated,
        }

    # --- orders ---------------------------------------------------------------------------
    def orders(
        self, rng: np.random.Generator, p: dict[str, np.ndarray], ev: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Orders of the chunk, the category of each person, and per order the person index."""
        n = len(p["person_id"])
        vaccinated = ev["_vaccinated"]
        r = rng.random(n)
        cat = np.full(n, "consented", dtype=object)
        edge = 0.0
        for name, share in _ORDER_SHARES.items():
            cat[(r >= edge) & (r < edge + share)] = name
            edge += share
        cat[~vaccinated] = np.where(
            rng.random(int((~vaccinated).sum())) < _UNVACCINATED_ORDERING, "no_vaccination", "none"
        )
        who = np.flatnonzero(cat != "none")
        dup = np.flatnonzero(cat == "duplicate_order")
        as_of = int(AS_OF.timestamp())
        k = len(who)
        c = cat[who]
        requested = as_of - rng.integers(6 * 86400, 50 * 86400, k)
        requested = np.where(
            c == "fulfilled", as_of - rng.integers(100 * 86400, 200 * 86400, k), requested
        )
        consent = requested + rng.integers(5, 600, k)
        withdrawn = np.full(k, -1, dtype=np.int64)
        w = c == "withdrawn"
        withdrawn[w] = consent[w] + rng.integers(3600, 5 * 86400, int(w.sum()))
        rc = c == "reconsented"
        withdrawn[rc] = consent[rc] + rng.integers(3600, 2 * 86400, int(rc.sum()))
        consent[rc] = withdrawn[rc] + rng.integers(3600, 2 * 86400, int(rc.sum()))
        consent = np.where(c == "no_consent", -1, consent)
        fulfilled = c == "fulfilled"
        # the second orders of people who ordered twice, a little later
        d_req = requested[np.searchsorted(who, dup)] + rng.integers(3600, 3 * 86400, len(dup))
        d_con = d_req + rng.integers(5, 600, len(dup))
        persons_idx = np.r_[who, dup]
        total = len(persons_idx)
        ids = np.array(
            [f"ORD{i:010d}" for i in range(self.next_order, self.next_order + total)], dtype=object
        )
        self.next_order += total
        claimed = np.where(fulfilled, consent + 86400, -1)
        orders = {
            "order_id": ids,
            "person_id": p["person_id"][persons_idx].copy(),
            "requested_at": np.r_[requested, d_req],
            "consent_at": np.r_[consent, d_con],
            "consent_withdrawn_at": np.r_[withdrawn, np.full(len(dup), -1)],
            "cert_type": np.full(total, "v", dtype=object),
            "state": np.r_[
                np.where(fulfilled, "FULFILLED", "PENDING"), np.full(len(dup), "PENDING")
            ].astype(object),
            "claimed_by_run": np.r_[
                np.where(fulfilled, "run-legacy-2026", None), np.full(len(dup), None)
            ].astype(object),
            "claimed_at": np.r_[claimed, np.full(len(dup), -1)],
            "fulfilled_at": np.r_[np.where(fulfilled, claimed + 86400, -1), np.full(len(dup), -1)],
        }
        return orders, cat, persons_idx

    # --- defects --------------------------------------------------------------------------
    def defects(
        self,
        rng: np.random.Generator,
        p: dict[str, np.ndarray],
        ev: dict[str, np.ndarray],
        orders: dict[str, np.ndarray],
        cat: np.ndarray,
        persons_idx: np.ndarray,
        manifest: Manifest,
    ) -> dict[str, np.ndarray]:
        """Inject defects into this chunk so that the running total stays at the rate.
        Returns extra events (duplicates) to append."""
        eligible = int(
            np.isin(cat, ("consented", "duplicate_order", "reconsented", "no_vaccination")).sum()
        )
        self.eligible_seen += eligible
        need = round(self.defect_rate * self.eligible_seen) - self.defects_made
        cand = np.flatnonzero((cat == "consented") & ~p["_coord"])
        need = max(0, min(need, len(cand)))
        extra: dict[str, list] = {k: [] for k in ev if not k.startswith("_")}
        if not need:
            return extra
        chosen = np.sort(rng.choice(cand, size=need, replace=False))
        first_order = {
            int(pi): j for j, pi in enumerate(persons_idx[: len(np.flatnonzero(cat != "none"))])
        }
        ev_person = ev["_person"]
        lo = np.searchsorted(ev_person, chosen, "left")
        hi = np.searchsorted(ev_person, chosen, "right")
        for person, a, b in zip(chosen.tolist(), lo.tolist(), hi.tolist(), strict=True):
            kind = DEFECT_KINDS[self.kind_cursor % len(DEFECT_KINDS)]
            self.kind_cursor += 1
            self.defects_made += 1
            oj = first_order[person]
            order_id = orders["order_id"][oj]
            e = int(rng.integers(a, b))
            event_id = None
            if kind == "invalid_check_digit":
                old = p["person_id"][person]
                new = old[:11] + str((int(old[11]) + 1) % 10)
                p["person_id"][person] = new
                ev["person_id"][a:b] = new
                orders["person_id"][oj] = new
            elif kind == "future_vaccination_date":
                e = b - 1
                ev["vaccination_date"][e] += int(365.25 * (81 if rng.random() < 0.5 else 11))
                ev["reported_at"][e] = ev["reported_at"][e]  # reported on time; the date is a typo
            elif kind == "before_authorisation":
                e = a
                ev["vaccination_date"][e] = _AUTH[ev["_product"][e]] - int(rng.integers(10, 60))
            elif kind == "unknown_product":
                ev["vaccine"][e] = ref.UNKNOWN_PRODUCTS[
                    int(rng.integers(0, len(ref.UNKNOWN_PRODUCTS)))
                ]
            elif kind == "dose_out_of_range":
                ev["dose_number"][e] = (0, 0, 21, 99)[int(rng.integers(0, 4))]
            elif kind == "duplicate_event":
                new_id = self.next_event
                self.next_event += 1
                self.duplicate_persons.append(person)
                for col in extra:
                    extra[col].append(ev[col][e])
                extra["id"][-1] = new_id
                extra["reporting_ref"][-1] = f"{new_id:012d}"
                extra["reported_at"][-1] = ev["reported_at"][e] + 86400
                event_id = f"{ev['reporting_system'][e]}:{new_id:012d}"
            elif kind == "missing_name":
                p["given_name" if rng.random() < 0.5 else "family_name"][person] = None
            elif kind == "dob_mismatch":
                born = p["_born"][person] + int(rng.integers(1, 400))
                p["dob"][person] = str(EPOCH + np.timedelta64(born, "D"))
            elif kind == "name_too_long":
                p["family_name"][person] = p["family_name"][person] + ref.TOO_LONG_SUFFIX
            if kind in (
                "future_vaccination_date",
                "before_authorisation",
                "unknown_product",
                "dose_out_of_range",
            ):
                event_id = f"{ev['reporting_system'][e]}:{ev['reporting_ref'][e]}"
            manifest.defects[kind].append({"order_id": order_id, "event_id": event_id})
        return extra


# --- loading ------------------------------------------------------------------------------
