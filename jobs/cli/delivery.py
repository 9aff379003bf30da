"""Render & delivery commands: ``bevis render``, ``bevis deliver``, ``bevis simulator
mailbox``, ``bevis bench render`` and ``bevis bench deliver``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from jobs.cli import options

# Commands of this area at the top level of `bevis`, and its `bevis bench ...` commands;
# jobs/cli/__init__.py merges both into the one app.
app = typer.Typer()
bench = typer.Typer()


@app.command("render")
def render(
    in_path: Path = typer.Option(..., "--in", help="Signed certificates (bevis sign output)."),
    out_dir: Path = typer.Option(..., "--out-dir", help="Folder for the PDFs (mode 0700)."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Processes."),
) -> None:
    """One A4 PDF per certificate (Swedish/English, QR code as vectors). File names are
    hashes of the UVCI; existing complete files are kept. Exit 1 if any failed."""
    from jobs.steps.render import render_file

    if not in_path.is_file():
        typer.echo(f"error: {in_path} not found", err=True)
        raise typer.Exit(2)
    try:
        result = render_file(in_path, out_dir, workers=workers)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for uvci, why in result["failed"]:
        typer.echo(f"{uvci}: not rendered: {why}", err=True)
    typer.echo(
        f"rendered {result['rendered']}, kept {result['skipped']}, "
        f"failed {len(result['failed'])} → {out_dir}",
        err=True,
    )
    if result["failed"]:
        raise typer.Exit(1)


@app.command("deliver")
def deliver(
    batch_id: str = typer.Argument(
        ..., help="Batch id, e.g. <run>-b0001.", callback=options.batch_id
    ),
    retry_deferred: bool = typer.Option(
        False, "--retry-deferred", help="Try DEFERRED certificates again (same keys)."
    ),
) -> None:
    """Deliver a rendered batch: digital mailbox, else paper print queue or deferral.
    Idempotent; prints the counts per outcome as JSON."""
    from jobs.steps.deliver import deliver_batch

    result = deliver_batch(batch_id, retry_deferred=retry_deferred)
    typer.echo(json.dumps(result, default=str))


simulator = typer.Typer(help="Simulators for local work.", no_args_is_help=True)
app.add_typer(simulator, name="simulator")


@simulator.callback()
def _simulator() -> None:
    """Simulators are development tools: development mode (published secrets allowed)."""
    options.development_mode()


@simulator.command("mailbox")
def simulator_mailbox(
    port: int = typer.Option(8787, "--port", help="TCP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Serve HTTPS: cert (PEM)."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Its private key (PEM)."),
    client_ca: Path | None = typer.Option(
        None, "--client-ca", help="Require client certificates from this CA (mutual TLS)."
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="Require the bearer token in this file."
    ),
) -> None:
    """FaR reachability and the operators' deliverSecure as a real HTTP(S) server.
    Faults and shares via BEVIS_SIMULATOR_* settings; messages kept in SQLite; TLS, mutual
    TLS and a bearer token by these options (or BEVIS_SIMULATOR_TLS_CERT, ..._TOKEN)."""
    from jobs.mailbox.simulator import serve
    from jobs.settings import get_settings

    overrides: dict = {}
    if tls_cert:
        overrides.update(simulator_tls_cert=tls_cert, simulator_tls_key=tls_key)
    if client_ca:
        overrides["simulator_client_ca"] = client_ca
    if token_file:
        overrides["simulator_token"] = token_file.read_text(encoding="utf-8").strip()
    s = get_settings(**overrides)
    scheme = "https" if s.simulator_tls_cert else "http"
    typer.echo(f"mailbox simulator on {scheme}://{host}:{port}", err=True)
    serve(host, port, settings=s)


@bench.command("render")
def bench_render(
    n: int = typer.Option(2000, "--n", min=1, help="PDFs to render."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Default: all cores."),
) -> None:
    """PDFs per second on all cores (process pool) and on one; JSON on the last line."""
    from jobs.devtools.bench_render import bench_render as run

    typer.echo(json.dumps(run(n, workers)))


@bench.command("deliver")
def bench_deliver(
    n: int = typer.Option(5000, "--n", min=1, help="Certificates in the batch."),
    url: str | None = typer.Option(None, "--url", help="A running simulator (default: start one)."),
    concurrency: int | None = typer.Option(None, "--concurrency", min=1),
) -> None:
    """Messages per second from deliver_batch to the mailbox simulator; JSON last line."""
    from jobs.devtools.bench_deliver import bench_deliver as run

    typer.echo(json.dumps(run(n, url, concurrency)))
