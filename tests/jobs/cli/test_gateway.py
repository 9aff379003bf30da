"""`bevis gateway upload-dsc` and `bevis gateway trustlist --out DIR` against the gateway
simulator over real mutual TLS; `bevis verify --trust DIR` then trusts the downloaded DSC."""

from __future__ import annotations

import json
from pathlib import Path

from jobs.gateway.simulator import running_gateway


def test_upload_dsc_trustlist_verify(bevis_env: Path, tmp_path: Path) -> None:
    """bevis' own DSC: upload-dsc (twice: the second is 'already there'), trustlist --out DIR,
    and a certificate it signed verifies against DIR (and against no other DSC)."""
    from typer.testing import CliRunner

    from jobs.cli import app
    from jobs.gateway.simulator import development_parties
    from signing.keys import init_dev_keys

    keys = bevis_env / "keys"
    init_dev_keys(keys)
    runner = CliRunner()
    with running_gateway(tmp_path / "sim", development_parties(keys)) as gw:
        env = {
            "BEVIS_GATEWAY_URL": gw.url,
            "BEVIS_GATEWAY_CA_BUNDLE": str(gw.ca),
            "BEVIS_GATEWAY_TRUST_ANCHOR": str(gw.trust_anchor),
        }
        first = runner.invoke(app, ["gateway", "upload-dsc", "--json"], env=env)
        assert first.exit_code == 0, first.output
        assert json.loads(first.stdout)["state"] == "uploaded"
        again = runner.invoke(app, ["gateway", "upload-dsc", "--json"], env=env)
        assert json.loads(again.stdout)["state"] == "already_there"
        out = tmp_path / "trust"
        r = runner.invoke(app, ["gateway", "trustlist", "--out", str(out), "--json"], env=env)
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["dscs"] == 1 and json.loads(r.stdout)["rejected"] == []
        assert len(list(out.glob("*.pem"))) == 1 and (out / "trustlist.json").is_file()
        # sign one sample and verify it against the downloaded trust list
        samples = Path(__file__).resolve().parents[3] / "samples" / "payloads.jsonl"
        (tmp_path / "one.jsonl").write_text(samples.read_text().splitlines()[0] + "\n")
        signed = runner.invoke(app, ["sign", "--in", str(tmp_path / "one.jsonl"), "--out",
                                     str(tmp_path / "signed.jsonl")], env={"BEVIS_KEY_DIR": str(keys)})  # fmt: skip
        assert signed.exit_code == 0, signed.output
        v = runner.invoke(
            app, ["verify", "--in", str(tmp_path / "signed.jsonl"), "--trust", str(out)]
        )
        assert v.exit_code == 0, v.output
        assert json.loads(v.stdout.splitlines()[0])["checks"]["signature"] == "ok"
        # no trust anchor: refused with a clear message
        r = runner.invoke(app, ["gateway", "trustlist", "--out", str(out)],
                          env={**env, "BEVIS_GATEWAY_TRUST_ANCHOR": ""})  # fmt: skip
        assert r.exit_code == 2 and "trust anchor" in r.output
