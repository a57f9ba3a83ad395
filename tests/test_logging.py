"""No log line repeats without bound (issue 13): :class:`stoic.logging.RepeatFilter`,
and the JSON handler that ``configure_logging`` installs with it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from stoic.logging import RepeatFilter, configure_logging, get_logger


def record(
    msg: str, name: str = "uvicorn.error", level: int = logging.WARNING
) -> logging.LogRecord:
    return logging.makeLogRecord({"name": name, "levelno": level, "msg": msg})


def test_an_event_passes_max_repeats_times_per_window_then_is_counted() -> None:
    now = [0.0]
    f = RepeatFilter(3, 60.0, clock=lambda: now[0])
    passed = [f.filter(record("Invalid HTTP request received.")) for _ in range(1000)]
    assert passed == [True] * 3 + [False] * 997
    # Other events, or the same text at another level or logger, have their own count.
    assert f.filter(record("Invalid HTTP request received.", level=logging.ERROR))
    assert f.filter(record("Invalid HTTP request received.", name="asyncio"))
    assert f.filter(record("connection dropped"))
    # The next window lets it through again, saying how many were left out.
    now[0] = 60.0
    first = record("Invalid HTTP request received.")
    assert f.filter(first)
    assert first.suppressed == 997  # type: ignore[attr-defined]
    second = record("Invalid HTTP request received.")
    assert f.filter(second) and not hasattr(second, "suppressed")


@pytest.fixture
def restore_root() -> Iterator[None]:
    """configure_logging changes process-wide loggers: put them back afterwards."""
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx")
    saved = {
        n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level,
            logging.getLogger(n).propagate)
        for n in names
    }  # fmt: skip
    yield
    for n, (handlers, level, propagate) in saved.items():
        lg = logging.getLogger(n)
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


@pytest.mark.usefixtures("restore_root")
def test_the_daemon_handler_folds_a_burst_into_a_few_lines() -> None:
    out = io.StringIO()
    configure_logging("INFO", json_logs=True, stream=out, max_repeats=5, repeat_window_s=3600)
    log = get_logger("stoic.http")
    for i in range(10_000):
        log.info("connection dropped", reason="header_timeout", client=f"127.0.0.1:{i}")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    dropped = [line for line in lines if line["event"] == "connection dropped"]
    assert len(dropped) == 5
    assert dropped[-1]["client"] == "127.0.0.1:4"


def test_audit_records_always_pass() -> None:
    """An operator's actions are an audit trail: the repeat filter never drops one."""
    f = RepeatFilter(3, 60.0, clock=lambda: 0.0)
    audited = []
    for _ in range(20):
        r = record("operator action", name="stoic.operator")
        r.audit = True  # what log.info(..., audit=True) sets
        audited.append(f.filter(r))
    assert audited == [True] * 20
    assert [f.filter(record("operator action", name="stoic.operator")) for _ in range(5)] == [
        True, True, True, False, False
    ]  # fmt: skip
