"""Operations commands: runs, batches, certificates (tables for people, ``--json`` for
machines) and ``bevis bench batches``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import typer

from jobs.cli import options


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, default=_iso, indent=2))


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*["" if v is None else str(_iso(v)) for v in r])
    Console().print(table)


def _duration(start: datetime | None, end: datetime | None) -> float | None:
    if not start or not end:
        return None
    return round((end - start).total_seconds(), 3)


def _batch_dict(b: Any) -> dict[str, Any]:
    return {
        "batch_id": b.id,
        "run_id": b.run_id,
        "seq": b.seq,
        "size": b.size,
        "state": str(b.state.value),
        "failed_step": b.failed_step,
        "attempts": b.attempts,
        "error": b.error,
        "planned_at": b.planned_at,
        "signed_at": b.signed_at,
        "rendered_at": b.rendered_at,
        "delivered_at": b.delivered_at,
        "step_seconds": b.step_seconds or {},
        "running_step": b.running_step,
        "running_host": b.running_host,
        "running_pid": b.running_pid,
    }


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _open_ledger() -> None:
    """Read-only commands: the ledger must be there at this bevis' schema — nothing is
    created or migrated; else one line naming it (password masked) and what to do, exit 2."""
    from jobs.errors import DatabaseMissing, DatabaseUnavailable
    from jobs.ledger.queries import read_ledger

    try:
        read_ledger()
    except (DatabaseMissing, DatabaseUnavailable) as exc:
        _fail(str(exc))


# Commands of this area at the top level of `bevis`, and its `bevis bench ...` commands;
# jobs/cli/__init__.py merges both into the one app.
app = typer.Typer()
bench = typer.Typer()

runs = typer.Typer(help="Issuance runs in the ledger.", no_args_is_help=True)
batches = typer.Typer(help="Batches: list, run a step, rerun.", no_args_is_help=True)
certificates = typer.Typer(help="Issued certificates (no identity data).", no_args_is_help=True)
app.add_typer(runs, name="runs")
app.add_typer(batches, name="batches")
app.add_typer(certificates, name="certificates")


# ------------------------------------------------------------------ runs
@runs.command("list")
def runs_list(
    limit: int = typer.Option(50, "--limit", min=1, help="Newest runs first, at most this many."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Every run: state, start, duration, batches and certificates."""
    from jobs.ledger.queries import recent_runs

    _open_ledger()
    out = []
    for row in recent_runs(limit):
        r, counts = row["run"], row["counts"]
        out.append(
            {
                "run_id": r.id,
                "state": r.state.value,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "seconds": _duration(r.started_at, r.finished_at),
                "batches": counts["batches"],
                "failed_batches": counts.get("batches_failed", 0),
                "certificates": counts["certificates"],
            }
        )
    if json_out:
        _echo_json(out)
        return
    _table(
        "runs",
        ["run", "state", "started", "seconds", "batches", "failed", "certificates"],
        [
            [
                o["run_id"],
                o["state"],
                o["started_at"],
                o["seconds"],
                o["batches"],
                o["failed_batches"],
                o["certificates"],
            ]
            for o in out
        ],
    )


@runs.command("show")
def runs_show(
    run: str = typer.Argument(..., help="Run id.", callback=options.run_id),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """One run: parameters, counts per state, step durations, errors of failed batches, and
    the orders it still holds (with the command that releases those of a failed run)."""
    from jobs.batches import reap_interrupted
    from jobs.flow import claimed_orders
    from jobs.ledger.queries import batches_of, run_with_counts

    _open_ledger()
    reap_interrupted(run)
    found = run_with_counts(run)
    if found is None:
        _fail(f"run {run} is not in the ledger")
    r, counts = found
    failed = [_batch_dict(b) for b in batches_of(run, ["FAILED"])]
    claimed = claimed_orders(run)
    if claimed is not None and r.state.value != "FAILED":
        claimed["release"] = None  # a run that did not fail still answers its orders
    info = {
        "run_id": r.id,
        "state": r.state.value,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "seconds": _duration(r.started_at, r.finished_at),
        "parameters": r.parameters or {},
        "counts": counts,
        "step_seconds": r.step_seconds or {},
        "error": r.error,
        "failed_step": r.failed_step,
        "claimed_orders": claimed,
        "failed_batches": [
            {k: b[k] for k in ("batch_id", "failed_step", "attempts", "error")} for b in failed
        ],
    }
    if json_out:
        _echo_json(info)
        return
    _table(
        f"run {run}",
        ["field", "value"],
        [
            ["state", info["state"]],
            ["started", info["started_at"]],
            ["finished", info["finished_at"]],
            ["seconds", info["seconds"]],
            ["parameters", json.dumps(info["parameters"], default=str)],
            ["failed step", info["failed_step"]],
            ["error", info["error"]],
            ["claimed orders", _claimed_text(claimed)],
        ],
    )
    _table("counts", ["what", "count"], [[k, v] for k, v in sorted(counts.items())])
    _table(
        "step seconds",
        ["step", "seconds"],
        [[k, v] for k, v in sorted(info["step_seconds"].items())],
    )
    if failed:
        _table(
            "failed batches",
            ["batch", "step", "attempts", "error"],
            [
                [b["batch_id"], b["failed_step"], b["attempts"], (b["error"] or "")[:120]]
                for b in failed
            ],
        )
    if claimed and claimed["release"]:
        typer.echo(
            f"{claimed['count']} orders are still claimed by this failed run; give them back "
            f"to the next run with:\n  {claimed['release']}"
        )


def _claimed_text(claimed: dict[str, Any] | None) -> str:
    if claimed is None:
        return "unknown (no sources database here)"
    if not claimed["count"]:
        return "0"
    more = " ..." if claimed["count"] > len(claimed["order_ids"]) else ""
    states = ", ".join(f"{k} {v}" for k, v in sorted(claimed["by_state"].items()))
    return f"{claimed['count']} ({states}): {', '.join(claimed['order_ids'])}{more}"


# ------------------------------------------------------------------ batches
@batches.command("list")
def batches_list(
    run: str | None = typer.Option(None, "--run", help="Only this run.", callback=options.run_id),
    state: list[str] = typer.Option(
        [], "--state", help="Only these states (planned, signed, rendered, delivered, failed)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Batches with state, attempts, timings and errors. Batches whose worker was killed
    mid-step are marked failed (interrupted) first."""
    from jobs.batches import reap_interrupted
    from jobs.ledger.models import BatchState
    from jobs.ledger.queries import batches_of

    try:
        states = [BatchState(s.upper()).value for s in state]
    except ValueError as exc:
        _fail(str(exc))
    _open_ledger()
    reap_interrupted(run)
    out = [_batch_dict(b) for b in batches_of(run, states)]
    if json_out:
        _echo_json(out)
        return
    _table(
        "batches",
        ["batch", "state", "step", "size", "attempts", "seconds", "error"],
        [
            [
                b["batch_id"],
                b["state"],
                b["failed_step"] or b["running_step"],
                b["size"],
                b["attempts"],
                round(sum(b["step_seconds"].values()), 2),
                (b["error"] or "")[:80],
            ]
            for b in out
        ],
    )


@batches.command("plan")
def batches_plan(
    run: str = typer.Argument(
        ..., help="Run id (its payloads.parquet is cut).", callback=options.run_id
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Cut a run's payloads into batches (idempotent)."""
    from jobs.batches import plan

    ids = plan(run)
    _echo_json(ids) if json_out else typer.echo("\n".join(ids))


@batches.command("step")
def batches_step(
    batch: str = typer.Argument(..., help="Batch id.", callback=options.batch_id),
    step: str = typer.Argument(..., help="sign | render | deliver"),
) -> None:
    """Run one step of one batch (what one mapped Airflow task does); JSON result."""
    from jobs.batches import run_step

    try:
        result = run_step(batch, step)
    except Exception as exc:
        _fail(f"{type(exc).__name__}: {exc}", 1)
    typer.echo(json.dumps(result, default=_iso))


@batches.command("rerun")
def batches_rerun(
    batch_ids: list[str] = typer.Argument(None, help="Batch ids.", callback=options.batch_ids),
    failed: bool = typer.Option(False, "--failed", help="Every failed batch (of --run)."),
    run: str | None = typer.Option(
        None, "--run", help="With --failed: only this run.", callback=options.run_id
    ),
    via_airflow: bool = typer.Option(
        False,
        "--via-airflow",
        help="Clear exactly these mapped task instances through the Airflow REST API "
        "instead of running the steps here.",
    ),
    dag_id: str | None = typer.Option(None, "--dag-id", help="Default: settings."),
    dag_run_id: str | None = typer.Option(
        None, "--dag-run-id", help="Default: the DAG run that belongs to the batch's run."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --via-airflow: only show."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Take over batches whose holder's lease has expired (a live lease never is).",
    ),
    through: str | None = typer.Option(
        None, "--through", help="Stop after this step (sign|render|deliver); default: all."
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Run the missing steps of batches (by id, or --failed), with a progress bar; or
    have Airflow do it (--via-airflow). A run that had ended and now has every batch
    delivered is closed (orders fulfilled, state from the ledger). Exit 1 when a batch
    still fails."""
    from jobs.batches import STEPS, reap_interrupted
    from jobs.flow import close_finished_runs, rerun
    from jobs.ids import parse_batch_id
    from jobs.ledger.queries import batches_of

    if bool(batch_ids) == failed:
        _fail("name batch ids or pass --failed (not both)")
    if run and not failed:
        _fail("--run goes with --failed")
    if failed:
        reap_interrupted(run)
        ids = [b.id for b in batches_of(run, ["FAILED"])]
    else:
        try:
            for b in batch_ids:
                parse_batch_id(b)
        except ValueError as exc:
            _fail(str(exc))
        ids = list(batch_ids)
    if through is not None and through not in STEPS:
        _fail(f"--through must be one of {', '.join(STEPS)}")
    if not ids:
        _echo_json([]) if json_out else typer.echo("nothing to rerun: no failed batches")
        return
    if via_airflow:
        _rerun_via_airflow(ids, dag_id, dag_run_id, dry_run, json_out)
        return

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    results: list[dict[str, Any]] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        disable=json_out,
        transient=False,
    ) as bar:
        task = bar.add_task("rerun", total=len(ids))
        for bid in ids:

            def on_step(b: str, st: str, _bar=bar, _task=task) -> None:
                _bar.update(_task, description=f"{b} {st}")

            results.extend(rerun([bid], on_step=on_step, through=through, takeover=force))
            bar.advance(task)
    try:
        closed = close_finished_runs(parse_batch_id(r["batch_id"])[0] for r in results if r["ok"])
    except Exception as exc:
        typer.echo(f"error: batches rerun, but closing their run failed: {exc}", err=True)
        closed, close_failed = [], True
    else:
        close_failed = False
    if json_out:
        _echo_json(results)
    else:
        if closed:
            typer.echo(f"runs closed: {', '.join(closed)}")
        _table(
            "rerun",
            ["batch", "ok", "steps", "state", "error"],
            [
                [
                    r["batch_id"],
                    "yes" if r["ok"] else "NO",
                    ",".join(r.get("steps", [])),
                    r.get("state"),
                    (r.get("error") or "")[:100],
                ]
                for r in results
            ],
        )
    if close_failed or not all(r["ok"] for r in results):
        raise typer.Exit(1)


def _rerun_via_airflow(
    ids: list[str], dag_id: str | None, dag_run_id: str | None, dry_run: bool, json_out: bool
) -> None:
    from jobs.cli.airflow_api import AirflowApiError, AirflowClient
    from jobs.ids import parse_batch_id
    from jobs.settings import get_settings

    s = get_settings()
    dag = dag_id or s.airflow_dag_id
    by_run: dict[str, list[str]] = {}
    for b in ids:
        by_run.setdefault(parse_batch_id(b)[0], []).append(b)
    if dag_run_id and len(by_run) > 1:
        _fail("--dag-run-id names one DAG run but the batches belong to several runs")
    out = []
    try:
        with AirflowClient.from_settings(s) as client:
            for run_id, bids in by_run.items():
                dr = dag_run_id or client.find_dag_run(dag, run_id)
                plan, cleared = client.clear_batches(dag, dr, bids, execute=not dry_run)
                out.append(
                    {
                        "dag_id": dag,
                        "dag_run_id": dr,
                        "batches": plan.batches,
                        "not_found": plan.not_found,
                        "task_instances": [f"{t}[{i}]" for t, i in plan.pairs],
                        "cleared": 0 if dry_run else len(cleared),
                        "dry_run": dry_run,
                    }
                )
    except AirflowApiError as exc:
        _fail(str(exc), 1)
    if json_out:
        _echo_json(out)
    else:
        for o in out:
            _table(
                f"{'would clear' if dry_run else 'cleared'} in {o['dag_id']} / {o['dag_run_id']}",
                ["task instance"],
                [[t] for t in o["task_instances"]],
            )
            if o["not_found"]:
                typer.echo(f"not found in the DAG run: {', '.join(o['not_found'])}", err=True)
    if any(o["not_found"] for o in out):
        raise typer.Exit(1)


# ------------------------------------------------------------------ certificates
@certificates.command("show")
def certificates_show(
    uvci: str = typer.Argument(..., help="The certificate's UVCI."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """A certificate's state, batch and delivery history (no identity data)."""
    from jobs.ledger.queries import certificate_history

    _open_ledger()
    c, b, deliveries = certificate_history(uvci)
    if c is None:
        _fail(f"certificate {uvci} is not in the ledger", 1)
    state = "REVOKED" if c.revoked_at else (c.outcome.value if c.outcome else "ISSUED")
    info = {
        "uvci": c.uvci,
        "state": state,
        "order_id": c.order_id,
        "pid": c.pid,
        "run_id": c.run_id,
        "batch_id": c.batch_id,
        "batch_state": b.value,
        "cert_type": c.cert_type,
        "kid": c.kid,
        "iat": c.iat,
        "exp": c.exp,
        "hc1_sha256": c.hc1_sha256,
        "issued_at": c.issued_at,
        "outcome": c.outcome.value if c.outcome else None,
        "outcome_reason": c.outcome_reason,
        "revoked_at": c.revoked_at,
        "revocation": _revocation(uvci),
        "deliveries": [
            {
                "attempt": d.attempt,
                "channel": d.channel,
                "operator": d.operator,
                "status": d.status.value,
                "receipt": d.receipt,
                "http_status": d.http_status,
                "reason": d.reason,
                "at": d.at,
            }
            for d in deliveries
        ],
    }
    if json_out:
        _echo_json(info)
        return
    _table(
        f"certificate {uvci}",
        ["field", "value"],
        [
            [k, json.dumps(v, default=_iso) if k == "revocation" and v else v]
            for k, v in info.items()
            if k != "deliveries"
        ],
    )
    _table(
        "deliveries",
        ["attempt", "channel", "operator", "status", "receipt", "reason", "at"],
        [
            [
                d["attempt"],
                d["channel"],
                d["operator"],
                d["status"],
                d["receipt"],
                d["reason"],
                d["at"],
            ]
            for d in info["deliveries"]
        ],
    )


def _revocation(uvci: str) -> dict[str, Any] | None:
    """Why, by whom and when the certificate was revoked (None: it was not)."""
    from jobs.ledger.revocations import revocation_of

    found = revocation_of(uvci)
    return None if found is None else found.as_dict()


# ------------------------------------------------------------------ bench
@bench.command("batches")
def bench_batches(
    n: int = typer.Option(100_000, "--n", min=1, help="Certificates to sign."),
    batch_size: int = typer.Option(5000, "--batch-size", min=1),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Default: all cores."),
) -> None:
    """Sign N synthetic certificates through plan + sign (ledger, files, verification);
    the JSON summary is the last line."""
    from jobs.devtools.bench_batches import bench as run_bench
    from jobs.settings import get_settings

    overrides: dict[str, Any] = {"batch_size": batch_size}
    if workers:
        overrides["workers"] = workers
    summary = run_bench(n, get_settings(**overrides))
    typer.echo(json.dumps(summary, default=_iso))
