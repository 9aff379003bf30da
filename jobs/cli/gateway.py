"""The EU gateway's revocation batches: ``bevis revocation export|upload|delete|list``, and
``bevis simulator gateway`` (on the ``simulator`` group of jobs/cli/delivery.py).

The gateway is reached over mutual TLS: BEVIS_GATEWAY_URL (or --gateway), its CA bundle
BEVIS_GATEWAY_CA_BUNDLE, the TLS authentication and upload certificates from
<key dir>/gateway (``bevis keys init-dev`` makes development ones).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from jobs.cli.delivery import simulator

app = typer.Typer()
bench = typer.Typer()

revocation = typer.Typer(
    help="Revocation batches for the EU gateway: export, upload, delete, list.",
    no_args_is_help=True,
)
app.add_typer(revocation, name="revocation")

HASH_TYPES_HELP = "Comma-separated: UCI, COUNTRYCODEUCI, SIGNATURE (default: all three)."


def _types(value: str | None) -> list[str] | None:
    if value is None:
        return None
    chosen = [t.strip().upper() for t in value.split(",") if t.strip()]
    bad = [t for t in chosen if t not in ("UCI", "COUNTRYCODEUCI", "SIGNATURE")]
    if bad or not chosen:
        raise typer.BadParameter(f"{value!r}: choose from UCI, COUNTRYCODEUCI, SIGNATURE")
    return chosen


def _run(call) -> Any:
    """Domain errors as one line: configuration and refusals exit 2, an unreachable gateway 1."""
    from jobs.errors import GatewayUnavailable, NotRetryable

    try:
        return call()
    except GatewayUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except NotRetryable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _echo(result: Any, json_out: bool, lines: list[str]) -> None:
    if json_out:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        for line in lines:
            typer.echo(line)


def _notes(result: dict[str, Any]) -> None:
    if result.get("missing_hashes"):
        typer.echo(
            f"note: {len(result['missing_hashes'])} revoked certificates have no revocation "
            "hashes (signed before bevis kept them) and are in no batch",
            err=True,
        )


@revocation.command("export")
def revocation_export(
    out: Path = typer.Option(..., "--out", help="Folder for <batch>.json and <batch>.cms."),
    hash_types: str | None = typer.Option(None, "--hash-types", help=HASH_TYPES_HELP),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Write every live revocation batch (one per kid and hash type, at most 1000 entries;
    new revocations go into new batches first) as <batch>.json — the gateway's
    RevocationBatchDto — and <batch>.cms — base64 CMS SignedData over it, signed with the
    upload key. Batches whose expires has passed are not written."""
    from jobs.gateway.revocation import export

    result = _run(lambda: export(out, _types(hash_types)))
    _notes(result)
    _echo(
        result,
        json_out,
        [
            f"{b['batch']}: {b['hash_type']}, {b['entries']} entries, expires {b['expires']}"
            for b in result["batches"]
        ]
        + [f"{len(result['batches'])} batches → {out} ({len(result['planned'])} new)"],
    )


@revocation.command("upload")
def revocation_upload(
    gateway: str | None = typer.Option(None, "--gateway", help="Default BEVIS_GATEWAY_URL."),
    hash_types: str | None = typer.Option(None, "--hash-types", help=HASH_TYPES_HELP),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Upload every live batch the gateway does not hold yet (new revocations are put into
    new batches first); the gateway's batch ids go to the ledger, so a rerun uploads
    nothing twice."""
    from jobs.gateway.revocation import upload

    result = _run(lambda: upload(url=gateway, hash_types=_types(hash_types)))
    _notes(result)
    _echo(
        result,
        json_out,
        [f"uploaded {u['batch']} → {u['gateway_batch_id']}" for u in result["uploaded"]]
        + [
            f"found at the gateway {a['batch']} = {a['gateway_batch_id']}"
            for a in result["adopted"]
        ]
        + [f"{len(result['uploaded'])} uploaded, {len(result['adopted'])} already there"],
    )


@revocation.command("delete")
def revocation_delete(
    batch: str = typer.Argument(..., help="Our batch name or the gateway's batch id."),
    gateway: str | None = typer.Option(None, "--gateway", help="Default BEVIS_GATEWAY_URL."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Delete a batch at the gateway (a signed delete request) and record it in the ledger;
    a batch the gateway has already deleted is recorded as deleted too."""
    from jobs.gateway.revocation import delete

    result = _run(lambda: delete(batch, url=gateway))
    _echo(result, json_out, [f"{result['gateway_batch_id']}: {result['state']}"])


@revocation.command("list")
def revocation_list(
    gateway: str | None = typer.Option(None, "--gateway", help="Default BEVIS_GATEWAY_URL."),
    since: str | None = typer.Option(
        None, "--since", help="Only batches changed after this ISO time (If-Modified-Since)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The gateway's revocation batch list (every country's, deleted ones marked), with our
    batch name where the ledger knows the batch."""
    from jobs.gateway.revocation import gateway_list

    items = _run(lambda: gateway_list(url=gateway, since=since))
    _echo(
        items,
        json_out,
        [
            f"{i['gateway_batch_id']} {i['country']} {i['date']}"
            + (" deleted" if i["deleted"] else "")
            + (f" ({i['batch']})" if i["batch"] else "")
            for i in items
        ]
        + [f"{len(items)} batches"],
    )


gateway_app = typer.Typer(
    help="Trust material at the EU gateway: upload the DSC, download the trust list.",
    no_args_is_help=True,
)
app.add_typer(gateway_app, name="gateway")


@gateway_app.command("upload-dsc")
def gateway_upload_dsc(
    dsc: Path | None = typer.Option(None, "--dsc", help="PEM (default: the active DSC)."),
    gateway: str | None = typer.Option(None, "--gateway", help="Default BEVIS_GATEWAY_URL."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Upload the DSC to the gateway, in a CMS package signed with the upload certificate
    (as SignerCertificateController takes it); one the gateway holds already is reported."""
    from jobs.gateway.trust import upload_dsc

    result = _run(lambda: upload_dsc(dsc_path=dsc, url=gateway))
    _echo(result, json_out, [f"DSC {result['kid']}: {result['state']}"])


@gateway_app.command("trustlist")
def gateway_trustlist(
    out: Path = typer.Option(..., "--out", help="Folder for the DSCs (bevis verify --trust)."),
    trust_anchor: Path | None = typer.Option(
        None,
        "--trust-anchor",
        help="The gateway's trust anchor (default BEVIS_GATEWAY_TRUST_ANCHOR).",
    ),
    gateway: str | None = typer.Option(None, "--gateway", help="Default BEVIS_GATEWAY_URL."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Download the trust list, check each entry's signature (trust anchor; a DSC by its
    country's CSCA and upload certificate) and write the DSCs that pass into --out, with
    trustlist.json saying what was accepted and what not, and why."""
    from jobs.gateway.trust import download_trust_list

    result = _run(lambda: download_trust_list(out, anchor_path=trust_anchor, url=gateway))
    _echo(
        result,
        json_out,
        [
            f"rejected {r['certificateType']} {r['country']} {r['kid']}: {r['reason']}"
            for r in result["rejected"]
        ]
        + [
            f"{result['dscs']} DSCs → {out} ({result['accepted']} entries accepted, {len(result['rejected'])} rejected)"
        ],
    )


@simulator.command("gateway")
def simulator_gateway(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8788, "--port"),
) -> None:
    """Run the EU gateway simulator (revocation list) over mutual TLS; the development keys'
    TLS authentication, upload and CSCA certificates are its trusted parties (run 'bevis
    keys init-dev' first). What it receives is kept in <data>/gateway-sim/."""
    from jobs.gateway.simulator import serve

    def announce(gw) -> None:
        typer.echo(f"gateway simulator on {gw.url} (store {gw.store.path})", err=True)
        typer.echo(
            f"clients: BEVIS_GATEWAY_URL={gw.url} BEVIS_GATEWAY_CA_BUNDLE={gw.ca} "
            f"BEVIS_GATEWAY_TRUST_ANCHOR={gw.trust_anchor}",
            err=True,
        )

    try:
        serve(host, port, announce=announce)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
