"""No default secrets outside development mode (issue 14, item 6): with the published
pseudonym key (anyone can recompute every pseudonym), a UVCI key left to it or the PKCS#11
PIN 1234, bevis refuses to start a command that would use one — one line naming the
variable, exit 2, nothing claimed — and ``bevis doctor`` fails; so it does on an unencrypted
DSC key file. Development mode (BEVIS_DEV_MODE) is explicit: the demo, benches, simulator,
``keys init-dev``, the tests and the development compose deployment set it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from jobs.cli import app
from jobs.devtools.seed import seed
from jobs.settings import DefaultSecretError, Settings, get_settings
from jobs.sources.orders import states
from tests.conftest import REPO

runner = CliRunner()
REAL_KEY = "k3y-" + "x7" * 24


@pytest.fixture
def production(bevis_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A seeded register (seeding is development work), then development mode off."""
    seed(60, seed=4, defect_rate=0.0)
    monkeypatch.delenv("BEVIS_DEV_MODE")
    return bevis_env


def _one_line_naming(result, variable: str) -> None:
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert errors == [errors[0]] and errors[0].startswith("error: "), result.stderr
    assert variable in errors[0] and "Traceback" not in result.output


def test_issue_refuses_to_start_with_the_published_pseudonym_key(production: Path) -> None:
    """Before: the run went ahead with the published key."""
    before = states()
    result = runner.invoke(app, ["issue", "--json"])
    _one_line_naming(result, "BEVIS_PSEUDONYM_KEY")
    assert states() == before
    assert not (production / "runs").exists() and not (production / "ledger.db").exists()


def test_extract_refuses_before_claiming_any_order(production: Path) -> None:
    before = states()
    result = runner.invoke(app, ["extract", "--run", "r-prod"])
    _one_line_naming(result, "BEVIS_PSEUDONYM_KEY")
    assert states() == before and "CLAIMED" not in states()


def test_the_step_itself_refuses_as_an_airflow_task_would(production: Path) -> None:
    """The DAG calls the steps, not the CLI: the step raises before it claims."""
    from jobs.steps.extract import extract

    with pytest.raises(DefaultSecretError, match="BEVIS_PSEUDONYM_KEY"):
        extract("r-task")
    assert "CLAIMED" not in states()
    from jobs.steps.mapping import uvci_key

    with pytest.raises(DefaultSecretError, match="BEVIS_PSEUDONYM_KEY"):
        uvci_key(get_settings())


def test_real_secrets_run(production: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEVIS_PSEUDONYM_KEY", REAL_KEY)
    result = runner.invoke(app, ["extract", "--run", "r-real"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["orders"] > 0


def test_a_uvci_key_at_a_published_value_is_refused(
    production: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs.steps.mapping import uvci_key

    monkeypatch.setenv("BEVIS_PSEUDONYM_KEY", REAL_KEY)
    assert uvci_key(get_settings())  # derived from a real pseudonym key: fine
    monkeypatch.setenv("BEVIS_UVCI_KEY", "change-me")
    with pytest.raises(DefaultSecretError, match="BEVIS_UVCI_KEY"):
        uvci_key(get_settings())
    assert get_settings().published_secrets() == ["BEVIS_UVCI_KEY"]


def test_sign_refuses_the_default_pin_before_opening_the_token(
    production: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BEVIS_KEY_PROVIDER", "pkcs11")
    src = tmp_path / "in.jsonl"
    src.write_text((REPO / "samples" / "payloads.jsonl").read_text())
    result = runner.invoke(app, ["sign", "--in", str(src), "--out", str(tmp_path / "o.jsonl")])
    _one_line_naming(result, "BEVIS_PKCS11_PIN")
    assert "1234" not in result.output  # the variable is named, never the value


def _doctor() -> tuple[int, dict]:
    result = runner.invoke(app, ["doctor", "--json"])
    return result.exit_code, {c["name"]: c for c in json.loads(result.stdout)}


def test_doctor_fails_on_published_secrets_and_unencrypted_keys(
    production: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the published pseudonym key was a 'warn' and doctor passed (exit 0); an
    unencrypted dsc.key was 'ok'."""
    from signing.keys import init_dev_keys

    init_dev_keys(production / "keys")
    code, checks = _doctor()
    assert code == 1
    assert checks["secrets"]["status"] == "fail"
    assert "BEVIS_PSEUDONYM_KEY" in checks["secrets"]["detail"]
    assert checks["keys"]["status"] == "fail" and "not encrypted" in checks["keys"]["detail"]

    monkeypatch.setenv("BEVIS_PSEUDONYM_KEY", REAL_KEY)
    monkeypatch.setenv("BEVIS_KEY_PASSPHRASE", "a passphrase of the operator")
    init_dev_keys(production / "keys", passphrase="a passphrase of the operator", force=True)
    code, checks = _doctor()
    assert checks["secrets"]["status"] == "ok" and checks["keys"]["status"] == "ok"

    monkeypatch.setenv("BEVIS_KEY_PROVIDER", "pkcs11")
    code, checks = _doctor()
    assert code == 1 and "BEVIS_PKCS11_PIN" in checks["secrets"]["detail"]


def test_development_mode_allows_them_and_doctor_only_warns(bevis_env: Path) -> None:
    from signing.keys import init_dev_keys

    init_dev_keys(bevis_env / "keys")
    s = Settings()
    assert s.dev_mode and s.pseudonym_key.get_secret_value()
    _code, checks = _doctor()
    assert checks["secrets"]["status"] == "warn" and checks["keys"]["status"] == "warn"


def test_published_secrets_stay_out_of_reprs_and_pickles(production: Path) -> None:
    import pickle

    s = get_settings()
    assert "bevis-development" not in repr(s) and "bevis-development" not in str(s.model_dump())
    again = pickle.loads(pickle.dumps(s))
    with pytest.raises(DefaultSecretError):
        again.pseudonym_key.get_secret_value()


def test_who_sets_development_mode(bevis_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.devtools.airflow_local import airflow_env

    assert airflow_env(bevis_env / "af")["BEVIS_DEV_MODE"] == "1"
    demo = (REPO / "jobs" / "devtools" / "demo.py").read_text()
    assert '"BEVIS_DEV_MODE": "1"' in demo
    monkeypatch.delenv("BEVIS_DEV_MODE")
    assert runner.invoke(app, ["bench", "cose", "--n", "2"]).exit_code == 0
    assert os.environ["BEVIS_DEV_MODE"] == "1"
    monkeypatch.delenv("BEVIS_DEV_MODE")
    init = runner.invoke(app, ["keys", "init-dev", "--dir", str(bevis_env / "k2")])
    assert init.exit_code == 0, init.output
    assert os.environ["BEVIS_DEV_MODE"] == "1"


def test_compose_is_a_development_deployment_only_by_its_env_file() -> None:
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    env = compose["x-airflow-common"]["environment"]
    assert env["BEVIS_DEV_MODE"] == "${BEVIS_DEV_MODE:-false}"
    example = (REPO / "docker" / ".env.example").read_text()
    assert re.search(r"^BEVIS_DEV_MODE=true$", example, re.M)
    assert "BEVIS_DEV_MODE" in (REPO / "docs" / "deployment.md").read_text()
