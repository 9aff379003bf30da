"""The gateway simulator against the gateway's own integration tests for the revocation list
(dgc-gateway CertificateRevocationListIntegrationTest, numbered as in the research notes),
over real mutual TLS on loopback: every request presents a country's TLS authentication
certificate, and the simulator's "load balancer" derives the authentication headers from it.

The authenticated country is EU (its AUTHENTICATION certificate's subject C), the signer
EU's UPLOAD certificate unless a case says otherwise. "Unchanged" means the batch count and
the audit-event count did not change."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest

from jobs.gateway.simulator import DELETER, READER, ROLES, UPLOADER, running_gateway
from signing import cms
from tests.jobs.gateway.support import HASHES, Country, batch_dto

CMS = {"Content-Type": "application/cms"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gateway")
    eu, xx = Country.make("EU", folder), Country.make("XX", folder)
    parties = eu.parties() + xx.parties(roles=frozenset())  # XX: no roles, as in the tests
    with running_gateway(folder / "sim", parties) as gw:
        yield gw, eu, xx


@pytest.fixture
def gw(world):
    gateway, eu, xx = world
    gateway.store.clear()
    eu.set_roles(gateway.store, *ROLES)
    xx.set_roles(gateway.store)
    return gateway


@pytest.fixture
def eu(world):
    return world[1]


@pytest.fixture
def xx(world):
    return world[2]


def _counts(gw) -> tuple[int, int]:
    return gw.store.count_batches(), len(gw.store.audit_events())


def _upload(gw, country: Country, body: str):
    with country.client(gw.url, gw.ca) as c:
        return c.post("/revocation-list", content=body, headers=CMS)


def _stored_batch(gw, eu: Country, **dto) -> str:
    """A batch of EU stored directly (no validation), as the Java tests save entities."""
    payload = json.dumps(batch_dto(**dto))
    return gw.store.add_batch(
        country="EU",
        expires=batch_dto(**dto)["expires"],
        kind="SIGNATURE",
        kid="UNKNOWN_KID",
        signed_batch=eu.sign(payload),
    )


# 1
def test_successful_upload(gw, eu) -> None:
    before = _counts(gw)
    dto = batch_dto()
    r = _upload(gw, eu, eu.sign(json.dumps(dto)))
    assert r.status_code == 201, r.text
    assert _counts(gw) == (before[0] + 1, before[1] + 1)
    batch_id = r.headers["etag"]
    assert len(batch_id) == 36
    stored = gw.store.batch(batch_id)
    assert stored is not None
    assert (stored["country"], stored["type"], stored["kid"]) == ("EU", "SIGNATURE", "UNKNOWN_KID")
    assert stored["expires"] == dto["expires"] and not stored["deleted"]
    assert abs((stored["changed"] - dt.datetime.now(dt.UTC)).total_seconds()) < 2
    parsed = cms.parse_verify(stored["signed_batch"])
    assert parsed.verified and json.loads(parsed.payload) == dto


# 2
def test_upload_failed_invalid_json(gw, eu) -> None:
    before = _counts(gw)
    r = _upload(gw, eu, eu.sign("randomBadString"))
    assert r.status_code == 400 and r.json()["problem"] == "JSON Could not be parsed"
    assert _counts(gw) == before


# 3
def test_upload_failed_invalid_json_values(gw, eu) -> None:
    before = _counts(gw)
    r = _upload(gw, eu, eu.sign(json.dumps(batch_dto(kid="KIDWHICHISWAYTOLONGTOPASS"))))
    assert r.status_code == 400 and "etag" not in r.headers
    assert r.json()["problem"] == "Batch has invalid values."
    assert "kid: length must be between 11 and 12" in r.json()["details"]
    assert _counts(gw) == before


# 4
@pytest.mark.parametrize(
    "bad", ["ccccccccccccccccccccccccA", "__thisIsNoValidBase64___", "CgoKCgoKCgoKCgoKCgoKCgo="]
)
def test_upload_failed_invalid_hash_entries(gw, eu, bad: str) -> None:
    before = _counts(gw)
    r = _upload(gw, eu, eu.sign(json.dumps(batch_dto(entries=[*HASHES[:2], bad]))))
    assert r.status_code == 400 and "etag" not in r.headers
    assert "Batch Entry 2: hash" in r.json()["details"]
    assert _counts(gw) == before


# 5
def test_upload_failed_invalid_country(gw, eu) -> None:
    before = _counts(gw)
    r = _upload(gw, eu, eu.sign(json.dumps(batch_dto(country="XX"))))
    assert r.status_code == 403 and "etag" not in r.headers
    assert r.json()["problem"] == "Invalid Country sent"
    assert _counts(gw) == before


# 6
def test_upload_failed_invalid_expiration_date(gw, eu) -> None:
    before = _counts(gw)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10)
    r = _upload(gw, eu, eu.sign(json.dumps(batch_dto(expires=past))))
    assert r.status_code == 400 and "etag" not in r.headers
    assert r.json()["problem"] == "Invalid Dates"
    assert _counts(gw) == before


def _delete(gw, country: Country, body: str, alternative: bool = False):
    with country.client(gw.url, gw.ca) as c:
        if alternative:
            return c.post("/revocation-list/delete", content=body, headers=CMS)
        return c.request("DELETE", "/revocation-list", content=body, headers=CMS)


# 7, 8
@pytest.mark.parametrize("alternative", [False, True], ids=["DELETE", "POST /delete"])
def test_delete_revocation_batch(gw, eu, alternative: bool) -> None:
    batch_id = _stored_batch(gw, eu)
    eu.set_roles(gw.store, DELETER)
    before = _counts(gw)
    r = _delete(gw, eu, eu.sign(json.dumps({"batchId": batch_id})), alternative)
    assert r.status_code == 204, r.text
    assert _counts(gw) == (before[0], before[1] + 1)
    stored = gw.store.batch(batch_id)
    assert stored["signed_batch"] is None and stored["deleted"] is True
    assert abs((stored["changed"] - dt.datetime.now(dt.UTC)).total_seconds()) < 2


# 9, 10, 11
@pytest.mark.parametrize(
    "payload, status",
    [
        ("randomString", 400),
        (json.dumps({"batchId": "ThisIsNotAnUUID"}), 400),
        (json.dumps({"batchId": str(uuid.uuid4())}), 404),
    ],
    ids=["invalid json", "invalid json value", "batch not found"],
)
def test_delete_failures(gw, eu, payload: str, status: int) -> None:
    batch_id = _stored_batch(gw, eu)
    before, stored = _counts(gw), gw.store.batch(batch_id)
    r = _delete(gw, eu, eu.sign(payload))
    assert r.status_code == status, r.text
    assert _counts(gw) == before and gw.store.batch(batch_id) == stored


# 12
def test_delete_failed_invalid_country(gw, eu, xx) -> None:
    """Authenticated as XX (its own TLS certificate, C=XX), signed by XX's upload certificate,
    the batch EU's; XX holds no role."""
    batch_id = _stored_batch(gw, eu)
    before = _counts(gw)
    r = _delete(gw, xx, xx.sign(json.dumps({"batchId": batch_id})))
    assert r.status_code == 403 and r.json()["code"] == "0x403"
    # with the role it is the batch's country that refuses
    xx.set_roles(gw.store, DELETER)
    r = _delete(gw, xx, xx.sign(json.dumps({"batchId": batch_id})))
    assert r.status_code == 403 and r.json()["problem"] == "Invalid Country sent"
    assert _counts(gw) == before and not gw.store.batch(batch_id)["deleted"]


# 13
def test_delete_failed_upload_does_not_match_auth(gw, eu, xx) -> None:
    batch_id = _stored_batch(gw, eu)
    r = _delete(gw, eu, xx.sign(json.dumps({"batchId": batch_id})))
    assert r.status_code == 403 and r.json()["problem"] == "Invalid Upload Certificate"
    assert not gw.store.batch(batch_id)["deleted"]


# 14
def test_delete_failed_invalid_cms_signature(gw, eu, xx) -> None:
    """EU's upload certificate in the CMS, XX's private key signing."""
    from tests.signing.test_cms import _sign_with

    batch_id = _stored_batch(gw, eu)
    forged = _sign_with(json.dumps({"batchId": batch_id}).encode(), eu.upload, xx.upload_key)
    import base64

    r = _delete(gw, eu, base64.b64encode(forged).decode())
    assert r.status_code == 400 and r.json()["code"] == "0x260"
    assert not gw.store.batch(batch_id)["deleted"]


# 15
def test_delete_failed_gone(gw, eu) -> None:
    batch_id = _stored_batch(gw, eu)
    gw.store.mark_deleted(batch_id)
    before, stored = _counts(gw), gw.store.batch(batch_id)
    r = _delete(gw, eu, eu.sign(json.dumps({"batchId": batch_id})))
    assert r.status_code == 410
    assert _counts(gw) == before and gw.store.batch(batch_id) == stored


def _list(gw, country: Country, since: str | None):
    headers = {"Accept": "application/json"}
    if since is not None:
        headers["If-Modified-Since"] = since
    with country.client(gw.url, gw.ca) as c:
        return c.get("/revocation-list", headers=headers)


# 16
def test_download_batch_list(gw, eu) -> None:
    now = dt.datetime.now(dt.UTC)
    ids = []
    for i in range(5500, 0, -1):
        ids.append(
            gw.store.add_batch(
                country="EU",
                expires=(now + dt.timedelta(days=5)).isoformat(),
                kind="SIGNATURE",
                kid="UNKNOWN_KID",
                signed_batch="Batch1234",
                changed=now - dt.timedelta(minutes=i),
                deleted=i % 2 == 0,
            )
        )
    eu.set_roles(gw.store, READER)
    for k in range(6):
        changed = gw.store.batch(ids[k * 1000])["changed"]
        r = _list(gw, eu, (changed - dt.timedelta(seconds=1)).isoformat())
        assert r.status_code == 200
        body = r.json()
        expected = ids[k * 1000 : k * 1000 + 1000]
        assert body["more"] is (k < 5)
        assert [b["batchId"] for b in body["batches"]] == expected
        for b in body["batches"][:3]:
            stored = gw.store.batch(b["batchId"])
            assert b["country"] == "EU" and b["deleted"] == stored["deleted"]
            assert int(dt.datetime.fromisoformat(b["date"]).timestamp()) == int(
                stored["changed"].timestamp()
            )
    last = gw.store.batch(ids[-1])["changed"]
    assert _list(gw, eu, (last + dt.timedelta(seconds=1)).isoformat()).status_code == 204


# 17, 18
def test_download_batch_list_needs_a_past_if_modified_since(gw, eu) -> None:
    assert _list(gw, eu, None).status_code == 400
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).isoformat()
    assert _list(gw, eu, future).status_code == 400
    assert _list(gw, eu, "Tue, 01 Jun 2021 00:00:00 GMT").status_code == 400  # ISO only
    assert _list(gw, eu, "2021-06-01T00:00:00Z").status_code == 204  # nothing stored yet


def _download(gw, country: Country, batch_id: str):
    with country.client(gw.url, gw.ca) as c:
        return c.get(f"/revocation-list/{batch_id}", headers={"Accept": "application/cms"})


# 19
def test_download_revocation_batch(gw, eu) -> None:
    dto = batch_dto(entries=["abcd"])  # stored directly: no validation ran
    batch_id = gw.store.add_batch(
        country="EU",
        expires=dto["expires"],
        kind="SIGNATURE",
        kid="UNKNOWN_KID",
        signed_batch=eu.sign(json.dumps(dto)),
    )
    eu.set_roles(gw.store, READER)
    r = _download(gw, eu, batch_id)
    assert r.status_code == 200 and r.headers["etag"] == batch_id
    parsed = cms.parse_verify(r.text)
    assert parsed.verified and parsed.signer == eu.upload
    assert json.loads(parsed.payload) == dto


# 20, 21, 22
def test_download_revocation_batch_failures(gw, eu) -> None:
    assert _download(gw, eu, "thisIsNotAnUUID").status_code == 400
    gone = _stored_batch(gw, eu)
    gw.store.mark_deleted(gone)
    assert _download(gw, eu, gone).status_code == 410
    assert _download(gw, eu, str(uuid.uuid4())).status_code == 404


# 23, 24, 25, 26
def test_every_endpoint_requires_its_role(gw, eu) -> None:
    batch_id = _stored_batch(gw, eu)
    eu.set_roles(gw.store, DELETER, UPLOADER)
    r = _list(gw, eu, "2021-06-01T00:00:00Z")
    assert r.status_code == 403 and r.json()["code"] == "0x403"
    assert _download(gw, eu, batch_id).status_code == 403
    eu.set_roles(gw.store, UPLOADER, READER)
    body = eu.sign(json.dumps({"batchId": batch_id}))
    assert _delete(gw, eu, body).status_code == 403
    assert _delete(gw, eu, body, alternative=True).status_code == 403
    eu.set_roles(gw.store, READER, DELETER)
    before = _counts(gw)
    r = _upload(gw, eu, eu.sign(json.dumps(batch_dto())))
    assert r.status_code == 403 and "etag" not in r.headers
    assert _counts(gw) == before


# --- the order of the upload checks, and the CMS converter ------------------------------------


def test_upload_check_order_and_cms_converter(gw, eu, xx) -> None:
    before = _counts(gw)
    with eu.client(gw.url, gw.ca) as c:
        r = c.post("/revocation-list", content="not base64!", headers=CMS)
        assert (r.status_code, r.json()["code"], r.json()["problem"]) == (
            400,
            "0x402",
            "Invalid Base64 CMS Message",
        )
        r = c.post("/revocation-list", content="AAAA", headers=CMS)
        assert r.json()["problem"] == "Could not parse CMS Message"
        r = c.post(
            "/revocation-list",
            content=eu.sign(json.dumps(batch_dto())),
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 415
    # signed by XX's upload certificate although authenticated as EU: 403, before the JSON
    r = _upload(gw, eu, xx.sign("randomBadString"))
    assert r.status_code == 403 and r.json()["problem"] == "Invalid Upload Certificate"
    assert "C=XX" in r.json()["sendValue"]
    # null hash type and entries: 400 (the real gateway's NullPointerException is a 500)
    for field in ("hashType", "entries"):
        dto = batch_dto()
        dto[field] = None
        r = _upload(gw, eu, eu.sign(json.dumps(dto)))
        assert r.status_code == 400 and f"{field}: must not be null" in r.json()["details"]
    r = _upload(gw, eu, eu.sign(json.dumps(batch_dto(entries=[]))))
    assert r.status_code == 400 and "entries: size must be between 1 and 1000" in r.text
    r = _upload(gw, eu, eu.sign(json.dumps(batch_dto(entries=[HASHES[0]] * 1001))))
    assert r.status_code == 400
    r = _upload(gw, eu, eu.sign(json.dumps(batch_dto(hash_type="MD5"))))
    assert r.status_code == 400 and r.json()["problem"] == "JSON Could not be parsed"
    r = _upload(gw, eu, eu.sign(json.dumps(batch_dto()) + " trailing"))
    assert r.status_code == 400 and r.json()["problem"] == "JSON Could not be parsed"
    assert _counts(gw) == before
    r = _upload(gw, eu, eu.sign(json.dumps(batch_dto(entries=[HASHES[0]] * 1000, kid=None))))
    assert r.status_code == 201  # 1000 entries and a null kid pass


def test_cleanup_marks_expired_batches_deleted(gw, eu) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    r = _upload(gw, eu, eu.sign(json.dumps(batch_dto(expires=soon + dt.timedelta(seconds=1)))))
    assert r.status_code == 201
    batch_id = r.headers["etag"]
    assert gw.store.cleanup(dt.datetime.now(dt.UTC)) == 0
    assert gw.store.cleanup(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)) == 1
    assert gw.store.batch(batch_id)["deleted"] is True


def test_the_store_is_sqlite_on_disk(world) -> None:
    gateway = world[0]
    assert Path(gateway.store.path).is_file() and gateway.store.path.suffix == ".db"
