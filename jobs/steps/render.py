"""render[b]: one PDF per signed certificate, on all cores.

Input is either a batch of a run (``RunPaths.signed`` joined with the batch's payloads by
UVCI) or the JSON lines of ``bevis sign`` (``ci, kid, iat, exp, hc1`` and optionally
``payload``; without it the payload is decoded from the HC1 by
``signing.verify.decode_dcc`` — display only, not verified).

File names are a hash of the UVCI (no personal data), files are mode 0600 in a 0700
folder. Idempotent: a file that already exists and ends with the PDF trailer is kept. PDFs
are written to a temporary name and renamed, without an fsync per file (that would cost
more than rendering); a file damaged by a crash fails the trailer check and is rendered
again on the rerun.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.errors import NotRetryable
from jobs.ids import pdf_name, run_of
from jobs.log import get_logger
from jobs.settings import Settings, get_settings
from jobs.storage import RunPaths

log = get_logger(__name__)

PDF_MODE = 0o600
DIR_MODE = 0o700
LEASE_CHUNK = 32  # certificates rendered in-process between two checks of the batch's lease


class RenderFailed(NotRetryable):
    """Some certificates of a batch could not be rendered; names them by UVCI."""


@dataclass(frozen=True)
class RenderItem:
    """One certificate to render: what the page needs and nothing else."""

    uvci: str
    hc1: str
    exp: int | None
    payload_json: str | None  # None: decode from the HC1


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
            if item.payload_json:
                payload = json.loads(item.payload_json)
            else:  # display only; imported here: verification's imports cost ~150 ms
                from signing.verify import decode_dcc

                payload = decode_dcc(item.hc1)
            data = certificate_pdf(view_of(payload, item.hc1, item.exp), author=author)
        except RenderError as exc:  # our own texts: they name the field, never the value
            failed.append((item.uvci, str(exc)[:200]))
            continue
        except ValueError as exc:  # a wrongly typed value: its text may quote the value
            failed.append(
                (item.uvci, f"a payload field has an unusable value ({type(exc).__name__})")
            )
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
    lease: Any | None = None,
) -> dict[str, Any]:
    """Render certificates into ``out_dir`` on ``workers`` processes (default: settings).
    Returns counts: rendered, skipped (already there), failed [(uvci, reason)]. With a
    batch ``lease``, it is checked before each chunk (LeaseLost stops the rendering)."""
    s = settings or get_settings()
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, DIR_MODE)
    n_workers = max(1, workers or s.resolved_workers())
    totals: dict[str, Any] = {"rendered": 0, "skipped": 0, "failed": []}
    if not items:
        return totals
    if n_workers == 1 or len(items) < 64:
        if lease is None:
            parts = [_render_chunk(items, str(out_dir), s.issuer_name)]
        else:
            parts = []
            for i in range(0, len(items), LEASE_CHUNK):
                lease.check()
                parts.append(_render_chunk(items[i : i + LEASE_CHUNK], str(out_dir), s.issuer_name))
    else:
        size = max(16, -(-len(items) // (n_workers * 4)))
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            if lease is None:
                futures = [
                    pool.submit(_render_chunk, c, str(out_dir), s.issuer_name) for c in chunks
                ]
                parts = [f.result() for f in futures]
            else:  # two chunks per worker in flight; the lease is checked before each
                parts, running = [], deque()
                for c in chunks:
                    if len(running) >= 2 * n_workers:
                        parts.append(running.popleft().result())
                    lease.check()
                    running.append(pool.submit(_render_chunk, c, str(out_dir), s.issuer_name))
                parts.extend(f.result() for f in running)
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


def render_batch(
    batch_id: str, settings: Settings | None = None, *, lease: Any | None = None
) -> dict[str, Any]:
    """render[b]: PDFs of a signed batch under ``RunPaths.pdf_dir``. Idempotent; does not
    touch the Batch state (``jobs.batches.run_step`` does). Raises RenderFailed naming the
    UVCIs that could not be rendered, after rendering all the others; LeaseLost when the
    batch's ``lease`` is lost (checked before each chunk)."""
    s = settings or get_settings()
    items = batch_items(batch_id, s)
    out_dir = RunPaths.of(run_of(batch_id), s).pdf_dir(batch_id)
    result = render_items(items, out_dir, s, lease=lease)
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
