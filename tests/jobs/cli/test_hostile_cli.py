"""`bevis sign` and `bevis verify` on hostile files (issue 14, item 7): every line gets its
own verdict or refusal, the good lines are still signed, and a line longer than the cap
(BEVIS_MAX_LINE_BYTES, default 64 KiB) is refused without being read into memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from signing.keys import file_signer, init_dev_keys
from tests.signing.test_hostile import GOOD, HOSTILE_LINES, _claims, _deep_cbor, _hc1

runner = CliRunner()


@pytest.fixture
def keys(bevis_env: Path) -> Path:
    init_dev_keys(bevis_env / "keys")
    return bevis_env / "keys"


def _interleaved(bad: list[str]) -> list[str]:
    lines = [GOOD]
    for b in bad:
        lines += [b, GOOD]
    return lines


def test_sign_refuses_each_hostile_line_and_signs_the_good_ones(keys: Path, tmp_path: Path) -> None:
    """Before: a traceback (RecursionError) and no output file at all."""
    lines = _interleaved([*HOSTILE_LINES.values(), "x" * 70_000])
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    result = runner.invoke(app, ["sign", "--in", str(src), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    refused = [ln for ln in result.stderr.splitlines() if ": refused: " in ln]
    bad_numbers = list(range(2, len(lines) + 1, 2))
    assert [int(r.split()[1].rstrip(":")) for r in refused] == bad_numbers, refused
    assert "line longer than 65536 bytes" in refused[-1]
    signed = [json.loads(x) for x in out.read_text().splitlines()]
    assert [s["line"] for s in signed] == list(range(1, len(lines) + 1, 2))
    assert f"signed {len(signed)}, refused {len(bad_numbers)}" in result.stderr


def test_verify_gives_every_line_a_verdict(keys: Path, tmp_path: Path) -> None:
    """Before: a bignum in the DCC or a 10,000-deep JSON line ended in a traceback after the
    first verdict; the lines after it got none."""
    signer = file_signer(keys)
    good = _hc1(_claims(), signer)
    bad = [
        _hc1(_claims({**json.loads(GOOD), "x": 10**5000}), signer),
        _hc1(_deep_cbor(10_000), signer),
        _hc1(_claims(exp=10**400), signer),
        '{"hc1": ' + "[" * 10_000 + "]" * 10_000 + "}",
        "[" * 10_000 + "]" * 10_000,
        "HC1:" + "A" * 70_000,
    ]
    lines = [good]
    for b in bad:
        lines += [b, good]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["verify", "--in", str(src), "--trust", str(keys / "dsc.pem")])
    assert result.exit_code == 1, result.output
    verdicts = [json.loads(x) for x in result.stdout.splitlines()]
    assert [v["line"] for v in verdicts] == list(range(1, len(lines) + 1))
    assert all(v["valid"] for v in verdicts[0::2])
    assert not any(v["valid"] for v in verdicts[1::2])
    reasons = [v["reasons"][0] for v in verdicts[1::2]]
    assert "integer beyond 64 bits" in reasons[0]
    assert "claim exp is out of range" in reasons[2]
    assert "line longer than 65536 bytes" in reasons[5]
    assert not any("unexpected" in r for r in reasons), reasons


def test_line_cap_is_a_setting(keys: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BEVIS_MAX_LINE_BYTES", str(len(GOOD) + 10))
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(GOOD + "\n" + GOOD.replace('"ver"', '"pad": "' + "p" * 20 + '", "ver"') + "\n")
    result = runner.invoke(app, ["sign", "--in", str(src), "--out", str(out)])
    assert result.exit_code == 1
    assert f"line 2: refused: line longer than {len(GOOD) + 10} bytes" in result.stderr
    assert len(out.read_text().splitlines()) == 1


_MEASURE = """
import resource, sys
from jobs.cli import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0].split()[1]
print("PEAK_RSS_KB", hwm, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def _peak_rss_kb(*args: str) -> tuple[int, str]:
    """Peak RSS (KB) of one bevis command in a fresh process: VmHWM, which starts afresh at
    exec (getrusage's ru_maxrss of a child keeps the peak of the forked test process; it is
    printed beside it)."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=600,
    )
    peak = [ln for ln in done.stderr.splitlines() if ln.startswith("PEAK_RSS_KB")]
    assert peak, done.stderr[-2000:]
    return int(peak[-1].split()[1]), done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("command", ["verify", "sign"])
def test_a_150_mb_line_is_refused_without_reading_it_whole(
    keys: Path, tmp_path: Path, command: str
) -> None:
    """Before: peak RSS (VmHWM) with the 150 MB line 1,645,196 KB (verify) and 355,780 KB
    (sign) against ~85,000 KB without it — the file was read, decoded and split whole.
    After: 87,212 and 87,348 KB, within 30 KB of the run without the line."""
    signer = file_signer(keys)
    first = _hc1(_claims(), signer) if command == "verify" else GOOD
    small, big = tmp_path / "small.txt", tmp_path / "big.txt"
    small.write_text(f"{first}\n{first}\n")
    with open(big, "wb") as fh:
        fh.write(first.encode() + b"\n")
        fh.write((b"HC1:" if command == "verify" else b'{"x": "') + b"A" * 150_000_000 + b"\n")
        fh.write(first.encode() + b"\n")
    extra = ["--trust", str(keys / "dsc.pem")] if command == "verify" else []
    out = ["--out", str(tmp_path / "out.jsonl")] if command == "sign" else []
    base, _ = _peak_rss_kb(command, "--in", str(small), *extra, *out)
    peak, stdout = _peak_rss_kb(command, "--in", str(big), *extra, *out)
    print(f"{command}: peak RSS {peak} KB with the 150 MB line, {base} KB without")
    assert peak - base < 50_000, (peak, base)
    if command == "verify":
        verdicts = [json.loads(x) for x in stdout.splitlines()]
        assert [v["valid"] for v in verdicts] == [True, False, True]
        assert "line longer than 65536 bytes" in verdicts[1]["reasons"][0]
    else:
        assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2
