"""UVCI check characters, vectorised: Luhn mod N (N = 38) over ``A-Z0-9/:``, computed over
the whole identifier before ``#`` including the ``URN:UVCI:`` prefix (eHealth Network
guidelines, Annex 2; the published example ``URN:UVCI:01:NL:187/37512422923#Z`` checks).

Independent of transforms/uvci.py, which makes the identifiers: a check that shares the
producer's code shares its bugs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

CHARSET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/:"
N = len(CHARSET)
MAX_LENGTH = 80


def check_character(body: str) -> str:
    """Scalar reference: the check character of ``body`` (the part before ``#``)."""
    factor, total = 2, 0
    for ch in reversed(body):
        addend = factor * CHARSET.index(ch)
        factor = 1 if factor == 2 else 2
        total += addend // N + addend % N
    return CHARSET[(N - total % N) % N]


def checks_ok(uvcis: pa.Array) -> np.ndarray:
    """Per UVCI: at most 80 characters, exactly one ``#`` followed by one character, every
    character of the body in the charset, and the check character right."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pc.fill_null(uvcis.cast(pa.string()), "")
    n = len(arr)
    ok = np.zeros(n, dtype=bool)
    lengths = pc.utf8_length(arr).to_numpy(zero_copy_only=False)
    shaped = pc.match_substring_regex(arr, r"^[A-Z0-9/:]+#[A-Z0-9/:]$").to_numpy(
        zero_copy_only=False
    ) & (lengths <= MAX_LENGTH)
    lut = np.full(256, -1, dtype=np.int64)
    lut[np.frombuffer(CHARSET.encode("ascii"), dtype=np.uint8)] = np.arange(N)
    for length in np.unique(lengths[shaped]):
        idx = np.flatnonzero(shaped & (lengths == length))
        raw = "".join(arr.take(pa.array(idx)).to_pylist()).encode("ascii")
        m = np.frombuffer(raw, dtype=np.uint8).reshape(len(idx), int(length))
        body, check = lut[m[:, :-2]], lut[m[:, -1]]
        width = body.shape[1]
        factors = np.where((width - 1 - np.arange(width)) % 2 == 0, 2, 1)
        addend = body * factors
        total = (addend // N + addend % N).sum(axis=1)
        ok[idx] = (N - total % N) % N == check
    return ok
