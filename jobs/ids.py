"""Ids and file names: run ids, batch ids, and what a certificate's files are called.

One place builds and parses them, so that a step never has to know another step's naming.
None of them carries personal data: runs and batches are named by time and sequence,
certificate files by a hash of the UVCI.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
BATCH_ID = re.compile(r"^(?P<run>.+)-b(?P<seq>\d{4,})$")


def new_run_id(now: datetime | None = None) -> str:
    """A fresh run id, safe in file names and sortable by start time."""
    t = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{t:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"  # 32 bits: no collision within a second


def check_run_id(run_id: str) -> str:
    """Refuse run ids that would be unsafe as a folder name or too long for the ledger."""
    if not RUN_ID.match(run_id or "") or ".." in run_id:
        raise ValueError(
            f"invalid run id {run_id!r}: use letters, digits, '-', '_' and '.' (at most 63)"
        )
    return run_id


def airflow_run_id(dag_run_id: str) -> str:
    """A bevis run id derived deterministically from an Airflow dag_run id, safe in paths:
    a retried ``begin`` task finds the same run."""
    digest = hashlib.sha256(dag_run_id.encode()).hexdigest()[:8]
    stem = re.sub(r"[^0-9A-Za-z]+", "", dag_run_id.split("__")[-1])[:15]
    return f"af{stem}-{digest}"


def batch_id_of(run_id: str, seq: int) -> str:
    """The stable id of batch ``seq`` of ``run_id``."""
    return f"{run_id}-b{seq:04d}"


def parse_batch_id(batch_id: str) -> tuple[str, int]:
    """``"<run>-b0003"`` → (run, 3); ValueError for anything else."""
    m = BATCH_ID.match(batch_id or "")
    if not m:
        raise ValueError(f"invalid batch id {batch_id!r}: expected '<run id>-b<sequence>'")
    return m["run"], int(m["seq"])


def run_of(batch_id: str) -> str:
    """The run id of a batch id (``f"{run_id}-b{seq:04d}"``)."""
    run_id, sep, seq = batch_id.rpartition("-b")
    if not sep or not run_id or not seq.isdigit():
        raise ValueError(f"invalid batch id {batch_id!r}")
    return run_id


def pdf_name(uvci: str) -> str:
    """The PDF file name of a certificate: a hash of its UVCI (no personal data)."""
    return hashlib.sha256(uvci.encode("utf-8")).hexdigest()[:32] + ".pdf"


def idempotency_key(uvci: str) -> str:
    """The same key for every attempt to deliver one certificate, in any run."""
    return "bevis-" + hashlib.sha256(uvci.encode("utf-8")).hexdigest()[:40]
