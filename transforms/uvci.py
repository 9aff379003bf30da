"""Unique vaccination certificate identifiers: ``URN:UVCI:01:SE:<issuer>/<opaque>#<check>``.

eHealth Network guidelines (Vaccination proof interoperability guidelines, Annex 2, and
the DCC schema FAQ "UVCI checksum"): charset A-Z 0-9 and ``/ : #``, version ``01``,
country ISO 3166-1 alpha-2, the check character by Luhn mod N over the charset
``A-Z0-9/:`` (N = 38) computed over the whole UVCI *including* the ``URN:UVCI:`` prefix,
separated by ``#``.

The opaque part is a keyed hash (BLAKE2b in keyed mode, 80 bits) of (order id, NVR event id),
base32: a
rerun gives the same identifier, it carries no personal data and cannot be inverted
without the key; 80 bits make a collision across the ledger negligible (and the
``dcc_payload`` suite checks uniqueness anyway).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

CHARSET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/:"
N = len(CHARSET)
PREFIX = "URN:UVCI:01:"
OPAQUE_BYTES = 10  # 80 bits -> 16 base32 characters
MAX_LEN = 80
_CP = {c: i for i, c in enumerate(CHARSET)}


def luhn_mod_n_check(text: str) -> str:
    """The Luhn mod N check character of ``text`` (every character must be in CHARSET)."""
    factor = 2
    total = 0
    for ch in reversed(text):
        try:
            addend = factor * _CP[ch]
        except KeyError:
            raise ValueError(f"character {ch!r} not in the UVCI charset") from None
        factor = 1 if factor == 2 else 2
        total += addend // N + addend % N
    return CHARSET[(N - total % N) % N]


def is_valid_uvci(uvci: str) -> bool:
    """Shape, length and check character of a UVCI with a ``#`` check suffix."""
    if not uvci.startswith("URN:UVCI:") or len(uvci) > MAX_LEN or uvci.count("#") != 1:
        return False
    body, check = uvci.split("#")
    if len(check) != 1 or any(c not in _CP for c in body):
        return False
    return luhn_mod_n_check(body) == check


def derive_key(secret: bytes) -> bytes:
    """A key of its own for UVCIs, so identifiers and pseudonyms never share a hash."""
    return hmac.new(secret, b"bevis/uvci/v1", hashlib.sha256).digest()


def _mac(key: bytes, order_id: str, event_id: str) -> bytes:
    """Keyed BLAKE2b (a MAC in one C call; faster than HMAC-SHA256 at a million rows)."""
    msg = f"{order_id}\x1f{event_id}".encode()
    return hashlib.blake2b(msg, digest_size=OPAQUE_BYTES, key=key).digest()


def uvci_for(
    order_id: str, event_id: str, key: bytes, country: str = "SE", issuer: str = "EHM"
) -> str:
    """The UVCI of one (order, vaccination event) — the reference for :func:`uvcis`."""
    opaque = base64.b32encode(_mac(key, order_id, event_id)).decode("ascii")
    body = f"{PREFIX}{country}:{issuer}/{opaque}"
    return f"{body}#{luhn_mod_n_check(body)}"


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _prefix(country: str, issuer: str) -> str:
    prefix = f"{PREFIX}{country}:{issuer}/"
    if any(c not in _CP for c in prefix) or len(prefix) + 18 > MAX_LEN:
        raise ValueError(f"country/issuer {country!r}/{issuer!r} not allowed in a UVCI")
    return prefix


def uvcis(
    order_ids: pd.Series,
    event_ids: pd.Series,
    key: bytes,
    country: str = "SE",
    issuer: str = "EHM",
) -> pd.Series:
    """Vectorised :func:`uvci_for`: one MAC call per row; base32 and the Luhn mod N check
    character in numpy (the constant prefix's share of the checksum is computed once)."""
    import numpy as np
    import pandas as pd

    prefix = _prefix(country, issuer)
    n = len(order_ids)
    blake = hashlib.blake2b
    size = OPAQUE_BYTES
    raw = b"".join(
        blake(f"{o}\x1f{e}".encode(), digest_size=size, key=key).digest()
        for o, e in zip(order_ids.tolist(), event_ids.tolist(), strict=True)
    )
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8).reshape(n, size), axis=1)
    groups = bits.reshape(n, size * 8 // 5, 5) @ np.array([16, 8, 4, 2, 1], dtype=np.uint8)
    width = groups.shape[1]  # 16 base32 characters

    # Luhn mod N: factor 2 on the rightmost body character, alternating leftwards.
    cps = np.array([_CP[c] for c in _B32], dtype=np.int64)
    share = {f: (f * cps) // N + (f * cps) % N for f in (1, 2)}
    total = np.zeros(n, dtype=np.int64)
    for j in range(width):
        factor = 2 if (width - 1 - j) % 2 == 0 else 1
        total += share[factor][groups[:, j]]
    constant = 0
    for i, ch in enumerate(reversed(prefix)):
        factor = 2 if (width + i) % 2 == 0 else 1
        addend = factor * _CP[ch]
        constant += addend // N + addend % N
    check = np.frombuffer(CHARSET.encode("ascii"), dtype=np.uint8)[(N - (total + constant) % N) % N]

    out = np.empty((n, len(prefix) + width + 2), dtype=np.uint8)
    out[:, : len(prefix)] = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    out[:, len(prefix) : len(prefix) + width] = np.frombuffer(_B32.encode("ascii"), dtype=np.uint8)[
        groups
    ]
    out[:, -2] = ord("#")
    out[:, -1] = check
    strings = out.view(f"S{out.shape[1]}").ravel().astype(str).astype(object)
    return pd.Series(strings, index=order_ids.index, dtype=object)
