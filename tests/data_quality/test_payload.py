"""dcc_payload: schema by ver with formats, active value sets, fnt/gnt, UVCI format, check
character and uniqueness (in the run and against the ledger), on payloads made by the real
map step from a seeded register."""

from __future__ import annotations

import copy
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_quality.payload import payload_facts
from data_quality.uvci import check_character, checks_ok
from jobs.ledger import quarantine
from jobs.steps.validate import validate
from jobs.storage import RunPaths, write_parquet_atomic
from signing.dcc import schema_errors, value_set_errors


@pytest.fixture(autouse=True)
def _log_to_current_stderr() -> None:
    """structlog's default logger keeps the stream it was made with (a closed pytest or
    CliRunner capture, later); ours writes to the current sys.stderr."""
    from jobs.log import configure_logging

    configure_logging("INFO")


def test_uvci_check_character_published_example_and_vectorised() -> None:
    assert check_character("URN:UVCI:01:NL:187/37512422923") == "Z"
    ok = checks_ok(
        pa.array(
            [
                "URN:UVCI:01:NL:187/37512422923#Z",
                "URN:UVCI:01:NL:187/37512422923#Y",
                "URN:UVCI:01:NL:187/37512422923",
                "urn:uvci:01:nl:187/37512422923#Z",
                None,
                "URN:UVCI:01:SE:" + "A" * 70 + "#" + check_character("URN:UVCI:01:SE:" + "A" * 70),
            ]
        )
    )
    assert ok.tolist() == [True, False, False, False, False, False]


@pytest.fixture(scope="module")
def mapped_run(tmp_path_factory):
    """A seeded register taken through extract, nvr_extract and the real map step."""
    import os

    data = tmp_path_factory.mktemp("dq-payload")
    old = {k: os.environ.get(k) for k in ("BEVIS_DATA_DIR",)}
    os.environ["BEVIS_DATA_DIR"] = str(data)
    try:
        from jobs.devtools.seed import seed
        from jobs.steps.extract import extract
        from jobs.steps.mapping import map_run

        seed(800, seed=21, defect_rate=0.0)
        extract("dq-pay")
        validate("dq-pay", "nvr_extract")
        map_run("dq-pay")
        payloads = pq.read_table(RunPaths.of("dq-pay").payloads)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return data, payloads


def _mutations(payload: dict) -> list[dict]:
    out = []
    for path, value in [
        (("v", 0, "dt"), "2021-02-30"),
        (("v", 0, "dt"), "2021-2-3"),
        (("dob",), "19850312"),
        (("nam", "fnt"), "holmgren"),
        (("nam", "fn"), "X" * 81),
        (("v", 0, "dn"), 0),
        (("v", 0, "dn"), "2"),
        (("v", 0, "mp"), "EU/1/99/9999"),
        (("v", 0, "co"), "XX"),
        (("ver",), "9.9.9"),
        (("v", 0, "ci"), "Z" * 81),
    ]:
        p = copy.deepcopy(payload)
        target = p
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
        out.append(p)
    p = copy.deepcopy(payload)
    del p["nam"]["fnt"], p["nam"]["gnt"]
    out.append(p)
    return out


def test_split_validation_equals_whole_payload_validation(mapped_run) -> None:
    _, payloads = mapped_run
    texts = payloads.column("payload_json").to_pylist()
    rnd = random.Random(3)
    sample = [json.loads(t) for t in rnd.sample(texts, 40)]
    cases = sample + [m for p in sample[:5] for m in _mutations(p)]
    facts = payload_facts([json.dumps(c) for c in cases] + ["{not json"])
    expected_schema = [not schema_errors(c) for c in cases] + [False]
    expected_vs = [not value_set_errors(c) for c in cases]
    assert facts["schema_ok"].tolist() == expected_schema
    assert facts["value_sets_ok"].tolist()[:-1] == expected_vs
    assert not all(expected_schema) and not all(expected_vs) and any(expected_schema)


def test_dcc_payload_quarantines_each_defect_and_rewrites_payloads(
    mapped_run, bevis_env, monkeypatch
) -> None:
    from jobs.db import engine, migrate
    from jobs.ledger.models import Batch, Certificate, Run
    from jobs.settings import get_settings

    _, payloads = mapped_run
    monkeypatch.setenv("BEVIS_QUARANTINE_THRESHOLD", "0.5")
    rows = payloads.to_pylist()
    assert len(rows) > 20

    def edit(i: int, fn) -> None:
        p = json.loads(rows[i]["payload_json"])
        fn(p)
        rows[i]["payload_json"] = json.dumps(p, ensure_ascii=False)

    edit(0, lambda p: p["v"][0].__setitem__("dt", "2021-02-30"))  # schema (format)
    edit(1, lambda p: p["v"][0].__setitem__("mp", "EU/1/99/9999"))  # value set
    edit(2, lambda p: p["nam"].__setitem__("gnt", "Emma<maria"))  # fnt/gnt pattern
    bad = rows[3]["uvci"][:-1] + ("A" if rows[3]["uvci"][-1] != "A" else "B")
    rows[3]["uvci"] = bad
    edit(3, lambda p: p["v"][0].__setitem__("ci", bad))  # check character
    rows[5]["uvci"] = rows[4]["uvci"]  # duplicate within the run
    edit(5, lambda p: p["v"][0].__setitem__("ci", rows[4]["uvci"]))
    expected = {
        rows[0]["order_id"]: {"schema_invalid"},
        rows[1]["order_id"]: {"value_set"},
        rows[2]["order_id"]: {"schema_invalid"},
        rows[3]["order_id"]: {"uvci_invalid"},
        rows[4]["order_id"]: {"uvci_duplicate"},
        rows[5]["order_id"]: {"uvci_duplicate"},
        rows[6]["order_id"]: {"uvci_duplicate"},  # held by another order in the ledger
    }
    # row 6's UVCI is already in the ledger, for another order; row 7's for its own
    # order (a rerun after signing): not a duplicate
    url = get_settings().resolved_ledger_url()
    migrate("ledger", url)
    with engine(url).begin() as conn:
        conn.execute(Run.__table__.insert(), [{"id": "old-run", "parameters": {}}])
        conn.execute(
            Batch.__table__.insert(),
            [{"id": "old-run-b0001", "run_id": "old-run", "seq": 1, "size": 2}],
        )
        conn.execute(
            Certificate.__table__.insert(),
            [
                {
                    "uvci": rows[i]["uvci"],
                    "order_id": order,
                    "pid": "p",
                    "run_id": "old-run",
                    "batch_id": "old-run-b0001",
                    "kid": "k",
                    "iat": 0,
                    "exp": 1,
                    "hc1_sha256": "0" * 64,
                }
                for i, order in ((6, "ORDER-ELSEWHERE"), (7, rows[7]["order_id"]))
            ],
        )
    paths = RunPaths.of("dq-pay2")
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=payloads.schema), paths.payloads)

    result = validate("dq-pay2", "dcc_payload")
    got: dict[str, set[str]] = {}
    for e in quarantine.read("dq-pay2").to_pylist():
        assert e["suite"] == "dcc_payload" and e["pid"]
        got.setdefault(e["order_id"], set()).add(e["reason_code"])
    assert got == expected
    left = pq.read_table(paths.payloads)
    assert left.num_rows == len(rows) - len(expected)
    assert not set(left.column("order_id").to_pylist()) & set(expected)

    # rerun: the rewritten file passes, the quarantine of the first pass is kept
    again = validate("dq-pay2", "dcc_payload")
    assert again.quarantined_orders == result.quarantined_orders == len(expected)
    assert pq.read_table(paths.payloads).equals(left)
