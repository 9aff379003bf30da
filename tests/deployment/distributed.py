"""A real Airflow cluster on one machine, for tests: CeleryExecutor, PostgreSQL, Redis.

``AirflowCluster`` starts the Airflow 3 scheduler, dag-processor, api-server and a Celery
worker as separate local processes — the same split as docker/compose.yaml — so a test
proves what a laptop ``dag.test()`` cannot: that tasks run in another process that only
shares the metadata database, the broker and the run-data folder with the scheduler, and
that they reach the API server's Execution API over HTTP.

Every process gets its own process group; on exit (also on failure) each group is
terminated, then killed, and any descendant that left its group is killed too. Each
process's output goes to a log file under the cluster's home; when the block fails the
tails of those logs (and of the task logs) are printed, so pytest shows them.

Usage::

    with AirflowCluster(DAGS, tmp_path, pg_url, redis_url) as cluster:
        run_id = cluster.trigger("bevis_smoke", conf={"items": ["a", "b"]})
        assert cluster.wait_for_run("bevis_smoke", run_id) == "success"
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[2]
# The deployment's Celery settings (docker/), installed the way the image installs them.
CELERY_CONFIG_MODULE = REPO / "docker" / "bevis_celery_config.py"
FINISHED = frozenset({"success", "failed"})
LOG_TAIL_LINES = 120


class ClusterError(RuntimeError):
    """The cluster could not start, a component died, or a wait ran out of time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def airflow_db_url(pg_url: str) -> str:
    """The metadata-database URL with the psycopg (v3) driver Airflow should use."""
    return make_url(pg_url).set(drivername="postgresql+psycopg").render_as_string(False)


def celery_result_backend(pg_url: str) -> str:
    """Celery's database result backend in the same PostgreSQL database (``db+`` scheme)."""
    return "db+" + airflow_db_url(pg_url)


def broker_url(redis_url: str, key: str) -> str:
    """The Redis URL on a database number (1-15) derived from ``key``, not the fixture's 0.

    Several test runs may share the Redis server; a distinct db number plus a queue of
    the cluster's own keeps their Celery messages apart.
    """
    url = httpx.URL(redis_url)
    db = 1 + zlib.crc32(key.encode()) % 15
    return str(url.copy_with(path=f"/{db}"))


class AirflowCluster:
    """Scheduler + dag-processor + api-server + Celery worker as local processes."""

    def __init__(
        self,
        dags_folder: Path,
        tmp_path: Path,
        pg_url: str,
        redis_url: str,
        *,
        env: Mapping[str, str] | None = None,
        worker_concurrency: int = 2,
        start_timeout: float = 240.0,
        scheduled_runs: bool = False,
    ) -> None:
        self.dags_folder = Path(dags_folder).resolve()
        self.home = Path(tmp_path) / "airflow-home"
        self.log_dir = self.home / "process-logs"
        self.cluster_id = uuid.uuid4().hex[:10]
        self.queue = f"bevis-{self.cluster_id}"
        self.worker_name = f"bevis-{self.cluster_id}@%h"
        self.api_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.broker_url = broker_url(redis_url, self.cluster_id)
        self.pg_url = pg_url
        self.worker_concurrency = worker_concurrency
        self.start_timeout = start_timeout
        self.scheduled_runs = scheduled_runs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: dict[str, Any] = {}
        self._client: httpx.Client | None = None
        self.env = self._environment(env or {})

    # --- configuration -------------------------------------------------------------
    def _environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        """One environment for every component: they must agree on DB, broker and secrets."""
        base = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("AIRFLOW__") and key not in ("AIRFLOW_HOME", "AIRFLOW_CONFIG")
        }
        from cryptography.fernet import Fernet

        settings = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__PARALLELISM": "16",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db_url(self.pg_url),
            # Airflow would derive an asyncpg URL; psycopg 3 does async too, one driver less.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": airflow_db_url(self.pg_url),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "2",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "4",
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": celery_result_backend(self.pg_url),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "bevis_celery_config.CELERY_CONFIG",
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),  # HS512 wants >= 64 bytes
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # Short intervals: a test should not wait minutes for a parse or a heartbeat.
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "300",
            # Off by default: a cron tick or an asset event during a test would start runs
            # the test did not ask for (manual runs are scheduled either way).
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(self.scheduled_runs),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "300",
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
            # The project's packages (jobs, transforms, ...) import from the repository.
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            ),
            "PYTHONUNBUFFERED": "1",
        }
        return {**base, **settings, **dict(extra)}

    # --- lifecycle -----------------------------------------------------------------
    def __enter__(self) -> AirflowCluster:
        try:
            self.start()
        except BaseException:
            self.print_logs()
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.print_logs()
        self.stop()

    def start(self) -> None:
        """Migrate the metadata database, start the four components, wait until healthy."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.home / "config").mkdir(exist_ok=True)  # on sys.path, as /opt/airflow/config
        shutil.copy2(CELERY_CONFIG_MODULE, self.home / "config" / CELERY_CONFIG_MODULE.name)
        self._run_once("db-migrate", ["db", "migrate"], timeout=self.start_timeout)
        self._spawn(
            "api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port)]
        )
        self._spawn("scheduler", ["scheduler"])
        self._spawn("dag-processor", ["dag-processor"])
        self._spawn(
            "celery-worker",
            [
                "celery",
                "worker",
                "--concurrency",
                str(self.worker_concurrency),
                "--queues",
                self.queue,
                "--celery-hostname",
                self.worker_name,
                "--without-gossip",
                "--without-mingle",
                "--skip-serve-logs",
            ],
        )
        deadline = time.monotonic() + self.start_timeout
        self._wait_healthy(deadline)
        self._wait_worker_ready(deadline)

    def _airflow(self, args: list[str]) -> list[str]:
        return [sys.executable, "-m", "airflow", *args]

    def _run_once(self, name: str, args: list[str], timeout: float) -> None:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            try:
                proc = subprocess.run(
                    self._airflow(args),
                    env=self.env,
                    cwd=self.home,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    check=False,
                    start_new_session=True,
                )
            except subprocess.TimeoutExpired as exc:
                raise ClusterError(f"airflow {' '.join(args)} took over {timeout:.0f}s") from exc
        if proc.returncode != 0:
            raise ClusterError(f"airflow {' '.join(args)} exited {proc.returncode}; see {log_path}")

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        self._log_files[name] = log
        self.processes[name] = subprocess.Popen(
            self._airflow(args),
            env=self.env,
            cwd=self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() signals the whole group
        )

    def check_alive(self) -> None:
        """Raise if any component has exited: waiting on a dead cluster only wastes time."""
        for name, proc in self.processes.items():
            code = proc.poll()
            if code is not None:
                raise ClusterError(f"{name} exited with code {code}; see {self.log_path(name)}")

    def _wait_healthy(self, deadline: float) -> None:
        last: object = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                response = httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
                if response.status_code == 200:
                    last = health = response.json()
                    parts = ("metadatabase", "scheduler", "dag_processor")
                    if all(health.get(p, {}).get("status") == "healthy" for p in parts):
                        return
                else:
                    last = response.status_code
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(1)
        raise ClusterError(f"cluster not healthy in {self.start_timeout:.0f}s; last: {last}")

    def _wait_worker_ready(self, deadline: float) -> None:
        """Celery prints '<name> ready.' once it consumes from the broker."""
        path = self.log_path("celery-worker")
        while time.monotonic() < deadline:
            self.check_alive()
            if b" ready." in path.read_bytes():
                return
            time.sleep(0.5)
        raise ClusterError(f"Celery worker not ready in {self.start_timeout:.0f}s; see {path}")

    def stop(self) -> None:
        """Terminate every process group we started, then kill stragglers. Idempotent."""
        import psutil

        descendants: list[psutil.Process] = []
        for proc in self.processes.values():
            with contextlib.suppress(psutil.Error):
                descendants.extend(psutil.Process(proc.pid).children(recursive=True))
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for child in descendants:  # a task supervisor may have left our process groups
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(descendants, timeout=5)
        for log in self._log_files.values():
            log.close()
        self._log_files.clear()
        if self._client is not None:
            self._client.close()
            self._client = None
        self._forget_broker_keys()

    def _forget_broker_keys(self) -> None:
        """Remove our queue from the shared Redis server (other keys belong to others)."""
        with contextlib.suppress(Exception):
            import redis

            client = redis.Redis.from_url(self.broker_url, socket_timeout=2)
            client.delete(self.queue, f"_kombu.binding.{self.queue}")
            client.close()

    def alive_pids(self) -> list[int]:
        """Pids of the started processes and their descendants still running (for tests)."""
        import psutil

        pids: list[int] = []
        for proc in self.processes.values():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(proc.pid)
                if root.status() != psutil.STATUS_ZOMBIE:
                    pids.append(root.pid)
                pids.extend(child.pid for child in root.children(recursive=True))
        return pids

    # --- logs ----------------------------------------------------------------------
    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def print_logs(self, lines: int = LOG_TAIL_LINES) -> None:
        """Print the tail of every component log, and the errors and tail of every task log
        (pytest shows them on failure)."""
        if self.log_dir.exists():
            for path in sorted(self.log_dir.glob("*.log")):
                text = path.read_text(errors="replace").splitlines()
                print(f"\n===== {path} (last {min(lines, len(text))} of {len(text)} lines) =====")
                print("\n".join(text[-lines:]))
        task_logs = self.home / "logs"
        if task_logs.exists():
            for path in sorted(task_logs.rglob("*.log")):
                if "dag_processor" in path.parts:
                    continue
                text = path.read_text(errors="replace").splitlines()
                errors = [
                    line[:3000]
                    for line in text[:-15]
                    if '"level":"error"' in line or "Traceback" in line
                ]
                print(f"\n===== {path} (errors, then last 15 of {len(text)} lines) =====")
                print("\n".join(errors + [line[:3000] for line in text[-15:]]))

    # --- REST API v2 ---------------------------------------------------------------
    @property
    def client(self) -> httpx.Client:
        """An API client with a token from the simple auth manager (all-admins mode)."""
        if self._client is None:
            token = httpx.get(f"{self.base_url}/auth/token", timeout=10)
            token.raise_for_status()
            self._client = httpx.Client(
                base_url=f"{self.base_url}/api/v2",
                headers={"Authorization": f"Bearer {token.json()['access_token']}"},
                timeout=30,
            )
        return self._client

    def _json(self, response: httpx.Response) -> Any:
        if response.is_error:
            raise ClusterError(
                f"{response.request.method} {response.request.url} -> "
                f"{response.status_code}: {response.text[:500]}"
            )
        return response.json()

    def import_errors(self) -> list[dict]:
        return self._json(self.client.get("/importErrors"))["import_errors"]

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict:
        """Wait until the dag-processor has serialised ``dag_id``; fail fast on import errors."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            response = self.client.get(f"/dags/{dag_id}")
            if response.status_code == 200:
                return response.json()
            errors = self.import_errors()
            if errors:
                raise ClusterError(f"DAG import errors: {errors}")
            time.sleep(1)
        raise ClusterError(f"DAG {dag_id} not parsed within {timeout:.0f}s")

    def set_pool(self, name: str, slots: int, description: str = "") -> None:
        """Create or resize a pool (the DAGs' pools must exist before their tasks can run)."""
        body = {"slots": slots, "description": description}
        response = self.client.post("/pools", json={"name": name, **body})
        if response.status_code == 409:  # exists: resize it
            response = self.client.patch(f"/pools/{name}", json=body)
        self._json(response)

    def unpause(self, dag_id: str) -> None:
        self._json(self.client.patch(f"/dags/{dag_id}", json={"is_paused": False}))

    def trigger(
        self, dag_id: str, conf: Mapping[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        """Wait for the DAG, unpause it, and create a manual run with ``conf``; returns its id."""
        self.wait_for_dag(dag_id)
        self.unpause(dag_id)
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf or {})}
        if run_id:
            body["dag_run_id"] = run_id
        return self._json(self.client.post(f"/dags/{dag_id}/dagRuns", json=body))["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self._json(self.client.get(f"/dags/{dag_id}/dagRuns/{run_id}"))

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300.0) -> str:
        """Wait until the run is success or failed; returns the state. Fails if a component dies."""
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            self.check_alive()
            state = self.dag_run(dag_id, run_id)["state"]
            if state in FINISHED:
                return state
            time.sleep(1)
        summary = {
            (t["task_id"], t["map_index"]): t["state"] for t in self.task_instances(dag_id, run_id)
        }
        raise ClusterError(f"run {run_id} still {state} after {timeout:.0f}s; tasks: {summary}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Every task instance of the run (mapped ones one row per map index)."""
        rows: list[dict] = []
        while True:
            page = self._json(
                self.client.get(
                    f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                    params={"limit": 100, "offset": len(rows)},
                )
            )
            rows += page["task_instances"]
            if not page["task_instances"] or len(rows) >= page["total_entries"]:
                return rows

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        """A task's return value (deserialised by the API server)."""
        entry = self._json(
            self.client.get(
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
                params={"map_index": map_index, "deserialize": True},
            )
        )
        return entry["value"]


class LocalService:
    """A helper process (e.g. ``bevis simulator mailbox``) on a free loopback port, in its
    own process group, stopped on exit; its output goes to ``log_path``."""

    def __init__(
        self, argv: list[str], env: Mapping[str, str], log_path: Path, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.argv = [arg.replace("{port}", str(self.port)) for arg in argv]
        self.env = dict(env)
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalService:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.__exit__(None, None, None)
                raise ClusterError(
                    f"{self.argv[0]} exited with {self.proc.returncode}:\n"
                    + self.log_path.read_text(errors="replace")[-3000:]
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return self
            time.sleep(0.3)
        self.__exit__(None, None, None)
        raise ClusterError(f"{' '.join(self.argv)} did not listen on {self.port} in 90 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()
