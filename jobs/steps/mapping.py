"""The map step: validated.parquet → payloads.parquet (+ quarantine for unmappable orders).

Pure work happens in :mod:`transforms.payloads`; this module only reads the run's file,
writes the outputs atomically and records the quarantine. Idempotent: the mapping is
deterministic (UVCIs are keyed hashes of order and event ids); ``map.json`` records a
fingerprint of what the payloads depend on, so a rerun of a finished map is a no-op and a
rerun after its input changed maps again (adding no quarantine rows twice).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from jobs.errors import InputMissing
from jobs.log import get_logger
from jobs.settings import Settings, get_settings
from jobs.storage import RunPaths, write_parquet_atomic, write_text_atomic

log = get_logger(__name__)

STEP = "map"


class MappingInputMissing(InputMissing):
    """The run has no validated extract to map."""


@dataclass(frozen=True)
class MapResult:
    run_id: str
    rows: int  # validated rows read
    orders: int  # distinct orders read
    payloads: int  # orders mapped to a payload
    quarantined_orders: int
    quarantine_entries: int
    path: str
    product_table_version: str
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def uvci_key(settings: Settings) -> bytes:
    """The key of the UVCI hash: the dedicated setting, else derived from the pseudonym key."""
    from transforms.uvci import derive_key

    secret = settings.uvci_key or settings.pseudonym_key
    return derive_key(secret.get_secret_value().encode("utf-8"))


def map_config(settings: Settings):
    """The transforms' view of the settings."""
    from transforms.payloads import MapConfig

    return MapConfig(
        uvci_key=uvci_key(settings),
        country=settings.issuer_country,
        issuer_name=settings.issuer_name,
        uvci_issuer=settings.uvci_issuer,
    )


def _fingerprint(source: Path, settings: Settings) -> str:
    """What the payloads depend on: the input file, the product table, the issuer settings
    and (a hash of) the UVCI key — never the key itself."""
    import hashlib

    from transforms.products import load_products

    cfg = map_config(settings)
    h = hashlib.sha256()
    with open(source, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    h.update(load_products().version.encode())
    h.update(f"{cfg.country}|{cfg.issuer_name}|{cfg.uvci_issuer}|{cfg.ver}".encode())
    h.update(hashlib.sha256(cfg.uvci_key).digest())
    return h.hexdigest()


def map_run(run_id: str, settings: Settings | None = None, force: bool = False) -> MapResult:
    """Map the run's validated.parquet to payloads.parquet; quarantine what cannot be mapped.

    A rerun with the same input, product table and settings returns the recorded result
    without rewriting payloads.parquet (the dcc_payload suite may have filtered it since);
    a changed input maps again. ``force`` maps again regardless."""
    import json

    import pyarrow.parquet as pq

    from jobs.ledger import quarantine
    from transforms.payloads import map_frame
    from transforms.schemas import EXTRACT

    s = settings or get_settings()
    paths = RunPaths.of(run_id, s)
    source: Path = paths.validated
    meta = paths.root / "map.json"
    if not source.exists():
        raise MappingInputMissing(
            f"run {run_id}: no validated extract at {source.name}; run 'bevis validate' first"
        )
    started = time.perf_counter()
    fingerprint = _fingerprint(source, s)
    if not force and meta.exists() and paths.payloads.exists():
        recorded = json.loads(meta.read_text("utf-8"))
        if recorded.get("fingerprint") == fingerprint:
            log.info("map already done", run_id=run_id, payloads=recorded["result"]["payloads"])
            return MapResult(**recorded["result"])

    table = pq.read_table(source)
    missing = [f.name for f in EXTRACT if f.name not in table.column_names]
    if missing:
        raise ValueError(f"run {run_id}: {source.name} lacks columns {missing}")
    rows = table.select(EXTRACT.names).to_pandas(date_as_object=False)
    mapped = map_frame(rows, map_config(s))
    write_parquet_atomic(mapped.payloads, paths.payloads)
    entries = mapped.quarantine
    quarantine.record(run_id, STEP, entries, settings=s)
    seconds = time.perf_counter() - started
    result = MapResult(
        run_id=run_id,
        rows=len(rows),
        orders=int(rows["order_id"].nunique()),
        payloads=mapped.payloads.num_rows,
        quarantined_orders=int(entries["order_id"].nunique()) if len(entries) else 0,
        quarantine_entries=len(entries),
        path=str(paths.payloads),
        product_table_version=mapped.product_table_version,
        seconds=round(seconds, 3),
    )
    write_text_atomic(
        json.dumps({"fingerprint": fingerprint, "result": result.as_dict()}, indent=2), meta
    )
    log.info(
        "mapped",
        run_id=run_id,
        rows=result.rows,
        payloads=result.payloads,
        quarantined_orders=result.quarantined_orders,
        products=result.product_table_version,
        seconds=result.seconds,
    )
    return result
