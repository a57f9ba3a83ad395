"""Prometheus metrics of one daemon, in a registry of its own.

A private :class:`~prometheus_client.CollectorRegistry` per :class:`Metrics` (one per
app instance) rather than the global one: tests build many apps in one process, and
two daemons in one interpreter must not share counters.

What is measured, and why an operator wants it (``docs/operations.md`` lists them):

* batches by state (read from the store at scrape time, so it survives restarts) and
  finished batches by state and runtime;
* decisions by mode and runtime, and fallbacks to the edge;
* prediction error: predicted − actual T_s per runtime (positive: too pessimistic),
  the number that tells whether the predictor can be trusted;
* deployment, processing and transfer seconds per runtime;
* cloud seconds used and wasted (the duplicator's price);
* scheduling overhead: seconds spent deciding (estimates + policy), excluding work;
* ingest volume and rejections by error code; background task restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stoic.values import BatchState, DeploymentSample, Outcome, ProcessingSample, TransferSample

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_DURATION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200)
_ERROR_BUCKETS = (-600, -300, -120, -60, -30, -10, -5, -1, 0, 1, 5, 10, 30, 60, 120, 300, 600)
_OVERHEAD_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1)


class _StateCollector(Collector):
    """``stoic_batches{state}`` from a callback (the store), evaluated at scrape time."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "stoic_batches", "Batches in the store by state", labels=["state"]
        )
        try:
            counts = self._counts()
        except Exception:  # a scrape must not fail because the database hiccups
            counts = {}
        for state in BatchState:
            family.add_metric([state.value], float(counts.get(state.value, 0)))
        yield family

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("stoic_batches", "Batches in the store by state", labels=["state"])


class Metrics:
    """Every metric of the daemon; the controller and the API update them."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.batches_accepted = Counter(
            "stoic_batches_accepted_total", "Batches accepted by the API", registry=r
        )
        self.ingest_images = Counter(
            "stoic_ingest_images_total", "Images accepted by the API", registry=r
        )
        self.ingest_bytes = Counter(
            "stoic_ingest_bytes_total", "Package bytes accepted by the API", registry=r
        )
        self.ingest_rejected = Counter(
            "stoic_ingest_rejected_total", "Uploads rejected, by error code", ["code"], registry=r
        )
        self.batches_finished = Counter(
            "stoic_batches_finished_total",
            "Batches finished, by final state and the runtime that produced the result",
            ["state", "runtime"],
            registry=r,
        )
        self.batches_running = Gauge(
            "stoic_batches_running", "Batches being processed by this daemon now", registry=r
        )
        self.decisions = Counter(
            "stoic_decisions_total",
            "Scheduling decisions by mode and chosen runtime",
            ["mode", "runtime"],
            registry=r,
        )
        self.fallbacks = Counter(
            "stoic_fallbacks_total",
            "Batches that fell back to the edge, by planned runtime",
            ["runtime"],
            registry=r,
        )
        self.prediction_error = Histogram(
            "stoic_prediction_error_seconds",
            "Predicted minus actual total response time T_s, per runtime",
            ["runtime"],
            buckets=_ERROR_BUCKETS,
            registry=r,
        )
        self.deployment_seconds = Histogram(
            "stoic_deployment_seconds",
            "Measured deployment times T_d (batches and probes)",
            ["runtime", "outcome"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.processing_seconds = Histogram(
            "stoic_processing_seconds",
            "Measured processing times T_p",
            ["runtime"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.transfer_seconds = Histogram(
            "stoic_transfer_seconds",
            "Measured upload times T_t",
            ["runtime"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.cloud_used = Counter(
            "stoic_cloud_seconds_used_total",
            "Seconds cloud runtimes were held for batches",
            ["runtime"],
            registry=r,
        )
        self.cloud_wasted = Counter(
            "stoic_cloud_seconds_wasted_total",
            "Cloud seconds spent on work that was cancelled or thrown away",
            ["runtime"],
            registry=r,
        )
        self.scheduling_overhead = Histogram(
            "stoic_scheduling_overhead_seconds",
            "Time to decide where a batch runs (estimates and policy), excluding runtime work",
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.runtime_available = Gauge(
            "stoic_runtime_available",
            "1 if the runtime may be scheduled",
            ["runtime"],
            registry=r,
        )
        self.task_restarts = Counter(
            "stoic_task_restarts_total",
            "Background tasks restarted after a crash",
            ["task"],
            registry=r,
        )
        self.uploads_in_flight = Gauge(
            "stoic_uploads_in_flight",
            "Uploads being received and validated (at most api.max_concurrent_uploads)",
            registry=r,
        )
        self.uploads_refused = Counter(
            "stoic_uploads_refused_total",
            "Uploads answered 503 because every upload slot and the queue were taken",
            registry=r,
        )
        self.connections_dropped = Counter(
            "stoic_http_connections_dropped_total",
            "HTTP connections the server closed: header_timeout (headers too slow), "
            "body_timeout (rest of a rejected body too slow), evicted (idle, to make room "
            "under api.max_connections), refused (no room)",
            ["reason"],
            registry=r,
        )

    def watch_states(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Export ``stoic_batches{state}`` from ``counts`` (called at each scrape)."""
        self.registry.register(_StateCollector(counts))

    # Updates -------------------------------------------------------------------------

    def observe_deployment(self, s: DeploymentSample) -> None:
        self.deployment_seconds.labels(s.runtime, str(s.outcome)).observe(s.duration_s)

    def observe_processing(self, s: ProcessingSample) -> None:
        self.processing_seconds.labels(s.runtime).observe(s.duration_s)

    def observe_transfer(self, s: TransferSample) -> None:
        self.transfer_seconds.labels(s.runtime or "unknown").observe(s.seconds)

    def observe_outcome(
        self,
        outcome: Outcome,
        state: BatchState,
        *,
        planned_runtime: str,
        predicted_total_s: float | None,
    ) -> None:
        """A finished batch. Cloud seconds are labelled with the planned runtime: in
        the duplicator and after a fallback that is the cloud runtime that was held."""
        runtime = outcome.winner or outcome.runtime or planned_runtime
        self.batches_finished.labels(state.value, runtime).inc()
        if state is BatchState.DONE and predicted_total_s is not None:
            self.prediction_error.labels(runtime).observe(predicted_total_s - outcome.total_s)
        if outcome.fell_back:
            self.fallbacks.labels(planned_runtime).inc()
        if outcome.cloud_used_s:
            self.cloud_used.labels(planned_runtime).inc(outcome.cloud_used_s)
        if outcome.cloud_wasted_s:
            self.cloud_wasted.labels(planned_runtime).inc(outcome.cloud_wasted_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
