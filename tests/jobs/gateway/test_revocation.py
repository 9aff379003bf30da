"""Revocation batches between the ledger (real SQLite and PostgreSQL) and the gateway
simulator (real mutual TLS on loopback): export files that openssl accepts, upload, list,
delete, delete when expired — and the drill: the upload process killed (SIGKILL) after the
gateway stored a batch but before the ledger recorded it; the rerun uploads nothing twice."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from jobs.gateway import revocation as gr
from jobs.gateway.simulator import development_parties, running_gateway
from jobs.ledger import revocations as rv
from jobs.settings import Settings
from signing import cms
from signing.keys import GATEWAY_DIR, UPLOAD_FILE, init_dev_keys
from tests.jobs.ledger.test_revocations import _certificates

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, bevis_env: Path) -> str | None:
    return None if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture
def gateway(bevis_env: Path, tmp_path: Path):
    keys = bevis_env / "keys"
    init_dev_keys(keys, country="SE")
    with running_gateway(tmp_path / "gateway-sim", development_parties(keys)) as gw:
        yield gw


@pytest.fixture
def settings(bevis_env: Path, ledger_url: str | None, gateway) -> Settings:
    return Settings(
        data_dir=bevis_env,
        ledger_url=ledger_url,
        gateway_url=gateway.url,
        gateway_ca_bundle=gateway.ca,
    )


def _revoked(settings: Settings, n: int, **kw) -> list[str]:
    uvcis = _certificates(settings, n, **kw)
    rv.revoke(uvcis, "wrong_person", who="ops", settings=settings)
    return uvcis


def test_export_writes_json_and_cms_that_openssl_accepts(
    settings: Settings, tmp_path: Path
) -> None:
    _revoked(settings, 3)
    out = tmp_path / "out"
    result = gr.export(out, None, settings)
    assert len(result["batches"]) == 3 and len(result["planned"]) == 3
    upload = settings.resolved_key_dir() / GATEWAY_DIR / UPLOAD_FILE
    for b in result["batches"]:
        payload = (out / f"{b['batch']}.json").read_bytes()
        der = tmp_path / "x.der"
        import base64

        der.write_bytes(base64.b64decode((out / f"{b['batch']}.cms").read_text()))
        done = subprocess.run(
            [shutil.which("openssl") or "openssl", "cms", "-verify", "-inform", "DER",
             "-in", str(der), "-CAfile", str(upload), "-binary", "-purpose", "any"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout == payload
        assert json.loads(payload)["entries"] and len(json.loads(payload)["entries"]) == 3
    # a second export writes the same batches, byte for byte the same JSON
    before = {p.name: p.read_bytes() for p in out.glob("*.json")}
    again = gr.export(out, None, settings)
    assert again["planned"] == [] and {p.name: p.read_bytes() for p in out.glob("*.json")} == before
    # only the asked hash types; a batch whose expires has passed is not written
    only = tmp_path / "only"
    gr.export(only, ["SIGNATURE"], settings)
    assert [p.name.split("-")[1] for p in only.glob("*.json")] == ["SIGNATURE"]
    later = tmp_path / "later"
    gr.export(later, None, settings, now=NOW + dt.timedelta(days=60))
    assert list(later.iterdir()) == []


def test_upload_list_delete_and_no_second_upload(settings: Settings, gateway) -> None:
    _revoked(settings, 5)
    first = gr.upload(settings)
    assert len(first["uploaded"]) == 3 and first["adopted"] == []
    assert gateway.store.count_batches() == 3
    # the gateway holds exactly what the ledger recorded
    ours = {b.batch_id: b for b in rv.batches(settings)}
    for b in gateway.store.batches():
        row = ours[b["batch_id"]]
        parsed = cms.parse_verify(b["signed_batch"])
        assert parsed.verified and b["kid"] == row.kid and b["type"] == row.hash_type
        assert len(json.loads(parsed.payload)["entries"]) == 5
    # a rerun uploads nothing; new revocations go in new batches, uploaded once
    assert gr.upload(settings)["uploaded"] == []
    _revoked(settings, 2, start=500)
    assert len(gr.upload(settings)["uploaded"]) == 3 and gateway.store.count_batches() == 6
    assert gr.upload(settings)["uploaded"] == [] and gateway.store.count_batches() == 6
    # the list names our batches
    listed = gr.gateway_list(settings)
    assert len(listed) == 6 and all(i["batch"] and i["country"] == "SE" for i in listed)
    # delete by our name: deleted at the gateway and in the ledger; again: already deleted
    victim = rv.batches(settings)[0]
    assert gr.delete(victim.id, settings)["state"] == "deleted"
    assert gateway.store.batch(victim.batch_id)["deleted"] is True
    assert rv.batch_by_ref(victim.id, settings).deleted_at is not None
    assert gr.delete(victim.batch_id, settings)["state"] == "already_deleted"
    assert [i["deleted"] for i in gr.gateway_list(settings)].count(True) == 1
    # what a verifier downloads: the live batches' entries
    entries = gr.downloaded_revocations(settings)
    assert len(entries) == 3 * 7 - victim.entries  # 7 certificates, 3 types, 1 batch deleted
    # the deleted one is not uploaded again
    assert gr.upload(settings)["uploaded"] == []


def test_expired_batches_are_deleted_at_the_gateway(settings: Settings, gateway) -> None:
    _revoked(settings, 2, exp_days=2)
    gr.upload(settings)
    assert gr.delete_expired(settings)["deleted"] == []
    done = gr.delete_expired(settings, now=NOW + dt.timedelta(days=3))["deleted"]
    assert len(done) == 3 and {d["state"] for d in done} == {"deleted"}
    assert all(b["deleted"] for b in gateway.store.batches())
    assert gr.delete_expired(settings, now=NOW + dt.timedelta(days=3))["deleted"] == []


def test_refusals_are_the_gateways_problem_reports(
    settings: Settings, gateway, tmp_path: Path
) -> None:
    """An upload certificate the gateway does not know: 403 with its problem report, and
    nothing stored, nothing recorded as uploaded."""
    from cryptography.hazmat.primitives import serialization

    from jobs.errors import GatewayRefused
    from signing.keys import make_gateway_cert

    _revoked(settings, 1)
    key, cert = make_gateway_cert("SE", "upload", NOW)
    (tmp_path / "u.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "u.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    other = settings.model_copy(
        update={"gateway_upload_cert": tmp_path / "u.pem", "gateway_upload_key": tmp_path / "u.key"}
    )
    with pytest.raises(GatewayRefused, match="403 0x000 'Invalid Upload Certificate'"):
        gr.upload(other)
    assert gateway.store.count_batches() == 0
    assert all(b.batch_id is None for b in rv.batches(settings))


def _bevis(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "bevis"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_drill_upload_killed_after_the_gateway_stored_it(
    settings: Settings, gateway, bevis_env: Path
) -> None:
    """SIGKILL of `bevis revocation upload` while the gateway holds its answer to the first
    batch (stored, ETag not yet sent): the ledger has no batch id for it. The rerun finds it
    at the gateway by its content and adopts it: the gateway ends with one copy of each."""
    _revoked(settings, 4)
    env = {
        **os.environ,
        "BEVIS_DATA_DIR": str(bevis_env),
        "BEVIS_GATEWAY_URL": gateway.url,
        "BEVIS_GATEWAY_CA_BUNDLE": str(gateway.ca),
    }
    if settings.ledger_url:
        env["BEVIS_LEDGER_URL"] = settings.ledger_url
    gateway.store.hold_uploads.set()
    proc = _bevis(env, "revocation", "upload", "--json")
    deadline = time.monotonic() + 60
    while gateway.store.count_batches() < 1:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the upload never reached the gateway"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    gateway.store.hold_uploads.clear()
    assert proc.returncode == -signal.SIGKILL
    rows = rv.batches(settings)
    assert len(rows) == 3 and [r.batch_id for r in rows].count(None) == 3  # nothing recorded
    assert sum(r.upload_started_at is not None for r in rows) == 1

    rerun = _bevis(env, "revocation", "upload", "--json")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    result = json.loads(out)
    # the gateway's side: three batches, each once; the ledger's side: each with its id
    stored = gateway.store.batches()
    payloads = [cms.parse_verify(b["signed_batch"]).payload for b in stored]
    assert (len(stored), len(set(payloads))) == (3, 3), "batches at the gateway, distinct"
    assert len(result["adopted"]) == 1 and len(result["uploaded"]) == 2
    assert {r.batch_id for r in rv.batches(settings)} == {b["batch_id"] for b in stored}
    # and a third run uploads nothing
    third = _bevis(env, "revocation", "upload", "--json")
    out, err = third.communicate(timeout=120)
    assert third.returncode == 0, err
    assert json.loads(out)["uploaded"] == [] and gateway.store.count_batches() == 3


def test_upload_certificate_is_the_dev_one(settings: Settings) -> None:
    cert, _key = gr.upload_signer(settings)
    path = settings.resolved_key_dir() / GATEWAY_DIR / UPLOAD_FILE
    assert cert == x509.load_pem_x509_certificate(path.read_bytes())
