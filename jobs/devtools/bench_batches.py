"""``bevis bench batches``: the sign step through the batch machinery on synthetic payloads."""

from __future__ import annotations

import os
import time
from typing import Any

from jobs.batches import batch_size_for, plan, run_step
from jobs.devtools.synthetic import synthetic_payloads
from jobs.ids import new_run_id
from jobs.settings import Settings, get_settings
from jobs.storage import RunPaths, write_parquet_atomic


def bench(n: int, settings: Settings | None = None) -> dict[str, Any]:
    """Sign ``n`` synthetic certificates through the machinery (plan, run_step sign of every
    batch in turn, each on all cores) and return the figures. Development keys are made
    in the key folder when there are none (file provider)."""
    import secrets

    from jobs.ledger.runs import finish_run, start_run

    s = settings or get_settings()
    if s.key_provider == "file" and not (s.resolved_key_dir() / "dsc.pem").exists():
        from signing.keys import init_dev_keys

        init_dev_keys(s.resolved_key_dir(), country=s.issuer_country)
    run_id = start_run(new_run_id(), parameters={"bench": "batches", "n": n}, settings=s)
    t0 = time.perf_counter()
    table = synthetic_payloads(n, seed=0, prefix=f"BN{secrets.token_hex(3).upper()}")
    write_parquet_atomic(table, RunPaths.of(run_id, s).payloads)
    prepare_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids = plan(run_id, s)
    plan_s = time.perf_counter() - t0
    parts: dict[str, float] = {"sign_s": 0.0, "verify_s": 0.0, "ledger_s": 0.0}
    certs = 0
    t0 = time.perf_counter()
    for bid in ids:
        r = run_step(bid, "sign", s)
        certs += r["certificates"]
        for k in parts:
            parts[k] += r.get(k, 0.0)
    step_s = time.perf_counter() - t0
    finish_run(run_id, "SUCCEEDED", settings=s)
    total = plan_s + step_s
    return {
        "bench": "batches",
        "run_id": run_id,
        "n": n,
        "certificates": certs,
        "batches": len(ids),
        "batch_size": batch_size_for(n, s),
        "workers": s.resolved_workers(),
        "prepare_s": round(prepare_s, 2),
        "plan_s": round(plan_s, 2),
        "sign_step_s": round(step_s, 2),
        "total_s": round(total, 2),
        "per_s": round(certs / total, 1) if total else None,
        "raw_sign_s": round(parts["sign_s"], 2),
        "verify_s": round(parts["verify_s"], 2),
        "ledger_s": round(parts["ledger_s"], 2),
        "raw_sign_per_s": round(certs / parts["sign_s"], 1) if parts["sign_s"] else None,
        "loadavg": os.getloadavg(),
        "ledger": "postgresql" if s.resolved_ledger_url().startswith("postgres") else "sqlite",
    }
