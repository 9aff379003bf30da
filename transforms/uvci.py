"""Unique vaccination certificate identifiers: ``URN:UVCI:01:SE:<issuer>/<opaque>#<check>``.

eHealth Network guidelines (Vaccination proof interoperability guidelines, Annex 2, and
the DCC schema FAQ "UVCI checksum"): charset A-Z 0-9 and ``/ : #``, version ``01``,
country ISO 3166-1 alpha-2, the check character by Luhn mod N over the charset
``A-Z0-9/:`` (N = 38) computed over the whole UVCI *including* the ``URN:UVCI:`` prefix,
separated by ``#``.

The opaque part is a keyed hash (HMAC-SHA256) of (order id, NVR event id), base32: a
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
    import numpy as np
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


def _opaque(key: bytes, order_id: str, event_id: str) -> str:
    msg = f"{order_id}\x1f{event_id}".encode()
    return base64.b32encode(hmac.digest(key, msg, "sha256")[:OPAQUE_BYTES]).decode("ascii")


def uvci_for(
    order_id: str, event_id: str, key: bytes, country: str = "SE", issuer: str = "EHM"
) -> str:
    """The UVCI of one (order, vaccination event)."""
    body = f"{PREFIX}{country}:{issuer}/{_opaque(key, order_id, event_id)}"
    return f"{body}#{luhn_mod_n_check(body)}"


def _check_chars(bodies: np.ndarray) -> np.ndarray:
    """Luhn mod N check characters of equal-length ASCII bodies (a 2-D uint8 matrix)."""
    import numpy as np

    lut = np.full(256, 255, dtype=np.int64)
    for i, c in enumerate(CHARSET):
        lut[ord(c)] = i
    cps = lut[bodies]
    if (cps == 255).any():
        raise ValueError("UVCI body outside the charset")
    width = bodies.shape[1]
    # factor 2 on the rightmost character, alternating leftwards
    factors = np.where((width - 1 - np.arange(width)) % 2 == 0, 2, 1)
    addends = cps * factors
    total = (addends // N + addends % N).sum(axis=1)
    charset = np.frombuffer(CHARSET.encode("ascii"), dtype=np.uint8)
    return charset[(N - total % N) % N]


def uvcis(
    order_ids: pd.Series, event_ids: pd.Series, key: bytes, country: str = "SE", issuer: str = "EHM"
) -> pd.Series:
    """Vectorised :func:`uvci_for`: one hash per row, the check characters in numpy."""
    import numpy as np
    import pandas as pd

    prefix = f"{PREFIX}{country}:{issuer}/"
    if any(c not in _CP for c in prefix) or len(prefix) + 18 > MAX_LEN:
        raise ValueError(f"country/issuer {country!r}/{issuer!r} not allowed in a UVCI")
    digest = hmac.digest
    b32 = base64.b32encode
    opaque = b"".join(
        b32(digest(key, f"{o}\x1f{e}".encode(), "sha256")[:OPAQUE_BYTES])
        for o, e in zip(order_ids.tolist(), event_ids.tolist(), strict=True)
    )
    n = len(order_ids)
    width = 16
    body = np.empty((n, len(prefix) + width), dtype=np.uint8)
    body[:, : len(prefix)] = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    body[:, len(prefix) :] = np.frombuffer(opaque, dtype=np.uint8).reshape(n, width)
    full = np.empty((n, body.shape[1] + 2), dtype=np.uint8)
    full[:, : body.shape[1]] = body
    full[:, -2] = ord("#")
    if n:
        full[:, -1] = _check_chars(body)
    strings = full.view(f"S{full.shape[1]}").ravel().astype(str)
    return pd.Series(strings, index=order_ids.index, dtype=object)
