"""A private Airflow installation for one-machine runs (the demo, benchmarks, tests):
its own AIRFLOW_HOME on SQLite, our DAG folder, no examples, the bevis pools.

Airflow reads its configuration when it is imported, so everything that touches Airflow
runs in a child process with this environment.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

# The DAG folder is found, not imported: Airflow parses it from files, and jobs sits below
# dags in the layers (jobs never imports dags).
_DAGS_SPEC = importlib.util.find_spec("dags")
assert _DAGS_SPEC is not None and _DAGS_SPEC.origin, "the dags package is not installed"
DAGS_FOLDER = Path(_DAGS_SPEC.origin).resolve().parent
POOLS = {
    "bevis_signing": (1, "signing uses every core of the worker"),
    "bevis_mailbox": (4, "concurrent delivery tasks towards the mailbox operators"),
}


def airflow_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for an Airflow child process with a private home on SQLite."""
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
            "PYTHONWARNINGS": "ignore",
            "BEVIS_DEV_MODE": "1",  # one-machine runs: demo, benches, tests
        }
    )
    env.update(extra or {})
    return env


def _airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def prepare(home: Path, env: dict[str, str]) -> None:
    """``airflow db migrate`` and the bevis pools (idempotent)."""
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [_airflow_bin(), "db", "migrate"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    for name, (slots, description) in POOLS.items():
        subprocess.run(
            [_airflow_bin(), "pools", "set", name, str(slots), description],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )


def run_dag_test(
    dag_id: str, conf: dict, env: dict[str, str], result_file: Path, log_file: Path
) -> dict:
    """Run one DAG run through real Airflow (``dag.test()``) in a child process; returns
    ``{"state", "dag_run_id", "bevis_run", "task_states"}``."""
    cmd = [
        sys.executable,
        "-m",
        "jobs.devtools.airflow_local",
        dag_id,
        json.dumps(conf),
        str(result_file),
    ]
    with open(log_file, "ab") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if not result_file.exists():
        raise RuntimeError(
            f"the Airflow run of {dag_id} died (exit {proc.returncode}); see {log_file}"
        )
    return json.loads(result_file.read_text())


def _child(dag_id: str, conf_json: str, result_path: str) -> int:
    """In the child: parse our DAG folder, run dag.test(), write the outcome."""
    from airflow.dag_processing.dagbag import DagBag

    from jobs.ids import airflow_run_id

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags[dag_id]
    dag_run = dag.test(run_conf=json.loads(conf_json))
    states = {}
    for ti in dag_run.get_task_instances():
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        states[key] = str(ti.state)
    result = {
        "state": str(dag_run.state),
        "dag_run_id": dag_run.run_id,
        "bevis_run": airflow_run_id(dag_run.run_id),
        "task_states": states,
    }
    Path(result_path).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(_child(*sys.argv[1:4]))
