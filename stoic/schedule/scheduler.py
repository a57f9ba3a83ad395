"""The scheduler: the whole per-batch path, shared by the daemon and the replay.

    job ──► estimates of the *available* runtimes (predictor)
        ──► policy.decide (selector, duplicator, baselines)   = a Plan
        ──► requester.run (deploy, upload, warm, invoke, cancel the loser)
        ──► Outcome (measured components; samples already recorded)

It owns nothing but the wiring and two concerns of its own:

* **scheduling overhead**: the CPU seconds spent in estimate + decide, measured with
  ``time.perf_counter`` (not the loop clock: under looptime and in the replay the loop
  clock does not move while Python computes), carried on the plan (``Plan.decision_s``)
  and copied to ``Outcome.decision_s``.
* **which runtimes are still contenders** (:meth:`Scheduler.worth_probing`, asked by
  the inquisitor before a processing probe): a runtime whose predicted T_t + T_d alone
  exceeded the best predicted total of each of the last :data:`PROBE_LOOKBACK` batches
  could not have won any of them however fast it processes, so timing its processing
  buys nothing and costs pod time.
* **the cloud budget** (:mod:`stoic.schedule.decide.budget`): each decision takes the
  budget's price (one online step of it) and hands it to the policy; a preview only
  quotes it. With a budget, no probe runs once the day's budget is spent; with
  ``inquisitor.probe_pricing`` a probe runs only when its value (:meth:`probe_value`)
  exceeds its price, and a deployment probe at most once per runtime between two
  decisions: what it teaches is used at the next decision, and a second probe before
  that adds little the window does not hold.
* **the probe ledger** (``inquisitor.probe_share``,
  :mod:`stoic.schedule.probe.ledger`): every batch it runs is told to the ledger, whose
  share of the batches' pod-seconds the inquisitor's processing probes may hold; the
  bootstrap's runs are not batches and fund no probe.
* **bootstrapping** (paper §3.7): when an application version is first seen, run two
  representative tasks on every runtime so that the processing regression has points
  of its own instead of priors. :class:`ObservationCounter` counts processing samples
  per (app, version, runtime) as they are recorded; the daemon seeds it from the store
  at start-up so a restart does not bootstrap again. The daemon may ask for less
  (``controller.bootstrap_scope = "contenders"``, ``contenders_of=job``): the edge
  first, then only the runtimes that could win the batch at hand with no processing
  time at all (:func:`contenders`, the argument of :meth:`Scheduler.worth_probing`):
  a fitted line cannot change a decision that the runtime's transfer and deployment
  alone already lose. Such a runtime stays missing, and a later batch it could win
  bootstraps it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Any

from stoic.errors import BackendError, PredictorError
from stoic.logging import get_logger
from stoic.schedule.decide.budget import FREE, CloudBudget, Price, probe_value
from stoic.schedule.decide.policy import PolicyOptions, decide
from stoic.schedule.execute.recorder import PredictorLike
from stoic.schedule.execute.requester import Requester
from stoic.schedule.probe.availability import Availability
from stoic.schedule.probe.ledger import ProbeLedger
from stoic.schedule.share.session import ChunkSink
from stoic.values import (
    ZERO,
    DeploymentSample,
    Estimate,
    Job,
    Mode,
    Outcome,
    Plan,
    ProcessingSample,
    RacePlan,
    SinglePlan,
    TransferSample,
)

log = get_logger(__name__)

PROBE_LOOKBACK = 24
"""Batches :meth:`Scheduler.worth_probing` looks back on (a day of the paper's hourly
camera-trap batches)."""


def probe_values(estimates: Mapping[str, Estimate]) -> dict[str, tuple[float, float]]:
    """Per runtime, what learning its T_p and its T_d would be worth to this batch
    (:func:`~stoic.schedule.decide.budget.probe_value`): each against the best other
    runtime's predicted total, the runtime's other components at their means."""
    out: dict[str, tuple[float, float]] = {}
    totals = {n: e.total.mean for n, e in estimates.items()}
    for name, e in estimates.items():
        others = [t for n, t in totals.items() if n != name]
        if not others:
            continue
        best = min(others)
        t, d, p = e.transfer.mean, e.deployment, e.processing
        out[name] = (
            probe_value(best - t - d.mean, p.mean, p.std),
            probe_value(best - t - p.mean, d.mean, d.std),
        )
    return out


def contenders(estimates: Mapping[str, Estimate]) -> frozenset[str]:
    """The runtimes that could have won with no processing time at all: predicted
    T_t + T_d below the best predicted total."""
    if not estimates:
        return frozenset()
    best = min(e.total.mean for e in estimates.values())
    return frozenset(
        name for name, e in estimates.items() if e.transfer.mean + e.deployment.mean < best
    )


def warm_estimate(e: Estimate) -> Estimate:
    """``e`` on a warm pod: T_d is 0, and no deployment can time out or run long."""
    risk = replace(e.risk, p_timeout=0.0, deployment_excess_s=0.0, deployment_quantile_s=0.0)
    return replace(e, deployment=ZERO, risk=risk)


class ObservationCounter:
    """A :class:`~stoic.schedule.execute.requester.Recorder` that counts processing samples per
    (app, app_version, runtime): what "has been observed" means for bootstrapping."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()

    def seed(self, app: str, app_version: str, runtime: str, count: int) -> None:
        """Add ``count`` samples already in the store (daemon start-up)."""
        self.counts[(app, app_version, runtime)] += count

    def count(self, app: str, app_version: str, runtime: str) -> int:
        return self.counts[(app, app_version, runtime)]

    async def deployment(self, sample: DeploymentSample) -> None:
        return None

    async def processing(self, sample: ProcessingSample) -> None:
        self.counts[(sample.app, sample.app_version, sample.runtime)] += 1

    async def transfer(self, sample: TransferSample) -> None:
        return None


@dataclass(frozen=True, slots=True)
class SchedulerOptions:
    """The scheduler's own knobs (``settings.policy``; built by
    :func:`~stoic.schedule.assembly.build_core`)."""

    bootstrap_tasks_per_runtime: int = 2  # representative tasks per runtime (paper §3.7)
    probe_pricing: bool = False  # inquisitor.probe_pricing: probes earn their cost
    probe_price_s_per_pod_s: float = 0.01  # the probes' least price (no budget, or λ below)


@dataclass(frozen=True, slots=True)
class BootstrapRun:
    """One bootstrap run, told to ``on_run`` as it starts (``outcome`` None) and again
    when it has run: the ``run``-th of ``runs`` planned so far (a scope of contenders
    may plan fewer as the edge's own line prices the others)."""

    runtime: str
    run: int
    runs: int
    n_images: int
    outcome: Outcome | None = None


@dataclass(slots=True)
class BootstrapReport:
    """What one bootstrap did: outcomes per runtime, and the runs that failed."""

    app: str
    app_version: str
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return sum(len(v) for v in self.outcomes.values())


@dataclass(eq=False)
class Scheduler:
    """Estimates → policy → requester, plus bootstrapping of new application versions.
    ``observed`` counts what the leg runner's recorder chain hands it (build_core puts
    it there)."""

    predictor: PredictorLike
    requester: Requester
    availability: Availability
    options: SchedulerOptions = SchedulerOptions()
    policy_options: PolicyOptions = field(default_factory=PolicyOptions)
    _: KW_ONLY
    observed: ObservationCounter = field(default_factory=ObservationCounter)
    budget: CloudBudget | None = None
    # inquisitor.probe_share: told every batch's pod-seconds; the inquisitor asks it
    ledger: ProbeLedger | None = None
    decisions: int = field(default=0, init=False)
    decision_s_total: float = field(default=0.0, init=False)
    _bootstrap_locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict, init=False)
    _contenders: deque[frozenset[str]] = field(
        default_factory=lambda: deque(maxlen=PROBE_LOOKBACK), init=False
    )
    # Per decision: what learning each runtime's (T_p, T_d) was worth (probe_values);
    # and the pod-seconds of its probes by the newest estimates (T_d, T_p).
    _values: deque[dict[str, tuple[float, float]]] = field(
        default_factory=lambda: deque(maxlen=PROBE_LOOKBACK), init=False
    )
    _probe_pod_s: dict[str, tuple[float, float]] = field(default_factory=dict, init=False)
    # deployment probes since the last decision
    _deploy_probed: set[str] = field(default_factory=set, init=False)

    # The per-batch path ----------------------------------------------------------------

    def estimate(self, job: Job) -> dict[str, Estimate]:
        """The predictor's estimates of every *available* runtime for ``job``; a
        runtime with a warm pod (``settings.keepalive``) has no T_d to pay, nor its risk."""
        estimates = self.predictor.estimate_all(
            job.n_images,
            job.n_bytes,
            app=job.app,
            app_version=job.app_version,
            runtimes=self.availability.available_in_order(),
        )
        pool = self.requester.legs.warm_pods
        if pool is not None:
            for name in pool.warm() & estimates.keys():
                estimates[name] = warm_estimate(estimates[name])
        return estimates

    def preview(
        self,
        job: Job,
        *,
        mode: Mode = Mode.SELECTOR,
        pinned: str | None = None,
        price: Price | None = None,
    ) -> Plan:
        """Estimate the available runtimes and decide, timed (``Plan.decision_s``), but
        commit to nothing: ``GET /v1/estimate`` asks this (at the budget's price of now,
        unstepped)."""
        t = time.perf_counter()
        if price is None:
            price = self.budget.quote() if self.budget is not None else FREE
        estimates = self.estimate(job)
        plan = decide(mode, job, estimates, options=self.policy_options, pinned=pinned, price=price)
        return replace(plan, decision_s=time.perf_counter() - t)

    def plan(
        self,
        job: Job,
        *,
        mode: Mode,
        pinned: str | None = None,
    ) -> Plan:
        """The decision for a batch about to run: :meth:`preview`, counted and logged."""
        price = self.budget.price() if self.budget is not None else FREE
        plan = self.preview(job, mode=mode, pinned=pinned, price=price)
        self._contenders.append(contenders(plan.estimates))
        if self.options.probe_pricing:
            self._values.append(probe_values(plan.estimates))
        for name, e in plan.estimates.items():
            d = e.deployment.mean + e.risk.deployment_excess_s
            self._probe_pod_s[name] = (d, e.processing.mean)
        self._deploy_probed.clear()
        self.decisions += 1
        self.decision_s_total += plan.decision_s
        log.info(
            "batch scheduled",
            batch_id=job.batch_id,
            n_images=job.n_images,
            mode=str(mode),
            runtime=plan.chosen,
            speculative=isinstance(plan, RacePlan),
            reason=plan.reason,
            available=list(plan.estimates),
            decision_s=plan.decision_s,
        )
        return plan

    def worth_probing(self, runtime: str) -> bool:
        """Whether timing ``runtime``'s processing could change a decision: it was a
        :func:`contenders` member for one of the last :data:`PROBE_LOOKBACK` batches,
        or no batch has been planned yet; with a budget, only while some is left; with
        probe pricing, only where its value exceeds its price."""
        if self.budget is not None and self.budget.remaining <= 0:
            return False
        if self.options.probe_pricing and self._values:
            return self._earns(runtime, 0, self._probe_pod_s.get(runtime, (0.0, 0.0))[1])
        return not self._contenders or any(runtime in c for c in self._contenders)

    def worth_deploy_probe(self, runtime: str) -> bool:
        """Whether the inquisitor's deployment probe of ``runtime`` may run now (it asks
        at each tick; a yes counts as a probe): always, unless a budget is spent or, with
        probe pricing, the runtime was probed since the last decision or its value is
        below its price. A runtime missing from the last decision (unavailable) is
        probed once between decisions, so a probe can find it back."""
        if self.budget is not None and self.budget.remaining <= 0:
            return False
        if not self.options.probe_pricing or not self._values:
            return True
        if runtime in self._deploy_probed:
            return False
        if runtime in self._values[-1] and not self._earns(
            runtime, 1, self._probe_pod_s[runtime][0]
        ):
            return False
        self._deploy_probed.add(runtime)
        return True

    def probe_value(self, runtime: str, which: int) -> float:
        """Seconds of latency a probe of ``runtime``'s T_p (``which`` 0) or T_d (1)
        could buy a likely batch: the mean over the recent decisions of what it was
        worth to each (:func:`probe_values`; 0 where the runtime was not offered)."""
        seen = [v[runtime][which] for v in self._values if runtime in v]
        return sum(seen) / len(self._values) if seen else 0.0

    def _earns(self, runtime: str, which: int, pod_s: float) -> bool:
        """Whether a probe of ``runtime`` holding ``pod_s`` is worth its price: the
        budget's λ, at least ``probe_price_s_per_pod_s``, per pod-second × GPUs."""
        lam = self.budget.quote().per_pod_s if self.budget is not None else 0.0
        per = max(lam, self.options.probe_price_s_per_pod_s)
        r = self.requester.legs.runtimes.get(runtime)
        gpus = max(r.gpus, 1) if r is not None else 1
        return self.probe_value(runtime, which) > per * pod_s * gpus

    async def handle(
        self,
        job: Job,
        *,
        mode: Mode,
        pinned: str | None = None,
        on_plan: Callable[[Plan], Awaitable[None]] | None = None,
        done: Mapping[int, Any] | None = None,
        on_chunk: ChunkSink | None = None,
    ) -> tuple[Plan, Outcome]:
        """Schedule and run one batch: plan, tell ``on_plan`` (the daemon records the
        decision and counts it), run the plan (share mode: ``done``/``on_chunk``, see
        :meth:`Requester.run`). Errors of the requester propagate (typed)."""
        pool = self.requester.legs.warm_pods
        if pool is not None:
            pool.arrived(self.requester.clock.now())
        plan = self.plan(job, mode=mode, pinned=pinned)
        if on_plan is not None:
            await on_plan(plan)
        outcome = await self.requester.run(job, plan, done=done, on_chunk=on_chunk)
        if self.ledger is not None:
            self.ledger.batch(plan, outcome)
        return plan, replace(outcome, decision_s=plan.decision_s)

    # Bootstrapping (paper §3.7) -----------------------------------------------------------

    @property
    def tasks_per_runtime(self) -> int:
        return self.options.bootstrap_tasks_per_runtime

    def missing(
        self, app: str, app_version: str, *, contenders_of: Job | None = None
    ) -> dict[str, int]:
        """Bootstrap runs still needed per *available* runtime (configured order).

        An unavailable runtime cannot be bootstrapped now; when it comes back it is
        missing again, and the next call bootstraps just that one. With
        ``contenders_of``, only the edge and the runtimes that could win that job with
        no processing time at all, on the estimates of now.
        """
        need = self.tasks_per_runtime
        out = {}
        for name in self.availability.available_in_order():
            have = self.observed.count(app, app_version, name)
            if have < need:
                out[name] = need - have
        if contenders_of is not None and out:
            could = contenders(
                self.estimate(replace(contenders_of, app=app, app_version=app_version))
            )
            out = {n: k for n, k in out.items() if n in could or self._is_edge(n)}
        return out

    def _is_edge(self, name: str) -> bool:
        runtime = self.requester.legs.runtimes.get(name)
        return runtime is not None and runtime.is_edge

    def needs_bootstrap(
        self, app: str, app_version: str, *, contenders_of: Job | None = None
    ) -> bool:
        return bool(self.missing(app, app_version, contenders_of=contenders_of))

    async def bootstrap(
        self,
        app: str,
        app_version: str,
        representative_jobs: Sequence[Job],
        *,
        contenders_of: Job | None = None,
        on_run: Callable[[BootstrapRun], None] | None = None,
    ) -> BootstrapReport:
        """Run the missing representative tasks, runtime after runtime.

        Sequential on purpose: concurrent uploads would share the uplink and concurrent
        runs the edge's CPUs, and both would teach the models wrong numbers. Runs never
        fall back to the edge (that would count as the edge's sample, not this
        runtime's); a failed run is logged and reported, and the runtime stays
        "missing" so the next batch of this version tries again. Concurrent callers for
        the same version wait for one another, so it runs once.

        ``contenders_of`` (the daemon's batch at hand): the edge first, then each other
        runtime only if it is still a contender when its turn comes (:meth:`missing`).
        ``on_run`` hears of each run as it starts and when it has run
        (:class:`BootstrapRun`).
        """
        if not representative_jobs:
            raise PredictorError(f"bootstrap of {app} {app_version}: no representative jobs")
        lock = self._bootstrap_locks.setdefault((app, app_version), asyncio.Lock())
        report = BootstrapReport(app, app_version)
        async with lock:
            missing = self.missing(app, app_version, contenders_of=contenders_of)
            order = list(missing)
            if contenders_of is not None:
                order.sort(key=lambda n: not self._is_edge(n))  # its line prices the rest
            log.info(
                "bootstrapping",
                app=app,
                app_version=app_version,
                missing=missing,
            )
            runs = 0
            for turn, runtime in enumerate(order):
                if contenders_of is not None and turn > 0:
                    now_missing = self.missing(app, app_version, contenders_of=contenders_of)
                    if runtime not in now_missing:
                        log.info(
                            "bootstrap skipped: the runtime could not win this batch",
                            runtime=runtime,
                            app=app,
                            app_version=app_version,
                        )
                        continue
                    planned = runs + sum(now_missing[n] for n in order[turn:] if n in now_missing)
                else:
                    planned = runs + sum(missing[n] for n in order[turn:])
                n = missing[runtime]
                done = self.tasks_per_runtime - n
                for i in range(done, self.tasks_per_runtime):
                    base = representative_jobs[i % len(representative_jobs)]
                    job = replace(
                        base,
                        batch_id=f"{base.batch_id}:bootstrap:{runtime}:{i}",
                        app=app,
                        app_version=app_version,
                    )
                    runs += 1
                    run = BootstrapRun(runtime, runs, planned, job.n_images)
                    if on_run is not None:
                        on_run(run)
                    why = f"bootstrap {app} {app_version} on {runtime}"
                    plan = SinglePlan(runtime, mode=Mode.PINNED, reason=why)
                    try:
                        outcome = await self.requester.run(job, plan, fallback=False)
                    except BackendError as exc:
                        log.warning(
                            "bootstrap run failed",
                            runtime=runtime,
                            batch_id=job.batch_id,
                            error=str(exc),
                        )
                        report.failures.setdefault(runtime, []).append(str(exc))
                        break  # the runtime is in trouble; do not hammer it
                    report.outcomes.setdefault(runtime, []).append(outcome)
                    if on_run is not None:
                        on_run(replace(run, outcome=outcome))
        return report
