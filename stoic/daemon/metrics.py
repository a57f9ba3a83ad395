"""Prometheus metrics of one daemon, in a registry of its own.

A private :class:`~prometheus_client.CollectorRegistry` per :class:`Metrics` (one per
app instance) rather than the global one: tests build many apps in one process, and
two daemons in one interpreter must not share counters.

What is measured, and why an operator wants it (``docs/operations.md`` lists them):

* batches by state (read from the store at scrape time, so it survives restarts) and
  finished batches by state and runtime;
* decisions by mode and runtime, and fallbacks to the edge;
* predicted and measured T_s per runtime, and the absolute error between them: the
  numbers that tell whether the predictor can be trusted. Two histograms rather than
  one of the signed error, because a Prometheus histogram's buckets are cumulative
  from below and its ``_sum`` counts up: negative observations break both
  (``rate(_sum)`` could fall). The bias is ``predicted − measured`` of their means;
* deployment, processing and transfer seconds per runtime;
* cloud seconds used, by cause: a batch's own run, the bootstrap runs of a new
  application version, the inquisitor's probes (each counted from ready to torn down),
  and wasted (the duplicator's price);
* the cloud budget (``requester.cloud_budget_pod_s_per_day``): the budget, what today
  spent, what is left (``stoic_cloud_budget_remaining_pod_seconds``, +Inf without a
  budget; the "budget exhausted" alert reads it) and the price λ the decisions pay;
* scheduling overhead: seconds spent deciding (estimates + policy), excluding work;
* ingest volume and rejections by error code; background task restarts;
* batches whose result waits for a failing store, and the retried writes: a locked
  database or a full disk shows here, not as a batch that silently stops;
* free space on the disks the daemon writes to, and whether each is full;
* disk usage of the data directory and the object store, and what the retention
  sweep deleted (:mod:`stoic.daemon.retention`): an edge disk fills slowly, then all
  at once;
* the operator's actions, whether the daemon is drained, and which runtimes are in
  service.

Names follow Prometheus' conventions: the ``stoic_`` prefix, the base unit last but
for ``_total`` (``stoic_cloud_used_seconds_total``), no negative observation in a
histogram. ``/metrics`` answers in the format the scraper's ``Accept`` header asks for
(:func:`render`, prometheus-client's own negotiation, as the function server does).
``deploy/grafana/stoic-dashboard.json`` charts them (a test checks that its queries
name only metrics that exist).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from stoic.predict.uplink import UplinkWatch
from stoic.storage.disk import DiskState
from stoic.values import BatchState, DeploymentSample, Outcome, ProcessingSample, TransferSample

if TYPE_CHECKING:
    from stoic.schedule.decide.budget import CloudBudget


class CloudCause(StrEnum):
    """Why a cloud runtime was held (``stoic_cloud_used_seconds_total{cause}``)."""

    BATCH = "batch"
    BOOTSTRAP = "bootstrap"
    PROBE = "probe"
    WARM = "warm"  # a pod kept warm between batches (keepalive.enabled)


_DURATION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200)
_ERROR_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
_OVERHEAD_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1)


class _ProbeCollector(Collector):
    """``stoic_probe_cloud_seconds_total{runtime}``: the inquisitor's own counter
    (``Inquisitor.cloud_s``), read at scrape time."""

    NAME = "stoic_probe_cloud_seconds"
    HELP = "Pod seconds held after ready by the inquisitor's processing probes"

    def __init__(self, held: Callable[[], Mapping[str, float]]) -> None:
        self._held = held

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.NAME, self.HELP, labels=["runtime"])
        for runtime, seconds in sorted(self._held().items()):
            family.add_metric([runtime], seconds)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.NAME, self.HELP, labels=["runtime"])


class _BudgetCollector(Collector):
    """The cloud budget's gauges, read from the core's
    :class:`~stoic.schedule.decide.budget.CloudBudget` at scrape time."""

    GAUGES = (
        ("stoic_cloud_budget_pod_seconds", "The day's cloud budget, pod-seconds x GPUs"),
        ("stoic_cloud_spent_today_pod_seconds", "Cloud pod-seconds x GPUs spent today"),
        (
            "stoic_cloud_budget_remaining_pod_seconds",
            "Cloud pod-seconds x GPUs left of today's budget (+Inf without a budget)",
        ),
        (
            "stoic_cloud_price_seconds_per_pod_second",
            "The price each decision pays per cloud pod-second x GPUs, in latency seconds",
        ),
    )

    def __init__(self, budget: CloudBudget) -> None:
        self._budget = budget

    def collect(self) -> Iterator[Metric]:
        b = self._budget
        remaining = b.remaining
        limit = math.inf if b.limit is None else b.limit
        values = (limit, b.spent_today, remaining, b.per_pod_s)
        for (name, doc), value in zip(self.GAUGES, values, strict=True):
            yield GaugeMetricFamily(name, doc, value)

    def describe(self) -> Iterator[Metric]:
        for name, doc in self.GAUGES:
            yield GaugeMetricFamily(name, doc)


class _UplinkCollector(Collector):
    """``stoic_uplink_up`` and ``stoic_uplink_outages_total`` from the inquisitor's
    :class:`~stoic.predict.uplink.UplinkWatch`, read at scrape time."""

    def __init__(self, watch: UplinkWatch) -> None:
        self._watch = watch

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "stoic_uplink_up", "1 while the last uplink check was answered", 1.0 * self._watch.up
        )
        yield CounterMetricFamily(
            "stoic_uplink_outages", "Uplink outages the checks saw start", self._watch.outages
        )

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("stoic_uplink_up", "1 while the last uplink check was answered")
        yield CounterMetricFamily("stoic_uplink_outages", "Uplink outages the checks saw start")


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


class _DiskCollector(Collector):
    """``stoic_disk_free_bytes{disk}`` and ``stoic_disk_full{disk}`` from the daemon's
    :class:`~stoic.storage.disk.DiskWatch`, read at scrape time."""

    FREE = ("stoic_disk_free_bytes", "Free bytes on the disks the daemon writes to")
    FULL = (
        "stoic_disk_full",
        "1 while a disk is below objectstore.min_free_bytes or its last write found no space",
    )

    def __init__(self, states: Callable[[], Sequence[DiskState]]) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        free = GaugeMetricFamily(*self.FREE, labels=["disk"])
        full = GaugeMetricFamily(*self.FULL, labels=["disk"])
        for d in self._states():
            if d.free_bytes is not None:
                free.add_metric([d.name], float(d.free_bytes))
            full.add_metric([d.name], 1.0 * d.full)
        yield free
        yield full

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(*self.FREE, labels=["disk"])
        yield GaugeMetricFamily(*self.FULL, labels=["disk"])


class Metrics:
    """Every metric of the daemon; the controller and the API update them."""

    def __init__(self) -> None:
        # No ``*_created`` series: in the text format they are separate gauges named
        # after the counter (``stoic_ingest_bytes_created``: a unit that is not last)
        # that Prometheus stores as data. A process-wide switch of prometheus-client.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # (prometheus-client is untyped here)
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
        self.batches_unrecorded = Gauge(
            "stoic_batches_unrecorded",
            "Batches that have run whose result waits in memory for the store to take it "
            "(a locked database, a full disk); they count as running too",
            registry=r,
        )
        self.store_write_failures = Counter(
            "stoic_store_write_failures_total",
            "Failed storage writes of a batch, by write: claim, decision, results and "
            "finish are retried with back-off until they land; a share chunk is skipped",
            ["write"],
            registry=r,
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
        self.predicted_response = Histogram(
            "stoic_predicted_response_seconds",
            "Predicted total response time T_s of finished batches, by the runtime that "
            "produced the result",
            ["runtime"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.response = Histogram(
            "stoic_response_seconds",
            "Measured total response time T_s of finished batches, by runtime",
            ["runtime"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.prediction_abs_error = Histogram(
            "stoic_prediction_abs_error_seconds",
            "Absolute error of the predicted T_s, |predicted - measured|, by runtime",
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
            "stoic_cloud_used_seconds_total",
            "Seconds cloud runtimes were held from ready to torn down, by cause: batch "
            "(a batch's own run), bootstrap (a new application version's bootstrap runs), "
            "probe (the inquisitor's deployment and processing probes), warm (a pod kept "
            "warm between batches)",
            ["runtime", "cause"],
            registry=r,
        )
        self.cloud_wasted = Counter(
            "stoic_cloud_wasted_seconds_total",
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
            "1 unless the probes find the runtime unavailable (a deployment timed out)",
            ["runtime"],
            registry=r,
        )
        self.runtime_in_service = Gauge(
            "stoic_runtime_in_service",
            "0 while an operator has taken the runtime out of service, else 1",
            ["runtime"],
            registry=r,
        )
        self.drained = Gauge(
            "stoic_dispatch_drained",
            "1 while an operator has drained the daemon (no batch is claimed)",
            registry=r,
        )
        self.operator_actions = Counter(
            "stoic_operator_actions_total",
            "Operator actions done: cancel, retry, drain, undrain, out_of_service, in_service",
            ["action"],
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
        self.data_dir_bytes = Gauge(
            "stoic_data_dir_bytes",
            "Bytes of the files under data_dir (a directory object store inside it "
            "included), walked every retention.usage_period_s",
            registry=r,
        )
        self.objectstore_bytes = Gauge(
            "stoic_objectstore_bytes",
            "Bytes in the object store: a directory store walked every "
            "retention.usage_period_s, an S3 bucket listed at each retention sweep",
            registry=r,
        )
        self.objectstore_objects = Gauge(
            "stoic_objectstore_objects", "Objects in the object store (as its bytes)", registry=r
        )
        self.retention_deleted = Counter(
            "stoic_retention_deleted_total",
            "What the retention sweep deleted: a finished batch's package (package) or a "
            "whole finished batch, its results included (batch)",
            ["what"],
            registry=r,
        )
        self.retention_last_sweep = Gauge(
            "stoic_retention_last_sweep_timestamp_seconds",
            "When the last retention sweep finished (Unix time; 0: none yet)",
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

    def watch_probes(self, held: Callable[[], Mapping[str, float]]) -> None:
        """Export ``stoic_probe_cloud_seconds_total{runtime}`` from ``held`` (the
        inquisitor's pod seconds per runtime, called at each scrape)."""
        self.registry.register(_ProbeCollector(held))

    def watch_budget(self, budget: CloudBudget) -> None:
        """Export the cloud budget's gauges (:class:`_BudgetCollector`)."""
        self.registry.register(_BudgetCollector(budget))

    def watch_disks(self, states: Callable[[], Sequence[DiskState]]) -> None:
        """Export ``stoic_disk_free_bytes{disk}`` and ``stoic_disk_full{disk}``."""
        self.registry.register(_DiskCollector(states))

    def watch_uplink(self, watch: UplinkWatch) -> None:
        """Export the uplink's state (``stoic_uplink_up``, ``stoic_uplink_outages_total``)."""
        self.registry.register(_UplinkCollector(watch))

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
            self.predicted_response.labels(runtime).observe(max(predicted_total_s, 0.0))
            self.response.labels(runtime).observe(max(outcome.total_s, 0.0))
            self.prediction_abs_error.labels(runtime).observe(
                abs(predicted_total_s - outcome.total_s)
            )
        if outcome.fell_back:
            self.fallbacks.labels(planned_runtime).inc()
        if outcome.cloud_used_s:
            self.cloud_held(planned_runtime, CloudCause.BATCH, outcome.cloud_used_s)
        if outcome.cloud_wasted_s:
            self.cloud_wasted.labels(planned_runtime).inc(outcome.cloud_wasted_s)

    def cloud_held(self, runtime: str, cause: CloudCause, seconds: float) -> None:
        """Count ``seconds`` of cloud time ``runtime`` was held for ``cause``."""
        if seconds > 0:
            self.cloud_used.labels(runtime, cause.value).inc(seconds)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition and its content type, in the format ``accept`` (the scrape's
        ``Accept`` header) asks for: Prometheus text by default, OpenMetrics on request."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
