"""signed_batch: every certificate of a batch decodes and verifies against the DSC, carries
its planned UVCI, and the batch holds exactly its planned orders — on a batch signed by the
real sign step with development keys."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_quality import RunGateFailed
from jobs.ledger import quarantine
from jobs.steps.validate import validate
from jobs.storage import RunPaths, write_parquet_atomic


@pytest.fixture(autouse=True)
def _log_to_current_stderr() -> None:
    """structlog's default logger keeps the stream it was made with (a closed pytest or
    CliRunner capture, later); ours writes to the current sys.stderr."""
    from jobs.log import configure_logging

    configure_logging("INFO")


@pytest.fixture
def signed_batch(bevis_env, tmp_path_factory, monkeypatch):
    from jobs.batches import plan, run_step
    from jobs.devtools.seed import seed
    from jobs.ledger.runs import start_run
    from jobs.steps.extract import extract
    from jobs.steps.mapping import map_run
    from signing.keys import init_dev_keys

    keys = tmp_path_factory.mktemp("keys")
    init_dev_keys(keys)
    monkeypatch.setenv("BEVIS_KEY_DIR", str(keys))
    monkeypatch.setenv("BEVIS_WORKERS", "1")
    run_id = start_run("dq-signed")
    seed(150, seed=31, defect_rate=0.0)
    extract(run_id)
    validate(run_id, "nvr_extract")
    map_run(run_id)
    validate(run_id, "dcc_payload")
    batch_id = plan(run_id)[0]
    run_step(batch_id, "sign")
    return run_id, batch_id


def test_signed_batch_passes_then_a_tampered_certificate_stops_the_batch(signed_batch) -> None:
    run_id, batch_id = signed_batch
    result = validate(run_id, "signed_batch", batch_id=batch_id)
    assert result.quarantined_orders == 0
    assert result.gates["failed_certificates"] == 0
    assert result.gates["signed_matching_plan"] == result.orders > 0

    paths = RunPaths.of(run_id)
    signed = pq.read_table(paths.signed(batch_id))
    rows = signed.to_pylist()
    hc1 = rows[0]["hc1"]
    i = len(hc1) // 2
    rows[0]["hc1"] = hc1[:i] + ("A" if hc1[i] != "A" else "B") + hc1[i + 1 :]
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=signed.schema), paths.signed(batch_id))

    with pytest.raises(RunGateFailed) as info:
        validate(run_id, "signed_batch", batch_id=batch_id)
    msg = str(info.value)
    assert "signed_batch" in msg and "every_certificate_verifies" in msg
    entries = [e for e in quarantine.read(run_id).to_pylist() if e["suite"] == "signed_batch"]
    assert [(e["order_id"], e["reason_code"]) for e in entries] == [
        (rows[0]["order_id"], "signature_invalid")
    ]
    assert entries[0]["pid"]


def test_missing_certificate_fails_the_count_gate(signed_batch) -> None:
    run_id, batch_id = signed_batch
    paths = RunPaths.of(run_id)
    signed = pq.read_table(paths.signed(batch_id))
    write_parquet_atomic(signed.slice(1), paths.signed(batch_id))
    with pytest.raises(RunGateFailed) as info:
        validate(run_id, "signed_batch", batch_id=batch_id)
    assert "signed_count_matches_plan" in str(info.value)
