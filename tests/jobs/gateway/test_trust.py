"""DSC upload and the trust list against the gateway's own tests (SignerCertificateIntegration
Test 1–8, TrustListIntegrationTest's filters and delta), over real mutual TLS on loopback;
then bevis' side: `upload_dsc` → `download_trust_list` → `bevis verify --trust DIR`, with
entries whose signatures do not hold left out."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from jobs.gateway.simulator import running_gateway
from jobs.gateway.trust import check_trust_list
from signing import cms
from tests.jobs.gateway.support import Country

CMS = {"Content-Type": "application/cms"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trust")
    eu, xx = Country.make("EU", folder), Country.make("XX", folder)
    with running_gateway(folder / "sim", eu.parties() + xx.parties()) as gw:
        yield gw, eu, xx


@pytest.fixture
def gw(world):
    world[0].store.clear()
    return world[0]


@pytest.fixture
def eu(world):
    return world[1]


@pytest.fixture
def xx(world):
    return world[2]


def _der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _post(gw, country: Country, body: str, path: str = "/signerCertificate"):
    with country.client(gw.url, gw.ca) as c:
        return c.post(path, content=body, headers=CMS)


def _counts(gw) -> tuple[int, int]:
    return len(gw.store.signers()), len(gw.store.audit_events())


# 1
def test_successful_upload(gw, eu) -> None:
    dsc = eu.dsc()
    body = eu.sign(_der(dsc))
    r = _post(gw, eu, body)
    assert r.status_code == 201, r.text
    assert _counts(gw) == (1, 1)
    stored = gw.store.signers()[0]
    assert stored["country"] == "EU" and stored["raw_data"] == base64.b64encode(_der(dsc)).decode()
    assert stored["thumbprint"] == cms.thumbprint(dsc)
    assert stored["signature"] == cms.detached(body)
    assert cms.parse_verify(stored["signature"], detached_content=_der(dsc)).verified


# 2
def test_upload_failed_conflict(gw, eu) -> None:
    body = eu.sign(_der(eu.dsc()))
    assert _post(gw, eu, body).status_code == 201
    r = _post(gw, eu, body)
    assert r.status_code == 409 and r.json()["code"] == "0x002"
    assert _counts(gw) == (1, 1)


# 3, 4, 5, 6
def test_upload_failures(gw, eu, xx, tmp_path) -> None:
    stranger = Country.make("EU", tmp_path / "stranger")  # a CSCA the gateway does not know
    cases = {
        "not by a known CSCA": eu.sign(_der(eu.dsc(issuer=stranger))),
        "by XX's CSCA": eu.sign(_der(eu.dsc(issuer=xx))),
        "subject C=XX": eu.sign(_der(eu.dsc(country="XX"))),
        "signed by XX's upload certificate": xx.sign(_der(eu.dsc())),
    }
    for i, (case, body) in enumerate(cases.items(), 1):
        r = _post(gw, eu, body)
        assert (r.status_code, r.json()["code"]) == (400, "0x004"), case
        assert _counts(gw) == (0, i), case  # audited, nothing stored


# 7
def test_upload_failed_invalid_cms(gw, eu) -> None:
    body = eu.sign(_der(eu.dsc()))
    mangled = body.replace(body[10:50], body[80:120])
    r = _post(gw, eu, mangled)
    assert r.status_code == 400 and _counts(gw)[0] == 0
    r = _post(gw, eu, eu.sign(b"no certificate"))
    assert r.status_code == 400 and "DER encoded X509" in r.json()["problem"]


# 8
def test_reupload(gw, eu) -> None:
    dsc = eu.dsc()
    body = eu.sign(_der(dsc))
    assert _post(gw, eu, body).status_code == 201
    with eu.client(gw.url, gw.ca) as c:
        r = c.request("DELETE", "/signerCertificate", content=body, headers=CMS)
    assert r.status_code == 204
    gone = gw.store.signer(cms.thumbprint(dsc))
    assert gone["signature"] is None and len(gw.store.signers()) == 1
    assert _post(gw, eu, body, "/signerCertificate/delete").status_code == 404  # already gone
    assert _post(gw, eu, body).status_code == 201
    back = gw.store.signer(cms.thumbprint(dsc))
    assert back["signature"] == cms.detached(body) and len(gw.store.signers()) == 1


def _trust(gw, country: Country, path: str = "/trustList", **headers):
    with country.client(gw.url, gw.ca) as c:
        return c.get(path, headers={"Accept": "application/json", **headers})


def test_trust_list_filters_and_delta(gw, eu, xx) -> None:
    assert _post(gw, eu, eu.sign(_der(eu.dsc()))).status_code == 201
    assert _post(gw, xx, xx.sign(_der(xx.dsc()))).status_code == 201
    everything = _trust(gw, eu).json()
    assert len(everything) == 8  # AUTHENTICATION, UPLOAD, CSCA of two countries + 2 DSCs
    assert [e["kid"] for e in everything] == sorted(e["kid"] for e in everything)
    for kind in ("DSC", "dsc", "Upload"):
        got = _trust(gw, eu, f"/trustList/{kind}").json()
        assert len(got) == 2 and {e["certificateType"] for e in got} == {kind.upper()}
    got = _trust(gw, eu, "/trustList/DSC/eu").json()
    assert len(got) == 1 and got[0]["country"] == "EU"
    assert _trust(gw, eu, "/trustList/DSC/YY").json() == []
    for bad in ("/trustList/XXX", "/trustList/DSC/XXX"):
        assert _trust(gw, eu, bad).status_code == 400
    assert len(_trust(gw, eu, "/trustList?pagesize=3").json()) == 3
    assert len(_trust(gw, eu, "/trustList?page=2&pagesize=3").json()) == 2
    # a deleted DSC: gone from the list, in a delta with rawData null
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat()
    dsc = eu.dsc()
    body = eu.sign(_der(dsc))
    assert _post(gw, eu, body).status_code == 201
    assert _post(gw, eu, body, "/signerCertificate/delete").status_code == 204
    assert cms.thumbprint(dsc) not in {e["thumbprint"] for e in _trust(gw, eu).json()}
    delta = _trust(gw, eu, **{"If-Modified-Since": since}).json()
    deleted = [e for e in delta if e["thumbprint"] == cms.thumbprint(dsc)]
    assert len(deleted) == 1 and deleted[0]["rawData"] is None


def test_bevis_checks_each_entry(gw, eu, xx, tmp_path) -> None:
    from cryptography import x509

    assert _post(gw, eu, eu.sign(_der(eu.dsc()))).status_code == 201
    entries = _trust(gw, eu).json()
    anchor = x509.load_pem_x509_certificate(gw.trust_anchor.read_bytes())
    accepted, rejected = check_trust_list(entries, anchor)
    assert len(accepted) == 7 and rejected == []
    # tampered: a DSC re-signed by XX's upload certificate, an UPLOAD entry not by the anchor,
    # a thumbprint that does not match
    dsc = next(e for e in entries if e["certificateType"] == "DSC")
    forged_dsc = {**dsc, "signature": cms.detached(xx.sign(base64.b64decode(dsc["rawData"])))}
    upload = next(e for e in entries if e["certificateType"] == "UPLOAD" and e["country"] == "EU")
    raw = base64.b64decode(upload["rawData"])
    forged_upload = {**upload, "signature": cms.detached(eu.sign(raw))}
    wrong = {**upload, "thumbprint": "00" * 32}
    others = [e for e in entries if e not in (dsc, upload)]
    accepted, rejected = check_trust_list([*others, forged_dsc, forged_upload, wrong], anchor)
    reasons = sorted(r["reason"] for r in rejected)
    assert reasons == [
        "not signed by an upload certificate of its country",
        "not signed by the trust anchor",
        "thumbprint does not match rawData",
    ]
    assert all(a["certificateType"] != "DSC" for a in accepted)
    # without the right anchor nothing is trusted
    accepted, rejected = check_trust_list(entries, xx.upload)
    assert accepted == [] and len(rejected) == 7


def test_upload_dsc_trustlist_verify(bevis_env: Path, tmp_path: Path) -> None:
    """bevis' own DSC: upload_dsc (twice: the second is 'already there'), the trust list into
    a folder, and a certificate it signed verifies against that folder."""
    import time

    from jobs.errors import ConfigurationInvalid
    from jobs.gateway.simulator import development_parties
    from jobs.gateway.trust import download_trust_list, upload_dsc
    from jobs.settings import Settings
    from signing.hcert import issue
    from signing.keys import file_signer, init_dev_keys
    from signing.verify import verify

    keys = bevis_env / "keys"
    init_dev_keys(keys)
    with running_gateway(tmp_path / "sim", development_parties(keys)) as gw:
        s = Settings(
            data_dir=bevis_env,
            gateway_url=gw.url,
            gateway_ca_bundle=gw.ca,
            gateway_trust_anchor=gw.trust_anchor,
        )
        assert upload_dsc(s)["state"] == "uploaded"
        assert upload_dsc(s)["state"] == "already_there"
        out = tmp_path / "trust"
        result = download_trust_list(out, s)
        assert result["dscs"] == 1 and result["rejected"] == []
        assert len(list(out.glob("*.pem"))) == 1 and (out / "trustlist.json").is_file()
        signer = file_signer(keys)
        sample = json.loads(
            (Path(__file__).resolve().parents[3] / "samples" / "payloads.jsonl")
            .read_text()
            .splitlines()[0]
        )
        now = int(time.time())
        hc1 = issue(sample, signer, iat=now, exp=now + 86400)
        assert verify(hc1, trust=out).checks["signature"] == "ok"
        with pytest.raises(ConfigurationInvalid, match="trust anchor"):
            download_trust_list(out, s.model_copy(update={"gateway_trust_anchor": None}))
