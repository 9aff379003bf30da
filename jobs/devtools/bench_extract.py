"""``bevis bench extract``: rows per second of the extract on a scratch register.

The register is seeded (:mod:`jobs.devtools.seed`), then extracted in a fresh process so
that its peak RSS is the extract's alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from sqlalchemy.engine import make_url

from jobs.devtools.seed import peak_rss_mb
from jobs.devtools.seed import seed as run_seed
from jobs.settings import get_settings
from jobs.steps.extract import ExtractError, extract


def _bench_child() -> None:
    """Run in a fresh process by :func:`bench_extract`: extract, print figures as JSON."""
    t0, c0 = time.perf_counter(), time.process_time()
    r = extract("bench")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = peak_rss_mb()
    print(
        json.dumps(
            {"rows": r.rows, "orders": r.orders, "seconds": seconds, "cpu": cpu, "peak": peak}
        )
    )


def bench_extract(persons: int, db: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Seed a scratch register, then extract all of it in a fresh process (so that its
    peak RSS is the extract's alone) and return the figures."""
    base = get_settings().resolved_data_dir() / "bench"
    base.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="extract-", dir=base)
    try:
        s = get_settings(data_dir=tmp)
        url = db or s.resolved_source_url()
        m = run_seed(persons, seed=seed, url=url, settings=s)
        env = {**os.environ, "BEVIS_DATA_DIR": tmp, "BEVIS_SOURCE_URL": url}
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "from jobs.devtools.bench_extract import _bench_child; _bench_child()",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        child = json.loads(out.strip().splitlines()[-1])
        if child["rows"] != m.expected_extract["rows"]:
            raise ExtractError("bench: extract and manifest disagree on the row count")
        return {
            "bench": "extract",
            "db": make_url(url).get_backend_name(),
            "persons": persons,
            "seed_seconds": m.seconds,
            "rows": child["rows"],
            "orders": child["orders"],
            "seconds": round(child["seconds"], 3),
            "rows_per_s": round(child["rows"] / child["seconds"]),
            # CPU seconds of the extract process (without the database server's on
            # PostgreSQL): a figure that a loaded machine distorts less than wall time
            "cpu_seconds": round(child["cpu"], 3),
            "rows_per_cpu_s": round(child["rows"] / max(child["cpu"], 1e-9)),
            "peak_rss_mb": round(child["peak"], 1),
            "load": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
