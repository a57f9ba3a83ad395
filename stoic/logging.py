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

No line repeats without bound: the handler carries a :class:`RepeatFilter` that lets
through at most ``log.max_repeats`` records of one event (logger, level and message
template) per ``log.repeat_window_s`` and counts the rest; the first record after a
window that dropped some carries ``suppressed=N``. An attack that makes the daemon log
per connection (asyncio's accept errors, uvicorn's "Invalid HTTP request received",
our own "connection dropped") then costs a few lines a minute, not hundreds of MB.
An audit record (``audit=True``: an operator's action, which only a holder of the
token or a page session can cause) always passes: a trail with holes is no trail.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import structlog

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
]


class RepeatFilter(logging.Filter):
    """At most ``max_repeats`` records per event per ``window_s``; the rest are counted
    and reported as ``suppressed`` on the event's first record of a later window.
    Thread-safe (records come from the event loop and from worker threads)."""

    def __init__(
        self,
        max_repeats: int = 10,
        window_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.max_repeats, self.window_s, self._clock = max_repeats, window_s, clock
        self._seen: dict[tuple[str, int, str], list[float | int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "audit", False) is True:
            return True
        key = (record.name, record.levelno, str(record.msg)[:200])
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is None or now - entry[0] >= self.window_s:
                suppressed = int(entry[2]) if entry is not None else 0
                self._seen[key] = [now, 1, 0]
                if len(self._seen) > 10_000:  # forget the oldest windows
                    for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:5_000]:
                        del self._seen[old]
                if suppressed:
                    record.suppressed = suppressed
                return True
            entry[1] = int(entry[1]) + 1
            if entry[1] <= self.max_repeats:
                return True
            entry[2] = int(entry[2]) + 1
            return False


def configure_logging(
    level: str = "INFO",
    *,
    json_logs: bool = True,
    stream: TextIO | None = None,
    max_repeats: int = 10,
    repeat_window_s: float = 60.0,
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
    handler.addFilter(RepeatFilter(max_repeats, repeat_window_s))
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
    # Alembic says which SQL dialect it drives at every start; only an upgrade is news.
    logging.getLogger("alembic.runtime.migration").addFilter(_alembic_news)


def _alembic_news(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(("Context impl", "Will assume"))


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
    """The logger library code uses: keyword fields, emitted as stdlib records.

    Cached on first use: everything it is made of is given here, so nothing a later
    ``structlog.configure`` sets would change it, and an uncached proxy builds a new
    bound logger at every call (a replay logs a few lines per batch)."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=[structlog.stdlib.filter_by_level, _to_stdlib],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
