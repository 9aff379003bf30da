"""dcc_issuance on a real cluster: scheduler, dag-processor, api-server and a Celery worker as
separate processes, PostgreSQL for Airflow's metadata, the ledger and the sources, Redis as
the broker, one run-data folder shared by all — the layout of docker/compose.yaml.

The same seeded register is issued once in one process (``bevis issue``, SQLite, the
laptop default) and once through the cluster; the outcomes must be the same: every order
accounted for, the same orders issued with the same UVCIs, the same quarantine and delivery
counts, and every certificate decodes and verifies against the run's DSC.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobs import flow
from jobs.devtools import airflow_local
from tests.deployment.distributed import AirflowCluster, LocalService

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.airflow,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.timeout(1800),  # two issuance runs and a cluster start on a busy 2-core box
]

DAGS = airflow_local.DAGS_FOLDER
BIN = Path(sys.executable).parent
PERSONS = 300
SEED = 20210
BATCH_SIZE = 100
# Fixed run ids. (A run id ending in "-" and four digits, as new_run_id() makes one time in
# six or so, is read by Great Expectations' RunIdentifier as a UTC offset and fails.)
LOCAL_RUN = "issue-local"
DAG_RUN = "distributed_test"
COMPARED = (
    "state",
    "orders",
    "extracted",
    "extracted_rows",
    "quarantined",
    "quarantined_by_reason",
    "refused",
    "refused_by_reason",
    "issued",
    "delivered_digitally",
    "queued_for_paper",
    "deferred",
)


@pytest.fixture
def pg_database(pg_server_url: str) -> Iterator[Callable[[], str]]:
    """A factory of fresh PostgreSQL databases (the ledger and the sources), dropped after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def new() -> str:
        name = f"bevis_d_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)

    yield new
    from jobs.db import engine

    for name in made:
        url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
        with contextlib.suppress(Exception):
            engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def clean_env(**bevis: str) -> dict[str, str]:
    """The test's environment without anyone's BEVIS_/AIRFLOW settings, plus ``bevis``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BEVIS_", "AIRFLOW")) or k == "BEVIS_REQUIRE_SERVICES"
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["BEVIS_DEV_MODE"] = "1"  # development keys and secrets: a test deployment
    return {**env, **bevis}


def bevis(args: list[str], env: dict[str, str], timeout: float = 600) -> str:
    result = subprocess.run(
        [str(BIN / "bevis"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"bevis {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def prepare(env: dict[str, str]) -> None:
    """The same register (same seed) and development keys in one data folder."""
    bevis(["seed", "--persons", str(PERSONS), "--seed", str(SEED)], env)
    bevis(["keys", "init-dev"], env)


def settings_of(env: dict[str, str]):
    from jobs.settings import get_settings

    return get_settings(
        data_dir=Path(env["BEVIS_DATA_DIR"]),
        source_url=env.get("BEVIS_SOURCE_URL"),
        ledger_url=env.get("BEVIS_LEDGER_URL"),
    )


def certificates(run_id: str, settings) -> dict[str, str]:
    """order_id → UVCI of the run's certificates, from the ledger."""
    from sqlalchemy import select

    from jobs.db import engine
    from jobs.ledger.models import Certificate

    with engine(settings.resolved_ledger_url()).connect() as conn:
        rows = conn.execute(
            select(Certificate.order_id, Certificate.uvci).where(Certificate.run_id == run_id)
        ).all()
    return dict(rows)


def verify_all(run_id: str, settings) -> tuple[int, list[str]]:
    """Decode and verify every signed certificate of the run against the DSC."""
    import pyarrow.parquet as pq

    from jobs.storage import RunPaths
    from signing.keys import load_trust
    from signing.verify import verify

    trust = load_trust(settings.resolved_key_dir() / "dsc.pem")
    checked, failures = 0, []
    for signed in sorted(RunPaths.of(run_id, settings).batches_dir.glob("*/signed.parquet")):
        for hc1 in pq.read_table(signed, columns=["hc1"]).column("hc1").to_pylist():
            checked += 1
            verdict = verify(hc1, trust=trust)
            if not verdict.valid:
                failures.append(f"{signed.parent.name}: {verdict.reasons}")
    return checked, failures


def summary_of(run_id: str, settings) -> dict:
    from jobs.flow import run_summary

    summary = run_summary(run_id, settings)
    summary.pop("issued_order_ids", None)
    return summary


def accounted(summary: dict) -> None:
    assert summary["orders"] > 0 and summary["issued"] > 0, summary
    assert summary["issued"] + summary["quarantined"] + summary["refused"] == summary["orders"]
    assert (
        summary["delivered_digitally"] + summary["queued_for_paper"] + summary["deferred"]
        == summary["issued"]
    )


def test_issuance_on_the_cluster_matches_the_in_process_run(
    tmp_path: Path, pg_url: str, redis_url: str, pg_database: Callable[[], str]
) -> None:
    # --- in one process: SQLite, the laptop default ----------------------------------
    local = clean_env(BEVIS_DATA_DIR=str(tmp_path / "local-data"))
    prepare(local)
    with LocalService(
        [str(BIN / "bevis"), "simulator", "mailbox", "--port", "{port}"],
        local,
        tmp_path / "logs" / "simulator-local.log",
    ) as sim:
        local["BEVIS_MAILBOX_URL"] = sim.url
        out = bevis(["issue", "--run", LOCAL_RUN, "--batch-size", str(BATCH_SIZE), "--json"], local)
    local_summary = json.loads(out[out.index("{") :])
    local_run = local_summary["run_id"]
    local_settings = settings_of(local)
    assert local_summary["state"] == "SUCCEEDED", local_summary
    accounted(local_summary)

    # --- through the cluster: PostgreSQL ledger and sources, shared data folder --------
    shared = clean_env(
        BEVIS_DATA_DIR=str(tmp_path / "cluster-data"),
        BEVIS_SOURCE_URL=pg_database(),
        BEVIS_LEDGER_URL=pg_database(),
    )
    prepare(shared)
    with LocalService(
        [str(BIN / "bevis"), "simulator", "mailbox", "--port", "{port}"],
        shared,
        tmp_path / "logs" / "simulator-cluster.log",
    ) as sim:
        shared["BEVIS_MAILBOX_URL"] = sim.url
        bevis_env = {k: v for k, v in shared.items() if k.startswith("BEVIS_")}
        with AirflowCluster(DAGS, tmp_path, pg_url, redis_url, env=bevis_env) as cluster:
            for name, (slots, description) in airflow_local.POOLS.items():
                cluster.set_pool(name, slots, description)
            run_id = cluster.trigger(
                "dcc_issuance",
                conf={"batch_size": BATCH_SIZE, "limit": None, "dry_run": False},
                run_id=DAG_RUN,
            )
            state = cluster.wait_for_run("dcc_issuance", run_id, timeout=900)
            tis = cluster.task_instances("dcc_issuance", run_id)
            if state != "success":
                cluster.print_logs()
            assert state == "success", {(t["task_id"], t["map_index"]): t["state"] for t in tis}
            bevis_run = cluster.xcom("dcc_issuance", run_id, "begin")
    assert bevis_run == flow.airflow_run_id(DAG_RUN)

    # Every task went through the Celery queue; each batch had its own mapped instances.
    assert {t["queue"] for t in tis} == {cluster.queue}
    assert {t["state"] for t in tis} == {"success"}
    sign = [t for t in tis if t["task_id"] == "batch.sign"]
    cluster_settings = settings_of(shared)
    cluster_summary = summary_of(bevis_run, cluster_settings)
    assert len(sign) == len(cluster_summary["batch_states"]) >= 2
    assert set(cluster_summary["batch_states"].values()) == {"DELIVERED"}
    accounted(cluster_summary)

    # --- the same outcome ---------------------------------------------------------------
    assert {k: cluster_summary[k] for k in COMPARED} == {k: local_summary[k] for k in COMPARED}
    local_certs = certificates(local_run, local_settings)
    cluster_certs = certificates(bevis_run, cluster_settings)
    assert cluster_certs == local_certs  # same orders, same UVCIs
    assert len(cluster_certs) == cluster_summary["issued"]
    checked, failures = verify_all(bevis_run, cluster_settings)
    assert failures == []
    assert checked == cluster_summary["issued"]
