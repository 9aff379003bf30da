"""Base45 (RFC 9285), the QR-alphanumeric-friendly encoding of the HC1 payload.

Hand-written rather than the ``base45`` PyPI package because it sits on the hot path of
issuance: a pure-Python loop over byte pairs costs ~40 µs for a typical 300-byte
certificate, while looking each big-endian 16-bit pair up in a 65,536-entry table from C
(``map`` over an ``array``) costs a few µs. The tables are built once per process (~30 ms).
Decoding is strict: characters outside the alphabet, chunk values above 0xFFFF (or 0xFF for
the trailing pair) and a dangling single character are errors.
"""

from __future__ import annotations

import sys
from array import array
from functools import cache

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_SWAP = sys.byteorder == "little"


class Base45Error(ValueError):
    """The text is not valid Base45."""


@cache
def _tables() -> tuple[list[str], dict[str, int], dict[str, int]]:
    a = ALPHABET
    # Triple for the 16-bit value n: n = c + d*45 + e*45*45, written c d e.
    enc3 = [a[n % 45] + a[(n // 45) % 45] + a[n // 2025] for n in range(65536)]
    dec3 = {s: n for n, s in enumerate(enc3)}
    dec2 = {a[n % 45] + a[n // 45]: n for n in range(256)}
    return enc3, dec3, dec2


def b45encode(data: bytes) -> str:
    """Base45 text of ``data``."""
    enc3, _, _ = _tables()
    even = len(data) & ~1
    pairs = array("H", data[:even])
    if _SWAP:
        pairs.byteswap()
    text = "".join(map(enc3.__getitem__, pairs))
    if even != len(data):
        n = data[-1]
        text += ALPHABET[n % 45] + ALPHABET[n // 45]
    return text


def b45decode(text: str | bytes) -> bytes:
    """Bytes of Base45 ``text``; raises :class:`Base45Error` on anything malformed."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError as exc:
            raise Base45Error("non-ASCII byte in Base45 text") from exc
    if not isinstance(text, str):
        raise Base45Error(f"Base45 input is {type(text).__name__}, not text")
    _, dec3, dec2 = _tables()
    n = len(text)
    rest = n % 3
    if rest == 1:
        raise Base45Error(f"Base45 length {n} leaves a single dangling character")
    full = n - rest
    try:
        values = array("H", map(dec3.__getitem__, [text[i : i + 3] for i in range(0, full, 3)]))
    except KeyError as exc:
        raise Base45Error(f"invalid Base45 chunk {str(exc.args[0])[:3]!r}") from None
    if _SWAP:
        values.byteswap()
    out = values.tobytes()
    if rest:
        tail = text[full:]
        if tail not in dec2:
            raise Base45Error(f"invalid Base45 tail {tail[:2]!r}")
        out += bytes((dec2[tail],))
    return out
