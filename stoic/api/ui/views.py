"""What the operator page shows, read from a running controller.

Each part of the page (status, batches, runtimes, usage) and a batch's page has a
``*_job`` function: called on the event loop, it takes what lives in memory there and
returns a :data:`Job` that does the rest in a worker thread (:mod:`.render`):

* what the scheduler knows of the runtimes and the uplink comes from the read model
  that ``GET /v1/runtimes`` renders too (:mod:`stoic.daemon.runtime_view`), taken on
  the event loop (the scheduler mutates it there, so a worker thread must not read it);
* the database reads, in the thread, use the indexed queries of
  :class:`~stoic.store.store.Store` (``batch_counts``, ``list_batches``,
  ``recent_outcomes``, ``usage_since``: each one short read transaction, bounded by
  ``ui.*`` limits; ``tests/test_ui_load.py`` checks their query plans);
* charts are drawn in the thread too (a few hundred points at most) into SVG strings.

So a fragment refresh reads only what its part needs, and nothing here runs long on
the loop.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from markupsafe import Markup

from stoic import __version__
from stoic.api.health import readiness
from stoic.api.ui.charts import Series, share_chart, time_chart
from stoic.clock import local_midnight
from stoic.daemon.actions import drain_state
from stoic.daemon.controller import Controller
from stoic.daemon.dispatcher import Drain
from stoic.daemon.metrics import CloudCause
from stoic.daemon.progress import Board, Progress
from stoic.daemon.runtime_view import RuntimeState, UplinkState, built, runtime_states, uplink_state
from stoic.errors import ObjectNotFound, StoicError
from stoic.storage.objectstore import ObjectStore
from stoic.store.store import BatchOutcome, BatchRecord, CloudUsage, Store, UsageRow
from stoic.values import BatchState, DeployOutcome, Mode

T = TypeVar("T")
Job = Callable[[], T]
"""The part of a view's work that runs in a worker thread (database reads, charts)."""

COMPONENTS = (
    ("transfer_s", "T_t"),
    ("deployment_s", "T_d"),
    ("processing_s", "T_p"),
    ("total_s", "T_s"),
)


# Status ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusView:
    version: str
    ready: bool
    checks: dict[str, str]
    state: str
    uptime_s: float | None
    mode: str
    duplicator_runtime: str
    counts: dict[str, int]
    running_here: int
    max_concurrent: int
    runtimes_available: int
    runtimes_total: int
    now: float
    uplink: UplinkState | None = None  # None: no uplink checks configured
    drained: Drain | None = None  # an operator's drain (stoic.daemon.actions)


async def status_job(c: Controller) -> Job[StatusView]:
    ready = await readiness(c)
    now = c.clock.now()
    s = c.settings
    names = c.runtime_names
    available = sum(1 for n in names if c.availability.is_available(n)) if built(c) else 0
    store = c.store
    view = StatusView(
        version=__version__,
        ready=ready.ready,
        checks=ready.checks,
        state="draining" if c.draining else str(c.state),
        uptime_s=None if c.started_at is None else max(now - c.started_at, 0.0),
        mode=str(s.requester.default_mode),
        duplicator_runtime=s.requester.duplicator_runtime,
        counts={},
        running_here=len(c.running),
        max_concurrent=s.controller.max_concurrent_batches,
        runtimes_available=available,
        runtimes_total=len(names),
        now=now,
        uplink=uplink_state(c),
        drained=drain_state(c),
    )

    def read() -> StatusView:
        try:
            counts = {state.value: n for state, n in store.batch_counts().items()}
        except StoicError:
            return view
        return replace(view, counts=counts)

    return read


# Batches -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchRow:
    """One batch as the table shows it."""

    record: BatchRecord
    runtime: str | None
    """Where the result came from (else the decision's runtime; None while queued)."""
    placement: str
    """Where it ran, or how it was shared: ``gpu1``, ``gpu1 → edge`` (fell back),
    ``edge ∥ gpu1 → edge`` (the duplicator raced them; the edge's result was kept)."""
    predicted: dict[str, float] | None
    """The estimate of ``runtime`` at decision time (``Estimate.as_dict()``)."""
    progress: Progress | None = None
    """What it is doing now (queued or running), as the dispatcher tells it."""

    @property
    def finished(self) -> bool:
        return self.record.state.final

    @property
    def end_to_end_s(self) -> float | None:
        """From acceptance to result: T_s plus queueing, model and bootstrap."""
        b = self.record
        return None if b.finished_at is None else b.finished_at - b.created_at


def batch_row(b: BatchRecord, edge: str | None, board: Board | None = None) -> BatchRow:
    chosen, winner = b.chosen_runtime, b.winner
    runtime = winner or chosen
    if chosen is None:
        placement = f"pinned to {b.pinned_runtime}" if b.pinned_runtime else "not decided yet"
    elif b.mode is Mode.DUPLICATOR and edge is not None and chosen != edge:
        placement = f"{edge} ∥ {chosen}" + (f" → {winner}" if winner else "")
    elif winner is not None and winner != chosen:
        placement = f"{chosen} → {winner}"
    else:
        placement = chosen
    predicted = b.estimates.get(runtime) if runtime is not None else None
    return BatchRow(b, runtime, placement, predicted, board.of(b) if board else None)


def batches_job(c: Controller, limit: int) -> Job[list[BatchRow]]:
    store, edge, board = c.store, c.edge, c.progress()

    def read() -> list[BatchRow]:
        return [batch_row(b, edge, board) for b in store.list_batches(None, limit)]

    return read


@dataclass(frozen=True, slots=True)
class EstimateLine:
    runtime: str
    values: dict[str, float]
    chosen: bool
    result: bool


@dataclass(frozen=True, slots=True)
class BatchDetail:
    row: BatchRow
    estimates: list[EstimateLine]
    results: list[dict[str, Any]] | None
    results_note: str | None
    labels: list[tuple[str, int]]


def batch_detail_job(c: Controller, batch_id: str) -> Job[BatchDetail]:
    """One batch with its estimate table and per-image results (the job raises
    BatchNotFound if there is none)."""
    store, objects, edge, board = c.store, c.objects, c.edge, c.progress()
    return lambda: batch_detail(store, objects, edge, batch_id, board)


def batch_detail(
    store: Store, objects: ObjectStore, edge: str | None, batch_id: str, board: Board | None = None
) -> BatchDetail:
    b = store.get_batch(batch_id)
    row = batch_row(b, edge, board)
    lines = [
        EstimateLine(name, values, name == b.chosen_runtime, name == row.runtime)
        for name, values in sorted(b.estimates.items(), key=lambda kv: kv[1].get("total_s", 0))
    ]
    results: list[dict[str, Any]] | None = None
    note: str | None = None
    if b.state is BatchState.DONE and b.results_key:
        try:
            raw = objects.get_bytes(b.results_key)
            results = [r for r in json.loads(raw).get("results", []) if isinstance(r, dict)]
        except ObjectNotFound:
            note = "the results document is gone from the object store"
        except (StoicError, ValueError) as exc:
            note = f"the results document cannot be read: {exc}"
    elif b.state in (BatchState.QUEUED, BatchState.RUNNING):
        note = f"the batch is {b.state.value}; results appear when it is done"
    labels = Counter(str(r.get("label")) for r in results or [] if r.get("label") is not None)
    return BatchDetail(row, lines, results, note, labels.most_common())


def top_score(result: dict[str, Any]) -> float | None:
    scores = result.get("scores")
    label = result.get("label")
    if isinstance(scores, dict) and label in scores:
        try:
            return float(scores[label])
        except (TypeError, ValueError):
            return None
    return None


# Runtimes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuntimeView:
    """A runtime's card: the read model's record and what only the page draws."""

    state: RuntimeState
    batches: int
    mean_abs_error_s: float | None
    deploy_chart: Markup | None
    """None for the edge, which never deploys."""
    accuracy_chart: Markup


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def accuracy_chart(name: str, outcomes: list[BatchOutcome]) -> Markup:
    """Predicted and measured T_s of the batches ``name`` produced, over time (as the
    paper's Figure 3)."""
    mine = [o for o in outcomes if o.runtime == name]
    predicted = [(o.finished_at, o.predicted_s) for o in mine if o.predicted_s is not None]
    return time_chart(
        f"{name}: predicted vs actual T_s",
        [
            Series(
                "predicted",
                "predicted",
                predicted,
                tips=[f"{_clock(x)} predicted {y:.1f} s" for x, y in predicted],
            ),
            Series(
                "actual",
                "actual",
                [(o.finished_at, o.actual_s) for o in mine],
                tips=[
                    f"{_clock(o.finished_at)} actual {o.actual_s:.1f} s (batch {o.batch_id[:8]})"
                    for o in mine
                ],
            ),
        ],
        empty="no batch ran here yet",
    )


def deploy_chart(state: RuntimeState) -> Markup | None:
    """The deployment samples of a cloud runtime over time (None for the edge)."""
    if state.is_edge:
        return None
    samples = state.recent_deployments
    ok = [(d.at, d.duration_s) for d in samples if d.outcome is DeployOutcome.OK]
    bad = [d for d in samples if d.outcome is not DeployOutcome.OK]
    return time_chart(
        f"{state.name}: deployment T_d",
        [
            Series("ok", "ok", ok, tips=[f"{_clock(x)} ready in {y:.1f} s" for x, y in ok]),
            Series(
                "timeout/failure",
                "bad",
                [(d.at, d.duration_s) for d in bad],
                line=False,
                tips=[f"{_clock(d.at)} {d.outcome} after {d.duration_s:.1f} s" for d in bad],
            ),
        ],
        empty="no deployment measured yet",
    )


def runtimes_job(c: Controller) -> Job[list[RuntimeView]]:
    """Every configured runtime (none before the controller has built its predictor)."""
    states = runtime_states(c, deployments=c.settings.ui.chart_deployments)
    store, n = c.store, c.settings.ui.chart_batches
    return lambda: runtime_views(states, store.recent_outcomes(n) if states else [])


def runtime_views(states: list[RuntimeState], outcomes: list[BatchOutcome]) -> list[RuntimeView]:
    out: list[RuntimeView] = []
    for state in states:
        mine = [o for o in outcomes if o.runtime == state.name]
        errors = [abs(o.predicted_s - o.actual_s) for o in mine if o.predicted_s is not None]
        out.append(
            RuntimeView(
                state=state,
                batches=len(mine),
                mean_abs_error_s=sum(errors) / len(errors) if errors else None,
                deploy_chart=deploy_chart(state),
                accuracy_chart=accuracy_chart(state.name, outcomes),
            )
        )
    return out


# Usage -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuntimeUsage:
    """One runtime's line of "Today": the results it produced and the cloud seconds it
    was held, by cause (a batch's own run, bootstrap runs, probes) and wasted."""

    name: str
    results: int
    batch_s: float
    bootstrap_s: float
    probe_s: float
    wasted_s: float

    @property
    def used_s(self) -> float:
        return self.batch_s + self.bootstrap_s + self.probe_s


@dataclass(frozen=True, slots=True)
class UsageView:
    since: float
    batches: int
    failed: int
    cloud_used_s: float
    """Every cause: batches, bootstrap runs and probes."""
    cloud_wasted_s: float
    by_cause: dict[str, float]
    """Cloud seconds per cause (batch, bootstrap, probe)."""
    per_runtime: list[RuntimeUsage]
    """Batch seconds are counted against the runtime the decision planned (in the
    duplicator, the cloud pod that was raced)."""
    share_chart: Markup


def usage_view(
    rows: list[UsageRow],
    since: float,
    runtime_names: list[str],
    outside: list[CloudUsage] | None = None,
) -> UsageView:
    """ "Today" from the batches finished since ``since`` and the cloud seconds held
    outside batches (``outside``: the store's day rows of bootstrap runs and probes)."""
    results: Counter[str] = Counter()
    used: defaultdict[str, float] = defaultdict(float)
    wasted: defaultdict[str, float] = defaultdict(float)
    other: defaultdict[tuple[str, str], float] = defaultdict(float)
    failed = 0
    for r in rows:
        if r.state is BatchState.FAILED:
            failed += r.batches
        else:
            results[r.winner or r.chosen_runtime or "?"] += r.batches
        planned = r.chosen_runtime or "?"
        used[planned] += r.cloud_used_s
        wasted[planned] += r.cloud_wasted_s
    for u in outside or []:
        other[(u.runtime, u.cause)] += u.seconds
    seen = set(results) | set(used) | {name for name, _ in other}
    names = list(runtime_names) + sorted(seen - set(runtime_names) - {"?"})
    per = [
        RuntimeUsage(
            n,
            results[n],
            used[n],
            other[(n, CloudCause.BOOTSTRAP.value)],
            other[(n, CloudCause.PROBE.value)],
            wasted[n],
        )
        for n in names
    ]
    shares = [(n, results[n]) for n in names if results[n]]
    if failed:
        shares.append(("failed", failed))
    by_cause = {
        CloudCause.BATCH.value: sum(used.values()),
        CloudCause.BOOTSTRAP.value: sum(u.bootstrap_s for u in per),
        CloudCause.PROBE.value: sum(u.probe_s for u in per),
    }
    return UsageView(
        since=since,
        batches=sum(results.values()) + failed,
        failed=failed,
        cloud_used_s=sum(by_cause.values()),
        cloud_wasted_s=sum(wasted.values()),
        by_cause=by_cause,
        per_runtime=per,
        share_chart=share_chart("batches per runtime today", shares),
    )


def usage_job(c: Controller) -> Job[UsageView]:
    since = local_midnight(c.clock.now())
    store, names = c.store, list(c.runtime_names)
    return lambda: usage_view(store.usage_since(since), since, names, store.cloud_usage_on(since))
