"""Structured logging with identity numbers masked as a last line of defence.

Code should never log identity numbers, names or birth dates: log pseudonymous ids and
order ids. In case it does anyway, every string that reaches a log line passes
:func:`mask_identity_numbers`, whether it goes through our structlog configuration, the
standard library's logging (Airflow, GX, httpx), or a logger from :func:`get_logger`.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog

# Swedish personnummer / samordningsnummer: (CC)YYMMDD[-+]NNNN with a plausible month and a
# day 01-31 or 61-91 (samordningsnummer); 10 or 12 digits, with or without separator.
_DAY = r"(?:0[1-9]|[12]\d|3[01]|6[1-9]|[78]\d|9[01])"
IDENTITY_NUMBER = re.compile(
    rf"(?<!\d)(?:(?:18|19|20)\d{{2}}|\d{{2}})(?:0[1-9]|1[0-2]){_DAY}[-+ ]?\d{{4}}(?!\d)"
)
MASK = "[IDNR]"


def mask_identity_numbers(text: str) -> str:
    """Replace anything shaped like a Swedish identity number with ``[IDNR]``."""
    return IDENTITY_NUMBER.sub(MASK, text)


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return mask_identity_numbers(value)
    if isinstance(value, Mapping):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return (
            type(value)(_mask(v) for v in value)
            if not isinstance(value, set)
            else {_mask(v) for v in value}
        )
    if isinstance(value, BaseException):
        return mask_identity_numbers(f"{type(value).__name__}: {value}")
    if isinstance(value, int | float | bool) or value is None:
        # A bare 10/12 digit integer could be an identity number too.
        if isinstance(value, int) and not isinstance(value, bool):
            masked = mask_identity_numbers(str(value))
            return value if masked == str(value) else masked
        return value
    return mask_identity_numbers(str(value))


def mask_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask every value of the event, including the message."""
    return {k: _mask(v) for k, v in event_dict.items()}


class MaskingFilter(logging.Filter):
    """stdlib logging filter: formats the record, masks it, and freezes the result."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not crash the caller
            message = str(record.msg)
        record.msg = mask_identity_numbers(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = mask_identity_numbers(
                logging.Formatter().formatException(record.exc_info)
            )
            record.exc_info = None
        return True


_configured = False


class _StderrLogger:
    """Writes to whatever ``sys.stderr`` is at the moment of the call (test runners and
    Airflow swap it; a logger bound to the old stream would write to a closed file)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _stderr_logger_factory(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


class _StderrHandler(logging.StreamHandler):
    """A stdlib handler on the current ``sys.stderr`` (see :class:`_StderrLogger`)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(level: str = "INFO", json: bool = False) -> None:
    """Configure structlog and stdlib logging for the CLI (Airflow configures its own)."""
    global _configured
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level]),
        logger_factory=_stderr_logger_factory,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    if not _configured:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        _configured = True
    root.setLevel(logging.WARNING if level == "INFO" else level)
    install_masking_filter()


def install_masking_filter() -> None:
    """Attach :class:`MaskingFilter` to every handler of the root logger (idempotent)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())


class MaskedLogger:
    """A structlog logger that masks its arguments itself, whatever the global configuration
    (ours in the CLI, Airflow's inside a task)."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger

    def bind(self, **kw: Any) -> MaskedLogger:
        return MaskedLogger(self._logger.bind(**_mask(kw)))

    def _emit(self, level: str, event: str, *args: Any, **kw: Any) -> None:
        if args:
            event = event % args
        getattr(self._logger, level)(mask_identity_numbers(str(event)), **_mask(kw))

    def debug(self, event: str, *args: Any, **kw: Any) -> None:
        self._emit("debug", event, *args, **kw)

    def info(self, event: str, *args: Any, **kw: Any) -> None:
        self._emit("info", event, *args, **kw)

    def warning(self, event: str, *args: Any, **kw: Any) -> None:
        self._emit("warning", event, *args, **kw)

    def error(self, event: str, *args: Any, **kw: Any) -> None:
        self._emit("error", event, *args, **kw)

    def exception(self, event: str, *args: Any, **kw: Any) -> None:
        # The traceback is rendered downstream; mask it by passing it pre-rendered.
        import traceback

        kw["exc"] = mask_identity_numbers(traceback.format_exc())
        self._emit("error", event, *args, **kw)


def get_logger(name: str | None = None) -> MaskedLogger:
    """The logger every bevis module uses."""
    return MaskedLogger(structlog.get_logger(name))
