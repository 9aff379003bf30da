"""The DAG folder parses cleanly and fast, and every task is set up for operations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DAG_FOLDER = REPO / "dags"
DAG_FILES = sorted(p for p in DAG_FOLDER.glob("dcc_*.py"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAG_FOLDER))


def test_no_import_errors_and_both_dags(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert {"dcc_issuance", "dcc_reporting", "dcc_revocation"} <= set(dagbag.dags)


def test_no_cycles_retries_owners_tags(dagbag) -> None:
    for dag_id in ("dcc_issuance", "dcc_reporting", "dcc_revocation"):
        dag = dagbag.dags[dag_id]
        dag.check_cycle()
        assert dag.tags and "bevis" in dag.tags
        assert dag.catchup is False
        assert dag.doc_md
        for t in dag.tasks:
            assert t.retries and t.retries >= 1, t.task_id
            assert t.owner and t.owner != "airflow", t.task_id


def test_issuance_shape(dagbag) -> None:
    dag = dagbag.dags["dcc_issuance"]
    ids = set(dag.task_ids)
    assert {
        "begin",
        "extract",
        "validate",
        "map",
        "plan",
        "batch.sign",
        "batch.render",
        "batch.deliver",
        "finish",
    } <= ids
    assert dag.get_task("batch.sign").pool == "bevis_signing"
    assert dag.get_task("batch.deliver").pool == "bevis_mailbox"
    assert dag.get_task("batch.sign").max_active_tis_per_dagrun == 1
    assert dag.get_task("finish").trigger_rule == "all_done"
    assert dag.get_task("batch.sign").retry_policy is not None
    # params are validated as JSON Schema
    assert dag.params.get_param("batch_size").schema["minimum"] == 1
    assert dag.params.get_param("dry_run").schema["type"] == "boolean"


def test_revocation_shape(dagbag) -> None:
    dag = dagbag.dags["dcc_revocation"]
    assert set(dag.task_ids) == {"upload", "delete_expired"}
    assert dag.get_task("upload").downstream_task_ids == {"delete_expired"}
    assert dag.get_task("upload").retry_policy is not None
    assert dag.timetable.summary == "30 5 * * *"  # daily
    assert dag.max_active_runs == 1


def test_params_reject_bad_values(dagbag) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    dag = dagbag.dags["dcc_issuance"]
    for name, bad in (("batch_size", 0), ("batch_size", "many"), ("limit", -1), ("dry_run", "yes")):
        with pytest.raises(ParamValidationError):
            dag.params.get_param(name).resolve(bad)
    assert dag.params.get_param("limit").resolve(None) is None


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_parse_is_fast_and_light(dag_file: Path) -> None:
    """Each DAG file parses in well under a second once Airflow is imported, and imports
    none of the heavy libraries (they load inside the task bodies)."""
    code = f"""
import json, runpy, sys, time
import airflow.sdk  # Airflow itself is not ours to time
t = time.perf_counter()
runpy.run_path({str(dag_file)!r})
elapsed = time.perf_counter() - t
heavy = [m for m in ("pandas", "pyarrow", "great_expectations", "reportlab", "sqlalchemy.orm",
                     "jobs.flow", "signing.hcert") if m in sys.modules and m != "sqlalchemy.orm"]
print(json.dumps({{"elapsed": elapsed, "heavy": heavy}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["elapsed"] < 2.0, result
