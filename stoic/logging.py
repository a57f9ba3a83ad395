"""Structured logs for the daemon: one JSON object per line (structlog).

Why structlog over the stdlib alone: every event of the dispatcher carries the same
keys (``batch_id``, ``runtime``, ``state``), and an operator greps or ``jq``-filters
them; a JSON line per event keeps that trivial. stdlib loggers (uvicorn, alembic,
httpx) are routed through the same renderer, so the daemon never prints two formats.

:func:`configure_logging` is called once by ``stoic serve`` (never at import), and is
idempotent; library code only calls :func:`get_logger`.
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
    """Send structlog and stdlib logging to ``stream`` (stderr) as JSON or console lines."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *_SHARED,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
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


def get_logger(name: str) -> Any:
    """A structlog logger; before :func:`configure_logging` it writes via stdlib defaults."""
    return structlog.stdlib.get_logger(name)
