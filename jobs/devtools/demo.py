"""``bevis demo``: the whole issuance flow on one machine, through real Airflow.

A private Airflow home on SQLite, development keys, a seeded register, the mailbox
simulator on loopback, then the ``dcc_issuance`` DAG via ``dag.test()``. At the end it checks
what must hold for any run — every issued certificate decodes and verifies, and every order
is accounted for (issued + quarantined + refused) — and writes ``summary.json``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from jobs.errors import NotRetryable
from jobs.log import get_logger

log = get_logger(__name__)
MARKER = ".bevis-demo"


class DemoFailed(NotRetryable):
    """A check of the demo run failed; the message says which."""


@dataclass
class DemoLayout:
    out: Path

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def airflow_home(self) -> Path:
        return self.out / "airflow"

    @property
    def logs(self) -> Path:
        return self.out / "logs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_out(out: Path) -> DemoLayout:
    """A clean output folder; refuses to wipe a folder that is not an earlier demo's."""
    out = out.resolve()
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise DemoFailed(
                f"{out} is not empty and not an earlier demo's folder; choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by bevis demo; safe to delete\n")
    layout = DemoLayout(out)
    for d in (layout.data, layout.airflow_home, layout.logs):
        d.mkdir(parents=True, exist_ok=True)
    return layout


class Simulator:
    """The mailbox simulator as a child process on a free loopback port."""

    def __init__(self, env: dict[str, str], log_file: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env, self._log_file = env, log_file
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> Simulator:
        bevis = str(Path(sys.executable).with_name("bevis"))
        self._log = open(self._log_file, "ab")
        self._proc = subprocess.Popen(
            [bevis, "simulator", "mailbox", "--port", str(self.port)],
            env=self._env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise DemoFailed(f"the mailbox simulator exited; see {self._log_file}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.2)
        raise DemoFailed("the mailbox simulator did not start within 60 s")

    def __exit__(self, *exc: object) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._log.close()


def verify_run(run_id: str, data_dir: Path, env_settings) -> dict:
    """Every issued certificate of the run decodes and verifies against the DSC."""
    import pyarrow.parquet as pq

    from jobs.storage import RunPaths
    from signing.keys import load_trust
    from signing.verify import verify

    trust = load_trust(env_settings.resolved_key_dir() / "dsc.pem")
    paths = RunPaths.of(run_id, env_settings)
    checked = invalid = 0
    for signed in sorted(paths.batches_dir.glob("*/signed.parquet")):
        for hc1 in pq.read_table(signed, columns=["hc1"]).column("hc1").to_pylist():
            checked += 1
            if not verify(hc1, trust=trust).valid:
                invalid += 1
    return {"certificates_verified": checked, "certificates_invalid": invalid}


def run_demo(
    persons: int,
    out: Path,
    seed: int = 2021,
    batch_size: int = 500,
    defect_rate: float = 0.01,
    limit: int | None = None,
) -> dict:
    """Run the demo; returns the summary (also written to ``<out>/summary.json``)."""
    import os

    from jobs.devtools import airflow_local
    from jobs.settings import get_settings

    t0 = time.perf_counter()
    layout = prepare_out(out)
    bevis_env = {"BEVIS_DATA_DIR": str(layout.data), "BEVIS_DEV_MODE": "1"}  # published secrets
    os.environ.update(bevis_env)
    settings = get_settings()

    from jobs.db import migrate_all
    from jobs.devtools.seed import seed as seed_register
    from signing.keys import init_dev_keys

    migrate_all(settings)
    init_dev_keys(settings.resolved_key_dir())
    manifest = seed_register(persons, seed=seed, defect_rate=defect_rate)
    log.info("register seeded", persons=persons)

    env = airflow_local.airflow_env(layout.airflow_home, bevis_env)
    airflow_local.prepare(layout.airflow_home, env)
    with Simulator(env, layout.logs / "simulator.log") as sim:
        env["BEVIS_MAILBOX_URL"] = sim.url
        os.environ["BEVIS_MAILBOX_URL"] = sim.url
        conf = {"batch_size": batch_size, "limit": limit, "dry_run": False}
        result = airflow_local.run_dag_test(
            "dcc_issuance",
            conf,
            env,
            layout.out / "airflow-result.json",
            layout.logs / "airflow.log",
        )
    run_id = result["bevis_run"]

    from jobs.flow import run_summary

    summary = run_summary(run_id, settings)
    summary.pop("issued_order_ids", None)
    summary["airflow_state"] = result["state"]
    summary["airflow_task_states"] = result["task_states"]
    summary.update(verify_run(run_id, layout.data, settings))

    # Reporting (the dcc_reporting DAG does the same when scheduled on the asset).
    from jobs.reporting.publish import build_report

    report = build_report(layout.out / "report", settings=settings)
    summary["paths"] = {
        "report": str(report),
        "data_docs": _first(layout.data.glob(f"runs/{run_id}/data_docs/**/index.html")),
        "sample_pdf": _first(layout.data.glob(f"runs/{run_id}/batches/*/pdf/*.pdf")),
        "airflow_log": str(layout.logs / "airflow.log"),
        "summary": str(layout.out / "summary.json"),
    }
    summary["seed_manifest"] = _manifest_counts(manifest)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    summary["checks"] = demo_checks(summary)
    (layout.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    failed = [c for c, ok in summary["checks"].items() if not ok]
    if failed:
        raise DemoFailed(
            f"demo checks failed: {', '.join(failed)} (see {layout.out / 'summary.json'})"
        )
    return summary


def demo_checks(summary: dict) -> dict[str, bool]:
    """What must hold after any issuance run."""
    accounted = summary["issued"] + summary["quarantined"] + summary["refused"]
    return {
        "airflow_run_succeeded": summary.get("airflow_state") == "success",
        "every_order_accounted_for": summary["orders"] == accounted,
        "every_certificate_verifies": summary["certificates_invalid"] == 0
        and summary["certificates_verified"] == summary["issued"],
        "every_certificate_has_one_outcome": summary["issued"]
        == summary["delivered_digitally"] + summary["queued_for_paper"] + summary["deferred"],
    }


def _first(paths) -> str | None:
    for p in paths:
        return str(p)
    return None


def _manifest_counts(manifest) -> dict:
    """What the seeder says it made (the truth the run is checked against)."""
    return {
        "persons": manifest.persons,
        "events": manifest.events,
        "orders": manifest.orders,
        "order_categories": dict(manifest.order_categories),
        "expected_extract": dict(manifest.expected_extract),
        "defects": {k: len(v) for k, v in manifest.defects.items()},
    }
