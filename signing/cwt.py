"""The CWT claims set of an HCERT: iss (1), iat (6), exp (4) and hcert (-260) → {1: DCC}.

The DCC goes into CBOR as the JSON says, with three cleanups that the specification asks
for and that JSON producers get wrong: strings in Unicode NFC, no nulls (an absent
optional field is left out, not CBOR null), and whole numbers as integers (``1.0`` from a
dataframe becomes ``1``).
"""

from __future__ import annotations

import numbers
import unicodedata
from collections.abc import Mapping
from typing import Any, SupportsInt, cast

import cbor2

CLAIM_ISS = 1
CLAIM_EXP = 4
CLAIM_IAT = 6
CLAIM_HCERT = -260
HCERT_EU_DCC = 1


# Hostile-input limits (plain arguments where they are used: signing knows no settings).
MAX_DEPTH = 16  # a DCC is 5 levels deep from the claims map (claims, hcert, dcc, v, entry)
INT_MIN, INT_MAX = -(2**64), 2**64 - 1  # CBOR's own integers; a bignum tag never belongs
NUMERIC_DATE_MAX = 253402300799  # 9999-12-31T23:59:59Z: the last second a date can name


class CwtError(ValueError):
    """The CWT claims are missing, malformed or not an HCERT."""


def structure_problem(value: Any, max_depth: int = MAX_DEPTH) -> str | None:
    """Why a decoded CBOR/JSON value is unsafe to walk (nested deeper than ``max_depth``,
    or an integer beyond 64 bits, which CBOR only carries as a bignum tag and Python cannot
    always print), else None. Iterative: no recursion on hostile input."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            if isinstance(item, int) and not INT_MIN <= item <= INT_MAX:
                return "holds an integer beyond 64 bits"
            continue
        if depth > max_depth:
            return f"nested deeper than {max_depth} levels"
        stack.extend((c, depth + 1) for c in children)
    return None


def clean(value: Any) -> Any:
    """The DCC value as it must be encoded: NFC strings, no nulls, integral floats as ints.

    On the hot path: exact type checks and the ``isascii`` shortcut keep it ~µs."""
    t = type(value)
    if t is str:
        if value.isascii() or unicodedata.is_normalized("NFC", value):
            return value
        return unicodedata.normalize("NFC", value)
    if t is dict:
        return {clean(k): clean(v) for k, v in value.items() if v is not None}
    if t is int or t is bool:
        return value
    if t is list or t is tuple:
        return [clean(v) for v in value if v is not None]
    if isinstance(value, str):
        return clean(str(value))
    if isinstance(value, Mapping):
        return clean(dict(value))
    if isinstance(value, numbers.Integral):  # numpy/pandas integers
        return int(value)
    if isinstance(value, numbers.Real) and float(value).is_integer():
        # numbers.Real promises __trunc__, not __int__; every float type met here has both
        return int(cast(SupportsInt, value))
    return value


def encode_claims(
    payload: dict[str, Any], *, iss: str, iat: int, exp: int, is_clean: bool = False
) -> bytes:
    """CBOR of the claims set for one certificate (``is_clean``: the caller has proven the
    payload needs no :func:`clean` pass)."""
    return cbor2.dumps(
        {
            CLAIM_ISS: iss,
            CLAIM_IAT: iat,
            CLAIM_EXP: exp,
            CLAIM_HCERT: {HCERT_EU_DCC: payload if is_clean else clean(payload)},
        }
    )


def decode_claims(data: bytes) -> dict[Any, Any]:
    """The claims map of a CWT payload; raises :class:`CwtError` when it is not an HCERT."""
    try:
        claims = cbor2.loads(data)
    except Exception as exc:
        raise CwtError(f"CWT payload is not CBOR: {type(exc).__name__}") from None
    if not isinstance(claims, Mapping):
        raise CwtError("CWT payload is not a map")
    claims = dict(claims)
    hcert = claims.get(CLAIM_HCERT)
    if not isinstance(hcert, Mapping) or not isinstance(hcert.get(HCERT_EU_DCC), Mapping):
        raise CwtError("no hcert claim (-260) with an EU DCC (1)")
    for claim, name in ((CLAIM_IAT, "iat"), (CLAIM_EXP, "exp")):
        if claim in claims and (
            not isinstance(claims[claim], (int, float)) or isinstance(claims[claim], bool)
        ):
            raise CwtError(f"claim {name} is not a number")
    return claims


def dcc_of(claims: dict[Any, Any]) -> dict[str, Any]:
    return claims[CLAIM_HCERT][HCERT_EU_DCC]
