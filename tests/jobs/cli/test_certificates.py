"""`bevis certificates revoke` and `show`, `bevis revocation export`, `bevis verify
--revocations`: the operator's contract (exit codes, who, the same answer twice)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from jobs.cli.certificates import REASONS
from jobs.ledger.models import RevocationReason
from jobs.settings import get_settings
from tests.jobs.ledger.test_revocations import _certificates

runner = CliRunner()


@pytest.fixture
def three(bevis_env: Path, monkeypatch) -> list[str]:
    monkeypatch.setenv("BEVIS_OPERATOR", "anna")
    return _certificates(get_settings(), 3)


def test_reasons_are_the_ledgers() -> None:
    assert tuple(r.value for r in RevocationReason) == REASONS


def test_revoke_and_show(three: list[str]) -> None:
    r = runner.invoke(
        app, ["certificates", "revoke", *three[:2], "--reason", "withdrawn_consent", "--json"]
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [o["uvci"] for o in out] == three[:2] and {o["who"] for o in out} == {"anna"}
    again = runner.invoke(
        app, ["certificates", "revoke", *three[:2], "--reason", "wrong_data", "--json"]
    )
    assert again.exit_code == 0 and json.loads(again.stdout) == out
    shown = json.loads(runner.invoke(app, ["certificates", "show", three[0], "--json"]).stdout)
    assert shown["state"] == "REVOKED" and shown["revocation"] == out[0]
    assert (
        json.loads(runner.invoke(app, ["certificates", "show", three[2], "--json"]).stdout)[
            "revocation"
        ]
        is None
    )
    table = runner.invoke(app, ["certificates", "revoke", three[2], "--reason", "superseded"])
    assert table.exit_code == 0 and "superseded" in table.stdout


def test_revoke_refusals_exit_2(three: list[str], monkeypatch) -> None:
    r = runner.invoke(app, ["certificates", "revoke", three[0], "--reason", "because"])
    assert r.exit_code == 2 and "not one of" in r.output
    r = runner.invoke(
        app, ["certificates", "revoke", three[0], "URN:UVCI:01:SE:X#Y", "--reason", "wrong_person"]
    )
    assert (
        r.exit_code == 2 and "URN:UVCI:01:SE:X#Y" in r.output and "nothing was revoked" in r.output
    )
    r = runner.invoke(
        app,
        [
            "certificates",
            "revoke",
            three[0],
            "--reason",
            "wrong_person",
            "--note",
            "pnr 198001011234",
        ],
    )
    assert r.exit_code == 2 and "identity number" in r.output and "198001011234" not in r.output
    for variable in ("BEVIS_OPERATOR", "USER", "LOGNAME"):
        monkeypatch.delenv(variable, raising=False)
    r = runner.invoke(app, ["certificates", "revoke", three[0], "--reason", "wrong_person"])
    assert r.exit_code == 2 and "BEVIS_OPERATOR" in r.output
    monkeypatch.setenv("USER", "login-name")
    r = runner.invoke(
        app, ["certificates", "revoke", three[0], "--reason", "wrong_person", "--json"]
    )
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["who"] == "login-name"


def test_export_needs_the_upload_key_and_verify_a_folder(three: list[str], tmp_path: Path) -> None:
    runner.invoke(app, ["certificates", "revoke", three[0], "--reason", "wrong_person"])
    r = runner.invoke(app, ["revocation", "export", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "keys init-dev" in r.output
    r = runner.invoke(
        app, ["revocation", "export", "--out", str(tmp_path / "x"), "--hash-types", "MD5"]
    )
    assert r.exit_code == 2
    (tmp_path / "hc1.txt").write_text("HC1:nothing\n")
    r = runner.invoke(
        app, ["verify", "--in", str(tmp_path / "hc1.txt"), "--revocations", str(tmp_path / "none")]
    )
    assert r.exit_code == 2 and "cannot read revocations" in r.output
    (tmp_path / "batches").mkdir()
    r = runner.invoke(
        app,
        ["verify", "--in", str(tmp_path / "hc1.txt"), "--revocations", str(tmp_path / "batches")],
    )
    assert (
        r.exit_code == 1 and json.loads(r.stdout.splitlines()[-1])["checks"]["revoked"] == "skipped"
    )
