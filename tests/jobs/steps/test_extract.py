"""The extract (jobs/steps/extract.py) and order claims (jobs/sources/orders.py) against real databases."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from jobs.db import DatabaseUnavailable, engine
from jobs.devtools.seed import seed
from jobs.settings import Settings
from jobs.sources.models import CLAIMED, DUPLICATE, FULFILLED, PENDING, Order
from jobs.sources.orders import fulfil, release, states
from jobs.steps.extract import CorruptRow, ExtractError, extract
from transforms.identity import pseudonymise
from transforms.schemas import EXTRACT

UTC = dt.UTC


def _settings(data: Path, url: str | None = None) -> Settings:
    return Settings(data_dir=data, source_url=url)


def _valid_consent(o: Order, now: dt.datetime) -> bool:
    """The consent rule, written independently of the SQL: given, not in the future, and not
    withdrawn unless consent was given again after the withdrawal."""

    def utc(t):
        return None if t is None else (t if t.tzinfo else t.replace(tzinfo=UTC))

    given, withdrawn = utc(o.consent_at), utc(o.consent_withdrawn_at)
    return given is not None and given <= now and (withdrawn is None or withdrawn < given)


def _check_against_manifest(m, r, s: Settings) -> None:
    t = pq.read_table(r.path)
    assert t.schema.equals(EXTRACT)
    exp = m.expected_extract
    assert (r.orders, r.rows, r.persons) == (exp["orders"], exp["rows"], exp["persons"])
    assert r.no_vaccination == exp["no_vaccination"]
    assert r.duplicate_orders == exp["duplicate_orders"]
    assert t.num_rows == exp["rows"]
    assert len(set(t.column("order_id").to_pylist())) == exp["orders"]
    assert t.column("event_id").null_count == exp["no_vaccination"]
    extracted = set(t.column("order_id").to_pylist())
    for kind, recs in m.defects.items():
        for rec in recs:
            assert rec["order_id"] in extracted, kind
    events = {e for e in t.column("event_id").to_pylist() if e}
    for rec in (x for v in m.defects.values() for x in v if x["event_id"]):
        assert rec["event_id"] in events
    key = s.pseudonym_key.get_secret_value()
    assert t.column("pid").to_pylist() == pseudonymise(t.column("person_id").to_pylist(), key)


def test_manifest_and_extract_agree_sqlite(bevis_env: Path) -> None:
    s = _settings(bevis_env)
    m = seed(2500, seed=21, defect_rate=0.02, settings=s)
    r = extract("run-a", settings=s)
    _check_against_manifest(m, r, s)
    assert r.snapshot_at == m.nvr_snapshot_at
    meta = (bevis_env / "runs" / "run-a" / "extract.json").read_text()
    assert '"orders_claimed"' in meta and '"nvr_snapshot_at"' in meta
    # a repeated call returns the same result and claims nothing more
    before = states(settings=s)
    again = extract("run-a", settings=s)
    assert again == r and states(settings=s) == before
    # a second run finds nothing left to claim
    assert extract("run-b", settings=s).orders == 0


def test_no_person_without_valid_consent_is_ever_extracted(bevis_env: Path) -> None:
    s = _settings(bevis_env)
    seed(800, seed=3, settings=s)
    now = dt.datetime.now(UTC)
    eng = engine(s.resolved_source_url())
    with Session(eng) as session:
        persons = [
            p for (p,) in session.execute(text("SELECT person_id FROM nvr_vaccinations LIMIT 2000"))
        ]
        persons = list(dict.fromkeys(persons))[:40]
        h = dt.timedelta(hours=1)
        cases = {
            "no_consent": dict(consent_at=None),
            "consent_in_future": dict(consent_at=now + 24 * h),
            "withdrawn": dict(consent_at=now - 48 * h, consent_withdrawn_at=now - 24 * h),
            "withdrawn_same_instant": dict(
                consent_at=now - 48 * h, consent_withdrawn_at=now - 48 * h
            ),
            "withdrawal_dated_in_future": dict(
                consent_at=now - 48 * h, consent_withdrawn_at=now + h
            ),
            "reconsented": dict(consent_at=now - 2 * h, consent_withdrawn_at=now - 24 * h),
            "claimed_by_other_run": dict(consent_at=now - h, state=CLAIMED, claimed_by_run="other"),
            "fulfilled": dict(consent_at=now - h, state=FULFILLED, claimed_by_run="old"),
            "duplicate_state": dict(consent_at=now - h, state=DUPLICATE, claimed_by_run="old"),
            "valid": dict(consent_at=now - h),
        }
        # fresh persons only: drop their generated orders so that each case stands alone
        session.execute(Order.__table__.delete().where(Order.person_id.in_(persons[: len(cases)])))
        for i, (name, kw) in enumerate(cases.items()):
            session.add(
                Order(
                    order_id=f"EDGE-{name}",
                    person_id=persons[i],
                    requested_at=now - 72 * h,
                    cert_type="v",
                    state=kw.pop("state", PENDING),
                    **kw,
                )
            )
        session.commit()
        all_orders = session.scalars(select(Order)).all()
        oracle = {o.order_id for o in all_orders if o.state == PENDING and _valid_consent(o, now)}
        consenting_people = {o.person_id for o in all_orders if o.order_id in oracle}
    r = extract("run-consent", settings=s)
    t = pq.read_table(r.path, columns=["order_id", "person_id"])
    got = set(t.column("order_id").to_pylist())
    with Session(eng) as session:
        dups = set(
            session.scalars(
                select(Order.order_id).where(
                    Order.claimed_by_run == "run-consent", Order.state == DUPLICATE
                )
            )
        )
    assert got | dups == oracle and not got & dups
    assert {"EDGE-valid", "EDGE-reconsented"} <= got
    assert not {f"EDGE-{n}" for n in cases if n not in ("valid", "reconsented")} & got
    assert set(t.column("person_id").to_pylist()) <= consenting_people


def test_limit_release_fulfil_and_stale_runs(bevis_env: Path) -> None:
    s = _settings(bevis_env)
    m = seed(600, seed=4, settings=s)
    first = extract("run-1", settings=s, limit=100)
    assert 0 < first.orders <= 100
    second = extract("run-2", settings=s)
    ids = {
        run: set(pq.read_table(r.path, columns=["order_id"]).column("order_id").to_pylist())
        for run, r in (("run-1", first), ("run-2", second))
    }
    assert not ids["run-1"] & ids["run-2"]
    assert first.orders + second.orders == m.expected_extract["orders"]
    # fulfil some of run-1, release the rest; fulfilled ones stay fulfilled
    done = sorted(ids["run-1"])[:10]
    assert fulfil("run-1", done, settings=s) == 10
    assert fulfil("run-1", done, settings=s) == 0  # idempotent
    assert fulfil("run-2", done, settings=s) == 0  # not that run's orders
    released = release("run-1", settings=s)
    assert released >= first.orders - 10
    assert states("run-1", settings=s) == {FULFILLED: 10}
    with pytest.raises(ExtractError, match="released"):
        extract("run-1", settings=s)
    third = extract("run-3", settings=s)
    assert third.orders == first.orders - 10


def test_corrupt_row_names_the_order_not_the_person(bevis_env: Path) -> None:
    s = _settings(bevis_env)
    seed(300, seed=5, settings=s)
    eng = engine(s.resolved_source_url())
    with eng.begin() as conn:
        order_id, pnr = conn.execute(
            text(
                "SELECT o.order_id, o.person_id FROM orders o JOIN nvr_vaccinations v"
                " ON v.person_id = o.person_id WHERE o.state = 'PENDING'"
                " AND o.consent_at IS NOT NULL AND o.consent_withdrawn_at IS NULL LIMIT 1"
            )
        ).one()
        conn.execute(
            text(
                "UPDATE nvr_vaccinations SET vaccination_date = '2021-02-31x' WHERE person_id = :p"
            ),
            {"p": pnr},
        )
    with pytest.raises(CorruptRow) as err:
        extract("run-bad", settings=s)
    msg = str(err.value)
    assert order_id in msg and "vaccination_date" in msg and pnr not in msg
    run_dir = bevis_env / "runs" / "run-bad"
    assert not (run_dir / "extract.parquet").exists()
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    # operations fix the row and rerun the same run: it resumes with the orders it claimed
    claimed = states("run-bad", settings=s)[CLAIMED]
    with eng.begin() as conn:
        conn.execute(
            text(
                "UPDATE nvr_vaccinations SET vaccination_date = '2021-03-01' WHERE person_id = :p"
            ),
            {"p": pnr},
        )
    assert extract("run-bad", settings=s).orders == claimed


def test_missing_table_and_unreachable_database(bevis_env: Path) -> None:
    s = _settings(bevis_env)
    seed(50, settings=s)
    with engine(s.resolved_source_url()).begin() as conn:
        conn.execute(text("DROP TABLE population"))
    with pytest.raises(ExtractError, match="no table population"):
        extract("run-x", settings=s)
    down = _settings(bevis_env, "postgresql+psycopg://bevis:secret@127.0.0.1:9/nvr")
    with pytest.raises(DatabaseUnavailable, match="cannot reach the sources database") as err:
        extract("run-y", settings=down)
    assert "secret" not in str(err.value)
    assert not (bevis_env / "runs" / "run-y" / "extract.parquet").exists()


@pytest.mark.postgres
def test_manifest_and_extract_agree_postgres(bevis_env: Path, pg_url: str) -> None:
    s = _settings(bevis_env, pg_url)
    m = seed(1500, seed=8, defect_rate=0.02, settings=s)
    r = extract("run-pg", settings=s)
    _check_against_manifest(m, r, s)


@pytest.mark.postgres
def test_concurrent_extracts_never_share_an_order_postgres(bevis_env: Path, pg_url: str) -> None:
    s = _settings(bevis_env, pg_url)
    m = seed(2000, seed=9, settings=s)
    runs = [f"run-c{i}" for i in range(4)]
    barrier = threading.Barrier(len(runs))
    results, errors = {}, []

    def work(run: str) -> None:
        try:
            barrier.wait()
            results[run] = extract(run, settings=s, limit=300)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    results["run-rest"] = extract("run-rest", settings=s)
    seen: dict[str, str] = {}
    for run, r in results.items():
        for order_id in set(
            pq.read_table(r.path, columns=["order_id"]).column("order_id").to_pylist()
        ):
            assert order_id not in seen, f"{order_id} extracted by {seen[order_id]} and {run}"
            seen[order_id] = run
    with engine(pg_url).connect() as conn:
        claimed = dict(
            conn.execute(
                select(Order.order_id, Order.claimed_by_run).where(Order.state == CLAIMED)
            ).all()
        )
        duplicates = (
            conn.execute(select(Order.order_id).where(Order.state == DUPLICATE)).scalars().all()
        )
    assert claimed == seen
    total = m.expected_extract["orders"] + m.expected_extract["duplicate_orders"]
    assert len(seen) + len(duplicates) == total


def test_cli_seed_extract_release(bevis_env: Path, request: pytest.FixtureRequest) -> None:
    import json

    import structlog
    from typer.testing import CliRunner

    from jobs.cli import app

    runner = CliRunner()
    request.addfinalizer(structlog.reset_defaults)  # the CLI bound the runner's stderr
    out = runner.invoke(app, ["seed", "--persons", "200", "--seed", "2"])
    assert out.exit_code == 0, out.output
    expected = json.loads(out.output.strip().splitlines()[-1])["expected_extract"]
    out = runner.invoke(app, ["extract", "--run", "cli-1"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output.strip().splitlines()[-1])["orders"] == expected["orders"]
    out = runner.invoke(app, ["orders", "release", "--run", "cli-1"])
    assert out.exit_code == 0 and "released" in out.output
    out = runner.invoke(app, ["orders", "status", "--run", "cli-1"])
    assert json.loads(out.output.strip().splitlines()[-1]) == {}


def test_resumed_run_honours_consent_withdrawn_after_the_claim(bevis_env: Path) -> None:
    from jobs.sources.orders import claim

    s = _settings(bevis_env)
    seed(300, seed=6, settings=s)
    claimed, _ = claim("run-r", dt.datetime.now(UTC), settings=s)  # the run then "crashes"
    eng = engine(s.resolved_source_url())
    with Session(eng) as session:
        victim = session.scalars(
            select(Order).where(Order.claimed_by_run == "run-r", Order.state == CLAIMED).limit(1)
        ).one()
        victim_id = victim.order_id
        victim.consent_withdrawn_at = dt.datetime.now(UTC)
        session.commit()
    r = extract("run-r", settings=s)
    got = set(pq.read_table(r.path, columns=["order_id"]).column("order_id").to_pylist())
    assert victim_id not in got and r.orders == claimed - 1
    with Session(eng) as session:
        o = session.get(Order, victim_id)
        assert (o.state, o.claimed_by_run) == (PENDING, None)
    assert extract("run-s", settings=s).orders == 0  # and no later run takes it
