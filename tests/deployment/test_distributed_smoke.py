"""The distributed harness itself: a mapped DAG through scheduler → Redis → Celery worker.

Proves that tasks run in the Celery worker process (not in the scheduler), that the
Execution API is reached over HTTP, and that the harness leaves no process behind.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tests.deployment.distributed import AirflowCluster

DAGS = Path(__file__).parent / "fixtures" / "dags_smoke"

pytestmark = [pytest.mark.distributed, pytest.mark.airflow, pytest.mark.postgres]


def test_mapped_dag_runs_on_the_celery_worker(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    items = ["alpha", "beta", "gamma"]
    with AirflowCluster(DAGS, tmp_path, pg_url, redis_url) as cluster:
        run_id = cluster.trigger("bevis_smoke", conf={"items": items})
        assert cluster.wait_for_run("bevis_smoke", run_id, timeout=240) == "success"

        tis = cluster.task_instances("bevis_smoke", run_id)
        mapped = sorted((t for t in tis if t["task_id"] == "work"), key=lambda t: t["map_index"])
        assert [t["map_index"] for t in mapped] == [0, 1, 2]
        assert {t["state"] for t in tis} == {"success"}
        # Every task went through the cluster's own Celery queue ...
        assert {t["queue"] for t in tis} == {cluster.queue}
        assert all(t["hostname"] for t in tis)

        # ... and ran in a process below the Celery worker, not below the scheduler.
        worker_pid = cluster.processes["celery-worker"].pid
        scheduler_pid = cluster.processes["scheduler"].pid
        seen = []
        for ti in mapped:
            report = cluster.xcom("bevis_smoke", run_id, "work", ti["map_index"])
            assert worker_pid in report["ancestors"], report
            assert scheduler_pid not in report["ancestors"], report
            # a process pool inside the task works (docker/bevis_celery_config.py)
            assert report["pool_child_parent"] == report["pid"], report
            seen.append(report["item"])
        assert sorted(seen) == sorted(items)
        assert cluster.xcom("bevis_smoke", run_id, "collect") == sorted(items)
        started = cluster.alive_pids()
        assert len(started) >= 4

    assert not [pid for pid in started if psutil.pid_exists(pid) and _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_failing_start_kills_every_process_and_prints_the_logs(
    tmp_path: Path, pg_url: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from tests.deployment.distributed import ClusterError

    cluster = AirflowCluster(DAGS, tmp_path, pg_url, redis_url, start_timeout=180)
    with socket.socket() as squatter:  # the api-server cannot bind its port and exits
        squatter.bind(("127.0.0.1", cluster.api_port))
        squatter.listen()
        with pytest.raises(ClusterError, match="exited"), cluster:
            pytest.fail("the cluster must not start without its api-server")
    pids = [proc.pid for proc in cluster.processes.values()]
    assert set(cluster.processes) == {"api-server", "scheduler", "dag-processor", "celery-worker"}
    assert all(proc.poll() is not None for proc in cluster.processes.values())
    assert not [pid for pid in pids if _alive(pid)]
    printed = capsys.readouterr().out
    assert "api-server.log" in printed and "scheduler.log" in printed
