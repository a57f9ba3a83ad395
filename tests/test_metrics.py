"""Metrics: Prometheus naming, and one exposition format for the controller and the
function server (the dashboard and alert rules that read them: ``test_monitoring.py``).

No TensorFlow: the controller runs with the fake backend, and the function server is
started without its function (its ``/metrics`` route needs none).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import Histogram
from prometheus_client.parser import text_string_to_metric_families

from stoic.daemon.metrics import Metrics
from stoic.values import BatchState, Mode, Outcome
from tests.support.daemon import Daemon
from tests.support.metrics import function_server as serving_function

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# What Prometheus 2.x sends by default.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.fixture
def function_server() -> Iterator[str]:
    """The function's HTTP server without a function: /metrics is served regardless."""
    with serving_function() as url:
        yield url


def touched_metrics() -> Metrics:
    """A Metrics with one observation in every child of every histogram and counter."""
    metrics = Metrics()
    for value in vars(metrics).values():
        if isinstance(value, Histogram):
            names = value._labelnames
            (value.labels(*["x"] * len(names)) if names else value).observe(1.0)
    metrics.observe_outcome(
        Outcome("b1", "gpu1", Mode.SELECTOR, total_s=50.0, cloud_used_s=30.0, cloud_wasted_s=5.0),
        BatchState.DONE,
        planned_runtime="gpu1",
        predicted_total_s=20.0,  # 30 s too optimistic: no negative observation anywhere
    )
    return metrics


def test_names_follow_prometheus_conventions(function_server: str) -> None:
    text = touched_metrics().render()[0].decode()
    function_text = httpx.get(f"{function_server}/metrics").text
    families = list(text_string_to_metric_families(text)) + list(
        text_string_to_metric_families(function_text)
    )
    assert len(families) >= 15
    for family in families:
        name = family.name
        assert name.startswith("stoic_"), name
        for unit in ("seconds", "bytes"):
            if unit in name.split("_"):
                # The base unit comes last (a counter's _total after it).
                assert name.endswith("_" + unit), f"{name}: the unit {unit!r} is not last"
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                assert float(sample.labels["le"]) >= 0, f"{name}: negative bucket"
            if sample.name.endswith(("_sum", "_count")) or family.type == "counter":
                assert sample.value >= 0, f"{sample.name} = {sample.value}"
    names = {f.name for f in families}
    assert {"stoic_cloud_used_seconds", "stoic_cloud_wasted_seconds"} <= names
    assert "stoic_prediction_abs_error_seconds" in names


def test_prediction_error_splits_into_predicted_measured_and_absolute() -> None:
    metrics = Metrics()
    for predicted, actual in ((20.0, 50.0), (70.0, 50.0)):
        metrics.observe_outcome(
            Outcome("b", "gpu1", Mode.SELECTOR, total_s=actual),
            BatchState.DONE,
            planned_runtime="gpu1",
            predicted_total_s=predicted,
        )
    samples = {
        (s.name, s.labels.get("runtime")): s.value
        for f in text_string_to_metric_families(metrics.render()[0].decode())
        for s in f.samples
    }
    assert samples[("stoic_predicted_response_seconds_sum", "gpu1")] == 90.0
    assert samples[("stoic_response_seconds_sum", "gpu1")] == 100.0
    assert samples[("stoic_prediction_abs_error_seconds_sum", "gpu1")] == 50.0
    assert samples[("stoic_prediction_abs_error_seconds_count", "gpu1")] == 2.0


@pytest.mark.parametrize("accept", [None, OPENMETRICS, PROMETHEUS_ACCEPT, "text/plain"])
async def test_controller_and_function_speak_the_same_format(
    daemon: Daemon, function_server: str, accept: str | None
) -> None:
    headers = {"Accept": accept} if accept else {}
    controller = await daemon.client.get("/metrics", headers=headers)
    function = await asyncio.to_thread(httpx.get, f"{function_server}/metrics", headers=headers)
    assert controller.status_code == function.status_code == 200
    assert controller.headers["content-type"] == function.headers["content-type"]
    if accept and "openmetrics" in accept:
        assert controller.headers["content-type"].startswith("application/openmetrics-text")
        assert controller.text.rstrip().endswith("# EOF")
    else:
        assert controller.headers["content-type"].startswith("text/plain")
