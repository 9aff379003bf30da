"""The ``bevis`` command line. Anything a DAG does, the CLI can do too.

Each area registers its commands from ``jobs/commands/<area>.py``; heavy libraries are
imported inside the command bodies so that ``bevis --help`` stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="bevis",
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

# One module per area; each exposes register(app, bench).
COMMAND_MODULES = (
    "jobs.cli.doctor",
    "jobs.cli.signing",
    "jobs.cli.sources",
    "jobs.cli.quality",
    "jobs.cli.mapping",
    "jobs.cli.batches",
    "jobs.cli.delivery",
    "jobs.cli.reporting",
    "jobs.cli.flow",
)


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
    log_json: bool = typer.Option(False, "--log-json", help="Log as JSON lines (for machines)."),
) -> None:
    from jobs.log import configure_logging

    configure_logging("DEBUG" if verbose else "INFO", json=log_json)


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # an area not built yet
        if exc.name != _name:
            raise
        continue
    _module.register(app, bench)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # python -m jobs.cli
    main()
