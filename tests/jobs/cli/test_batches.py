"""Operations CLI: runs list/show, batches list, certificates show; and the whole batch
state machine with the render and deliver steps where they are installed."""

from __future__ import annotations

import contextlib
import json

import structlog
from typer.testing import CliRunner

from jobs import batches
from jobs.cli import app
from jobs.ledger import queries
from jobs.ledger.runs import finish_run
from tests.jobs.batches_support import (  # noqa: F401  (fixtures)
    batch_env_fixture,
    dev_keys_fixture,
    ledger_certificates,
    make_run,
)

IDENTITY_KEYS = {"person_id", "given_name", "family_name", "dob", "nam", "address_street"}


def _cli(args: list[str]):
    try:
        return CliRunner().invoke(app, args)
    finally:
        structlog.reset_defaults()


def test_runs_and_batches_commands(batch_env) -> None:
    rid = make_run(120)
    ids = batches.plan(rid)
    batches.run_step(ids[0], "sign")
    finish_run(rid, "FAILED", error="batch b0001 not signed")

    runs = json.loads(_cli(["runs", "list", "--json"]).stdout)
    assert [(r["run_id"], r["state"], r["batches"], r["certificates"]) for r in runs] == [
        (rid, "FAILED", 2, 100)
    ]
    shown = json.loads(_cli(["runs", "show", rid, "--json"]).stdout)
    assert shown["counts"]["batches_signed"] == 1 and shown["counts"]["batches_planned"] == 1
    assert shown["counts"]["certificates"] == 100 and shown["error"] == "batch b0001 not signed"
    assert shown["step_seconds"]["sign"] > 0
    table = _cli(["runs", "show", rid])
    assert table.exit_code == 0 and "batches_signed" in table.stdout
    missing = _cli(["runs", "show", "nope"])
    assert missing.exit_code == 2 and "not in the ledger" in missing.stderr

    listed = json.loads(_cli(["batches", "list", "--run", rid, "--json"]).stdout)
    assert [(b["batch_id"], b["state"], b["size"]) for b in listed] == [
        (ids[0], "SIGNED", 100),
        (ids[1], "PLANNED", 20),
    ]
    assert (
        json.loads(_cli(["batches", "list", "--state", "signed", "--json"]).stdout)[0]["batch_id"]
        == ids[0]
    )
    bad = _cli(["batches", "list", "--state", "nonsense"])
    assert bad.exit_code == 2
    assert _cli(["batches", "rerun"]).exit_code == 2  # neither ids nor --failed
    assert _cli(["batches", "rerun", "not-a-batch"]).exit_code == 2

    cert = ledger_certificates(rid)[0]
    info = json.loads(_cli(["certificates", "show", cert.uvci, "--json"]).stdout)
    assert info["state"] == "ISSUED" and info["batch_id"] == ids[0] and info["deliveries"] == []
    assert not IDENTITY_KEYS & set(info)
    assert _cli(["certificates", "show", "URN:UVCI:01:SE:EHM/NONE"]).exit_code == 1


def test_full_state_machine_with_render_and_deliver(batch_env, monkeypatch, request) -> None:
    """PLANNED → SIGNED → RENDERED → DELIVERED; a render fault fails batch 1 alone in
    render; rerun --failed runs exactly render and deliver for it."""
    monkeypatch.setenv("BEVIS_BATCH_SIZE", "15")
    monkeypatch.setenv("BEVIS_FAULT", "render:1")
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings

    stack = contextlib.ExitStack()
    monkeypatch.setenv("BEVIS_MAILBOX_URL", stack.enter_context(running_simulator(get_settings())))
    request.addfinalizer(stack.close)
    rid = make_run(30)
    ids = batches.plan(rid)
    failures = []
    for bid in ids:
        for step in ("sign", "render", "deliver"):
            try:
                batches.run_step(bid, step)
            except Exception as exc:
                failures.append((bid, step, type(exc).__name__))
                break
    assert failures == [(ids[1], "render", "FaultInjected")]
    states = {b.id: (b.state.value, b.failed_step) for b in queries.batches_of(rid)}
    assert states == {ids[0]: ("DELIVERED", None), ids[1]: ("FAILED", "render")}
    assert batches.run_step(ids[0], "deliver")["skipped"] is True

    from jobs.db import migrate

    migrate("sources", get_settings().resolved_source_url())  # the orders live there
    finish_run(rid, "FAILED", error="batches not delivered: 1 failed")  # as the DAG does
    result = _cli(["batches", "rerun", "--failed", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"batch_id": ids[1], "ok": True, "steps": ["render", "deliver"], "state": "DELIVERED"}
    ]
    shown = json.loads(_cli(["runs", "show", rid, "--json"]).stdout)
    assert shown["state"] == "SUCCEEDED" and shown["error"] is None  # closed by the rerun
    assert shown["counts"]["batches_delivered"] == 2
    certs = ledger_certificates(rid)
    assert len(certs) == 30 and all(c.outcome is not None for c in certs)
    info = json.loads(_cli(["certificates", "show", certs[0].uvci, "--json"]).stdout)
    assert info["state"] == info["outcome"] and info["batch_state"] == "DELIVERED"
    assert info["deliveries"] and all(d["status"] for d in info["deliveries"])
    assert not IDENTITY_KEYS & set(info)
    for d in info["deliveries"]:
        assert not IDENTITY_KEYS & set(d)


def test_bench_batches_reports_json_last(batch_env) -> None:
    """The bench goes through plan + run_step (ledger rows, files, verification); the
    figures are not asserted, the machinery's result is."""
    result = _cli(["bench", "batches", "--n", "150", "--batch-size", "60"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["certificates"] == 150 and summary["batches"] == 3
    assert summary["ledger"] == "sqlite" and summary["per_s"] > 0
    assert len(ledger_certificates(summary["run_id"])) == 150
