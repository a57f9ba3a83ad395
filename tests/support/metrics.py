"""Reading Prometheus expositions and PromQL: the metric families a ``/metrics`` answer
exports, the metric names a query reads, and the function server's ``/metrics``."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families

from stoic.function.server import FunctionServer


@contextlib.contextmanager
def function_server() -> Iterator[str]:
    """The function's HTTP server without a function (its ``/metrics`` needs none); its URL."""
    server = FunctionServer(("127.0.0.1", 0), function=lambda _data: {})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def series_names(exposition: str) -> dict[str, str]:
    """Every series name the exposition can answer (histograms: ``_bucket``, ``_sum``,
    ``_count``; counters: ``_total``), mapped to its family's type. Families without
    samples yet (labelled metrics never touched) count: their TYPE line is there."""
    out: dict[str, str] = {}
    for family in text_string_to_metric_families(exposition):
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"),
        }.get(family.type, ("",))
        for suffix in suffixes:
            out[family.name + suffix] = family.type
    return out


PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "le",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, labels or keywords)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\$\w+", "", e)  # Grafana variables
    e = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?[smhdwy]?\b", "", e)  # numbers, durations
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end() :].lstrip().startswith("("):
            continue  # a function call
        if m.group() not in PROMQL_WORDS:
            names.add(m.group())
    return names
