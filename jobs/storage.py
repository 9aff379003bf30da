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


# A run folder holds identity data (extract, payloads, print queues): it and every folder
# in it are owner-only, and every file written into it is readable by its owner only,
# whatever mode a caller asks for.
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def run_root(path: Path) -> Path | None:
    """The run folder (``…/runs/<run id>``) that holds ``path``, or None."""
    for p in (path, *path.parents):
        if p.parent.name == "runs" and p.name:
            return p
    return None


def private_dirs(folder: Path) -> Path:
    """``folder`` and its missing parents, created owner-only (0700)."""
    missing = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=PRIVATE_DIR)
        os.chmod(d, PRIVATE_DIR)  # whatever the umask
    return folder


def _prepare(target: Path, mode: int) -> int:
    """Create the target's folder; the file mode to use (owner-only in a run folder)."""
    root = run_root(target)
    if root is None:
        target.parent.mkdir(parents=True, exist_ok=True)
        return mode
    private_dirs(target.parent)
    for d in (root, root.parent):  # folders made before this rule, or by other tools
        if d.stat().st_mode & 0o077:
            os.chmod(d, PRIVATE_DIR)
    return mode & PRIVATE_FILE


@contextlib.contextmanager
def atomic_path(target: Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.
    In a run folder the folders are made 0700 and the file is at most 0600."""
    mode = _prepare(target, mode)
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
