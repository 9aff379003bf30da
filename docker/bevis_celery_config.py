"""Celery settings for bevis workers: Airflow's defaults, plus one fix for process pools.

Celery's prefork pool marks its pool processes daemonic, and Airflow 3 forks each task from
such a process, so the task inherits the flag — and Python refuses to start any child
process from a daemonic one ("daemonic processes are not allowed to have children").
bevis signs, verifies and renders on a process pool inside a task, so on a Celery worker
every sign step would fail (the in-process and LocalExecutor paths never see this).

The flag is only inherited bookkeeping here: the task process is owned by Airflow's
supervisor, not by Celery's pool, and its pool workers exit with it. So each pool process
clears it once at start (``worker_process_init``). Selected with
``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=bevis_celery_config.CELERY_CONFIG``; the module
lives in ``$AIRFLOW_HOME/config``, which Airflow puts on ``sys.path``.
"""

from __future__ import annotations

import multiprocessing

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_process_init

CELERY_CONFIG = dict(DEFAULT_CELERY_CONFIG)


@worker_process_init.connect
def allow_task_process_pools(**_: object) -> None:
    """Let tasks forked from this pool process start their own process pools."""
    multiprocessing.current_process()._config["daemon"] = False  # type: ignore[attr-defined]
