"""Names with control characters (Unicode Cc: NUL, ESC, CR, LF ...) or bidirectional
overrides and isolates (U+202A-U+202E, U+2066-U+2069) are quarantined by the nvr_extract
suite as ``invalid_characters`` (issue 14, item 7) — through the real extract from the
sources database, SQLite and PostgreSQL — and ``bevis sign`` refuses them."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from jobs.db import engine
from jobs.devtools.seed import seed
from jobs.ledger import quarantine
from jobs.ledger.runs import start_run
from jobs.settings import get_settings
from jobs.steps.extract import extract
from jobs.steps.validate import validate

HOSTILE = {
    "esc": lambda n: "\x1b[2J" + n,
    "cr_lf": lambda n: n + "\r\nX",
    "bidi_override": lambda n: "\u202e" + n,
    "bidi_isolate": lambda n: n + "\u2067x\u2069",
    "del_c1": lambda n: n + "\x7f\x85",
    "nul": lambda n: n + "\x00",  # SQLite only: PostgreSQL text cannot hold NUL
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def sources(request: pytest.FixtureRequest, bevis_env: Path, monkeypatch) -> str:
    monkeypatch.setenv("BEVIS_QUARANTINE_THRESHOLD", "0.5")
    if request.param == "postgresql":
        monkeypatch.setenv("BEVIS_SOURCE_URL", request.getfixturevalue("pg_url"))
    seed(200, seed=12, defect_rate=0.0)
    return request.param


def _consented_persons(url: str, n: int) -> list[tuple[str, str, str, str]]:
    sql = text(
        "SELECT o.order_id, p.person_id, p.given_name, p.family_name FROM orders o "
        "JOIN population p ON p.person_id = o.person_id "
        "WHERE o.state = 'PENDING' AND o.consent_at IS NOT NULL "
        "AND o.consent_withdrawn_at IS NULL ORDER BY o.order_id"
    )
    with engine(url).connect() as conn:
        return [tuple(r) for r in conn.execute(sql).all()[:n]]


def test_names_with_control_or_bidi_characters_are_quarantined(sources: str) -> None:
    """Before: the suite had no such check — all of them passed validation (and the sign
    step signed them)."""
    url = get_settings().resolved_source_url()
    kinds = [k for k in HOSTILE if not (k == "nul" and sources == "postgresql")]
    people = _consented_persons(url, 2 * len(kinds))
    hostile: dict[str, str] = {}
    with engine(url).begin() as conn:
        for i, kind in enumerate(kinds):
            for j, column in enumerate(("given_name", "family_name")):
                order_id, person_id, given, family = people[2 * i + j]
                value = HOSTILE[kind](given if column == "given_name" else family)
                conn.execute(
                    text(f"UPDATE population SET {column} = :v WHERE person_id = :p"),
                    {"v": value, "p": person_id},
                )
                hostile[order_id] = kind
    run = start_run("r-chars")
    extract(run)
    result = validate(run, "nvr_extract")
    entries = [e for e in quarantine.read(run).to_pylist() if e["suite"] == "nvr_extract"]
    flagged = {e["order_id"] for e in entries if e["reason_code"] == "invalid_characters"}
    assert flagged == set(hostile), (sorted(set(hostile) - flagged), sorted(flagged))
    assert result.quarantined_orders == len(hostile)  # nothing else flagged (no defects)
    assert set(result.reasons) == {"invalid_characters"}
    validated = set(pq.read_table(result.output, columns=["order_id"])["order_id"].to_pylist())
    assert not validated & set(hostile)
    assert len(validated) > 100  # the clean orders went on


def test_sign_refuses_the_same_names(bevis_env: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from jobs.cli import app
    from signing.keys import init_dev_keys
    from tests.conftest import REPO

    init_dev_keys(bevis_env / "keys")
    good = json.loads((REPO / "samples" / "payloads.jsonl").read_text().splitlines()[0])
    lines = []
    for make in HOSTILE.values():
        p = json.loads(json.dumps(good))
        p["nam"]["gn"] = make(p["nam"]["gn"])
        lines.append(json.dumps(p))
    src = tmp_path / "names.jsonl"
    src.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["sign", "--in", str(src), "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 1
    refused = [ln for ln in result.stderr.splitlines() if "refused: nam/gn:" in ln]
    assert len(refused) == len(HOSTILE), result.stderr
    assert (tmp_path / "o.jsonl").read_text() == ""
