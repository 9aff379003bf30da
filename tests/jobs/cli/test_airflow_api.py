"""The Airflow REST client against a real HTTP server on a socket: a small fake of the
Airflow 3 endpoints it uses (/auth/token, taskInstances, dagRuns, clearTaskInstances) that
checks the JWT and the request bodies like the real server does. The real Airflow run is
covered by the DAG tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, unquote, urlparse

import pytest
from typer.testing import CliRunner

from jobs.cli.airflow_api import AirflowApiError, AirflowClient, batches_of_ti

RUN = "20261122T141500-a1b2"
DAG = "dcc_issuance"
DAG_RUN = "manual__2026-11-22T14:15:00+00:00"


def _ti(task_id: str, idx: int, state: str, batch: str | None, rendered: bool = True) -> dict:
    return {
        "task_id": task_id,
        "map_index": idx,
        "state": state,
        "dag_run_id": DAG_RUN,
        "rendered_map_index": batch if rendered else None,
        "rendered_fields": {"op_kwargs": {"batch_id": batch}} if rendered and batch else {},
    }


def _task_instances() -> list[dict]:
    """Batches are NOT at map_index == seq: the plan returned them in another order."""
    order = {0: f"{RUN}-b0002", 1: f"{RUN}-b0000", 2: f"{RUN}-b0001"}
    tis = [_ti("begin", -1, "success", None), _ti("finish", -1, "failed", None)]
    for idx, bid in order.items():
        sign_state = "failed" if bid.endswith("b0001") else "success"
        tis.append(_ti("batch.sign", idx, sign_state, bid))
        down = "upstream_failed" if sign_state == "failed" else "success"
        tis.append(_ti("batch.render", idx, down, bid, rendered=down == "success"))
        tis.append(_ti("batch.deliver", idx, down, bid, rendered=down == "success"))
    return tis


class FakeAirflow(BaseHTTPRequestHandler):
    token = "jwt-test-token"
    calls: ClassVar[list[tuple[str, str, dict | None]]] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def _json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self._json(401, {"detail": "Not authenticated"})
            return False
        return True

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        path = unquote(urlparse(self.path).path)  # as Starlette decodes it
        type(self).calls.append(("POST", path, body))
        if path == "/auth/token":
            if body == {"username": "ops", "password": "s3cret"}:
                return self._json(201, {"access_token": self.token})
            return self._json(401, {"detail": "Invalid credentials"})
        if not self._authorised():
            return None
        if path == f"/api/v2/dags/{DAG}/clearTaskInstances":
            if body.get("dag_run_id") != DAG_RUN or not all(
                isinstance(p, list) and len(p) == 2 for p in body.get("task_ids", [])
            ):
                return self._json(422, {"detail": "bad body"})
            wanted = {tuple(p) for p in body["task_ids"]}
            hits = [t for t in _task_instances() if (t["task_id"], t["map_index"]) in wanted]
            if body.get("only_failed", True):
                hits = [t for t in hits if t["state"] in ("failed", "upstream_failed")]
            return self._json(200, {"task_instances": hits, "total_entries": len(hits)})
        return self._json(404, {"detail": "not found"})

    def do_GET(self) -> None:
        url = urlparse(self.path)
        q, path = parse_qs(url.query), unquote(url.path)
        type(self).calls.append(("GET", path, None))
        if not self._authorised():
            return None
        limit, offset = int(q.get("limit", ["100"])[0]), int(q.get("offset", ["0"])[0])
        if path == f"/api/v2/dags/{DAG}/dagRuns/{DAG_RUN}/taskInstances":
            tis = _task_instances()
            return self._json(
                200, {"task_instances": tis[offset : offset + limit], "total_entries": len(tis)}
            )
        if path == f"/api/v2/dags/{DAG}/dagRuns":
            runs = [
                {"dag_run_id": "scheduled__x", "conf": {}},
                {"dag_run_id": DAG_RUN, "conf": {"run_id": RUN}},
            ]
            return self._json(
                200, {"dag_runs": runs[offset : offset + limit], "total_entries": len(runs)}
            )
        return self._json(404, {"detail": "not found"})


@pytest.fixture
def airflow_url(monkeypatch) -> Iterator[str]:
    FakeAirflow.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAirflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr("jobs.cli.airflow_api.PAGE", 4)  # exercise paging
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_batch_is_found_by_rendered_identity_not_by_seq() -> None:
    ti = _ti("batch.sign", 2, "failed", f"{RUN}-b0001")
    assert batches_of_ti(ti, {f"{RUN}-b0001", f"{RUN}-b0002"}) == {f"{RUN}-b0001"}
    no_template = {**ti, "rendered_map_index": None}
    assert batches_of_ti(no_template, {f"{RUN}-b0001"}) == {f"{RUN}-b0001"}  # op_kwargs


def test_clear_exactly_the_failed_batch(airflow_url: str) -> None:
    with AirflowClient(airflow_url, "ops", "s3cret") as client:
        plan, cleared = client.clear_batches(DAG, DAG_RUN, [f"{RUN}-b0001"])
    assert plan.batches == {f"{RUN}-b0001": 2}  # map index 2, not seq 1
    assert plan.pairs == [("batch.deliver", 2), ("batch.render", 2), ("batch.sign", 2)]
    assert {(t["task_id"], t["map_index"]) for t in cleared} == set(plan.pairs)
    posts = [c for c in FakeAirflow.calls if c[1].endswith("clearTaskInstances")]
    assert [p[2]["dry_run"] for p in posts] == [True, False]  # dry run first
    body = posts[1][2]
    assert body["dag_run_id"] == DAG_RUN
    assert body["task_ids"] == [["batch.deliver", 2], ["batch.render", 2], ["batch.sign", 2]]
    assert body["only_failed"] is False and body["include_downstream"] is False
    # paging: 11 task instances with 4 per page
    pages = [c for c in FakeAirflow.calls if c[1].endswith("/taskInstances")]
    assert len(pages) == 3


def test_successful_batch_clears_nothing_and_unknown_is_reported(airflow_url: str) -> None:
    with AirflowClient(airflow_url, "ops", "s3cret") as client:
        plan, cleared = client.clear_batches(DAG, DAG_RUN, [f"{RUN}-b0000", f"{RUN}-b0042"])
    assert plan.batches == {f"{RUN}-b0000": 1} and plan.pairs == [] and cleared == []
    assert plan.not_found == [f"{RUN}-b0042"]
    assert not [c for c in FakeAirflow.calls if c[1].endswith("clearTaskInstances")]


def test_bad_credentials_say_so(airflow_url: str) -> None:
    with (
        AirflowClient(airflow_url, "ops", "wrong") as client,
        pytest.raises(AirflowApiError, match=r"/auth/token → HTTP 401"),
    ):
        client.task_instances(DAG, DAG_RUN)
    with pytest.raises(AirflowApiError, match="BEVIS_AIRFLOW_USERNAME"):
        AirflowClient(airflow_url).token()


def test_unreachable_server_is_a_clear_error() -> None:
    client = AirflowClient("http://127.0.0.1:9", "ops", "s3cret", timeout=2)
    with pytest.raises(AirflowApiError, match=r"127\.0\.0\.1:9/auth/token"):
        client.token()


def test_cli_rerun_via_airflow(airflow_url: str, bevis_env, monkeypatch) -> None:
    import structlog

    from jobs.cli import app

    monkeypatch.setenv("BEVIS_AIRFLOW_API_URL", airflow_url)
    monkeypatch.setenv("BEVIS_AIRFLOW_USERNAME", "ops")
    monkeypatch.setenv("BEVIS_AIRFLOW_PASSWORD", "s3cret")
    try:
        dry = CliRunner().invoke(
            app, ["batches", "rerun", f"{RUN}-b0001", "--via-airflow", "--dry-run", "--json"]
        )
        assert dry.exit_code == 0, dry.output
        [out] = json.loads(dry.stdout)
        assert out["dag_run_id"] == DAG_RUN  # found through the run's conf
        assert out["task_instances"] == ["batch.deliver[2]", "batch.render[2]", "batch.sign[2]"]
        assert out["dry_run"] is True and out["cleared"] == 0
        posts = [c for c in FakeAirflow.calls if c[1].endswith("clearTaskInstances")]
        assert [p[2]["dry_run"] for p in posts] == [True]
        real = CliRunner().invoke(app, ["batches", "rerun", f"{RUN}-b0001", "--via-airflow"])
        assert real.exit_code == 0, real.output
        assert "batch.sign[2]" in real.stdout
    finally:
        structlog.reset_defaults()
