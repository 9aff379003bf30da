"""The ``bevis`` command line. Anything a DAG does, the CLI can do too.

Each area defines its commands in ``jobs/cli/<area>.py`` as module-level Typer apps;
heavy libraries are imported inside the command bodies so that ``bevis --help`` stays fast.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from jobs.cli import (
    batches,
    certificates,
    delivery,
    doctor,
    flow,
    gateway,
    mapping,
    quality,
    reporting,
    signing,
    sources,
)


class _Bevis(TyperGroup):
    """The top-level command group: a published development secret met by any command
    (outside development mode) is one line naming the variable and exit 2, no traceback."""

    def invoke(self, ctx):
        from jobs.settings import DefaultSecretError

        try:
            return super().invoke(ctx)
        except DefaultSecretError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    name="bevis",
    cls=_Bevis,
    help=(
        "Issue EU Digital COVID Certificates in bulk from the national vaccination register.\n\n"
        "Quick start: 'bevis demo' runs the whole flow on a seeded register. "
        "'bevis doctor' says what is missing on this machine."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,  # locals may hold personal data
)
bench = typer.Typer(
    help="Benchmarks: figures for the closing notes and for capacity planning.",
    no_args_is_help=True,
)
app.add_typer(bench, name="bench")


@bench.callback()
def _bench() -> None:
    """Benchmarks run on synthetic data in development mode (published secrets allowed)."""
    from jobs.cli.options import development_mode

    development_mode()


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
    log_json: bool = typer.Option(False, "--log-json", help="Log as JSON lines (for machines)."),
) -> None:
    from jobs.log import configure_logging

    configure_logging("DEBUG" if verbose else "INFO", json=log_json)


# One module per area, each with a module-level ``app`` (its top-level commands) and
# ``bench`` (its benchmarks); the order here is the order of ``bevis --help``.
for _area in (
    doctor,
    signing,
    sources,
    quality,
    mapping,
    batches,
    certificates,
    delivery,
    gateway,
    reporting,
    flow,
):
    app.add_typer(_area.app)
    bench.add_typer(_area.bench)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # python -m jobs.cli
    main()
