"""The CLI's front door: help that teaches, doctor that says what is wrong."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from jobs.cli import app


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "doctor" in result.output


def test_doctor_reports_missing_keys_and_unmigrated_db(bevis_env) -> None:
    result = CliRunner().invoke(app, ["doctor", "--json"])
    checks = {c["name"]: c for c in json.loads(result.output)}
    assert checks["python"]["status"] == "ok"
    assert checks["keys"]["status"] == "warn" and "init-dev" in checks["keys"]["detail"]
    assert "bevis db migrate" in checks["database ledger"]["detail"]


def test_db_migrate_then_doctor_sees_tables(bevis_env) -> None:
    assert CliRunner().invoke(app, ["db", "migrate"]).exit_code == 0
    result = CliRunner().invoke(app, ["doctor", "--json"])
    checks = {c["name"]: c for c in json.loads(result.output)}
    assert checks["database ledger"]["status"] == "ok"


def test_help_is_fast_and_imports_nothing_heavy() -> None:
    code = (
        "import sys, jobs.cli; heavy = [m for m in ('pandas', 'great_expectations', "
        "'airflow', 'reportlab') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
