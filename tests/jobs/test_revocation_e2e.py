"""Issue 16's acceptance, end to end: a small issued run (`bevis issue` on a seeded
register), three certificates revoked, `bevis revocation export` → `openssl cms -verify`
accepts each .cms and its content is the .json; `bevis verify --revocations DIR` (and the
gateway's URL) finds exactly those three revoked; upload → list → delete against the gateway
simulator over real mutual TLS; a rerun of upload uploads nothing twice. On SQLite and on
PostgreSQL."""

from __future__ import annotations

import base64
import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def _bevis(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, (args, result.output)
    return result.stdout


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def issued(request, bevis_env: Path, monkeypatch) -> dict:
    """A seeded register issued by `bevis issue` (in this process, with the mailbox simulator)."""
    monkeypatch.setenv("BEVIS_QUARANTINE_THRESHOLD", "0.2")
    monkeypatch.setenv("BEVIS_OPERATOR", "e2e-operator")
    if request.param == "postgresql":
        monkeypatch.setenv("BEVIS_LEDGER_URL", request.getfixturevalue("pg_url"))
    from jobs.db import migrate_all
    from jobs.devtools.demo import Simulator
    from jobs.devtools.seed import seed
    from jobs.flow import issue_run
    from jobs.settings import get_settings
    from signing.keys import init_dev_keys

    s = get_settings()
    migrate_all(s)
    init_dev_keys(s.resolved_key_dir())
    seed(60, seed=7, defect_rate=0.0)
    with Simulator(dict(os.environ), bevis_env / "sim.log") as sim:
        monkeypatch.setenv("BEVIS_MAILBOX_URL", sim.url)
        summary = issue_run(batch_size=20, progress=False)
    assert summary["state"] == "SUCCEEDED" and summary["issued"] >= 20, summary
    hc1s = []
    for path in sorted(
        glob.glob(str(bevis_env / "runs" / "*" / "batches" / "*" / "signed.parquet"))
    ):
        import pyarrow.parquet as pq

        hc1s += pq.read_table(path).column("hc1").to_pylist()
    assert len(hc1s) == summary["issued"]
    (bevis_env / "hc1.txt").write_text("".join(h + "\n" for h in hc1s))
    return {"settings": s, "hc1s": hc1s, "data": bevis_env}


def test_revoke_export_verify_upload_list_delete(issued: dict, tmp_path: Path, monkeypatch) -> None:
    from jobs.gateway.simulator import development_parties, running_gateway
    from signing.revocation import hashes_of_hc1
    from signing.verify import decode_dcc

    s, data = issued["settings"], issued["data"]
    # the ledger holds what the hashes need, from signing (the same as a verifier computes)
    from sqlalchemy import select

    from jobs.db import engine
    from jobs.ledger.models import Certificate

    with engine(s.resolved_ledger_url()).connect() as conn:
        stored = {
            r.uvci: r
            for r in conn.execute(
                select(Certificate.uvci, Certificate.issuer_country, Certificate.hash_uci,
                       Certificate.hash_countrycodeuci, Certificate.hash_signature)
            )
        }  # fmt: skip
    for hc1 in issued["hc1s"]:
        h = hashes_of_hc1(hc1)
        row = stored[decode_dcc(hc1)["v"][0]["ci"]]
        assert (row.issuer_country, row.hash_uci, row.hash_countrycodeuci, row.hash_signature) == (
            "SE", h.uci, h.countrycodeuci, h.signature
        )  # fmt: skip

    # revoke three (twice: the same answer), an unknown one: exit 2
    three = sorted(stored)[:3]
    first = json.loads(_bevis("certificates", "revoke", *three, "--reason", "wrong_person",
                              "--note", "INC-16", "--json"))  # fmt: skip
    again = json.loads(_bevis("certificates", "revoke", *three, "--reason", "wrong_data", "--json"))
    assert first == again and {r["who"] for r in first} == {"e2e-operator"}
    bad = runner.invoke(app, ["certificates", "revoke", "URN:UVCI:01:SE:EHM/NONE#A", "--reason",
                              "wrong_person"])  # fmt: skip
    assert bad.exit_code == 2 and "not in the ledger" in bad.output
    shown = json.loads(_bevis("certificates", "show", three[0], "--json"))
    assert shown["state"] == "REVOKED" and shown["revocation"]["reason"] == "wrong_person"

    # export: each .cms verifies with openssl and holds the .json
    out = tmp_path / "export"
    exported = json.loads(_bevis("revocation", "export", "--out", str(out), "--json"))
    assert sorted(b["hash_type"] for b in exported["batches"]) == [
        "COUNTRYCODEUCI",
        "SIGNATURE",
        "UCI",
    ]
    upload_pem = s.resolved_key_dir() / "gateway" / "upload.pem"
    for b in exported["batches"]:
        der = tmp_path / f"{b['batch']}.der"
        der.write_bytes(base64.b64decode((out / f"{b['batch']}.cms").read_text()))
        done = subprocess.run(
            [shutil.which("openssl") or "openssl", "cms", "-verify", "-inform", "DER", "-in",
             str(der), "-CAfile", str(upload_pem), "-binary", "-purpose", "any"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0 and b"Verification successful" in done.stderr, done.stderr
        assert done.stdout == (out / f"{b['batch']}.json").read_bytes()
        assert b["entries"] == 3

    # verify --revocations DIR: exactly those three are revoked
    def revoked_by(source: str) -> list[str]:
        result = runner.invoke(app, ["verify", "--in", str(data / "hc1.txt"), "--trust",
                                     str(s.resolved_key_dir() / "dsc.pem"), "--revocations", source])  # fmt: skip
        assert result.exit_code == 1, result.output  # the revoked ones are not valid
        verdicts = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
        assert len(verdicts) == len(issued["hc1s"])
        for v in verdicts:
            others = {k: c for k, c in v["checks"].items() if k != "revoked"}
            assert set(others.values()) == {"ok"}, v["reasons"]
            assert v["valid"] is (v["checks"]["revoked"] == "ok")
        return sorted(
            v["payload"]["v"][0]["ci"] for v in verdicts if v["checks"]["revoked"] == "fail"
        )

    assert revoked_by(str(out)) == three

    # upload → list → delete against the simulator over mutual TLS; a rerun uploads nothing
    with running_gateway(tmp_path / "gw", development_parties(s.resolved_key_dir())) as gw:
        monkeypatch.setenv("BEVIS_GATEWAY_URL", gw.url)
        monkeypatch.setenv("BEVIS_GATEWAY_CA_BUNDLE", str(gw.ca))
        up = json.loads(_bevis("revocation", "upload", "--json"))
        assert len(up["uploaded"]) == 3 and gw.store.count_batches() == 3
        rerun = json.loads(_bevis("revocation", "upload", "--json"))
        assert rerun["uploaded"] == [] and rerun["adopted"] == [] and gw.store.count_batches() == 3
        listed = json.loads(_bevis("revocation", "list", "--json"))
        assert sorted(i["gateway_batch_id"] for i in listed) == sorted(
            u["gateway_batch_id"] for u in up["uploaded"]
        )
        assert revoked_by(gw.url) == three  # what a verifier downloads from the gateway
        victim = up["uploaded"][0]
        gone = json.loads(_bevis("revocation", "delete", victim["batch"], "--json"))
        assert gone["state"] == "deleted" and gw.store.batch(victim["gateway_batch_id"])["deleted"]
        listed = json.loads(_bevis("revocation", "list", "--json"))
        assert [i["deleted"] for i in listed].count(True) == 1
        assert json.loads(_bevis("revocation", "upload", "--json"))["uploaded"] == []
        assert gw.store.count_batches() == 3
