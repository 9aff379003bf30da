"""Where the data of a run rests between tasks, and how it is written (atomically).

Tasks pass run ids and batch ids; the files live under ``<data_dir>/runs/<run_id>/``.
Every file appears atomically: written to a temporary name in the same folder, fsynced,
then renamed, so a crashed task never leaves a half-written file that a rerun would trust.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jobs.settings import Settings, get_settings


@dataclass(frozen=True)
class RunPaths:
    """The files of one run. Names carry run and batch ids only, never personal data."""

    root: Path

    @classmethod
    def of(cls, run_id: str, settings: Settings | None = None) -> RunPaths:
        s = settings or get_settings()
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise ValueError(f"invalid run id {run_id!r}")
        return cls(s.resolved_data_dir() / "runs" / run_id)

    @property
    def extract(self) -> Path:
        return self.root / "extract.parquet"

    @property
    def extract_meta(self) -> Path:
        return self.root / "extract.json"

    @property
    def validated(self) -> Path:
        return self.root / "validated.parquet"

    @property
    def payloads(self) -> Path:
        return self.root / "payloads.parquet"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    def quarantine(self, step: str) -> Path:
        return self.quarantine_dir / f"{step}.parquet"

    @property
    def data_docs(self) -> Path:
        return self.root / "data_docs"

    @property
    def batches_dir(self) -> Path:
        return self.root / "batches"

    def batch_dir(self, batch_id: str) -> Path:
        return self.batches_dir / batch_id

    def batch_payloads(self, batch_id: str) -> Path:
        return self.batch_dir(batch_id) / "payloads.parquet"

    def signed(self, batch_id: str) -> Path:
        return self.batch_dir(batch_id) / "signed.parquet"

    def pdf_dir(self, batch_id: str) -> Path:
        return self.batch_dir(batch_id) / "pdf"

    def print_dir(self, batch_id: str) -> Path:
        return self.batch_dir(batch_id) / "print"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"


@contextlib.contextmanager
def atomic_path(target: Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, mode)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet_atomic(table, target: Path, mode: int = 0o640) -> Path:
    """Write a pyarrow Table to ``target`` atomically (zstd)."""
    import pyarrow.parquet as pq

    with atomic_path(target, mode) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return target


def write_bytes_atomic(data: bytes, target: Path, mode: int = 0o644) -> Path:
    with atomic_path(target, mode) as tmp:
        tmp.write_bytes(data)
    return target


def write_text_atomic(text: str, target: Path, mode: int = 0o644) -> Path:
    return write_bytes_atomic(text.encode("utf-8"), target, mode)
