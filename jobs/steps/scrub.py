"""Withdrawal after the extract: the person's data leaves the run's files, the order leaves
the run, the certificate (if one was signed) ends WITHDRAWN.

Consent is re-checked in SQL (:func:`jobs.sources.consent.lapsed`) immediately before sign
and again immediately before deliver. For an order whose consent lapsed, the step calls
:func:`withdraw`, which

1. marks its certificate, if any, WITHDRAWN in the ledger (only where it has no final
   outcome yet: :func:`jobs.ledger.outcomes.mark_withdrawn`);
2. gives the order back in the sources database, and the run's duplicates that waited on it
   (:func:`jobs.sources.orders.release_withdrawn`);
3. scrubs the run's files (:func:`scrub_orders`): in ``extract.parquet``,
   ``validated.parquet``, ``payloads.parquet`` and the batch's ``payloads.parquet`` every
   column but the keys and the non-identifying reporting dimensions (:data:`KEEP`) becomes
   null in that order's rows — identity number, names, birth date, address, protected
   identity, the DCC payload and the NVR event; its row leaves the batch's
   ``signed.parquet`` (the HC1 carries name and birth date) and its PDF is deleted.

Rows stay in the payload files (nulled), so that row counts and batch sizes — which plan and
the data-quality gates check — do not change; a nulled ``payload_json`` is how sign knows
never to sign that row, even if consent is given again later (a new order, a new run).
Each file is replaced atomically (temp file, fsync, rename) under a run-wide lock, so two
batches of one run scrubbing at once do not lose each other's rows. Orders whose
certificate was already delivered (DIGITAL, PAPER) are answered: they are left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from jobs.ids import pdf_name, run_of
from jobs.log import get_logger
from jobs.settings import Settings, get_settings
from jobs.storage import RunPaths, atomic_path, write_parquet_atomic

log = get_logger(__name__)

# Columns that stay: keys, and dimensions the ledger holds anyway (no identity data).
KEEP = frozenset(
    {"order_id", "pid", "uvci", "cert_type", "county", "age_band", "product", "dn", "sd"}
)
ROWS_PER_PASS = 65_536


@contextlib.contextmanager
def _run_lock(run_id: str, settings: Settings) -> Iterator[None]:
    path = RunPaths.of(run_id, settings).root / ".scrub.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class _Unchanged(Exception):
    """Nothing to scrub in a file (its rows were scrubbed before): keep the file as it is."""


def _null_rows(path: Path, ids) -> int:
    """Null every column but KEEP in the rows of ``ids``; rewrite the file atomically (by
    row groups, so a large extract is never whole in memory), or leave it untouched when
    those rows hold nothing to null. Returns the rows nulled now."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not path.exists():
        return 0
    found = pq.read_table(path, columns=["order_id"])["order_id"]
    if not pc.any(pc.fill_null(pc.is_in(found, value_set=ids), False)).as_py():
        return 0
    mode = path.stat().st_mode & 0o777
    nulled = 0
    try:
        with pq.ParquetFile(path) as pf:
            schema = pf.schema_arrow
            with (
                atomic_path(path, mode) as tmp,
                pq.ParquetWriter(tmp, schema, compression="zstd") as writer,
            ):
                for batch in pf.iter_batches(batch_size=ROWS_PER_PASS):
                    mask = pc.fill_null(pc.is_in(batch.column("order_id"), value_set=ids), False)
                    personal = [
                        (i, col)
                        for i, (field, col) in enumerate(zip(schema, batch.columns, strict=True))
                        if field.name not in KEEP
                    ]
                    held = pc.fill_null(
                        pc.and_(mask, _any_valid([c for _, c in personal], len(batch))), False
                    )
                    n = int(pc.sum(held).as_py() or 0)
                    if not n:
                        writer.write_batch(batch)
                        continue
                    nulled += n
                    cols = list(batch.columns)
                    for i, col in personal:
                        cols[i] = pc.if_else(mask, pa.scalar(None, col.type), col)
                    writer.write_batch(pa.RecordBatch.from_arrays(cols, schema=schema))
                if not nulled:
                    raise _Unchanged
    except _Unchanged:
        return 0
    return nulled


def _any_valid(columns: list, n: int):
    """Per row: does any of ``columns`` hold a value?"""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = pa.array([False] * n, pa.bool_())
    for col in columns:
        out = pc.or_(out, pc.is_valid(col))
    return out


def _drop_rows(path: Path, ids) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not path.exists():
        return 0
    table = pq.read_table(path)
    mask = pc.fill_null(pc.is_in(table["order_id"], value_set=ids), False)
    hits = int(pc.sum(mask).as_py() or 0)
    if hits:
        write_parquet_atomic(table.filter(pc.invert(mask)), path, path.stat().st_mode & 0o777)
    return hits


def _uvcis_of(path: Path, ids) -> list[str]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not path.exists():
        return []
    t = pq.read_table(path, columns=["order_id", "uvci"])
    t = t.filter(pc.fill_null(pc.is_in(t["order_id"], value_set=ids), False))
    return [u for u in t["uvci"].to_pylist() if u]


def scrub_orders(
    run_id: str,
    order_ids: Iterable[str],
    settings: Settings | None = None,
    *,
    batch_ids: Iterable[str] | None = None,
) -> dict[str, int]:
    """Remove the personal data of these orders from the run's files (see the module
    docstring): the run-level files, and the files of ``batch_ids`` (default: every batch
    of the run). Idempotent; each file atomically. Returns rows (or PDFs) scrubbed per
    kind of file."""
    import pyarrow as pa

    s = settings or get_settings()
    ids = pa.array(sorted(set(order_ids)), pa.string())
    counts = {k: 0 for k in ("extract", "validated", "payloads", "batch_payloads", "signed", "pdf")}
    if not len(ids):
        return counts
    paths = RunPaths.of(run_id, s)
    if batch_ids is None:
        batches = (
            sorted(p.name for p in paths.batches_dir.iterdir())
            if paths.batches_dir.exists()
            else []
        )
    else:
        batches = list(batch_ids)
    with _run_lock(run_id, s):
        counts["extract"] = _null_rows(paths.extract, ids)
        counts["validated"] = _null_rows(paths.validated, ids)
        counts["payloads"] = _null_rows(paths.payloads, ids)
        for b in batches:
            uvcis = _uvcis_of(paths.batch_payloads(b), ids)
            counts["batch_payloads"] += _null_rows(paths.batch_payloads(b), ids)
            counts["signed"] += _drop_rows(paths.signed(b), ids)
            for u in uvcis:
                pdf = paths.pdf_dir(b) / pdf_name(u)
                if pdf.exists():
                    pdf.unlink()
                    counts["pdf"] += 1
    if any(counts.values()):
        log.info("personal data scrubbed", run_id=run_id, orders=len(ids), **counts)
    return counts


def lapsed_in_batch(
    batch_id: str, order_ids: Iterable[str], settings: Settings | None = None
) -> set[str]:
    """The orders of this batch whose consent no longer holds
    (:func:`jobs.sources.consent.lapsed`, in SQL, now). A run that did not come from the
    register — synthetic payloads of benches and drills, planned without an extract (no
    ``extract.json``) — has no orders there and nothing to re-check: empty set."""
    from jobs.sources.consent import lapsed

    s = settings or get_settings()
    if not RunPaths.of(run_of(batch_id), s).extract_meta.exists():
        return set()
    return lapsed(list(order_ids), s)


def withdraw(
    batch_id: str, order_ids: Iterable[str], settings: Settings | None = None
) -> dict[str, Any]:
    """The orders of ``batch_id`` whose consent lapsed (as :func:`jobs.sources.consent.
    lapsed` found): certificate WITHDRAWN, order released (with its waiting duplicates),
    personal data scrubbed from the run's files. Orders whose certificate was already
    delivered or printed are answered and left alone. Idempotent. Returns
    ``{"withdrawn": [order ids], "marked": {order_id: uvci}, "released": n, "scrubbed":
    {...}}`` — ``withdrawn`` are the orders the step must not sign, deliver or print."""
    from jobs.ledger.outcomes import answered, mark_withdrawn
    from jobs.sources.orders import release_withdrawn

    s = settings or get_settings()
    run_id = run_of(batch_id)
    ids = sorted(set(order_ids))
    if not ids:
        return {"withdrawn": [], "marked": {}, "released": 0, "scrubbed": {}}
    marked = mark_withdrawn(ids, s)
    done = answered(ids, s)
    gone = [o for o in ids if o not in done]
    released = release_withdrawn(run_id, gone, s)
    scrubbed = scrub_orders(run_id, gone, s, batch_ids=[batch_id])
    log.info(
        "consent withdrawn after the extract",
        batch_id=batch_id,
        orders=len(gone),
        certificates_withdrawn=len(marked),
        released=released,
    )
    return {"withdrawn": gone, "marked": marked, "released": released, "scrubbed": scrubbed}


def pdf_exists(batch_id: str, uvci: str, settings: Settings | None = None) -> bool:
    """Is the PDF of this certificate in the batch folder (for checks and tests)?"""
    return (RunPaths.of(run_of(batch_id), settings).pdf_dir(batch_id) / pdf_name(uvci)).exists()
