"""The sign step: one batch of payloads → verified HC1 certificates in the ledger.

All cores sign (``signing.hcert.sign_many``), all cores verify every certificate again
before it counts (``verify_many``: decode, signature, schema, and the order's UVCI inside),
the signed Parquet appears atomically, and the certificates enter the ledger with
INSERT ... ON CONFLICT DO NOTHING under the database's one-certificate-per-order
constraint. The batch state machine around it is ``jobs.batches.run_step``'s.

Consent is re-checked in SQL in the sources database immediately before signing, again
before the signed file is kept and, for a resumed batch, before its certificates are
recorded (``_consent_gate``): an order whose consent lapsed is not signed — quarantined
``consent_withdrawn``, released, its personal data scrubbed (``jobs.steps.scrub``).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from data_quality.reasons import CONSENT_WITHDRAWN
from jobs import faults
from jobs.errors import InputMissing, KeysUnusable, LedgerMismatch
from jobs.ids import parse_batch_id
from jobs.ledger.models import Certificate
from jobs.ledger.runs import ledger
from jobs.settings import Settings, get_settings
from jobs.storage import RunPaths, write_parquet_atomic
from signing.lifetime import die_with_parent

SQL_CHUNK = 5000  # rows per executemany / IN (...) list


def read_payloads(path, run_id: str):
    import pyarrow.parquet as pq

    from transforms.schemas import PAYLOADS

    table = pq.read_table(path)
    missing = [n for n in PAYLOADS.names if n not in table.column_names]
    if missing:
        raise ValueError(f"run {run_id}: {path.name} lacks columns {missing}")
    return table.select(PAYLOADS.names)


@dataclass
class _Checked:
    ok: bool
    reason: str


_VERIFY_POOL: dict[str, Any] = {}


_WORKER_TRUST: list = []


def _verify_init(trust_pem: bytes, worker: bool = False) -> None:
    """Load the trust list (in a pool worker, which also dies with the pool's owner)."""
    from cryptography import x509

    if worker:
        die_with_parent()

    _WORKER_TRUST[:] = x509.load_pem_x509_certificates(trust_pem)


def _verify_chunk(
    hc1s: Sequence[str], uvcis: Sequence[str], crash: bool | str = False
) -> list[tuple[bool, str]]:
    """Verify certificates in a worker: decode, signature and schema must be ok and the
    UVCI inside must be the order's. ``crash`` (the fault switch): the worker dies half-way,
    or hangs there with ``"hang"``."""
    from signing.verify import verify

    out = []
    half = len(hc1s) // 2
    for i, (hc1, uvci) in enumerate(zip(hc1s, uvcis, strict=True)):
        if crash and i == half:
            faults.hang() if crash == "hang" else faults.crash_worker()
        v = verify(hc1, trust=_WORKER_TRUST)
        bad = [c for c in ("decode", "signature", "schema") if v.checks.get(c) != "ok"]
        if bad:
            out.append((False, f"{', '.join(bad)} failed: {'; '.join(map(str, v.reasons))}"[:400]))
            continue
        ci = _uvci_in(v.payload)
        if ci is not None and ci != uvci:
            out.append((False, "the certificate carries another UVCI than its order"))
            continue
        out.append((True, ""))
    return out


def _uvci_in(payload: Any) -> str | None:
    """The certificate identifier inside a decoded DCC payload (or its hcert wrapper)."""
    if not isinstance(payload, dict):
        return None
    for key in (-260, "-260"):
        if key in payload:
            return _uvci_in(payload[key])
    for key in (1, "1"):
        if key in payload and isinstance(payload[key], dict):
            return _uvci_in(payload[key])
    for group in ("v", "t", "r"):
        entries = payload.get(group)
        if isinstance(entries, list) and entries and isinstance(entries[0], dict):
            return entries[0].get("ci")
    return None


def _verify_pool(workers: int, trust_pem: bytes):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    key = f"{workers}:{hashlib.sha256(trust_pem).hexdigest()}"
    pool = _VERIFY_POOL.get(key)
    if pool is None:
        for old in _VERIFY_POOL.values():
            old.shutdown(wait=False, cancel_futures=True)
        _VERIFY_POOL.clear()
        pool = ProcessPoolExecutor(
            workers,
            mp_context=mp.get_context("fork"),
            initializer=_verify_init,
            initargs=(trust_pem, True),
        )
        _VERIFY_POOL[key] = pool
    return pool


@atexit.register
def _shutdown_verify_pools() -> None:
    """Drop the pool while the interpreter is still whole (its manager thread's callback
    otherwise runs during teardown and prints 'Exception ignored')."""
    for pool in _VERIFY_POOL.values():
        pool.shutdown(wait=True, cancel_futures=True)
    _VERIFY_POOL.clear()


def verify_many(
    hc1s: Sequence[str],
    uvcis: Sequence[str],
    trust_pem: bytes,
    workers: int,
    crash_worker: bool | str = False,
) -> list[_Checked]:
    """Verify every certificate again, on all cores (large chunks). ``crash_worker`` makes
    one worker die mid-way (the fault switch), or hang there with ``"hang"``."""
    n = len(hc1s)
    if workers <= 1 or n < 64:
        _verify_init(trust_pem)
        if crash_worker:
            raise AssertionError("crash_worker needs a pool")  # pragma: no cover
        return [_Checked(*r) for r in _verify_chunk(hc1s, uvcis)]
    pool = _verify_pool(workers, trust_pem)
    per = math.ceil(n / (workers * 2))
    chunks = [(i, min(i + per, n)) for i in range(0, n, per)]
    crash_at = len(chunks) // 2 if crash_worker else -1
    try:
        futures = [
            pool.submit(
                _verify_chunk, list(hc1s[a:b]), list(uvcis[a:b]), k == crash_at and crash_worker
            )
            for k, (a, b) in enumerate(chunks)
        ]
        out: list[_Checked] = []
        for f in futures:
            out.extend(_Checked(*r) for r in f.result())
    except BaseException:
        _VERIFY_POOL.clear()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    return out


def _issued_for(conn, order_ids: Sequence[str]) -> dict[str, Any]:
    """order_id → (uvci, batch_id, hc1_sha256) of the certificates the ledger holds."""
    out: dict[str, Any] = {}
    for i in range(0, len(order_ids), SQL_CHUNK):
        chunk = list(order_ids[i : i + SQL_CHUNK])
        for r in conn.execute(
            select(
                Certificate.order_id, Certificate.uvci, Certificate.batch_id, Certificate.hc1_sha256
            ).where(Certificate.order_id.in_(chunk))
        ):
            out[r.order_id] = r
    return out


def _insert_ignore(conn, rows: list[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING (any unique key: uvci or order_id), both dialects."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover
        raise RuntimeError(f"unsupported ledger dialect {conn.dialect.name}")
    for i in range(0, len(rows), SQL_CHUNK):
        conn.execute(insert(Certificate).on_conflict_do_nothing(), rows[i : i + SQL_CHUNK])


@contextlib.contextmanager
def _run_lock(run_id: str, name: str, settings: Settings):
    """An exclusive lock file in the run folder (parallel batches of one run on one host)."""
    path = RunPaths.of(run_id, settings).root / f".{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _quarantine(run_id: str, entries: list[dict[str, Any]], settings: Settings) -> None:
    """Add entries to the run's sign-step quarantine (the file holds every batch's)."""
    if not entries:
        return
    from jobs.ledger import quarantine

    with _run_lock(run_id, "quarantine-sign", settings):
        import pyarrow.parquet as pq

        path = RunPaths.of(run_id, settings).quarantine("sign")
        old = pq.read_table(path).to_pylist() if path.exists() else []
        merged = {(e["reason_code"], e["order_id"], e.get("event_id")): e for e in old + entries}
        quarantine.record(run_id, "sign", list(merged.values()), settings)


def active_signer(s: Settings) -> Any:
    """The active DSC signer; missing or unusable keys fail at once (KeysUnusable)."""
    from signing.keys import SigningKeyError, load_signer

    try:
        return load_signer(s.key_source())
    except SigningKeyError as exc:
        raise KeysUnusable(str(exc)) from exc


def _validity(signer: Any, s: Settings) -> tuple[int, int]:
    from signing.hcert import ValidityError, validity

    try:
        return validity(signer, int(time.time()), s.validity_days)
    except ValidityError as exc:
        raise KeysUnusable(str(exc)) from exc


def sign_batch(
    batch_id: str,
    settings: Settings | None = None,
    *,
    lease: Any | None = None,
    _fault: faults.Fault | None = None,
) -> dict[str, Any]:
    """Sign one batch and record its certificates. Does not change the batch state
    (run_step does); with the batch's ``lease`` it checks the lease before verifying and
    before recording (LeaseLost: another holder has the batch). Safe to call again at any
    point after a crash:

    * signed.parquet present → it was written only after verification, atomically: the
      certificates are inserted again (the ones already there are ignored), nothing is
      signed twice;
    * absent → orders that already hold a certificate elsewhere are quarantined
      (``already_issued``), the rest are signed, verified, written, recorded.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from transforms.schemas import SIGNED

    s = settings or get_settings()
    run_id, _seq = parse_batch_id(batch_id)
    paths = RunPaths.of(run_id, s)
    src, out = paths.batch_payloads(batch_id), paths.signed(batch_id)
    if not src.exists():
        raise InputMissing(f"batch {batch_id} has no payloads file: plan the run again")
    payloads = read_payloads(src, run_id)
    eng = ledger(s)
    quarantined: list[dict[str, Any]] = []
    resumed = out.exists()
    timings: dict[str, float] = {}

    if resumed:
        signed = pq.read_table(out).select(SIGNED.names).cast(SIGNED)
    if not resumed:
        from signing.hcert import sign_many

        orders = payloads["order_id"].to_pylist()
        with eng.connect() as conn:
            issued = _issued_for(conn, orders)
        mine = [o for o, r in issued.items() if r.batch_id == batch_id]
        if mine:
            raise LedgerMismatch(
                f"batch {batch_id}: the ledger holds certificates of this batch (orders "
                f"{', '.join(sorted(mine)[:5])}...) but its signed.parquet is gone; restore the "
                "file from backup instead of signing again"
            )
        if issued:
            quarantined += [
                _q(payloads, o, "already_issued", f"order already has certificate {issued[o].uvci}")
                for o in issued
            ]
            payloads = payloads.filter(
                pc.invert(pc.is_in(payloads["order_id"], pa.array(list(issued), pa.string())))
            )
        # consent, in SQL, immediately before signing; a row scrubbed by an earlier
        # withdrawal (payload_json null) is never signed, whatever its order does since
        scrubbed = set(
            pc.filter(payloads["order_id"], pc.is_null(payloads["payload_json"])).to_pylist()
        )
        gone, entries = _consent_gate(
            batch_id, payloads, payloads["order_id"].to_pylist(), scrubbed, "before signing", s
        )
        quarantined += entries
        payloads = _without(payloads, gone)
        signer = active_signer(s)
        iat, exp = _validity(signer, s)
        workers = s.resolved_workers()
        t0 = time.perf_counter()
        hc1s = sign_many(
            payloads["payload_json"].to_pylist(),
            iat=iat,
            exp=exp,
            keys=s.key_source(),
            iss=s.issuer_country,
            workers=workers,
        )
        timings["sign_s"] = time.perf_counter() - t0
        if len(hc1s) != payloads.num_rows:
            raise RuntimeError(
                f"batch {batch_id}: sign_many returned {len(hc1s)} certificates "
                f"for {payloads.num_rows} payloads"
            )
        # The fault switch fires here, mid-batch: signed but nothing written or recorded.
        in_pool = _fault is not None and _fault.mode in ("crash", "hang")
        crash: bool | str = in_pool and workers > 1 and len(hc1s) >= 64
        if crash and _fault is not None:
            faults.remember(_fault, run_id, settings=s)  # a pool worker dies in verify_many
            crash = "hang" if _fault.mode == "hang" else True
        elif _fault is not None:
            faults.fire(_fault, run_id, in_worker=False, settings=s)
        from cryptography.hazmat.primitives.serialization import Encoding

        if lease is not None:
            lease.check()
        t0 = time.perf_counter()
        checked = verify_many(
            hc1s,
            payloads["uvci"].to_pylist(),
            signer.dsc.public_bytes(Encoding.PEM),
            workers,
            crash_worker=crash,
        )
        timings["verify_s"] = time.perf_counter() - t0
        ok = pa.array([c.ok for c in checked], pa.bool_())
        orders_left = payloads["order_id"].to_pylist()
        quarantined += [
            _q(payloads, orders_left[i], "signature_invalid", c.reason)
            for i, c in enumerate(checked)
            if not c.ok
        ]
        kid = base64.b64encode(signer.kid).decode("ascii")
        n = payloads.num_rows
        signed = pa.table(
            {
                "order_id": payloads["order_id"],
                "uvci": payloads["uvci"],
                "kid": pa.array([kid] * n, pa.string()),
                "iat": pa.array([iat] * n, pa.int64()),
                "exp": pa.array([exp] * n, pa.int64()),
                "hc1": pa.array(hc1s, pa.string()),
            },
            schema=SIGNED,
        ).filter(ok)
        # consent again, before the certificates are kept (a withdrawal while signing)
        gone, entries = _consent_gate(
            batch_id, payloads, signed["order_id"].to_pylist(), set(), "while signing", s
        )
        quarantined += entries
        signed = _without(signed, gone)
        write_parquet_atomic(signed, out)
    else:
        # resumed: consent again before the signed file's certificates are recorded
        gone, entries = _consent_gate(
            batch_id, payloads, signed["order_id"].to_pylist(), set(), "before recording", s
        )
        quarantined += entries
        signed = _without(signed, gone)

    if lease is not None:
        lease.check()
    t0 = time.perf_counter()
    rows = _certificate_rows(signed, payloads, run_id, batch_id)
    with eng.begin() as conn:
        _insert_ignore(conn, rows)
    with eng.connect() as conn:
        held = _issued_for(conn, [r["order_id"] for r in rows])
    foreign, broken = [], []
    for r in rows:
        h = held.get(r["order_id"])
        if h is None or (h.uvci == r["uvci"] and h.hc1_sha256 == r["hc1_sha256"]):
            if h is None:
                broken.append(r["order_id"])
            continue
        (broken if h.batch_id == batch_id else foreign).append(r["order_id"])
    if broken:
        raise LedgerMismatch(
            f"batch {batch_id}: orders {', '.join(broken[:5])} do not match the ledger after "
            "insert (a certificate with the same UVCI exists for another order, or the ledger "
            "row differs from signed.parquet)"
        )
    if foreign:  # lost a race with another batch for the same order: that one counts
        quarantined += [
            _q(payloads, o, "already_issued", f"order already has certificate {held[o].uvci}")
            for o in foreign
        ]
        signed = signed.filter(
            pc.invert(pc.is_in(signed["order_id"], pa.array(foreign, pa.string())))
        )
        write_parquet_atomic(signed, out)
    timings["ledger_s"] = time.perf_counter() - t0
    _quarantine(run_id, quarantined, s)
    return {
        "certificates": signed.num_rows,
        "quarantined": len(quarantined),
        "resumed": resumed,
        **{k: round(v, 3) for k, v in timings.items()},
    }


def _without(table, order_ids: set[str]):
    """The table without the rows of these orders."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not order_ids:
        return table
    return table.filter(
        pc.invert(pc.is_in(table["order_id"], pa.array(sorted(order_ids), pa.string())))
    )


def _consent_gate(
    batch_id: str, payloads, orders: list[str], already: set[str], when: str, s: Settings
) -> tuple[set[str], list[dict[str, Any]]]:
    """The ``orders`` whose consent lapsed (checked in SQL now, in the sources database),
    plus ``already`` (withdrawn before): withdrawn — certificate WITHDRAWN if one
    was recorded, order released with its waiting duplicates, personal data scrubbed from
    the run's files (jobs.steps.scrub.withdraw). Returns them and their quarantine entries
    (reason ``consent_withdrawn``, by order id and pid)."""
    from jobs.steps.scrub import lapsed_in_batch, withdraw

    gone = lapsed_in_batch(batch_id, [o for o in orders if o not in already], s) | already
    gone &= set(orders)
    if not gone:
        return set(), []
    withdraw(batch_id, gone, s)
    entries = [
        _q(payloads, o, CONSENT_WITHDRAWN, f"consent withdrawn after the extract ({when})")
        for o in sorted(gone)
    ]
    return gone, entries


def _q(payloads, order_id: str, reason: str, detail: str) -> dict[str, Any]:
    pid = _pid_of(payloads, order_id)
    return {
        "reason_code": reason,
        "order_id": order_id,
        "pid": pid,
        "event_id": None,
        "suite": None,
        "expectation": None,
        "detail": detail,
    }


def _pid_of(payloads, order_id: str) -> str | None:
    import pyarrow.compute as pc

    hit = payloads.filter(pc.equal(payloads["order_id"], order_id))
    return hit["pid"][0].as_py() if hit.num_rows else None


def _certificate_rows(signed, payloads, run_id: str, batch_id: str) -> list[dict[str, Any]]:
    """Ledger rows for the signed certificates, with the reporting dimensions."""
    dims = {
        r["order_id"]: r
        for r in payloads.select(
            ["order_id", "pid", "cert_type", "county", "age_band", "product", "dn", "sd"]
        ).to_pylist()
    }
    from signing.revocation import hashes_of_issued

    now = datetime.now(UTC)
    rows = []
    for r in signed.to_pylist():
        d = dims.get(r["order_id"])
        if d is None:
            raise LedgerMismatch(
                f"batch {batch_id}: signed order {r['order_id']} is not in the batch payloads"
            )
        revocation = hashes_of_issued(r["hc1"], r["uvci"])  # what revocation batches need
        rows.append(
            {
                "uvci": r["uvci"],
                "order_id": r["order_id"],
                "pid": d["pid"],
                "run_id": run_id,
                "batch_id": batch_id,
                "cert_type": d["cert_type"] or "v",
                "kid": r["kid"],
                "iat": r["iat"],
                "exp": r["exp"],
                "hc1_sha256": hashlib.sha256(r["hc1"].encode("ascii")).hexdigest(),
                "county": d["county"],
                "age_band": d["age_band"],
                "product": d["product"],
                "dn": d["dn"],
                "sd": d["sd"],
                "issued_at": now,
                "issuer_country": revocation.country,
                "hash_uci": revocation.uci,
                "hash_countrycodeuci": revocation.countrycodeuci,
                "hash_signature": revocation.signature,
            }
        )
    return rows
