"""The mailbox simulator over a real socket: FaR semantics, operator limits, idempotency,
faults, SQLite storage."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from pathlib import Path

import httpx
import pytest


@pytest.fixture
def sim(bevis_env: Path):
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings

    s = get_settings(
        simulator_outage_after=3, simulator_outage_requests=2, simulator_retry_after_s=7
    )
    with running_simulator(s) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client, bevis_env / "mailbox-sim.db"


def _message(recipient: str, pdf: bytes = b"%PDF-1.4 test", subject: str = "Intyg") -> dict:
    return {
        "sender": "SE2021006255",
        "recipient": recipient,
        "subject": subject,
        "body": "Hej",
        "attachments": [
            {
                "filename": "covidintyg.pdf",
                "contentType": "application/pdf",
                "content": base64.b64encode(pdf).decode(),
                "checksum": {"algorithm": "SHA-256", "value": hashlib.sha256(pdf).hexdigest()},
            }
        ],
    }


def _secure(client: httpx.Client, n: int = 200) -> list[dict]:
    people = [f"19800101{i:04d}" for i in range(n)]
    results = client.post("/far/isReachable", json={"sender": "x", "recipients": people}).json()
    return [
        r
        for r in results["results"]
        if r["status"] == "Secure" and r["senderAccepted"] and not r["pending"]
    ]


def test_reachability_share_is_deterministic_and_near_73_percent(sim) -> None:
    client, _ = sim
    people = [f"19{i:010d}" for i in range(1000)]
    first = client.post("/far/isReachable", json={"sender": "x", "recipients": people}).json()
    again = client.post("/far/isReachable", json={"sender": "x", "recipients": people}).json()
    assert first == again
    statuses = [r["status"] for r in first["results"]]
    assert 0.69 < statuses.count("Secure") / 1000 < 0.77
    assert {"Secure", "Not", "Anonymous"} == set(statuses)
    secure = [r for r in first["results"] if r["status"] == "Secure"]
    assert all(r["serviceAddress"].endswith("/operators/" + r["operator"]) for r in secure)
    too_many = client.post("/far/isReachable", json={"recipients": [*people, "x"]})
    assert too_many.status_code == 400


def test_delivery_is_idempotent_and_stored(sim) -> None:
    client, db = sim
    r = _secure(client)[0]
    url = f"/operators/{r['operator']}/deliverSecure"
    first = client.post(url, json=_message(r["recipient"]), headers={"Idempotency-Key": "k-1"})
    second = client.post(url, json=_message(r["recipient"]), headers={"Idempotency-Key": "k-1"})
    assert first.status_code == second.status_code == 200
    assert first.json()["transactionId"] == second.json()["transactionId"]
    assert (first.json()["duplicate"], second.json()["duplicate"]) == (False, True)
    with sqlite3.connect(db) as conn:
        assert conn.execute(
            "select count(*) from messages where idempotency_key='k-1'"
        ).fetchone() == (1,)
    status = client.get(f"/operators/{r['operator']}/messages/k-1")
    assert status.json()["transactionId"] == first.json()["transactionId"]
    assert client.get(f"/operators/{r['operator']}/messages/unknown").status_code == 404


def test_protocol_limits(sim) -> None:
    client, _ = sim
    r = _secure(client)[0]
    url = f"/operators/{r['operator']}/deliverSecure"
    key = {"Idempotency-Key": "k-limits"}
    bad_sum = _message(r["recipient"])
    bad_sum["attachments"][0]["checksum"]["value"] = "0" * 64
    assert client.post(url, json=bad_sum, headers=key).status_code == 422
    long_subject = _message(r["recipient"], subject="x" * 256)
    assert client.post(url, json=long_subject, headers=key).status_code == 422
    big = _message(r["recipient"], pdf=b"0" * (2 * 1024 * 1024 + 1))
    assert client.post(url, json=big, headers=key).status_code == 413
    assert client.post(url, json=_message(r["recipient"])).status_code == 400  # no key
    other = next(op for op in ("kivra", "eboks") if op != r["operator"])
    wrong = client.post(
        f"/operators/{other}/deliverSecure", json=_message(r["recipient"]), headers=key
    )
    assert wrong.status_code == 422


def test_drill_outage_answers_503_with_retry_after(sim) -> None:
    client, _ = sim
    secure = _secure(client)
    codes = []
    for i, r in enumerate(secure[:7]):
        resp = client.post(
            f"/operators/{r['operator']}/deliverSecure",
            json=_message(r["recipient"]),
            headers={"Idempotency-Key": f"k-{i}"},
        )
        codes.append(resp.status_code)
        if resp.status_code == 503:
            assert resp.headers["Retry-After"] == "7"
    assert codes == [200, 200, 200, 503, 503, 200, 200]
    assert client.get("/_admin/stats").json()["messages"] == 5


def test_outage_window_from_settings(bevis_env: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings

    now = datetime.now(UTC)
    window = (
        f"{(now - timedelta(minutes=5)).isoformat()}/{(now + timedelta(minutes=5)).isoformat()}"
    )
    later = f"{(now + timedelta(hours=1)).isoformat()}/{(now + timedelta(hours=2)).isoformat()}"
    with running_simulator(get_settings(simulator_outages=[later, window])) as url:
        resp = httpx.post(f"{url}/far/isReachable", json={"recipients": ["1"]})
        assert resp.status_code == 503 and "Retry-After" in resp.headers
    with running_simulator(get_settings(simulator_outages=[later])) as url:
        assert httpx.post(f"{url}/far/isReachable", json={"recipients": ["1"]}).status_code == 200


def test_admin_messages_lists_what_the_operators_hold(sim) -> None:
    """The operator's side for audits: key, operator and time stored — no content."""
    client, _ = sim
    secure = _secure(client)[:2]
    for i, r in enumerate(secure):
        for _ in range(2):  # the second is a duplicate: still one message
            client.post(
                f"/operators/{r['operator']}/deliverSecure",
                json=_message(r["recipient"]),
                headers={"Idempotency-Key": f"audit-{i}"},
            )
    listed = client.get("/_admin/messages").json()["messages"]
    assert [m["idempotency_key"] for m in listed] == ["audit-0", "audit-1"]
    assert [m["operator"] for m in listed] == [r["operator"] for r in secure]
    assert all(set(m) == {"idempotency_key", "operator", "stored_at"} for m in listed)
    assert all(r["recipient"] not in str(listed) for r in secure)


def test_bearer_token_required_when_configured(bevis_env: Path) -> None:
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings

    with running_simulator(get_settings(simulator_token="t-123")) as url:
        body = {"sender": "x", "recipients": ["198001010001"]}
        assert httpx.post(f"{url}/far/isReachable", json=body).status_code == 401
        wrong = {"Authorization": "Bearer t-124"}
        assert httpx.post(f"{url}/far/isReachable", json=body, headers=wrong).status_code == 401
        right = {"Authorization": "Bearer t-123"}
        assert httpx.post(f"{url}/far/isReachable", json=body, headers=right).status_code == 200
        op = httpx.post(f"{url}/operators/kivra/deliverSecure", json={}, headers={"Idempotency-Key": "k"})  # fmt: skip
        assert op.status_code == 401
        assert httpx.get(f"{url}/operators/kivra/messages/k").status_code == 401


def test_operator_base_url_points_service_addresses_elsewhere(bevis_env: Path) -> None:
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings

    s = get_settings(simulator_operator_base_url="https://127.0.0.1:9443")
    with running_simulator(s) as url:
        people = [f"19800101{i:04d}" for i in range(50)]
        results = httpx.post(f"{url}/far/isReachable", json={"recipients": people}).json()
    addresses = {r["serviceAddress"] for r in results["results"] if r["serviceAddress"]}
    assert addresses and all(a.startswith("https://127.0.0.1:9443/operators/") for a in addresses)
