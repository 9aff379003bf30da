"""Base45 against RFC 9285's examples, round trips, and strict decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signing.base45 import ALPHABET, Base45Error, b45decode, b45encode

RFC_EXAMPLES = [
    (b"AB", "BB8"),
    (b"Hello!!", "%69 VD92EX0"),
    (b"base-45", "UJCLQE7W581"),
    (b"ietf!", "QED8WEX0"),
    (b"", ""),
]


@pytest.mark.parametrize(("raw", "text"), RFC_EXAMPLES)
def test_rfc9285_examples(raw: bytes, text: str) -> None:
    assert b45encode(raw) == text
    assert b45decode(text) == raw
    assert b45decode(text.encode()) == raw


@pytest.mark.parametrize(
    "bad",
    [
        "GGW",  # 65536: one above the largest 16-bit chunk
        ":::",
        "A",  # dangling single character
        "ABCD",
        "::",  # 44*45+44 > 255 for a trailing byte
        "QED8WEX0a",  # lower case is not in the alphabet
        "QED8WEX\u00e9",
        "QED8W\x00X0",
    ],
)
def test_strict_decoding_refuses(bad: str) -> None:
    with pytest.raises(Base45Error):
        b45decode(bad)


def test_refuses_non_text() -> None:
    with pytest.raises(Base45Error):
        b45decode(12345)  # type: ignore[arg-type]
    with pytest.raises(Base45Error):
        b45decode(b"\xff\xfe")


@given(st.binary(max_size=2048))
def test_round_trip(data: bytes) -> None:
    text = b45encode(data)
    assert set(text) <= set(ALPHABET)
    assert len(text) == len(data) // 2 * 3 + len(data) % 2 * 2
    assert b45decode(text) == data


@given(st.text(max_size=300))
def test_hostile_text_never_crashes(text: str) -> None:
    try:
        data = b45decode(text)
    except Base45Error:
        return
    assert b45encode(data) == text  # whatever decodes is canonical Base45
