"""Operations on issued certificates after issuance: ``bevis certificates revoke``.

The commands join the ``certificates`` group of jobs/cli/batches.py. Certificates are
named by UVCI only, never by personal data (the incident process says so); the operator is
the user name from the environment (BEVIS_OPERATOR, else USER, else LOGNAME).
"""

from __future__ import annotations

import json
import os

import typer

from jobs.cli.batches import certificates

# Commands of this area at the top level of `bevis` (none besides the certificates group's)
# and its benchmarks (none); jobs/cli/__init__.py merges both.
app = typer.Typer()
bench = typer.Typer()

# the ledger's RevocationReason (jobs.ledger.models), here without importing the ORM
REASONS = (
    "wrong_person",
    "wrong_result",
    "wrong_data",
    "withdrawn_consent",
    "superseded",
    "key_compromise",
)


def _reason(value: str) -> str:
    if value not in REASONS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(REASONS)}")
    return value


def operator_name() -> str | None:
    """Who is at the keyboard: BEVIS_OPERATOR, else the login name (USER, LOGNAME)."""
    for variable in ("BEVIS_OPERATOR", "USER", "LOGNAME"):
        value = os.environ.get(variable, "").strip()
        if value:
            return value
    return None


@certificates.command("revoke")
def certificates_revoke(
    uvcis: list[str] = typer.Argument(..., help="UVCIs of the certificates to revoke."),
    reason: str = typer.Option(
        ..., "--reason", callback=_reason, help=f"Why: {', '.join(REASONS)}."
    ),
    note: str | None = typer.Option(
        None, "--note", help="Free text for the incident record (no personal data)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Revoke certificates by UVCI: who (your user name), when and why go to the ledger's
    revocations; nothing is deleted. Revoking a revoked certificate changes nothing and
    answers the same. An unknown UVCI: exit 2, nothing revoked. The gateway learns of it with
    the next 'bevis revocation upload' (or the dcc_revocation DAG)."""
    from jobs.errors import NotRetryable
    from jobs.ledger.revocations import revoke

    who = operator_name()
    if who is None:
        typer.echo("error: no operator name: set BEVIS_OPERATOR (or USER)", err=True)
        raise typer.Exit(2)
    try:
        records = revoke(uvcis, reason, who=who, note=note)
    except NotRetryable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    out = [r.as_dict() for r in records]
    if json_out:
        typer.echo(json.dumps(out, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="revoked")
    for column in ("uvci", "reason", "who", "at", "note"):
        table.add_column(column)
    for r in out:
        table.add_row(r["uvci"], r["reason"], r["who"], r["at"], r["note"] or "")
    Console().print(table)
