"""Structured logs for the daemon: one JSON object per line (structlog).

Why structlog over the stdlib alone: every event of the dispatcher carries the same
keys (``batch_id``, ``runtime``, ``state``), and an operator greps or ``jq``-filters
them; a JSON line per event keeps that trivial. stdlib loggers (uvicorn, alembic,
httpx) are routed through the same renderer, so the daemon never prints two formats.

One style in library code: ``log = get_logger(__name__)`` (or an operating-interface
name such as ``stoic.controller``), then ``log.info("event", key=value, ...)``. The
logger it returns is a structlog front over a *stdlib* logger: the keys travel as the
record's ``extra``, so stdlib levels (the replay silences ``stoic`` below ERROR),
pytest's ``caplog`` and any handler a host application installs all see every event,
configured or not. Nothing is configured at import.

:func:`configure_logging` is called once by ``stoic serve`` (never at import), and is
idempotent: it installs the one handler that renders JSON (or console) lines.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
]


def configure_logging(
    level: str = "INFO", *, json_logs: bool = True, stream: TextIO | None = None
) -> None:
    """Send every logger (stoic's and the libraries') to ``stream`` (stderr) as JSON or
    console lines."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # ExtraAdder: stdlib callers pass fields as ``extra={...}``; keep them as keys.
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_stoic", False):
            root.removeHandler(old)
    handler._stoic = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn installs its own handlers when given a log_config; we pass none, so its
    # loggers propagate here. Access logs are noisy at INFO: keep them at WARNING.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # httpx logs every request at INFO (the local backend polls /healthz): too chatty.
    logging.getLogger("httpx").setLevel(logging.WARNING)


# Attributes of a stdlib LogRecord: an ``extra`` key of the same name would raise.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _to_stdlib(logger: Any, method: str, event_dict: Any) -> Any:
    """structlog's ``render_to_log_kwargs``, renaming keys a LogRecord reserves; the
    record names the caller, not structlog (three structlog frames sit in between)."""
    event_dict.setdefault("stacklevel", 4)
    for key in [k for k in event_dict if k in _RESERVED and k not in ("exc_info", "stack_info")]:
        event_dict[f"{key}_"] = event_dict.pop(key)
    return structlog.stdlib.render_to_log_kwargs(logger, method, event_dict)


def get_logger(name: str) -> Any:
    """The logger library code uses: keyword fields, emitted as stdlib records."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=[structlog.stdlib.filter_by_level, _to_stdlib],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
