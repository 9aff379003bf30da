"""``bevis bench e2e``: the whole flow for N orders, with the time of every step."""

from __future__ import annotations

import os
import time
from pathlib import Path


def bench_e2e(orders: int, out: Path, batch_size: int = 5000, airflow: bool = True) -> dict:
    """Seed a register with about ``orders`` consented orders, run the flow (through Airflow
    or in-process), and return the figures. Seeding is not part of the measured time."""
    from jobs.db import migrate_all
    from jobs.devtools import airflow_local
    from jobs.devtools.demo import Simulator, prepare_out
    from jobs.devtools.seed import seed as seed_register
    from jobs.flow import issue_run, run_summary
    from jobs.settings import get_settings
    from signing.keys import init_dev_keys

    layout = prepare_out(out)
    env_extra = {"BEVIS_DATA_DIR": str(layout.data), "BEVIS_BATCH_SIZE": str(batch_size)}
    os.environ.update(env_extra)
    s = get_settings()
    migrate_all(s)
    init_dev_keys(s.resolved_key_dir())
    t_seed = time.perf_counter()
    # About 1.2 orders are pending and consented per 1.3 persons in the seeded register;
    # seed a margin and cap the run with the limit.
    seed_register(int(orders * 1.5) + 10, seed=7, defect_rate=0.005)
    seed_s = time.perf_counter() - t_seed
    env = airflow_local.airflow_env(layout.airflow_home, env_extra)
    t0 = time.perf_counter()
    with Simulator(env, layout.logs / "simulator.log") as sim:
        env["BEVIS_MAILBOX_URL"] = os.environ["BEVIS_MAILBOX_URL"] = sim.url
        if airflow:
            airflow_local.prepare(layout.airflow_home, env)
            t0 = time.perf_counter()
            result = airflow_local.run_dag_test(
                "dcc_issuance",
                {"batch_size": batch_size, "limit": orders, "dry_run": False},
                env,
                layout.out / "airflow-result.json",
                layout.logs / "airflow.log",
            )
            run_id = result["bevis_run"]
        else:
            run_id = issue_run(limit=orders, batch_size=batch_size, progress=False)["run_id"]
    wall = time.perf_counter() - t0
    summary = run_summary(run_id, get_settings())
    return {
        "orders": orders,
        "issued": summary["issued"],
        "quarantined": summary["quarantined"],
        "delivered_digitally": summary["delivered_digitally"],
        "queued_for_paper": summary["queued_for_paper"],
        "deferred": summary["deferred"],
        "via": "airflow" if airflow else "in-process",
        "seed_s": round(seed_s, 1),
        "wall_s": round(wall, 1),
        "certificates_per_s": round(summary["issued"] / wall, 1) if wall else None,
        "step_seconds": {k: round(v, 1) for k, v in summary["step_seconds"].items()},
        "cores": len(os.sched_getaffinity(0)),
    }
