"""``bevis bench render``: PDFs per second, on all cores and on one.

The certificates are the drill's synthetic ones (:mod:`jobs.devtools.drill`): realistic
payloads and HC1 sizes with a zero signature, rendered into a temporary folder.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from jobs.devtools.drill import drill_payload, unsigned_hc1
from jobs.settings import get_settings
from jobs.steps.render import RenderItem, render_items


def bench_render(n: int = 2000, workers: int | None = None) -> dict[str, Any]:
    """PDFs per second on all cores (process pool, including its start) and on one core,
    from synthetic certificates with realistic HC1 sizes, into a temporary folder."""

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
