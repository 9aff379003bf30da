"""Personal data never reaches an error (issue 14, item 6). Names and birth dates of real
seeded persons are fed through every error path that quotes input — a non-UTF-8 family name
in the sources database (the extract), hostile names in the register (validate, quarantine,
Data Docs), bad JSON lines and hostile payloads for ``bevis sign``, hostile certificates for
``bevis verify``, bad render input — and none of the values may appear in an exception (with
its chain, as a traceback prints it), the ``--json`` output, the logs (structlog and stdlib,
captured) or any file of the run folder but the intended data files."""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from jobs.cli import app
from jobs.db import engine
from jobs.devtools.seed import seed
from jobs.settings import get_settings
from tests.conftest import REPO

runner = CliRunner()
SAMPLE = json.loads((REPO / "samples" / "payloads.jsonl").read_text().splitlines()[0])
# the files of a run that are meant to hold identity data (and the PDFs made from them)
DATA_FILES = {"extract.parquet", "validated.parquet", "payloads.parquet", "signed.parquet"}


@pytest.fixture(autouse=True)
def _logs_to_current_stderr() -> None:
    from jobs.log import configure_logging

    configure_logging("DEBUG")


def _people(url: str, n: int = 8) -> list[dict]:
    """Consented pending orders with their person's name and birth date (seeded, real)."""
    sql = text(
        "SELECT o.order_id, p.person_id, p.given_name, p.family_name, p.dob FROM orders o "
        "JOIN population p ON p.person_id = o.person_id WHERE o.state = 'PENDING' "
        "AND o.consent_at IS NOT NULL AND o.consent_withdrawn_at IS NULL "
        "AND length(p.family_name) >= 5 AND length(p.given_name) >= 4 ORDER BY o.order_id"
    )
    with engine(url).connect() as conn:
        rows = conn.execute(sql).mappings().all()
    assert len(rows) >= n
    return [dict(r) for r in rows[:n]]


def _values(people: list[dict]) -> list[str]:
    out = set()
    for p in people:
        out |= {p["given_name"], p["family_name"], p["dob"], p["dob"].replace("-", "")}
    return sorted(out)


def _assert_clean(text_: str, values: list[str], where: str) -> None:
    leaked = [v for v in values if v in text_]
    assert not leaked, f"{where} quotes personal data: {leaked}"


def _exception_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))  # with its __cause__/__context__


def _run_folder_text(root: Path) -> str:
    """Every file of a run folder but its data files, as text (Parquet read as rows)."""
    parts = []
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        if f.name in DATA_FILES or f.suffix == ".pdf":
            continue
        if f.suffix == ".parquet":
            parts.append(json.dumps(pq.read_table(f).to_pylist(), default=str))
        else:
            parts.append(f.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(parts)


@pytest.fixture
def register(bevis_env: Path) -> list[dict]:
    seed(120, seed=8, defect_rate=0.0)
    return _people(get_settings().resolved_source_url())


# --- the extract: a family name that is not UTF-8 (SQLite stores any bytes) --------------


def test_a_non_utf8_name_is_named_by_order_and_column(
    register: list[dict], bevis_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: "OperationalError: Could not decode to UTF-8 column 'family_name' with text
    '<the name>\\ufffd'" in the --json summary, the run's error, the CLI line and (as the
    exception's cause) the traceback."""
    from jobs.steps.extract import CorruptRow, extract

    victim = register[0]
    values = _values(register)
    with engine(get_settings().resolved_source_url()).begin() as conn:
        conn.execute(
            text("UPDATE population SET family_name = CAST(:v AS TEXT) WHERE person_id = :p"),
            {"v": victim["family_name"].encode() + b"\xff", "p": victim["person_id"]},
        )
    caplog.set_level(logging.DEBUG)
    issued = runner.invoke(app, ["issue", "--json"])
    assert issued.exit_code == 1
    summary = json.loads(issued.stdout.strip().splitlines()[-1])
    assert summary["state"] == "FAILED"
    assert victim["order_id"] in summary["error"] and "family_name" in summary["error"]
    shown = runner.invoke(app, ["runs", "show", summary["run_id"], "--json"])
    listed = runner.invoke(app, ["runs", "list", "--json"])
    again = runner.invoke(app, ["extract", "--run", summary["run_id"]])
    assert again.exit_code == 2 and "not UTF-8 text" in again.stderr
    with pytest.raises(CorruptRow) as raised:
        extract(summary["run_id"])
    assert raised.value.order_id == victim["order_id"] and raised.value.column == "family_name"
    for where, out in (
        ("bevis issue --json", issued.output),
        ("bevis runs show --json", shown.output),
        ("bevis runs list --json", listed.output),
        ("bevis extract", again.output),
        ("the exception with its chain", _exception_text(raised.value)),
        ("stdlib logs", caplog.text),
        ("the run folder", _run_folder_text(bevis_env / "runs" / summary["run_id"])),
    ):
        _assert_clean(out, values, where)


# --- validate: hostile names in the register, SQLite and PostgreSQL -------------------------


@pytest.mark.parametrize(
    "dialect", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_hostile_names_are_quarantined_without_quoting_them(
    bevis_env: Path,
    dialect: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture,
) -> None:
    from jobs.ledger.runs import start_run
    from jobs.steps.extract import extract
    from jobs.steps.mapping import map_run
    from jobs.steps.validate import validate

    monkeypatch.setenv("BEVIS_QUARANTINE_THRESHOLD", "0.5")
    if dialect == "postgresql":
        monkeypatch.setenv("BEVIS_SOURCE_URL", request.getfixturevalue("pg_url"))
    seed(120, seed=8, defect_rate=0.0)
    url = get_settings().resolved_source_url()
    people = _people(url)
    values = _values(people)
    with engine(url).begin() as conn:
        for i, p in enumerate(people[:4]):
            hostile = ["\u202e", "\x1b[2J", "\r\n", "\u2066"][i] + p["family_name"]
            conn.execute(
                text("UPDATE population SET family_name = :v WHERE person_id = :p"),
                {"v": hostile, "p": p["person_id"]},
            )
        long_name = (people[4]["given_name"] + " ") * 20  # name_too_long
        conn.execute(
            text("UPDATE population SET given_name = :v WHERE person_id = :p"),
            {"v": long_name, "p": people[4]["person_id"]},
        )
        conn.execute(  # a birth date that disagrees with the identity number
            text("UPDATE population SET dob = :v WHERE person_id = :p"),
            {"v": "1901-01-01", "p": people[5]["person_id"]},
        )
    caplog.set_level(logging.DEBUG)
    run = start_run(f"r-pii-{dialect}")
    extract(run)
    result = validate(run, "nvr_extract")
    assert result.reasons.get("invalid_characters") and result.reasons.get("name_too_long")
    map_run(run)
    captured = capsys.readouterr()
    for where, out in (
        ("the validation result", json.dumps(result.to_dict(), default=str)),
        ("logs", caplog.text + captured.out + captured.err),
        ("the run folder (quarantine, GX results, Data Docs)", _run_folder_text(
            bevis_env / "runs" / run)),
    ):  # fmt: skip
        _assert_clean(out, values, where)


# --- bevis sign: bad JSON lines and hostile payloads that carry the values -----------------


def _payload(**changes) -> dict:
    p = json.loads(json.dumps(SAMPLE))
    for path, value in changes.items():
        node = p
        *parents, leaf = path.split("__")
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(leaf) if leaf.isdigit() else leaf] = value
    return p


def _hostile_payload_lines(person: dict) -> list[str]:
    fn, gn, dob = person["family_name"], person["given_name"], person["dob"]
    return [
        json.dumps(_payload(ver=fn)),  # an unknown schema version
        json.dumps(_payload(v__0__tg=fn, v__0__mp=gn, v__0__co=dob)),  # not codes
        json.dumps(_payload(dob=dob + "x" + fn)),  # no date
        json.dumps(_payload(nam__fn=fn + "\x1b", nam__gn="\u202e" + gn)),
        json.dumps(_payload(v__0__dn=fn, v__0__sd=dob)),  # wrong types
        json.dumps({fn: {gn: dob}}),  # no DCC at all, the values as keys
        '{"nam": {"fn": "' + fn + '" "gn": "' + gn + '"}, "dob": "' + dob + '"}',  # bad JSON
        '{"nam": {"fn": "' + fn + "\\ud800" + '"}, "dob": "' + dob + '"}',  # lone surrogate
        '{"nam": {"fn": "' + fn + '"}, "n": ' + "7" * 5000 + "}",  # >4300 digits
        '{"nam": {"fn": "' + fn + '"}, "d": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"' + fn + '": ' + "[" * 40 + '"' + dob + '"' + "]" * 40 + "}",
    ]


def test_sign_refusals_never_quote_the_payload(
    register: list[dict], bevis_env: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: 'ver: unknown schema version '<family name>'' and "v/0/tg: '<family name>'
    not in value set" on stderr."""
    from signing.keys import init_dev_keys

    init_dev_keys(bevis_env / "keys")
    values = _values(register)
    lines = [x for p in register[:3] for x in _hostile_payload_lines(p)]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(lines) + "\n")
    caplog.set_level(logging.DEBUG)
    result = runner.invoke(app, ["sign", "--in", str(src), "--out", str(out)])
    assert result.exit_code == 1
    assert result.stderr.count(": refused: ") == len(lines), result.stderr
    _assert_clean(result.output + caplog.text + out.read_text(), values, "bevis sign")


# --- bevis verify: certificates whose DCC carries the values where codes belong ------------


def test_verify_reasons_never_quote_the_payload(
    register: list[dict], bevis_env: Path, tmp_path: Path
) -> None:
    """Before: schema reasons quoted the unknown 'ver' and every code not in its value set
    (here: the names and birth dates)."""
    import zlib

    import cbor2

    from signing import cose
    from signing.base45 import b45encode
    from signing.keys import file_signer, init_dev_keys

    init_dev_keys(bevis_env / "keys")
    signer = file_signer(bevis_env / "keys")
    values = _values(register)
    now = int(time.time())
    hc1s = []
    for person in register[:3]:
        fn, gn, dob = person["family_name"], person["given_name"], person["dob"]
        for dcc in (
            _payload(ver=fn),
            _payload(v__0__tg=fn, v__0__mp=gn, v__0__co=dob, v__0__ma=fn, v__0__vp=gn),
            _payload(v__0__dn=fn),
            {fn: gn, "ver": "1.3.0", "dob": dob},
        ):
            claims = cbor2.dumps({1: "SE", 6: now, 4: now + 86400, -260: {1: dcc}})
            hc1s.append("HC1:" + b45encode(zlib.compress(cose.sign1(claims, signer))))
    src = tmp_path / "in.txt"
    src.write_text("\n".join(hc1s) + "\n")
    result = runner.invoke(
        app, ["verify", "--in", str(src), "--trust", str(bevis_env / "keys" / "dsc.pem")]
    )
    assert result.exit_code == 1
    verdicts = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(verdicts) == len(hc1s) and not any(v["valid"] for v in verdicts)
    reasons = [r for v in verdicts for r in v["reasons"]]  # "payload" is the intended output
    _assert_clean(json.dumps(reasons, ensure_ascii=False) + result.stderr, values, "bevis verify")


# --- bevis render: certificates the PDF cannot be made from -------------------------------


def _render_lines(register: list[dict], bevis_env: Path, bad: dict) -> Path:
    from signing.hcert import issue, validity
    from signing.keys import file_signer, init_dev_keys

    init_dev_keys(bevis_env / "keys")
    signer = file_signer(bevis_env / "keys")
    iat, exp = validity(signer, int(time.time()), 30)
    lines = []
    for i, person in enumerate(register[:2]):
        for j, make in enumerate(bad.values()):
            p = make(person)
            ci = f"URN:UVCI:01:SE:EHM/PII{i:02d}{j:03d}#A"
            p["v"][0]["ci"] = ci
            hc1 = issue(p, signer, iat=iat, exp=exp)
            lines.append(json.dumps({"line": 1, "ci": ci, "kid": "k", "iat": iat, "exp": exp,
                                     "hc1": hc1}))  # fmt: skip
    src = bevis_env / "render.jsonl"
    src.write_text("\n".join(lines) + "\n")
    return src


RENDER_REFUSED = {
    "missing_field": lambda p: _drop(_payload(nam__fn=p["family_name"], dob=p["dob"]), "dt"),
    "too_many_glyphs": lambda p: _payload(
        nam__fn=p["family_name"] + "".join(chr(0x4E00 + k) for k in range(300))
    ),
}


def _drop(p: dict, field: str) -> dict:
    del p["v"][0][field]
    return p


def test_render_failures_never_quote_the_payload(register: list[dict], bevis_env: Path) -> None:
    values = _values(register)
    src = _render_lines(register, bevis_env, RENDER_REFUSED)
    result = runner.invoke(app, ["render", "--in", str(src), "--out-dir", str(bevis_env / "pdf")])
    assert result.exit_code == 1 and result.stderr.count("not rendered") == 4, result.stderr
    _assert_clean(result.output, values, "bevis render")


def test_render_failure_of_a_wrongly_typed_field_never_quotes_it(
    register: list[dict], bevis_env: Path
) -> None:
    values = _values(register)
    src = _render_lines(register, bevis_env, {"dn": lambda p: _payload(v__0__dn=p["family_name"])})
    result = runner.invoke(app, ["render", "--in", str(src), "--out-dir", str(bevis_env / "pdf")])
    assert result.exit_code == 1 and result.stderr.count("not rendered") == 2, result.stderr
    _assert_clean(result.output, values, "bevis render")
