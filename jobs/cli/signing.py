"""CLI of the HCERT core: sign, verify, conformance, keys, bench sign.

The command names, options and output fields are a contract (operations and tests depend
on them); see docs/decisions/signing.md.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import typer

EXIT_REFUSED = 1  # bevis sign: some payloads refused (the others are written)
EXIT_USAGE = 2  # missing keys, unreadable trust, bad options


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def numbered_lines(path: Path, max_bytes: int) -> Iterator[tuple[int, str | None]]:
    """(line number, text) for each line of the file, read one line at a time; ``None``
    for a line longer than ``max_bytes``, which is skipped without being held in memory.
    Bytes that are not UTF-8 become U+FFFD so that one bad line is refused (or judged
    invalid) on its own instead of failing the whole file."""
    with open(path, "rb") as fh:
        n = 0
        while chunk := fh.readline(max_bytes + 1):
            n += 1
            if len(chunk) > max_bytes and not chunk.endswith(b"\n"):
                while (rest := fh.readline(1 << 16)) and not rest.endswith(b"\n"):
                    pass  # the rest of the long line, read and dropped
                yield n, None
                continue
            yield n, chunk.rstrip(b"\r\n").decode("utf-8", errors="replace")


def too_long(max_bytes: int) -> str:
    return f"line longer than {max_bytes} bytes (BEVIS_MAX_LINE_BYTES): not read"


def _ci(payload: dict) -> str | None:
    for kind in ("v", "t", "r"):
        entries = payload.get(kind) if isinstance(payload, dict) else None
        if isinstance(entries, list) and entries and isinstance(entries[0], dict):
            ci = entries[0].get("ci")
            return ci if isinstance(ci, str) else None
    return None


def sign_file(in_path: Path, out_path: Path, exp_days: int | None = None, settings=None) -> dict:
    """Sign every payload line of ``in_path`` into ``out_path`` (JSON lines with line, ci,
    kid, iat, exp, hc1). Refused payloads are reported by line number and reason and left
    out. Returns counts and the refusals."""
    import base64
    import json
    import time

    from jobs.settings import get_settings
    from jobs.storage import write_text_atomic
    from signing.hcert import sign_checked, validity
    from signing.keys import load_signer

    s = settings or get_settings()
    signer = load_signer(s.key_source())
    days = exp_days or s.validity_days
    iat, exp = validity(signer, int(time.time()), days)
    kid = base64.b64encode(signer.kid).decode()
    numbered, refused = [], []
    for n, line in numbered_lines(in_path, s.max_line_bytes):
        if line is None:
            refused.append({"line": n, "reasons": [too_long(s.max_line_bytes)]})
        elif line.strip():
            numbered.append((n, line))
    results = sign_checked(
        [line for _, line in numbered],
        iat=iat,
        exp=exp,
        keys=s.key_source(),
        iss=s.issuer_country,
        workers=s.resolved_workers(),
    )
    out_lines = []
    for (n, line), (hc1, reasons) in zip(numbered, results, strict=True):
        if hc1 is None:
            refused.append({"line": n, "reasons": reasons})
            continue
        ci = _ci(json.loads(line))
        out_lines.append(
            json.dumps({"line": n, "ci": ci, "kid": kid, "iat": iat, "exp": exp, "hc1": hc1})
        )
    write_text_atomic("".join(x + "\n" for x in out_lines), out_path, mode=0o640)
    refused.sort(key=lambda r: r["line"])
    return {
        "signed": len(out_lines),
        "refused": refused,
        "kid": kid,
        "iat": iat,
        "exp": exp,
        "capped": exp - iat < days * 86400,
    }


# Commands of this area at the top level of `bevis`, and its `bevis bench ...` commands;
# jobs/cli/__init__.py merges both into the one app.
app = typer.Typer()
bench = typer.Typer()


@app.command("sign")
def sign(
    in_path: Path = typer.Option(..., "--in", help="DCC payloads, one JSON object a line."),
    out_path: Path = typer.Option(..., "--out", help="Signed certificates (JSON lines)."),
    exp_days: int | None = typer.Option(
        None, "--exp-days", min=1, help="Validity in days (default BEVIS_VALIDITY_DAYS)."
    ),
) -> None:
    """Sign DCC payloads into HC1 certificates with the active DSC. A payload failing
    the schema or the active value sets is refused (line number and reason on stderr)
    and never signed; the others are written. Exit 1 when any was refused."""
    from signing.hcert import ValidityError
    from signing.keys import SigningKeyError

    if not in_path.is_file():
        raise _fail(f"{in_path} not found")
    try:
        result = sign_file(in_path, out_path, exp_days)
    except (SigningKeyError, ValidityError) as exc:
        raise _fail(str(exc)) from None
    if result["capped"]:
        typer.echo("note: exp capped at the DSC's notAfter", err=True)
    for r in result["refused"]:
        typer.echo(f"line {r['line']}: refused: {'; '.join(r['reasons'])}", err=True)
    typer.echo(
        f"signed {result['signed']}, refused {len(result['refused'])} → {out_path} "
        f"(kid {result['kid']})",
        err=True,
    )
    if result["refused"]:
        raise typer.Exit(EXIT_REFUSED)


@app.command("verify")
def verify(
    in_path: Path = typer.Option(
        ..., "--in", help="HC1 strings or JSON lines of 'bevis sign', one a line."
    ),
    trust: Path | None = typer.Option(
        None, "--trust", help="DSC(s): a PEM file or a folder of PEM/DER files."
    ),
    at: str | None = typer.Option(None, "--at", help="Clock for expiry (ISO 8601)."),
    revocations: str | None = typer.Option(
        None,
        "--revocations",
        help="Revocation batches: a folder of <batch>.cms/.json or the gateway's URL; "
        "adds the check 'revoked'.",
    ),
) -> None:
    """Verify certificates; one JSON verdict a line. Without --trust the signature and
    key-usage checks are skipped; with --revocations a revoked certificate fails the check
    'revoked'. Exit 0 only when every line is valid."""
    import json

    from jobs.settings import get_settings
    from signing.conformance import parse_clock
    from signing.keys import load_trust
    from signing.revocation import add_revoked_check
    from signing.verify import TrustStore, Verdict
    from signing.verify import verify as verify_one

    if not in_path.is_file():
        raise _fail(f"{in_path} not found")
    store = None
    if trust is not None:
        try:
            store = TrustStore(load_trust(trust))
        except (OSError, ValueError) as exc:
            raise _fail(f"cannot read trust material {trust}: {exc}") from None
    else:
        typer.echo("warning: no --trust given: signatures are not checked", err=True)
    try:
        clock = parse_clock(at) if at else None
    except ValueError:
        raise _fail(f"--at {at!r} is not an ISO 8601 time") from None
    revoked = _revoked_hashes(revocations) if revocations else None
    max_bytes = get_settings().max_line_bytes
    all_valid = True
    for n, line in numbered_lines(in_path, max_bytes):
        if line is None:
            verdict = Verdict()
            verdict.fail("decode", too_long(max_bytes))
            hc1 = None
        else:
            text = line.strip()
            if not text:
                continue
            hc1: object = text
            if text.startswith("{"):
                try:
                    hc1 = json.loads(text).get("hc1")
                except (ValueError, AttributeError, RecursionError):
                    hc1 = text
            verdict = verify_one(hc1, trust=store, at=clock)
        if revoked is not None:
            add_revoked_check(verdict, hc1, revoked)
        all_valid &= verdict.valid
        sys.stdout.write(_verdict_line(n, verdict) + "\n")
    sys.stdout.flush()
    if not all_valid:
        raise typer.Exit(1)


def _revoked_hashes(source: str) -> set[str]:
    """The entry hashes of the revocation batches in a folder, or served by the gateway at a
    URL (mutual TLS with the settings' authentication certificate); exit 2 if unreadable."""
    from signing.revocation import RevocationError, read_batches

    try:
        if source.startswith(("https://", "http://")):
            from jobs.errors import BevisError
            from jobs.gateway.revocation import downloaded_revocations

            try:
                return downloaded_revocations(url=source)
            except BevisError as exc:
                raise _fail(f"revocations from {source}: {exc}") from None
        return read_batches(source)
    except RevocationError as exc:
        raise _fail(f"cannot read revocations {source}: {exc}") from None


def _verdict_line(n: int, verdict) -> str:
    """One verdict as a JSON line; a payload JSON cannot carry is left out, with a reason."""
    import json

    try:
        line = json.dumps({"line": n, **verdict.as_dict()}, ensure_ascii=False)
        line.encode("utf-8")  # a lone surrogate could not be written
        return line
    except (ValueError, TypeError):  # UnicodeEncodeError is a ValueError
        verdict.payload = None
        verdict.valid = False
        verdict.fail("decode", "payload cannot be shown as JSON")
        return json.dumps({"line": n, **verdict.as_dict()})


@app.command("conformance")
def conformance(
    directory: Path = typer.Argument(..., help="A dgc-testdata checkout (or part of it)."),
) -> None:
    """Run every EU dgc-testdata vector under DIR through our decoder and verifier.
    Exit 0 only when nothing unexpected happened (known_issues.csv = expected)."""
    from signing.conformance import run

    if not directory.is_dir():
        raise _fail(f"{directory} is not a folder")
    report = run(directory)
    for o in report.unexpected:
        typer.echo(
            f"FAIL {o.file} {o.step}: expected {o.expected}, got {o.actual}"
            + (f" ({o.detail})" if o.detail else "")
        )
    for o in report.expected_failures:
        typer.echo(f"XFAIL {o.file} {o.step}: known issue {o.known_issue}")
    for e in report.errors:
        typer.echo(f"ERROR {e}")
    vectors = len({o.file for o in report.outcomes})
    typer.echo(
        f"{vectors} vectors, {len(report.outcomes)} checks, "
        f"{len(report.expected_failures)} expected failures (known_issues.csv)"
    )
    typer.echo(f"{report.passed} passed, {report.failed} failed")
    if not report.ok:
        raise typer.Exit(1)


keys = typer.Typer(help="Signing keys: development CSCA/DSC, the active DSC.", no_args_is_help=True)
app.add_typer(keys, name="keys")


@keys.command("init-dev")
def init_dev(
    directory: Path | None = typer.Option(
        None, "--dir", help="Key folder (default BEVIS_KEY_DIR or <data>/keys)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace existing keys."),
) -> None:
    """Make a development CSCA and DSC (EC P-256; key files 0600; with
    BEVIS_KEY_PROVIDER=pkcs11 the DSC key is generated on the token) and print the kid
    (base64). Existing keys are kept unless --force."""
    import base64

    from jobs.cli.options import development_mode
    from jobs.settings import get_settings
    from signing.keys import SigningKeyError, init_dev_keys

    development_mode()  # development keys: the published PIN may be used on a dev token
    s = get_settings()
    target = directory or s.resolved_key_dir()
    passphrase = s.key_passphrase.get_secret_value() if s.key_passphrase else None
    try:
        kid = init_dev_keys(
            target,
            country=s.issuer_country,
            passphrase=passphrase,
            force=force,
            source=s.key_source(),
        )
    except SigningKeyError as exc:
        raise _fail(str(exc)) from None
    typer.echo(base64.b64encode(kid).decode())


@keys.command("show-dsc")
def show_dsc() -> None:
    """Print the active DSC (as the settings select it) as PEM."""
    from cryptography import x509

    from jobs.settings import get_settings
    from signing.keys import DSC_FILE, SigningKeyError, dsc_pem, load_signer

    s = get_settings()
    path = s.resolved_key_dir() / DSC_FILE
    if s.key_provider == "file":
        if not path.is_file():
            raise _fail(f"{path} not found; run 'bevis keys init-dev'")
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        from cryptography.hazmat.primitives.serialization import Encoding

        typer.echo(cert.public_bytes(Encoding.PEM).decode(), nl=False)
        return
    try:
        typer.echo(dsc_pem(load_signer(s.key_source())), nl=False)
    except SigningKeyError as exc:
        raise _fail(str(exc)) from None


@bench.command("sign")
def bench_sign(
    n: int = typer.Option(20000, "--n", min=1, help="Certificates per measurement."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Processes for the all-cores run (default: all)."
    ),
) -> None:
    """Certificates per second, payload (JSON text) → HC1, on one core and on all
    cores; the figures as JSON on the last line."""
    import json

    from jobs.devtools.bench_sign import bench_sign as run_bench

    result = run_bench(n, workers)
    typer.echo(json.dumps(result))


@bench.command("cose")
def bench_cose_cmd(
    n: int = typer.Option(2000, "--n", min=1, help="ES256 signatures (PS256: n/10)."),
) -> None:
    """µs per COSE_Sign1 signature, ours (cbor2 + cryptography) vs pycose; JSON."""
    import json

    from jobs.devtools.bench_sign import bench_cose

    typer.echo(json.dumps(bench_cose(n)))
