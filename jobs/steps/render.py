"""render[b]: one PDF per signed certificate, on all cores.

Input is either a batch of a run (``RunPaths.signed`` joined with the batch's payloads by
UVCI) or the JSON lines of ``bevis sign`` (``ci, kid, iat, exp, hc1`` and optionally
``payload``; without it the payload is decoded from the HC1 — display only, not verified).

File names are a hash of the UVCI (no personal data), files are mode 0600 in a 0700
folder. Idempotent: a file that already exists and ends with the PDF trailer is kept. PDFs
are written to a temporary name and renamed, without an fsync per file (that would cost
more than rendering); a file damaged by a crash fails the trailer check and is rendered
again on the rerun.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.ids import pdf_name, run_of
from jobs.log import get_logger
from jobs.settings import Settings, get_settings
from jobs.storage import RunPaths

log = get_logger(__name__)

PDF_MODE = 0o600
DIR_MODE = 0o700
_B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_B45_INDEX = {c: i for i, c in enumerate(_B45)}


class RenderFailed(RuntimeError):
    """Some certificates of a batch could not be rendered; names them by UVCI."""


@dataclass(frozen=True)
class RenderItem:
    """One certificate to render: what the page needs and nothing else."""

    uvci: str
    hc1: str
    exp: int | None
    payload_json: str | None  # None: decode from the HC1


def _b45decode(text: str) -> bytes:
    out = bytearray()
    for i in range(0, len(text), 3):
        chunk = [_B45_INDEX[c] for c in text[i : i + 3]]
        n = sum(v * 45**k for k, v in enumerate(chunk))
        out.extend(divmod(n, 256) if len(chunk) == 3 else (n,))
    return bytes(out)


def payload_from_hc1(hc1: str) -> dict[str, Any]:
    """The DCC payload inside an HC1, for display. The signature is NOT verified here
    (``signing.verify`` does that); a malformed HC1 raises ValueError."""
    import cbor2

    if not hc1.startswith("HC1:"):
        raise ValueError("not an HC1 string (prefix missing)")
    try:
        raw = _b45decode(hc1[4:])
        if raw[:1] == b"\x78":
            raw = zlib.decompress(raw)
        cose = cbor2.loads(raw)
        if isinstance(cose, cbor2.CBORTag):
            cose = cose.value
        claims = cbor2.loads(cose[2])
        return claims[-260][1]
    except (KeyError, IndexError, TypeError, zlib.error, cbor2.CBORDecodeError) as exc:
        raise ValueError(f"HC1 cannot be decoded: {type(exc).__name__}") from exc


def _is_complete(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(-16, os.SEEK_END)
            return b"%%EOF" in fh.read()
    except OSError:
        return False


def _render_chunk(items: Sequence[RenderItem], out_dir: str, author: str) -> dict[str, Any]:
    """Render a chunk in one process (top-level: picklable for the process pool)."""
    from jobs.steps.pdf import RenderError, certificate_pdf, view_of

    rendered = skipped = 0
    failed: list[tuple[str, str]] = []
    folder = Path(out_dir)
    for item in items:
        target = folder / pdf_name(item.uvci)
        if _is_complete(target):
            skipped += 1
            continue
        try:
            payload = (
                json.loads(item.payload_json) if item.payload_json else payload_from_hc1(item.hc1)
            )
            data = certificate_pdf(view_of(payload, item.hc1, item.exp), author=author)
        except (RenderError, ValueError) as exc:
            failed.append((item.uvci, str(exc)[:200]))
            continue
        tmp = folder / f".{target.name}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PDF_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
        rendered += 1
    return {"rendered": rendered, "skipped": skipped, "failed": failed}


def render_items(
    items: Sequence[RenderItem],
    out_dir: Path,
    settings: Settings | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Render certificates into ``out_dir`` on ``workers`` processes (default: settings).
    Returns counts: rendered, skipped (already there), failed [(uvci, reason)]."""
    s = settings or get_settings()
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, DIR_MODE)
    n_workers = max(1, workers or s.resolved_workers())
    totals: dict[str, Any] = {"rendered": 0, "skipped": 0, "failed": []}
    if not items:
        return totals
    if n_workers == 1 or len(items) < 64:
        parts = [_render_chunk(items, str(out_dir), s.issuer_name)]
    else:
        size = max(16, -(-len(items) // (n_workers * 4)))
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            futures = [pool.submit(_render_chunk, c, str(out_dir), s.issuer_name) for c in chunks]
            parts = [f.result() for f in futures]
    for part in parts:
        totals["rendered"] += part["rendered"]
        totals["skipped"] += part["skipped"]
        totals["failed"].extend(part["failed"])
    return totals


def read_certs_jsonl(path: Path) -> list[RenderItem]:
    """The lines of ``bevis sign`` output as render items (line numbers in errors)."""
    items = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                payload = rec.get("payload")
                items.append(
                    RenderItem(
                        uvci=rec["ci"],
                        hc1=rec["hc1"],
                        exp=rec.get("exp"),
                        payload_json=json.dumps(payload) if isinstance(payload, dict) else payload,
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path.name} line {n}: {type(exc).__name__}: {exc}") from exc
    return items


def render_file(
    certs_jsonl: Path, out_dir: Path, settings: Settings | None = None, workers: int | None = None
) -> dict[str, Any]:
    """Render every certificate of a ``bevis sign`` JSON-lines file into ``out_dir``."""
    return render_items(read_certs_jsonl(Path(certs_jsonl)), Path(out_dir), settings, workers)


def batch_items(batch_id: str, settings: Settings | None = None) -> list[RenderItem]:
    """Signed certificates of a batch joined with their payloads by UVCI."""
    import pyarrow.parquet as pq

    paths = RunPaths.of(run_of(batch_id), settings)
    signed = pq.read_table(paths.signed(batch_id), columns=["uvci", "hc1", "exp"]).to_pylist()
    payloads = pq.read_table(paths.batch_payloads(batch_id), columns=["uvci", "payload_json"])
    by_uvci = dict(
        zip(
            payloads.column("uvci").to_pylist(),
            payloads.column("payload_json").to_pylist(),
            strict=True,
        )
    )
    return [
        RenderItem(uvci=r["uvci"], hc1=r["hc1"], exp=r["exp"], payload_json=by_uvci.get(r["uvci"]))
        for r in signed
    ]


def render_batch(batch_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """render[b]: PDFs of a signed batch under ``RunPaths.pdf_dir``. Idempotent; does not
    touch the Batch state (``jobs.batches.run_step`` does). Raises RenderFailed naming the
    UVCIs that could not be rendered, after rendering all the others."""
    s = settings or get_settings()
    items = batch_items(batch_id, s)
    out_dir = RunPaths.of(run_of(batch_id), s).pdf_dir(batch_id)
    result = render_items(items, out_dir, s)
    log.info(
        "render_batch",
        batch_id=batch_id,
        rendered=result["rendered"],
        skipped=result["skipped"],
        failed=len(result["failed"]),
    )
    if result["failed"]:
        names = ", ".join(f"{u} ({why})" for u, why in result["failed"][:5])
        raise RenderFailed(f"batch {batch_id}: {len(result['failed'])} not rendered: {names}")
    return {"batch_id": batch_id, "pdf_dir": str(out_dir), **result}


def iter_pdfs(batch_id: str, uvcis: Iterable[str], settings: Settings | None = None):
    """(uvci, path) of the rendered PDFs of a batch, for delivery."""
    folder = RunPaths.of(run_of(batch_id), settings).pdf_dir(batch_id)
    for uvci in uvcis:
        yield uvci, folder / pdf_name(uvci)


def bench_render(n: int = 2000, workers: int | None = None) -> dict[str, Any]:
    """PDFs per second on all cores (process pool, including its start) and on one core,
    from synthetic certificates with realistic HC1 sizes, into a temporary folder."""
    import resource
    import tempfile
    import time

    from jobs.devtools.drill import drill_payload, unsigned_hc1

    def cpu(who: int) -> float:
        r = resource.getrusage(who)
        return r.ru_utime + r.ru_stime

    s = get_settings()
    n_workers = workers or s.resolved_workers()
    items = []
    for i in range(n):
        uvci = f"URN:UVCI:01:SE:EHM/BENCH{i:010d}"
        payload = drill_payload(i, uvci)
        items.append(
            RenderItem(
                uvci, unsigned_hc1(payload, 1767225600, 1798761600), 1798761600, json.dumps(payload)
            )
        )
    result: dict[str, Any] = {"n": n, "workers": n_workers, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bevis-bench-render-") as tmp:
        t0, c0 = time.perf_counter(), cpu(resource.RUSAGE_CHILDREN)
        counts = render_items(items, Path(tmp) / "all", s, n_workers)
        all_s = time.perf_counter() - t0
        pool_cpu = cpu(resource.RUSAGE_CHILDREN) - c0
        sizes = [p.stat().st_size for p in (Path(tmp) / "all").iterdir()]
        single = items[: max(1, n // 4)]
        t0, c0 = time.perf_counter(), cpu(resource.RUSAGE_SELF)
        render_items(single, Path(tmp) / "one", s, 1)
        one_s = time.perf_counter() - t0
        one_cpu = cpu(resource.RUSAGE_SELF) - c0
    result.update(
        rendered=counts["rendered"],
        seconds=round(all_s, 3),
        pdfs_per_s=round(n / all_s, 1),
        one_core_pdfs_per_s=round(len(single) / one_s, 1),
        # load-independent capacity: PDFs per CPU-second (pool workers / one process)
        pool_pdfs_per_cpu_s=round(n / pool_cpu, 1) if pool_cpu else None,
        one_core_pdfs_per_cpu_s=round(len(single) / one_cpu, 1) if one_cpu else None,
        mean_pdf_bytes=round(sum(sizes) / len(sizes)),
        hc1_chars=round(sum(len(i.hc1) for i in items) / n),
        load_after=os.getloadavg(),
    )
    return result
