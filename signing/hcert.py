"""Issue HCERTs: DCC payload → CWT → COSE_Sign1 → zlib → Base45 → ``HC1:``.

One certificate costs a few tens of µs on one core, most of it ECDSA; ``sign_many`` spreads
large chunks over a process pool in which every worker opens its own signer from the
its key source (a PKCS#11 session cannot cross a fork, and a key object cannot be pickled).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import multiprocessing
import os
import re
import sys
import threading
import unicodedata
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

from signing.base45 import b45encode
from signing.cose import encode_sign1, sig_structure
from signing.cwt import INT_MAX, INT_MIN, MAX_DEPTH, encode_claims, structure_problem
from signing.dcc import FORBIDDEN_TEXT, issuance_problems, text_problems
from signing.lifetime import die_with_parent

if TYPE_CHECKING:
    from types import ModuleType

    from signing.keys import KeySource, Signer

PREFIX = "HC1:"
DAY = 86400

_zlib: ModuleType  # zlib_ng.zlib_ng or the stdlib zlib: the same compress()
try:  # zlib-ng's level 1 is deflate_quick: static Huffman codes, no per-call tree building
    from zlib_ng import zlib_ng as _zlib

    COMPRESSION_LEVEL = 1
except ImportError:  # pragma: no cover - declared dependency; stdlib zlib as a fallback
    _zlib = zlib
    COMPRESSION_LEVEL = 9


def _compress(data: bytes) -> bytes:
    """A standard zlib (RFC 1950/1951) stream. For a ~350-byte COSE message any stdlib
    level costs ~25 µs, almost all of it building dynamic Huffman trees that save a few
    bytes at best; zlib-ng's deflate_quick takes ~7 µs for +1 % size (see
    docs/decisions/signing.md)."""
    return _zlib.compress(data, COMPRESSION_LEVEL)


class ValidityError(ValueError):
    """The requested validity does not fit the DSC's own validity."""


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def validity(signer: Signer, iat: int, days: int) -> tuple[int, int]:
    """(iat, exp) for a certificate issued at ``iat`` for ``days``: exp is capped at the
    DSC's notAfter (a certificate must not outlive its signing certificate); an ``iat``
    outside the DSC's validity is refused."""
    iat = int(iat)
    check_iat(signer, iat)
    return iat, min(iat + int(days) * DAY, signer.not_after)


def check_iat(signer: Signer, iat: int) -> None:
    if iat < signer.not_before:
        raise ValidityError(
            f"iat {_iso(iat)} is before the DSC's notBefore {_iso(signer.not_before)}"
        )
    if iat >= signer.not_after:
        raise ValidityError(
            f"iat {_iso(iat)} is not before the DSC's notAfter {_iso(signer.not_after)}: the DSC has expired"
        )


def _check(signer: Signer, iat: int, exp: int) -> None:
    check_iat(signer, iat)
    if exp > signer.not_after:
        raise ValidityError(
            f"exp {_iso(exp)} is beyond the DSC's notAfter {_iso(signer.not_after)}; use validity() to cap it"
        )
    if exp <= iat:
        raise ValidityError(f"exp {_iso(exp)} is not after iat {_iso(iat)}")


def _json_number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


def _json_int(text: str) -> int:
    """An integer literal; beyond 64 bits it would become a CBOR bignum, which no DCC
    holds (and beyond 4300 digits int() itself refuses): ValueError."""
    value = int(text)
    if len(text) > 19 and not INT_MIN <= value <= INT_MAX:
        raise ValueError("integer beyond 64 bits")
    return value


# json.loads(**kw) would build a decoder per call
_DECODER = json.JSONDecoder(parse_float=_json_number, parse_int=_json_int)


def parse_payload(text: str) -> tuple[Any, bool]:
    """(payload, clean) from JSON text. ``clean`` is true when the text proves the payload
    needs no :func:`signing.cwt.clean` pass (no null, no escapes, already NFC; integral
    floats become ints while parsing) — saving ~10 µs a certificate."""
    payload = _DECODER.decode(text)
    is_clean = (
        "null" not in text
        and "\\u" not in text
        and (text.isascii() or unicodedata.is_normalized("NFC", text))
    )
    return payload, is_clean


def _hc1(
    payload: dict[str, Any], signer: Signer, iss: str, iat: int, exp: int, is_clean: bool = False
) -> str:
    return _sign_claims(
        encode_claims(payload, iss=iss, iat=iat, exp=exp, is_clean=is_clean), signer
    )


def _sign_claims(claims: bytes, signer: Signer) -> str:
    protected = signer.protected
    signature = signer.sign(sig_structure(protected, claims))
    cose = encode_sign1(protected, claims, signature)
    return PREFIX + b45encode(_compress(cose))


def issue(payload: dict[str, Any], signer: Signer, *, iat: int, exp: int, iss: str = "SE") -> str:
    """The HC1 string of one certificate. ``iat``/``exp`` are Unix seconds and must lie
    within the DSC's validity (see :func:`validity`)."""
    iat, exp = int(iat), int(exp)
    _check(signer, iat, exp)
    return _hc1(payload, signer, iss, iat, exp)


# --- many certificates, all cores ------------------------------------------------------

_worker_signer: Signer | None = None


def _init_worker(source: KeySource, environ: dict[str, str], owner: int | None = None) -> None:
    """Open this worker's own signer. The caller's environment comes along explicitly:
    the forkserver may have been started earlier, with another environment, and a
    PKCS#11 module reads its configuration (e.g. SOFTHSM2_CONF) from it. The worker dies
    with its parent and with ``owner``, the caller (a forkserver worker's parent is the
    forkserver, which outlives the caller as long as any worker lives)."""
    global _worker_signer
    die_with_parent(owner)
    from signing.keys import load_signer

    os.environ.clear()
    os.environ.update(environ)

    _worker_signer = load_signer(source)


def _sign_chunk(args: tuple[Sequence[dict[str, Any] | str], int, int, str, bool]) -> list[Any]:
    payloads, iat, exp, iss, checked = args
    signer = _worker_signer
    assert signer is not None, "worker signer not initialised"
    if checked:
        return [_checked(p, signer, iss, iat, exp) for p in payloads]
    return [_hc1_any(p, signer, iss, iat, exp) for p in payloads]


def _hc1_any(item: dict[str, Any] | str, signer: Signer, iss: str, iat: int, exp: int) -> str:
    if isinstance(item, str):
        payload, is_clean = parse_payload(item)
        return _hc1(payload, signer, iss, iat, exp, is_clean)
    return _hc1(item, signer, iss, iat, exp)


def _json_problem(exc: ValueError) -> str:
    """A JSON parse error in words safe for logs (position, never the text)."""
    if "4300" in str(exc) or "integer string conversion" in str(exc):
        return "not JSON (an integer of more than 4300 digits)"
    if "beyond 64 bits" in str(exc):
        return "not JSON (an integer beyond 64 bits)"
    msg = getattr(exc, "msg", "invalid number")
    return f"not JSON ({msg} at column {getattr(exc, 'colno', '?')})"


def _suspect(text: str, max_depth: int) -> bool:
    """Whether JSON text may hold what the fast gate does not look for: nesting beyond
    ``max_depth`` (it has more brackets than that), an escape that may make a control
    character or a lone surrogate (\\n, \\u...), or a forbidden character. ASCII text can
    only hold DEL raw: JSON refuses raw C0 controls in strings. (Integers beyond 64 bits
    are refused by the parser.)"""
    if text.count("[") + text.count("{") > max_depth:
        return True
    if "\\" in text and _ESCAPE.search(text) is not None:
        return True
    if text.isascii():
        return "\x7f" in text
    return FORBIDDEN_TEXT.search(text) is not None


_ESCAPE = re.compile(r"\\[bfnrtu]")


def _checked(
    item: dict[str, Any] | str,
    signer: Signer,
    iss: str,
    iat: int,
    exp: int,
    max_depth: int = MAX_DEPTH,
) -> tuple[str | None, list[str]]:
    """(hc1, []) or (None, reasons): the payload is vetted — JSON, nesting, characters,
    its schema and the *active* value sets — before it may be signed. Hostile input gets a
    refusal of its own, never an exception that would cost the other payloads theirs.
    Reasons never quote personal data."""
    is_clean = False
    if isinstance(item, str):
        try:
            payload, is_clean = parse_payload(item)
        except RecursionError:
            return None, ["not JSON (nested deeper than the parser allows)"]
        except ValueError as exc:
            return None, [_json_problem(exc)]
        walk = _suspect(item, max_depth)
    else:
        payload, walk = item, True
    if walk:
        problem = structure_problem(payload, max_depth)
        if problem:
            return None, [f"payload {problem}"]
        problems = text_problems(payload)
        if problems:
            return None, problems
    try:
        problems = issuance_problems(payload)
    except RecursionError:  # pragma: no cover - bounded by the depth check above
        return None, ["payload cannot be checked (nested too deeply)"]
    if problems:
        return None, problems
    try:
        claims = encode_claims(payload, iss=iss, iat=iat, exp=exp, is_clean=is_clean)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        return None, [f"payload cannot be encoded as CBOR ({type(exc).__name__})"]
    return _sign_claims(claims, signer), []


def _context(provider: str) -> multiprocessing.context.BaseContext:
    """How to start the workers.

    - PEM-file keys in a single-threaded caller (the CLI): ``fork`` — workers start in
      milliseconds with everything already imported.
    - a PKCS#11 token, or a caller with threads (Airflow task runners, HTTP clients):
      ``forkserver`` — workers fork from a clean server process that never opened a token
      session (PKCS#11 forbids using one across fork) and holds no locks of the caller's
      threads; the signing modules are preloaded there so each worker still starts fast.
    """
    methods = multiprocessing.get_all_start_methods()
    if provider == "file" and threading.active_count() == 1 and "fork" in methods:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["signing.hcert", "signing.keys", "signing.warm"])
        return ctx
    return multiprocessing.get_context("spawn")


def _run(
    payloads: Sequence[dict[str, Any] | str],
    iat: int,
    exp: int,
    keys: KeySource,
    iss: str,
    workers: int | None,
    chunk_size: int | None,
    checked: bool,
) -> list[Any]:
    from signing.keys import load_signer

    signer = load_signer(keys)  # fail fast, in the caller, on missing keys or bad validity
    iat, exp = int(iat), int(exp)
    _check(signer, iat, exp)
    payloads = list(payloads)
    n = len(payloads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = max(1, min(workers or cores or 1, cores or 1))
    if workers == 1 or n < 512:
        global _worker_signer
        previous, _worker_signer = _worker_signer, signer
        try:
            return _sign_chunk((payloads, iat, exp, iss, checked))
        finally:
            _worker_signer = previous
    del signer
    import signing.warm  # noqa: F401  compiled validators and tables, inherited by fork

    size = chunk_size or max(256, -(-n // (workers * 4)))
    chunks = [(payloads[i : i + size], iat, exp, iss, checked) for i in range(0, n, size)]
    out: list[Any] = []
    ctx = _context(keys.provider)
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(keys, dict(os.environ), os.getpid()),
    ) as pool:
        with _main_not_rerun(ctx.get_start_method() != "fork"):
            results = pool.map(_sign_chunk, chunks)  # submits all: every worker starts here
        for part in results:
            out.extend(part)
    return out


@contextlib.contextmanager
def _main_not_rerun(active: bool) -> Iterator[None]:
    """forkserver/spawn workers re-run the caller's ``__main__`` before they take work —
    the bevis console script, an Airflow task runner, a test file: seconds of imports
    per worker, or worse. The signing workers need none of it, so while they start,
    ``__main__`` hides the two attributes multiprocessing looks for."""
    main = sys.modules.get("__main__")
    if not active or main is None:
        yield
        return
    saved: dict[str, Any] = {
        k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__
    }
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def sign_many(
    payloads: Sequence[dict[str, Any] | str],
    *,
    iat: int,
    exp: int,
    keys: KeySource,
    iss: str = "SE",
    workers: int | None = None,
    chunk_size: int | None = None,
) -> list[str]:
    """HC1 strings for ``payloads`` (dicts or their JSON text, already vetted), in order,
    signed with the signer of ``keys`` under issuer country ``iss``, over a process pool of
    ``workers`` (default: all cores) with large
    chunks. Fewer than 512 payloads or one worker → in-process."""
    return _run(payloads, iat, exp, keys, iss, workers, chunk_size, checked=False)


def sign_checked(
    payloads: Sequence[dict[str, Any] | str],
    *,
    iat: int,
    exp: int,
    keys: KeySource,
    iss: str = "SE",
    workers: int | None = None,
    chunk_size: int | None = None,
) -> list[tuple[str | None, list[str]]]:
    """Like :func:`sign_many`, but each payload is first vetted (JSON, schema by ``ver``,
    active value sets): per payload ``(hc1, [])`` or ``(None, reasons)``. The vetting runs
    in the workers too, so it scales with the cores like the signing."""
    return _run(payloads, iat, exp, keys, iss, workers, chunk_size, checked=True)
