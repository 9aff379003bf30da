"""`bevis conformance`: every EU dgc-testdata vector shipped in ../shared must pass, and the
runner must notice when a vector's expectation is not met."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from signing.conformance import country_and_set, discover, run
from tests.conftest import DCC

TESTDATA = DCC / "testdata"
runner = CliRunner()


@pytest.fixture(scope="module")
def report():
    if not TESTDATA.is_dir():
        pytest.fail(f"EU test vectors missing at {TESTDATA}")
    return run(TESTDATA)


def test_every_shipped_vector_passes(report) -> None:
    assert not report.errors
    assert [f"{o.file} {o.step} {o.detail}" for o in report.unexpected] == []
    files = {o.file for o in report.outcomes}
    vectors = list(discover(TESTDATA))
    assert len(files) >= 120 and len(vectors) >= len(files)
    steps = {o.step for o in report.outcomes}
    for step in (
        "EXPECTEDVERIFY",
        "EXPECTEDEXPIRATIONCHECK",
        "EXPECTEDKEYUSAGE",
        "EXPECTEDSCHEMAVALIDATION",
        "EXPECTEDB45DECODE",
        "EXPECTEDCOMPRESSION",
        "EXPECTEDPICTUREDECODE",
        "EXPECTEDUNPREFIX",
    ):
        assert step in steps
    # negative expectations are exercised too, not only happy paths
    assert sum(1 for o in report.outcomes if o.expected is False) >= 15
    assert {o.file for o in report.expected_failures} <= {"FR/2DCode/raw/test_pcr_ok.json"}


def test_cli_reports_and_exits_zero() -> None:
    result = runner.invoke(app, ["conformance", str(TESTDATA)])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    passed, failed = (int(x.split()[0]) for x in last.split(", "))
    assert failed == 0 and passed > 900


def test_mismatch_is_reported_with_file_and_step(tmp_path: Path) -> None:
    root = tmp_path / "td"
    # a versioned sub-folder and a key-variant folder, as upstream has them
    dest = root / "XX" / "2DCode" / "raw" / "1.3.0" / "EC"
    dest.mkdir(parents=True)
    src = json.loads((TESTDATA / "common" / "2DCode" / "raw" / "CO3.json").read_text())
    src["EXPECTEDRESULTS"]["EXPECTEDVERIFY"] = not src["EXPECTEDRESULTS"]["EXPECTEDVERIFY"]
    (dest / "7.json").write_text(json.dumps(src))
    shutil.copy(TESTDATA / "common" / "2DCode" / "raw" / "CO5.json", dest / "8.json")
    assert country_and_set(root, dest / "7.json") == ("XX", "7")
    result = runner.invoke(app, ["conformance", str(root)])
    assert result.exit_code == 1
    assert "FAIL XX/2DCode/raw/1.3.0/EC/7.json EXPECTEDVERIFY" in result.output
    assert result.output.strip().splitlines()[-1].endswith("1 failed")
    # listed in known_issues.csv → expected failure, exit 0
    (root / "known_issues.csv").write_text(
        "test_name,country,test_set,reason\ntest_verification_check,XX,7,flipped on purpose\n"
    )
    result = runner.invoke(app, ["conformance", str(root)])
    assert result.exit_code == 0, result.output
    assert "XFAIL" in result.output and result.output.strip().endswith("0 failed")


def test_unreadable_vector_is_a_failure(tmp_path: Path) -> None:
    dest = tmp_path / "YY" / "2DCode" / "raw"
    dest.mkdir(parents=True)
    (dest / "1.json").write_text("{broken")
    result = runner.invoke(app, ["conformance", str(tmp_path)])
    assert result.exit_code == 1 and "ERROR YY/2DCode/raw/1.json" in result.output


def test_whole_chain_verify_agrees_with_the_vectors() -> None:
    """verify() end to end (PREFIX → verdict) against each vector's expectations, with
    the vector's DSC as trust and its clock — not only the layers one by one."""
    from signing.conformance import Vector, parse_clock
    from signing.verify import verify

    compared = 0
    for path in discover(TESTDATA):
        vector = Vector(json.loads(path.read_text(encoding="utf-8")))
        prefix = vector.raw.get("PREFIX")
        if not prefix or "CERTIFICATE" not in vector.ctx:
            continue
        try:
            cert = vector.cert()
        except ValueError:
            continue
        verdict = verify(prefix, trust=[cert], at=parse_clock(vector.ctx["VALIDATIONCLOCK"]))
        if verdict.checks["decode"] != "ok":
            continue
        for key, check in (
            ("EXPECTEDVERIFY", "signature"),
            ("EXPECTEDEXPIRATIONCHECK", "expiry"),
            ("EXPECTEDKEYUSAGE", "key_usage"),
            ("EXPECTEDSCHEMAVALIDATION", "schema"),
        ):
            if key not in vector.expected:
                continue
            compared += 1
            agrees = (verdict.checks[check] == "ok") == vector.expected[key]
            if not agrees and check == "schema":
                # we also check value-set membership, which the schema step does not
                assert all("not in value set" in r for r in verdict.reasons), (
                    path,
                    verdict.reasons,
                )
                continue
            assert agrees, (path.relative_to(TESTDATA), key, verdict.checks, verdict.reasons)
    assert compared > 250
