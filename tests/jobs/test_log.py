"""Identity numbers never reach a log line: structlog, stdlib logging and exceptions."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from jobs.log import MaskingFilter, configure_logging, get_logger, mask_identity_numbers

IDS = [
    "198112189876",  # 12 digits
    "19811218-9876",
    "811218-9876",  # 10 digits with separator
    "8112189876",
    "121212+1212",  # over 100 years old
    "197010632391",  # samordningsnummer (day + 60)
    "701063-2391",
]


@pytest.mark.parametrize("idnr", IDS)
def test_mask_identity_numbers(idnr: str) -> None:
    assert idnr not in mask_identity_numbers(f"person {idnr} ordered")
    assert "[IDNR]" in mask_identity_numbers(f"person {idnr} ordered")


def test_epoch_seconds_and_uvci_are_not_masked() -> None:
    # iat/exp are 10-digit integers but never a valid date prefix with month 01-12 + day
    text = "iat=1637000000 exp=1668536000 uvci=URN:UVCI:01:SE:EHM/V100000024GI5HM"
    assert mask_identity_numbers(text) == text


def test_structlog_lines_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)
    log = get_logger("test")
    log.info(
        "claimed order for 19811218-9876",
        person="198112189876",
        nested={"ids": ["8112189876"]},
        count=198112189876,
    )
    try:
        raise ValueError("bad record 811218-9876")
    except ValueError:
        log.exception("failed")
    structlog.get_logger().info("raw structlog 198112189876")
    err = capsys.readouterr().err
    for idnr in ("198112189876", "19811218-9876", "8112189876", "811218-9876"):
        assert idnr not in err
    lines = [json.loads(line) for line in err.strip().splitlines()]
    assert lines[0]["person"] == "[IDNR]"
    assert "[IDNR]" in lines[1]["exc"]


def test_stdlib_logging_is_masked() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskingFilter())
    logger = logging.getLogger("bevis.test.stdlib")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("row %s failed", "19811218-9876")
        try:
            raise RuntimeError("identity 198112189876")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "19811218-9876" not in out and "198112189876" not in out
    assert out.count("[IDNR]") >= 2  # the message, the exception and its source line


def test_logging_survives_a_swapped_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """CliRunner and Airflow replace sys.stderr; logging must follow, not write to a closed
    stream."""
    import sys

    configure_logging("INFO")
    old = sys.stderr
    swapped = io.StringIO()
    sys.stderr = swapped
    try:
        get_logger("t").info("to the swapped stream")
    finally:
        sys.stderr = old
    swapped.close()
    get_logger("t").info("after the swap")  # must not raise "I/O operation on closed file"
    assert "after the swap" in capsys.readouterr().err
