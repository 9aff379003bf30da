"""Drill (issue 14, item 5): a look-up service of someone else's choosing cannot steer
identity numbers and certificates to an address it names. Only configured operators, at
exactly their configured scheme, host and port, get messages; the rest are DEFERRED
``operator_unknown``, logged without personal data."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI, Request

from tests.jobs.mailbox.support import (
    FAST,
    LEDGERS,
    audit,
    ledger_overrides,
    ledger_rows,
    operator_messages,
)


@pytest.mark.parametrize("ledger", LEDGERS)
def test_fake_lookup_pointing_at_itself_gets_nothing(
    bevis_env: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
    ledger: str,
) -> None:
    """The look-up (FaR) is an impostor whose answers name the right operators but its own
    address; the operators are configured at the real one. Nothing reaches the impostor,
    nothing is recorded DIGITAL or printed: all with a mailbox are DEFERRED operator_unknown."""
    from jobs.devtools.drill import synthetic_batch
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings
    from jobs.steps.deliver import deliver_batch

    overrides = {**FAST, **ledger_overrides(ledger, request)}
    n = 40
    batch_id = synthetic_batch("op-d", n, get_settings(**overrides))
    url = get_settings(**overrides).resolved_ledger_url()
    real_s = get_settings(simulator_db=tmp_path / "real.db", **overrides)
    fake_s = get_settings(simulator_db=tmp_path / "impostor.db", **overrides)
    with running_simulator(real_s) as real, running_simulator(fake_s) as impostor:
        s = get_settings(mailbox_url=impostor, mailbox_operators=_simulator_at(real), **overrides)
        capsys.readouterr()
        result = deliver_batch(batch_id, s)
        at_impostor = operator_messages(impostor)
        at_real = operator_messages(real)
    captured = capsys.readouterr()
    err = captured.out + captured.err  # the log (structlog: stdout unless configured)
    assert len(at_impostor) == 0, f"{len(at_impostor)} of {n} sent to the impostor's address"
    assert at_real == {} and result["DIGITAL"] == 0
    certs, deliveries = ledger_rows(batch_id, url)
    unknown = [u for u, o, r in certs if r == "operator_unknown"]
    assert unknown and all(o.value == "DEFERRED" for u, o, r in certs if r == "operator_unknown")
    unreachable = {d.uvci for d in deliveries if d.status.value == "UNREACHABLE"}
    assert len(unknown) + len(unreachable) == n  # the rest: no secure mailbox (paper)
    audit(batch_id, url, at_impostor)
    # one log line names the refusal by batch and order ids, never a person
    assert "operator_unknown" in err
    lines = [ln for ln in err.splitlines() if "operator_unknown" in ln]
    assert not any("[IDNR]" in ln for ln in lines)
    assert any("op-d-o" in ln for ln in lines)  # order ids
    import pyarrow.parquet as pq

    from jobs.storage import RunPaths

    people = pq.read_table(
        RunPaths.of("op-d", s).batch_payloads(batch_id), columns=["person_id"]
    ).column(0)
    assert not any(p.as_py() in err for p in people)


def test_answers_naming_unconfigured_operators_or_addresses_are_refused(
    bevis_env: Path, tmp_path: Path
) -> None:
    """A fake look-up answers with the simulator's real verdicts, but for three of every
    four recipients it names an operator that is not configured, or the right operator at
    another port, or at another scheme. Only the untouched answers are delivered."""
    from jobs.devtools.drill import synthetic_batch
    from jobs.mailbox.simulator import reachability, running_server, running_simulator
    from jobs.settings import get_settings
    from jobs.steps.deliver import deliver_batch

    n = 40
    s0 = get_settings(simulator_secure_share=1.0, **FAST)
    batch_id = synthetic_batch("op-e", n, s0)
    with (
        running_simulator(s0) as real,
        running_simulator(get_settings(simulator_db=tmp_path / "other.db", **FAST)) as other,
    ):

        def fake_far(_url: str) -> FastAPI:
            app = FastAPI()

            @app.post("/far/isReachable")
            async def is_reachable(request: Request):
                data = await request.json()
                out = []
                for k, r in enumerate(data["recipients"]):
                    a = reachability(r, 1.0, real)
                    if a["status"] == "Secure" and k % 4 == 1:
                        a["operator"] = "evilbox"  # not configured (address is real's)
                    elif a["status"] == "Secure" and k % 4 == 2:  # right name, other port
                        a["serviceAddress"] = f"{other}/operators/{a['operator']}"
                    elif a["status"] == "Secure" and k % 4 == 3:  # right name, other scheme
                        a["serviceAddress"] = a["serviceAddress"].replace("http:", "https:")
                    out.append(a)
                return {"results": out}

            return app

        with running_server(fake_far) as far:
            s = get_settings(mailbox_url=far, mailbox_operators=_simulator_at(real), **FAST)
            result = deliver_batch(batch_id, s)
        at_other, at_real = operator_messages(other), operator_messages(real)
    assert at_other == {}
    url = s.resolved_ledger_url()
    certs, _ = ledger_rows(batch_id, url)
    reasons = {r for _, _, r in certs}
    assert "operator_unknown" in reasons
    unknown = sum(1 for _, _, r in certs if r == "operator_unknown")
    assert 20 <= unknown <= 32 and result["DIGITAL"] == len(at_real) >= 8
    assert result["PAPER"] + result["DIGITAL"] + unknown == n
    audit(batch_id, url, at_real)


def _simulator_at(base: str) -> dict[str, str]:
    from jobs.mailbox.endpoints import SIMULATOR_OPERATORS

    return {op: f"{base}/operators/{op}" for op in SIMULATOR_OPERATORS}
