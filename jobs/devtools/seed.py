"""A realistic synthetic register for local work, tests and benchmarks: ``bevis seed``.

Fills the sources database with a population register, NVR vaccination histories that look
like Sweden 2021-2023, and certificate orders with every consent situation; injects defects
of named kinds at a known rate and writes a manifest with the truth (order ids and event ids
only, never identity data) to ``<data_dir>/seed-manifest.json``. The generation itself is
``jobs.devtools.seed_generator``'s; this module loads what it makes.

Loaded in bulk: COPY on PostgreSQL, executemany in big transactions on SQLite.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import numpy as np

from jobs.devtools.seed_generator import (
    CHUNK,
    ORDER_CATEGORIES,
    Generator,
    Manifest,
)
from jobs.devtools.seed_generator import DEFECT_KINDS as DEFECT_KINDS  # the seeder's contract
from jobs.errors import DatabaseUnavailable, InvalidInstant, NotRetryable

_POP_COLS = (
    "person_id",
    "given_name",
    "family_name",
    "dob",
    "address_street",
    "address_postcode",
    "address_city",
    "protected_identity",
)
_EV_COLS = (
    "id",
    "person_id",
    "vaccination_date",
    "vaccine",
    "batch_number",
    "dose_number",
    "care_provider",
    "care_provider_org",
    "county_code",
    "municipality_code",
    "reporting_system",
    "reporting_ref",
    "reported_at",
)
_ORDER_COLS = (
    "order_id",
    "person_id",
    "requested_at",
    "consent_at",
    "consent_withdrawn_at",
    "cert_type",
    "state",
    "claimed_by_run",
    "claimed_at",
    "fulfilled_at",
)
_STORED_RE = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$"  # consent.STORAGE_FORMAT
_TS_COLS = {
    "reported_at",
    "requested_at",
    "consent_at",
    "consent_withdrawn_at",
    "claimed_at",
    "fulfilled_at",
}


def _arrow(cols: dict[str, Any], names: tuple[str, ...]):
    """A typed pyarrow table of the generated columns (-1 seconds = null timestamp)."""
    import pyarrow as pa

    arrays = []
    for name in names:
        v = cols[name]
        if name in _TS_COLS:
            v = np.asarray(v, dtype=np.int64)
            arrays.append(pa.array(v * 1_000_000, type=pa.timestamp("us", tz="UTC"), mask=v < 0))
        elif name == "vaccination_date":
            arrays.append(pa.array(np.asarray(v, dtype=np.int32), type=pa.date32()))
        elif name == "id":
            arrays.append(pa.array(np.asarray(v, dtype=np.int64)))
        elif name == "dose_number":
            arrays.append(pa.array(np.asarray(v, dtype=np.int16)))
        elif name == "protected_identity":
            arrays.append(pa.array(np.asarray(v, dtype=bool)))
        else:
            arrays.append(pa.array(list(v), type=pa.string()))
    return pa.table(arrays, names=list(names))


def _check_instants(table: str, data) -> None:
    """Refuse a timestamp column that is not a UTC instant (naive: which zone?) before
    anything is written — the sources database keeps instants in one form."""
    import pyarrow as pa

    for name, col in zip(data.column_names, data.columns, strict=True):
        if pa.types.is_timestamp(col.type) and col.type.tz not in ("UTC", "+00:00"):
            raise InvalidInstant(f"seed: {table}.{name} is not a UTC timestamp ({col.type})")
        if name in _TS_COLS and not pa.types.is_timestamp(col.type):
            raise InvalidInstant(f"seed: {table}.{name} is {col.type}, not a UTC timestamp")


def _stored_form(table: str, name: str, col):
    """A UTC timestamp column as SQLite text in the one stored form
    (jobs.sources.consent.STORAGE_FORMAT); refuses the load if any value is not."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.strftime(col.cast(pa.timestamp("us", tz="UTC")), format="%Y-%m-%d %H:%M:%S")
    bad = pc.invert(pc.match_substring_regex(text, _STORED_RE))
    n = int(pc.sum(pc.fill_null(bad, False)).as_py() or 0)
    if n:
        raise InvalidInstant(f"seed: {n} values of {table}.{name} are not in the stored form")
    return text


class _Loader:
    """Bulk load into the sources database: COPY on PostgreSQL, executemany on SQLite."""

    def __init__(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        from jobs.db import engine

        self.url = url
        self.dialect = make_url(url).get_backend_name()
        self.raw = engine(url).raw_connection()
        self.conn = self.raw.driver_connection
        if self.dialect == "sqlite":
            self.conn.execute("PRAGMA synchronous=OFF")

    def truncate(self) -> None:
        from jobs.sources.models import TABLES

        cur = self.conn.cursor()
        if self.dialect == "postgresql":
            cur.execute(f"TRUNCATE {', '.join(TABLES)}")
        else:
            for t in TABLES:
                cur.execute(f"DELETE FROM {t}")
        self.conn.commit()

    def drop_indexes(self) -> None:
        """Secondary indexes are built once after the load (sorting beats random inserts)."""
        from jobs.sources.models import SourcesBase

        cur = self.conn.cursor()
        for t in SourcesBase.metadata.sorted_tables:
            for idx in t.indexes:
                cur.execute(f"DROP INDEX IF EXISTS {idx.name}")
        self.conn.commit()

    def restore_indexes(self) -> None:
        from jobs.db import engine
        from jobs.sources.models import SourcesBase

        with engine(self.url).begin() as conn:
            for t in SourcesBase.metadata.sorted_tables:
                for idx in t.indexes:
                    idx.create(conn, checkfirst=True)

    def load(self, table: str, data) -> None:
        _check_instants(table, data)
        cols = ", ".join(data.column_names)
        if self.dialect == "postgresql":
            import io

            import pyarrow.csv as pacsv

            buf = io.BytesIO()
            pacsv.write_csv(data, buf)
            with (
                self.conn.cursor() as cur,
                cur.copy(f"COPY {table} ({cols}) FROM STDIN WITH (FORMAT csv, HEADER true)") as cp,
            ):
                cp.write(buf.getbuffer())
            return
        import pyarrow as pa

        lists = []
        for name, col in zip(data.column_names, data.columns, strict=True):
            if pa.types.is_timestamp(col.type):
                col = _stored_form(table, name, col)
            elif pa.types.is_date(col.type):
                col = col.cast(pa.string())
            lists.append(col.to_pylist())
        marks = ", ".join("?" * len(lists))
        self.conn.executemany(
            f"INSERT INTO {table} ({cols}) VALUES ({marks})", zip(*lists, strict=True)
        )

    def commit(self) -> None:
        self.conn.commit()

    def finish(self) -> None:
        """Move PostgreSQL's id sequences past the explicit ids loaded by COPY."""
        if self.dialect == "postgresql":
            with self.conn.cursor() as cur:
                cur.execute(
                    "SELECT setval(pg_get_serial_sequence('nvr_vaccinations', 'id'),"
                    " (SELECT coalesce(max(id), 0) + 1 FROM nvr_vaccinations), false)"
                )
            self.conn.commit()

    def close(self) -> None:
        self.raw.close()


SEED_MARK = "bevis_seed"  # the table by which the seeder knows a database it made


class NotSeeded(NotRetryable):
    """The database holds data the seeder did not make: it is not replaced without force."""


def _refuse_foreign(url: str) -> None:
    """Refuse to replace a database the seeder did not make: one without the seed mark that
    holds rows in a sources table, or tables bevis does not know. A missing, empty or
    only-migrated database is fine."""
    from sqlalchemy import func, inspect, select, table

    from jobs.db import engine, safe_url, sqlite_path
    from jobs.sources.models import TABLES

    path = sqlite_path(url)
    if path is not None and not path.exists():
        return
    eng = engine(url)
    try:
        names = set(inspect(eng).get_table_names())
    except Exception as exc:
        from sqlalchemy.exc import OperationalError

        if isinstance(exc, OperationalError):
            raise DatabaseUnavailable(
                f"cannot reach the sources database at {safe_url(url)} ({type(exc.orig).__name__})"
            ) from None
        raise
    if SEED_MARK in names:
        return
    foreign = sorted(n for n in names - set(TABLES) if not n.startswith("alembic_version"))
    with eng.connect() as conn:
        filled = [
            t
            for t in TABLES
            if t in names and conn.execute(select(func.count()).select_from(table(t))).scalar()
        ]
    if foreign or filled:
        what = f"rows in {', '.join(filled)}"
        if foreign:
            what = f"tables bevis does not know ({', '.join(foreign[:5])})"
        raise NotSeeded(
            f"the database at {safe_url(url)} was not made by 'bevis seed' and holds {what}: "
            "seeding would replace it; point --db/BEVIS_SOURCE_URL at a scratch database, "
            "or pass --force"
        )


def _mark_seeded(url: str, seed: int, persons: int) -> None:
    """Record in the database that the seeder made it (and with what)."""
    import datetime as dt_

    from sqlalchemy import text

    from jobs.db import engine

    with engine(url).begin() as conn:
        columns = "seeded_at VARCHAR(40), seed BIGINT, persons BIGINT"
        conn.execute(text(f"CREATE TABLE IF NOT EXISTS {SEED_MARK} ({columns})"))
        conn.execute(text(f"DELETE FROM {SEED_MARK}"))
        conn.execute(
            text(f"INSERT INTO {SEED_MARK} VALUES (:at, :seed, :persons)"),
            {"at": dt_.datetime.now(dt_.UTC).isoformat(), "seed": seed, "persons": persons},
        )


def _private_sqlite(url: str) -> None:
    """A seeded SQLite file (and its -wal, -shm) is readable by its owner only: it holds a
    population register."""
    import os

    from jobs.db import sqlite_path

    path = sqlite_path(url)
    if path is None:
        return
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists():
            os.chmod(p, 0o600)


def seed(
    persons: int,
    seed: int = 0,
    defect_rate: float = 0.01,
    url: str | None = None,
    settings=None,
    force: bool = False,
) -> Manifest:
    """Replace the sources database's content with a synthetic register of ``persons``
    people and return (and write) its manifest. Same arguments, same data. A database the
    seeder did not make is refused (:class:`NotSeeded`) unless ``force``."""
    from jobs.db import migrate, safe_url
    from jobs.log import get_logger
    from jobs.settings import get_settings
    from jobs.storage import write_text_atomic

    if persons < 1:
        raise ValueError("persons must be at least 1")
    if not 0 <= defect_rate <= 0.5:
        raise ValueError("defect rate must be between 0 and 0.5")
    s = settings or get_settings()
    url = url or s.resolved_source_url()
    log = get_logger(__name__)
    t0 = time.perf_counter()
    if not force:
        _refuse_foreign(url)
    migrate("sources", url)
    gen = Generator(seed, defect_rate)
    manifest = Manifest(seed=seed, persons=persons, defect_rate=defect_rate, url=safe_url(url))
    exp = {"orders": 0, "rows": 0, "persons": 0, "duplicate_orders": 0, "no_vaccination": 0}
    loader = _Loader(url)
    try:
        loader.truncate()
        loader.drop_indexes()
        for chunk, start in enumerate(range(0, persons, CHUNK)):
            n = min(CHUNK, persons - start)
            rng = np.random.default_rng([seed, chunk])
            p = gen.persons(rng, n)
            ev = gen.histories(rng, p)
            orders, cat, persons_idx = gen.orders(rng, p, ev)
            extra = gen.defects(rng, p, ev, orders, cat, persons_idx, manifest)
            events = {
                k: np.r_[ev[k], np.array(extra[k], dtype=ev[k].dtype)] if extra[k] else ev[k]
                for k in extra
            }
            loader.load("population", _arrow(p, _POP_COLS))
            loader.load("nvr_vaccinations", _arrow(events, _EV_COLS))
            loader.load("orders", _arrow(orders, _ORDER_COLS))
            loader.commit()
            # counts
            per_person = np.bincount(ev["_person"], minlength=n)
            dup_persons = np.asarray(gen.duplicate_persons, dtype=np.int64)
            gen.duplicate_persons = []
            np.add.at(per_person, dup_persons, 1)
            manifest.events += len(events["id"])
            manifest.orders += len(orders["order_id"])
            manifest.persons_without_order += int((cat == "none").sum())
            for name in ORDER_CATEGORIES:
                manifest.order_categories[name] += int((cat == name).sum())
            first_of_dup = int((cat == "duplicate_order").sum())
            manifest.order_categories["consented"] += first_of_dup  # their first order
            eligible = np.isin(
                cat, ("consented", "duplicate_order", "reconsented", "no_vaccination")
            )
            exp["orders"] += int(eligible.sum())
            exp["persons"] += int(eligible.sum())
            exp["duplicate_orders"] += first_of_dup
            exp["no_vaccination"] += int((cat == "no_vaccination").sum())
            exp["rows"] += int(per_person[eligible].sum()) + int((cat == "no_vaccination").sum())
            log.info("seed chunk", chunk=chunk, persons=start + n, events=manifest.events)
        taken = dt.datetime.now(dt.UTC).replace(microsecond=0)
        snap = {
            "taken_at": [int(taken.timestamp())],
            "persons": [persons],
            "events": [manifest.events],
        }
        import pyarrow as pa

        snap_table = pa.table(
            {
                "taken_at": pa.array(
                    [snap["taken_at"][0] * 1_000_000], type=pa.timestamp("us", tz="UTC")
                ),
                "persons": pa.array(snap["persons"], type=pa.int32()),
                "events": pa.array(snap["events"], type=pa.int32()),
            }
        )
        loader.load("nvr_snapshots", snap_table)
        loader.commit()
        loader.finish()
    finally:
        loader.close()
        loader.restore_indexes()
    _mark_seeded(url, seed, persons)
    _private_sqlite(url)
    manifest.expected_extract = exp
    manifest.nvr_snapshot_at = taken.isoformat()
    manifest.seconds = round(time.perf_counter() - t0, 3)
    write_text_atomic(
        json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False),
        s.resolved_data_dir() / "seed-manifest.json",
        mode=0o600,
    )
    log.info(
        "seeded",
        persons=persons,
        events=manifest.events,
        orders=manifest.orders,
        seconds=manifest.seconds,
    )
    return manifest


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB: VmHWM, which (unlike ru_maxrss) starts
    afresh at exec, so a child process does not inherit its parent's peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def bench_seed(persons: int, db: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Seed a scratch register (a temporary SQLite file unless ``db`` names a scratch
    database) and return the figures."""
    import os
    import shutil
    import tempfile

    from sqlalchemy.engine import make_url

    from jobs.settings import get_settings

    base = get_settings().resolved_data_dir() / "bench"
    base.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="seed-", dir=base)
    try:
        s = get_settings(data_dir=tmp)
        url = db or s.resolved_source_url()
        c0 = time.process_time()
        m = seed_fn(persons, seed=seed, url=url, settings=s)
        cpu = time.process_time() - c0
        rows = m.persons + m.events + m.orders
        return {
            "bench": "seed",
            "db": make_url(url).get_backend_name(),
            "persons": persons,
            "events": m.events,
            "orders": m.orders,
            "seconds": m.seconds,
            "persons_per_s": round(persons / m.seconds),
            "rows_per_s": round(rows / m.seconds),
            "cpu_seconds": round(cpu, 3),
            "peak_rss_mb": peak_rss_mb(),
            "load": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


seed_fn = seed
