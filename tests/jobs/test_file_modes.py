"""Files with identity data are the owner's only (issue 14, item 8): run folders 0700 and
the files written into them 0600 (extract, validated, payloads, quarantine, metadata),
whatever mode a step asks for; SQLite databases (sources, ledger) 0600 with their WAL."""

from __future__ import annotations

import stat
from pathlib import Path

from jobs.devtools.seed import seed
from jobs.ledger.runs import start_run
from jobs.steps.extract import extract
from jobs.steps.mapping import map_run
from jobs.steps.validate import validate
from jobs.storage import RunPaths, write_parquet_atomic, write_text_atomic


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_run_folders_are_0700_and_their_files_0600(bevis_env: Path, monkeypatch) -> None:
    """Before: extract.parquet 0640 and extract.json 0644 in runs/<run> 0755 (runs/ 0755)."""
    monkeypatch.setenv("BEVIS_QUARANTINE_THRESHOLD", "0.5")  # defects wanted: quarantine files
    seed(120, seed=2, defect_rate=0.05)
    run = start_run("r-modes")
    extract(run)
    validate(run, "nvr_extract")
    map_run(run)
    paths = RunPaths.of(run)
    written = [
        paths.extract,
        paths.extract_meta,
        paths.validated,
        paths.payloads,
        *sorted(paths.quarantine_dir.glob("*.parquet")),
    ]
    assert all(p.exists() for p in written), [p for p in written if not p.exists()]
    modes = {str(p.relative_to(bevis_env)): oct(_mode(p)) for p in written}
    assert set(modes.values()) == {oct(0o600)}, modes
    for folder in (bevis_env / "runs", paths.root, paths.quarantine_dir):
        assert _mode(folder) == 0o700, (folder, oct(_mode(folder)))
    # what other tools write below the run folder cannot be reached by others either
    assert all(_mode(d) & 0o077 == 0 for d in (bevis_env / "runs", paths.root))


def test_a_step_asking_for_0644_still_gets_0600_in_a_run_folder(bevis_env: Path) -> None:
    import pyarrow as pa

    paths = RunPaths.of("r-asks")
    deep = paths.batch_dir("r-asks-b0001") / "extra" / "x.txt"
    write_text_atomic("x", deep, mode=0o644)
    write_parquet_atomic(pa.table({"a": [1]}), paths.payloads, mode=0o644)
    assert _mode(deep) == 0o600 and _mode(paths.payloads) == 0o600
    for d in (deep.parent, deep.parent.parent, paths.batches_dir, paths.root):
        assert _mode(d) == 0o700, d
    outside = bevis_env / "exports" / "report.csv"  # not a run folder: the caller's mode
    write_text_atomic("x", outside, mode=0o644)
    assert _mode(outside) == 0o644


def test_a_legacy_run_folder_is_closed_on_the_next_write(bevis_env: Path) -> None:
    paths = RunPaths.of("r-legacy")
    paths.root.mkdir(parents=True)
    paths.root.chmod(0o755)
    (bevis_env / "runs").chmod(0o755)
    write_text_atomic("{}", paths.extract_meta)
    assert _mode(paths.root) == 0o700 and _mode(bevis_env / "runs") == 0o700


def test_sqlite_databases_are_0600(bevis_env: Path) -> None:
    """Before: the seeded nvr.db and the ledger.db were 0644."""
    seed(30, seed=1)
    start_run("r-db")
    for name in ("nvr.db", "ledger.db", "seed-manifest.json"):
        assert _mode(bevis_env / name) == 0o600, name
    for wal in bevis_env.glob("*.db-*"):  # -wal, -shm take the database file's mode
        assert _mode(wal) == 0o600, wal.name
