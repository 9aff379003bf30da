"""The signing CLI contract end to end: keys init-dev → sign → verify --trust on the
shipped sample payloads, refusals, show-dsc, and bench sign."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from jobs.cli import app
from signing.keys import kid_of
from tests.conftest import REPO

SAMPLES = REPO / "samples" / "payloads.jsonl"
runner = CliRunner()


def _bevis(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real console script, in a fresh process."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "bevis"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        timeout=300,
    )


def test_end_to_end_via_console_script(bevis_env: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    env = {"BEVIS_KEY_DIR": str(keys)}
    init = _bevis("keys", "init-dev", "--dir", str(keys), env=env)
    assert init.returncode == 0, init.stderr
    kid = init.stdout.strip()
    dsc = x509.load_pem_x509_certificate((keys / "dsc.pem").read_bytes())
    assert base64.b64decode(kid) == kid_of(dsc)

    certs = tmp_path / "certs.jsonl"
    sign = _bevis("sign", "--in", str(SAMPLES), "--out", str(certs), "--exp-days", "30", env=env)
    assert sign.returncode == 0, sign.stderr
    lines = [json.loads(x) for x in certs.read_text().splitlines()]
    samples = [json.loads(x) for x in SAMPLES.read_text().splitlines()]
    assert len(lines) == len(samples) == 20
    for out, payload in zip(lines, samples, strict=True):
        assert {"ci", "kid", "iat", "exp", "hc1"} <= set(out)
        assert out["ci"] == payload["v"][0]["ci"] and out["kid"] == kid
        assert out["exp"] - out["iat"] == 30 * 86400 and out["hc1"].startswith("HC1:")

    verify = _bevis("verify", "--in", str(certs), "--trust", str(keys / "dsc.pem"), env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    verdicts = [json.loads(x) for x in verify.stdout.splitlines()]
    assert len(verdicts) == 20
    for verdict, payload in zip(verdicts, samples, strict=True):
        assert verdict["valid"] is True, verdict["reasons"]
        assert verdict["checks"] == dict.fromkeys(
            ("decode", "schema", "signature", "expiry", "key_usage"), "ok"
        )
        assert verdict["reasons"] == [] and verdict["payload"] == payload


def test_verify_contract_details(
    bevis_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = bevis_env / "keys"
    assert runner.invoke(app, ["keys", "init-dev"]).exit_code == 0
    certs = tmp_path / "certs.jsonl"
    assert runner.invoke(app, ["sign", "--in", str(SAMPLES), "--out", str(certs)]).exit_code == 0
    # raw HC1 strings work as input too; a folder works as trust
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "\n".join(json.loads(x)["hc1"] for x in certs.read_text().splitlines()[:3]) + "\n"
    )
    r = runner.invoke(app, ["verify", "--in", str(raw), "--trust", str(keys)])
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 3
    # without trust: signature and key usage skipped, the rest still run
    r = runner.invoke(app, ["verify", "--in", str(raw)])
    first = json.loads(r.stdout.splitlines()[0])
    assert first["checks"]["signature"] == "skipped" and first["checks"]["key_usage"] == "skipped"
    assert first["checks"]["schema"] == "ok" and first["checks"]["expiry"] == "ok"
    # at a clock after expiry: invalid, exit 1
    r = runner.invoke(
        app, ["verify", "--in", str(raw), "--trust", str(keys), "--at", "2099-01-01T00:00:00Z"]
    )
    assert r.exit_code == 1
    assert all(json.loads(x)["checks"]["expiry"] == "fail" for x in r.stdout.splitlines())
    # a foreign DSC: signature fails; garbage line: decode fails, still one verdict a line
    other = tmp_path / "other"
    assert runner.invoke(app, ["keys", "init-dev", "--dir", str(other)]).exit_code == 0
    raw.write_bytes(raw.read_bytes() + b"HC1:garbage\n\xff\xfe\x00HC1\n")
    r = runner.invoke(app, ["verify", "--in", str(raw), "--trust", str(other / "dsc.pem")])
    verdicts = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.exit_code == 1 and len(verdicts) == 5
    assert verdicts[4]["checks"]["decode"] == "fail"
    assert (
        verdicts[0]["checks"]["signature"] == "fail" and verdicts[3]["checks"]["decode"] == "fail"
    )
    assert verdicts[3]["payload"] is None
    # show-dsc prints the active DSC
    r = runner.invoke(app, ["keys", "show-dsc"])
    assert r.exit_code == 0 and r.stdout == (keys / "dsc.pem").read_text()


def test_sign_refuses_bad_lines_and_writes_the_others(bevis_env: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["keys", "init-dev"]).exit_code == 0
    good = SAMPLES.read_text().splitlines()
    bad = json.loads(good[1])
    bad["nam"]["fnt"] = "johansson"
    inactive = json.loads(good[2])
    inactive["v"][0]["mp"] = "CVnCoV-unknown"
    payloads = tmp_path / "in.jsonl"
    payloads.write_bytes(
        "\n".join([good[0], json.dumps(bad), "not json", json.dumps(inactive), good[3]]).encode()
        + b"\n\xff\xfe{binary\n"
    )
    certs = tmp_path / "out.jsonl"
    r = runner.invoke(app, ["sign", "--in", str(payloads), "--out", str(certs)])
    assert r.exit_code == 1
    assert "line 2: refused: nam/fnt" in r.stderr
    assert "line 3: refused: not JSON" in r.stderr
    assert "line 4: refused: v/0/mp" in r.stderr
    assert "line 6: refused: not JSON" in r.stderr
    assert "johansson" not in r.stderr
    written = [json.loads(x) for x in certs.read_text().splitlines()]
    assert [w["line"] for w in written] == [1, 5]


def test_sign_caps_exp_at_the_dsc(bevis_env: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["keys", "init-dev"]).exit_code == 0
    out = tmp_path / "o.jsonl"
    r = runner.invoke(app, ["sign", "--in", str(SAMPLES), "--out", str(out), "--exp-days", "5000"])
    assert r.exit_code == 0 and "capped" in r.stderr
    dsc = x509.load_pem_x509_certificate((bevis_env / "keys" / "dsc.pem").read_bytes())
    first = json.loads(out.read_text().splitlines()[0])
    assert first["exp"] == int(dsc.not_valid_after_utc.timestamp())


def test_sign_without_keys_says_what_to_do(bevis_env: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["sign", "--in", str(SAMPLES), "--out", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 2 and "init-dev" in r.stderr


def test_bench_sign_prints_json_last(bevis_env: Path) -> None:
    r = runner.invoke(app, ["bench", "sign", "--n", "300", "--workers", "1"])
    assert r.exit_code == 0, r.output
    figures = json.loads(r.stdout.strip().splitlines()[-1])
    assert figures["n"] == 300 and figures["single_core_certs_per_s"] > 0
    assert figures["all_cores_certs_per_s"] > 0 and figures["workers"] == 1


def test_bench_cose_compares_with_pycose() -> None:
    r = runner.invoke(app, ["bench", "cose", "--n", "20"])
    assert r.exit_code == 0, r.output
    figures = json.loads(r.stdout.strip().splitlines()[-1])
    for alg in ("ES256", "PS256"):
        assert figures[alg]["ours_us"] > 0 and figures[alg]["pycose_us"] > 0


@pytest.mark.slow
def test_bench_sign_pool_reports_parallel_efficiency(bevis_env: Path) -> None:
    # As operators run it: a fresh process. (Inside pytest, threads left by other tests make
    # the pool use forkserver, whose workers' CPU time this process cannot see.)
    bevis = str(Path(sys.executable).with_name("bevis"))
    r = subprocess.run(
        [bevis, "bench", "sign", "--n", "4000", "--workers", "2"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    figures = json.loads(r.stdout.strip().splitlines()[-1])
    if figures["cores"] >= 2:
        assert figures["workers"] == 2
        assert 0 < figures["parallel_efficiency"] <= 1.5
        assert figures["all_cores_certs_per_cpu_s"] > 0
