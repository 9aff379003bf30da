"""Checks of the ids that commands take, as Typer callbacks: a run or batch id that is not
of the id pattern (path-like, too long, empty) is a usage error naming the option, exit 2,
before anything runs — never a traceback from deep inside a step."""

from __future__ import annotations

import typer

from jobs.ids import check_run_id, parse_batch_id


def _batch(value: str) -> str:
    try:
        run, _seq = parse_batch_id(value)
        check_run_id(run)
    except ValueError:
        raise typer.BadParameter(
            f"invalid batch id {value!r}: expected '<run id>-b<sequence>', the run id of "
            "letters, digits, '-', '_' and '.' (at most 63)"
        ) from None
    return value


def run_id(value: str | None) -> str | None:
    """Callback of a run id option or argument (None passes: the option is optional)."""
    if value is None:
        return None
    try:
        return check_run_id(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def batch_id(value: str | None) -> str | None:
    """Callback of one batch id."""
    return None if value is None else _batch(value)


def batch_ids(values: list[str] | None) -> list[str] | None:
    """Callback of a list of batch ids."""
    return None if values is None else [_batch(v) for v in values]


def development_mode() -> None:
    """Development mode for this process and its children (Airflow, workers): the demo,
    the benches, the simulator and development keys may use the published secrets."""
    import os

    os.environ["BEVIS_DEV_MODE"] = "1"


def require_real_secrets(*variables: str) -> None:
    """Refuse to start a command with a published development secret (outside development
    mode): :class:`jobs.settings.DefaultSecretError`, which the ``bevis`` app turns into
    one line naming the variable and exit 2."""
    from jobs.settings import get_settings

    get_settings().refuse_published_secrets(*variables)
