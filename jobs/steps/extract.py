"""The extract: exactly the data issuance needs, of exactly the people who may be issued.

1. Claim the run's orders (jobs.sources.orders.claim): pending, consent given and not withdrawn at
   extraction time — checked in SQL, again in the read query.
2. Stream the claimed orders joined with their NVR events and the population register (one
   row per order and event; one row with null event columns for an order whose person has no
   event) through a server-side cursor (``yield_per``), in chunks, into
   ``runs/<run>/extract.parquet`` with the explicit schema ``transforms.schemas.EXTRACT``.
   Only the needed columns are selected. Each row carries the pseudonymous id ``pid``.
3. The Parquet file appears atomically (temp file + rename); ``extract.json`` with the
   counts is written last and marks the step done, so a repeated call returns the same
   result without claiming more.

Errors name the cause (database, table, order id and column) and never an identity number.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from data_quality.reasons import INVALID_CONSENT_TIME
from jobs.errors import NotRetryable
from jobs.settings import Settings, get_settings
from jobs.sources.consent import TIME_COLUMNS, malformed_sql, valid_sql
from jobs.sources.models import CLAIMED, DUPLICATE, PENDING, TABLES

CHUNK_ROWS = 20_000


def _query(dialect: str) -> str:
    """The extract query (column order = transforms.schemas.EXTRACT, except pid, which is
    computed here): the run's claimed orders whose consent holds, in SQL, at ``:now``."""
    return f"""
SELECT o.order_id, o.person_id, o.requested_at, o.consent_at, o.cert_type,
       p.given_name, p.family_name, p.dob, p.protected_identity,
       p.address_street, p.address_postcode, p.address_city,
       v.reporting_system || ':' || v.reporting_ref AS event_id,
       v.vaccination_date, v.vaccine, v.batch_number, v.dose_number,
       v.care_provider_org, v.county_code, v.municipality_code, v.reported_at
FROM orders o
LEFT JOIN population p ON p.person_id = o.person_id
LEFT JOIN nvr_vaccinations v ON v.person_id = o.person_id
WHERE o.claimed_by_run = :run AND o.state = '{CLAIMED}' AND {valid_sql("o", dialect)}
ORDER BY o.person_id
"""


class ExtractError(NotRetryable):
    """The extract cannot go on; the message names the cause (never personal data)."""


class CorruptRow(ExtractError):
    """A source row that cannot be read into the extract schema."""

    def __init__(self, order_id: str, column: str, reason: str) -> None:
        self.order_id, self.column = order_id, column
        super().__init__(f"order {order_id}: column {column!r} is unreadable ({reason})")


@dataclass(frozen=True)
class ExtractResult:
    """What one run extracted."""

    run_id: str
    orders: int
    rows: int
    path: Path
    snapshot_at: str | None
    persons: int = 0
    events: int = 0
    no_vaccination: int = 0
    duplicate_orders: int = 0
    orders_claimed: int = 0
    extracted_at: str = ""

    def meta(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["nvr_snapshot_at"] = d.pop("snapshot_at")
        return d


def _check_database(url: str) -> None:
    """Fail early with a plain message when the database is unreachable or not set up."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import OperationalError

    from jobs.db import DatabaseUnavailable, engine, safe_url

    try:
        with engine(url).connect() as conn:
            missing = [t for t in TABLES if not inspect(conn).has_table(t)]
    except OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot reach the sources database at {safe_url(url)}: {str(exc.orig).strip()}"
        ) from exc
    if missing:
        raise ExtractError(
            f"the sources database at {safe_url(url)} has no table {', '.join(missing)}; "
            "create it with 'bevis db migrate' (or fill it with 'bevis seed')"
        )


def _snapshot_at(conn) -> str | None:
    from sqlalchemy import text

    value = conn.execute(text("SELECT max(taken_at) FROM nvr_snapshots")).scalar()
    if value is None:
        return None
    if isinstance(value, str):  # SQLite stores UTC text
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


def _column(values: list, field, order_ids: list) -> Any:
    """One column of a chunk as a pyarrow array of the schema's type; on failure, find the
    row and name its order id."""
    import pyarrow as pa

    try:
        return _convert(values, field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        for value, order_id in zip(values, order_ids, strict=True):
            try:
                _convert([value], field.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
                raise CorruptRow(order_id, field.name, f"not a valid {field.type}") from None
        raise


def _convert(values: list, typ) -> Any:
    import pyarrow as pa

    if pa.types.is_timestamp(typ):
        first = next((v for v in values if v is not None), None)
        if isinstance(first, str):  # SQLite: UTC text
            arr = pa.array(values, type=pa.string())
            return arr.cast(pa.timestamp("us")).cast(typ)
        return pa.array(values, type=typ)
    if pa.types.is_date(typ):
        first = next((v for v in values if v is not None), None)
        if isinstance(first, str):
            return pa.array(values, type=pa.string()).cast(typ)
        return pa.array(values, type=typ)
    if pa.types.is_boolean(typ):
        return pa.array([None if v is None else bool(v) for v in values], type=typ)
    if pa.types.is_integer(typ):
        return pa.array(values, type=pa.int64()).cast(typ)  # safe cast: overflow raises
    return pa.array(values, type=typ)


def _to_table(rows: list, key: bytes):
    """A chunk of query rows as a pyarrow table with the EXTRACT schema."""
    import pyarrow as pa

    from transforms.identity import pseudonymise
    from transforms.schemas import EXTRACT

    cols = list(zip(*rows, strict=True))
    order_ids, person_ids = list(cols[0]), list(cols[1])
    uniq = list(set(person_ids))  # a person's rows are adjacent: hash each person once
    pid_of = dict(zip(uniq, pseudonymise(uniq, key), strict=True))
    pids = [pid_of[p] for p in person_ids]
    by_name = dict(zip([f.name for f in EXTRACT if f.name != "pid"], cols, strict=True))
    arrays = []
    for field in EXTRACT:
        if field.name == "pid":
            arrays.append(pa.array(pids, type=pa.string()))
        else:
            arrays.append(_column(list(by_name[field.name]), field, order_ids))
    return pa.Table.from_arrays(arrays, schema=EXTRACT)


class _Tally:
    """Counts of the rows written, in little memory: 64-bit hashes of order ids and pids in
    numpy arrays (a million orders cost 8 MB), made unique at the end."""

    def __init__(self) -> None:
        self.rows = self.events = 0
        self._orders: list = []
        self._persons: list = []
        self._no_event: list = []

    @staticmethod
    def _hashes(values) -> Any:
        import numpy as np

        return np.fromiter((hash(v) for v in values), dtype=np.int64)

    def add(self, table) -> None:
        import pyarrow.compute as pc

        self.rows += table.num_rows
        ev = table.column("event_id")
        self.events += table.num_rows - ev.null_count
        oid = table.column("order_id")
        self._orders.append(self._hashes(pc.unique(oid).to_pylist()))
        self._persons.append(self._hashes(pc.unique(table.column("pid")).to_pylist()))
        if ev.null_count:
            self._no_event.append(self._hashes(oid.filter(pc.is_null(ev)).to_pylist()))

    @staticmethod
    def _distinct(parts: list) -> int:
        import numpy as np

        return int(np.unique(np.concatenate(parts)).size) if parts else 0

    @property
    def orders(self) -> int:
        return self._distinct(self._orders)

    @property
    def persons(self) -> int:
        return self._distinct(self._persons)

    @property
    def no_vaccination(self) -> int:
        return self._distinct(self._no_event)


@contextlib.contextmanager
def _stream(eng, params: dict[str, Any]) -> Iterator[Iterator[list]]:
    """Chunks of rows of the extract query straight from the DBAPI cursor: a server-side
    (named) cursor on PostgreSQL, sqlite3's lazy cursor on SQLite. Bypassing SQLAlchemy's
    Row objects here doubles throughput. Rows come in person order (the claim index), so the
    lookups into population and NVR walk their indexes in order, and a person's rows are
    adjacent."""
    raw = eng.raw_connection()
    try:
        dbapi = raw.driver_connection
        if eng.dialect.name == "postgresql":
            sql = re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", _query("postgresql"))
            cur = dbapi.cursor(name="bevis_extract")
            cur.itersize = CHUNK_ROWS
        else:
            sql = _query("sqlite")
            cur = dbapi.cursor()
            cur.execute("PRAGMA cache_size=-65536")  # 64 MB: the joins' index pages stay hot
        cur.execute(sql, params)

        def chunks() -> Iterator[list]:
            while part := cur.fetchmany(CHUNK_ROWS):
                yield part

        yield chunks()
        cur.close()
    finally:
        with contextlib.suppress(Exception):
            raw.rollback()
        raw.close()


def _undecodable(url: str, params: dict[str, Any]) -> tuple[str, str] | None:
    """(order id, column) of the first extract row whose text is not UTF-8 — SQLite stores
    whatever bytes it is given, and its error quotes them — by reading the query again as
    bytes on a connection of its own. None when no such row is found (or not SQLite)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database:
        return None
    conn = sqlite3.connect(u.database)
    try:
        conn.text_factory = bytes
        cur = conn.execute(_query("sqlite"), params)
        names = [d[0] for d in cur.description]
        for row in cur:
            for name, value in zip(names, row, strict=True):
                if isinstance(value, bytes):
                    try:
                        value.decode("utf-8")
                    except UnicodeDecodeError:
                        order_id = row[0]
                        if isinstance(order_id, bytes):
                            order_id = order_id.decode("utf-8", errors="replace")
                        return str(order_id), name
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return None


def _settle_claims(eng, params: dict[str, Any]) -> tuple[int, int]:
    """Just before the read: give back the run's claimed and duplicate orders whose consent
    no longer holds (withdrawn since the claim, e.g. while a failed run waited for its
    rerun) — they are not extracted, and must not stay claimed by a run that will never
    answer them; then a duplicate whose first order left takes its place (so a person's
    valid later order is not left DUPLICATE forever). Returns (released, promoted)."""
    from sqlalchemy import text

    from jobs.sources.orders import promote_orphaned_duplicates

    dialect = eng.dialect.name
    sql = f"""
UPDATE orders SET state = '{PENDING}', claimed_by_run = NULL, claimed_at = NULL
WHERE order_id IN (
  SELECT o.order_id FROM orders o
  WHERE o.claimed_by_run = :run AND o.state IN ('{CLAIMED}', '{DUPLICATE}')
    AND NOT {valid_sql("o", dialect)} AND NOT {malformed_sql("o", dialect)})
"""
    with eng.begin() as conn:
        released = conn.execute(text(sql), params).rowcount
        promoted = promote_orphaned_duplicates(conn, params["run"], params["now"])
    return released, promoted


def _malformed(eng, run_id: str, key: bytes) -> list[dict[str, Any]]:
    """Quarantine entries for the run's claimed orders with an instant that is not in the
    one stored form (SQLite only): held back, one by one — the extract goes on."""
    from sqlalchemy import text

    from jobs.sources.consent import malformed_columns
    from transforms.identity import pseudonymise

    dialect = eng.dialect.name
    if dialect != "sqlite":
        return []
    cols = ", ".join(f"o.{c}" for c in TIME_COLUMNS)
    with eng.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT o.order_id, o.person_id, {cols} FROM orders o"
                f" WHERE o.claimed_by_run = :run AND o.state = '{CLAIMED}'"
                f" AND {malformed_sql('o', dialect)} ORDER BY o.order_id"
            ),
            {"run": run_id},
        ).all()
    if not rows:
        return []
    pids = pseudonymise([r.person_id for r in rows], key)
    entries = []
    for r, pid in zip(rows, pids, strict=True):
        bad = malformed_columns(dict(zip(TIME_COLUMNS, r[2:], strict=True)))
        entries.append(
            {
                "reason_code": INVALID_CONSENT_TIME,
                "order_id": r.order_id,
                "pid": pid,
                "event_id": None,
                "suite": None,
                "expectation": None,
                "detail": f"{', '.join(bad)} not a UTC instant in the stored form "
                "'YYYY-MM-DD HH:MM:SS.ffffff': consent cannot be judged",
            }
        )
    return entries


def _existing(run_id: str, paths, url: str) -> ExtractResult | None:
    """The result of an earlier extract of this run, if it finished. Stale when orders it
    extracted were given back since — except those withdrawn after the extract, whose rows
    the withdrawal scrubbed (jobs.steps.scrub): they are accounted for, not lost."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from sqlalchemy import func, select

    from jobs.db import engine
    from jobs.sources.models import Order

    if not (paths.extract_meta.exists() and paths.extract.exists()):
        return None
    meta = json.loads(paths.extract_meta.read_text())
    with engine(url).connect() as conn:
        still = conn.execute(
            select(func.count())
            .select_from(Order)
            .where(Order.claimed_by_run == run_id, Order.state.in_((CLAIMED, "FULFILLED")))
        ).scalar_one()
    if still < meta["orders"]:
        t = pq.read_table(paths.extract, columns=["order_id", "person_id"])
        scrubbed = len(pc.unique(t.filter(pc.is_null(t["person_id"]))["order_id"]))
        if still + scrubbed < meta["orders"]:
            raise ExtractError(
                f"run {run_id}: {meta['orders'] - still - scrubbed} of its extracted orders "
                "were released since; its extract is stale — start a new run"
            )
    meta["path"] = Path(meta["path"])
    meta["snapshot_at"] = meta.pop("nvr_snapshot_at")
    return ExtractResult(**meta)


def extract(
    run_id: str, settings: Settings | None = None, limit: int | None = None
) -> ExtractResult:
    """Claim the run's orders and write ``extract.parquet`` + ``extract.json``. Idempotent:
    a finished run returns its result; an interrupted one resumes with the orders it had
    claimed, without claiming more."""
    import pyarrow.parquet as pq
    from sqlalchemy import func, select
    from sqlalchemy.exc import DBAPIError

    from jobs.db import engine, safe_url
    from jobs.log import get_logger
    from jobs.sources.consent import now_param
    from jobs.sources.models import Order
    from jobs.sources.orders import claim
    from jobs.storage import RunPaths, atomic_path, write_text_atomic
    from transforms.schemas import EXTRACT

    log = get_logger(__name__)
    s = settings or get_settings()
    s.refuse_published_secrets("BEVIS_PSEUDONYM_KEY")  # before any order is claimed
    paths = RunPaths.of(run_id, s)
    url = s.resolved_source_url()
    _check_database(url)
    done = _existing(run_id, paths, url)
    if done is not None:
        log.info("extract already done", run_id=run_id, orders=done.orders, rows=done.rows)
        return done

    eng = engine(url)
    now = dt.datetime.now(dt.UTC)
    with eng.connect() as conn:
        resumed = conn.execute(
            select(func.count()).select_from(Order).where(Order.claimed_by_run == run_id)
        ).scalar_one()
    if resumed:
        log.info("extract resumes with the orders it claimed", run_id=run_id, orders=resumed)
    else:
        claimed, dups = claim(run_id, now, limit=limit, url=url)
        log.info("orders claimed", run_id=run_id, orders=claimed, duplicates=dups)

    params = {"run": run_id, "now": now_param(now, eng.dialect.name)}
    lapsed, promoted = _settle_claims(eng, params)
    if lapsed or promoted:
        log.info(
            "consent withdrawn since the claim; orders released",
            run_id=run_id,
            orders=lapsed,
            duplicates_promoted=promoted,
        )
    key = s.pseudonym_key.get_secret_value().encode("utf-8")
    held = _malformed(eng, run_id, key)
    if held:
        from jobs.ledger import quarantine

        quarantine.record(run_id, "extract", held, settings=s)
        log.warning("orders with malformed instants quarantined", run_id=run_id, orders=len(held))
    tally = _Tally()
    try:
        with eng.connect() as conn:
            snapshot_at = _snapshot_at(conn)
            counts = dict(
                conn.execute(
                    select(Order.state, func.count())
                    .where(Order.claimed_by_run == run_id)
                    .group_by(Order.state)
                ).all()
            )
        with (
            _stream(eng, params) as chunks,
            atomic_path(paths.extract, 0o640) as tmp,
            pq.ParquetWriter(tmp, EXTRACT, compression="zstd") as writer,
        ):
            for part in chunks:
                table = _to_table(part, key)
                del part
                writer.write_table(table)
                tally.add(table)
    except (DBAPIError, sqlite3.Error, UnicodeDecodeError) as exc:
        # Never the driver's message, nor the driver's exception as the cause (a traceback
        # prints it): SQLite's quotes the text it could not decode, a name. The record and
        # the field are named instead, found again on this failure path only.
        where = _undecodable(url, params) if not isinstance(exc, DBAPIError) else None
        if where is not None:
            raise CorruptRow(where[0], where[1], "not UTF-8 text") from None
        kind = type(exc.orig if isinstance(exc, DBAPIError) else exc).__name__
        raise ExtractError(
            f"run {run_id}: reading the sources database at {safe_url(url)} failed: {kind} "
            f"(orders stay claimed; 'bevis orders release --run {run_id}' gives them back)"
        ) from None

    result_ = ExtractResult(
        run_id=run_id,
        orders=tally.orders,
        rows=tally.rows,
        path=paths.extract,
        snapshot_at=snapshot_at,
        persons=tally.persons,
        events=tally.events,
        no_vaccination=tally.no_vaccination,
        duplicate_orders=int(counts.get(DUPLICATE, 0)),
        orders_claimed=int(counts.get(CLAIMED, 0)),
        extracted_at=now.isoformat(),
    )
    write_text_atomic(json.dumps(result_.meta(), indent=2), paths.extract_meta)
    log.info(
        "extracted",
        run_id=run_id,
        orders=result_.orders,
        rows=tally.rows,
        persons=result_.persons,
        no_vaccination=result_.no_vaccination,
    )
    return result_
