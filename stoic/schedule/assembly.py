"""The scheduling core, assembled once: :func:`build_core` for the daemon and the replay.

Both worlds run the same core ("two worlds, one code path", docs/architecture.md); they
differ in the backends, the clock, where samples go (the ``make_recorder`` they pass)
and the probe work. Everything a part needs comes through its constructor, in this
order, so no part is finished by setting attributes after it was built:

1. the uplink watch (only with an uplink check and an inquisitor), then the
   :class:`~stoic.predict.predictor.Predictor` that prices its wait;
2. the :class:`~stoic.schedule.probe.availability.Availability` registry, with the
   runtimes known to be down (the daemon restores them from its store);
3. the recorder chain: the caller's recorder (made from the predictor), the
   scheduler's :class:`~stoic.schedule.scheduler.ObservationCounter` (bootstrap
   counts) and, with an inquisitor, its
   :class:`~stoic.schedule.probe.inquisitor.ProcessingClock` (when each T_p was last
   measured), in that order;
4. the :class:`~stoic.schedule.execute.legs.LegRunner` on that chain, the
   :class:`~stoic.schedule.execute.requester.Requester`, the
   :class:`~stoic.schedule.scheduler.Scheduler` and the
   :class:`~stoic.schedule.probe.inquisitor.Inquisitor` (asking the scheduler's
   ``worth_probing``), both given the
   :class:`~stoic.schedule.probe.ledger.ProbeLedger` when ``inquisitor.probe_share`` is
   set (the scheduler tells it the batches, the inquisitor asks it before a processing
   probe).

The one difference between the worlds is :class:`Probing`, which says why.
``tests/test_assembly.py`` compares a daemon core and a replay core part by part, and
checks that no other production module constructs these classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import partial

from stoic.backends.base import RuntimeBackend
from stoic.clock import Clock
from stoic.predict.predictor import Predictor, PredictorOptions
from stoic.predict.uplink import UplinkCheck, UplinkWatch
from stoic.schedule.decide.budget import BudgetOptions, CloudBudget, utc_day
from stoic.schedule.decide.policy import PolicyOptions
from stoic.schedule.execute.keepalive import KeepAliveOptions
from stoic.schedule.execute.legs import LegOptions, LegRunner, release_on
from stoic.schedule.execute.recorder import MultiRecorder, Recorder
from stoic.schedule.execute.requester import Requester
from stoic.schedule.execute.warm import WarmPool
from stoic.schedule.probe.availability import Availability, AvailabilityChange, Listener
from stoic.schedule.probe.inquisitor import (
    Inquisitor,
    InquisitorOptions,
    ProbeWork,
    ProcessingClock,
)
from stoic.schedule.probe.ledger import ProbeLedger
from stoic.schedule.scheduler import ObservationCounter, Scheduler, SchedulerOptions
from stoic.schedule.share.session import ShareOptions
from stoic.settings import Settings
from stoic.values import DeploymentSample, ProcessingSample, Runtime


class Probing(StrEnum):
    """How long the inquisitor's own loop runs: the one way the worlds' cores differ.

    ``loop``: for the core's whole life (the daemon; a replay with ``probes=full``).
    ``warmup``: a replay longer than a week (``probes=window``) runs the loop only for
    its warm-up, then walks the probe ticks between batches with the inquisitor's rules
    (``stoic.replay.runner``, docs/replay.md), which check no uplink: the predictor is
    built without the uplink watch, so it never prices a wait from a state no check
    refreshes any more.
    """

    LOOP = "loop"
    WARMUP = "warmup"


@dataclass(frozen=True, slots=True)
class Core:
    """The parts of one scheduling core, as :func:`build_core` wired them."""

    predictor: Predictor
    availability: Availability
    recorder: MultiRecorder  # the whole chain the leg runner hands every sample to
    observed: ObservationCounter
    legs: LegRunner
    requester: Requester
    scheduler: Scheduler
    inquisitor: Inquisitor | None
    uplink: UplinkWatch | None  # the watch the inquisitor's checks feed
    budget: CloudBudget  # what the cloud cost today, and its price (the leg runner's meter)


def inquisitor_options(settings: Settings) -> InquisitorOptions:
    i = settings.inquisitor
    return InquisitorOptions(
        period_s=i.period_s,
        processing_probe_period_s=i.processing_probe_period_s,
        processing_probe_images=tuple(i.processing_probe_images),
    )


def leg_options(settings: Settings) -> LegOptions:
    r = settings.requester
    return LegOptions(
        deploy_timeout_s=settings.predictor.deploy_timeout_s,
        deploy_guard_grace_s=r.deploy_guard_grace_s,
        retry_attempts=r.retry_attempts,
        retry_initial_s=r.retry_initial_s,
        retry_factor=r.retry_factor,
        warmup=r.warmup,
    )


def share_options(settings: Settings) -> ShareOptions:
    s = settings.share
    return ShareOptions(
        chunk_factor=s.chunk_factor,
        min_chunk_s=s.min_chunk_s,
        prefetch_chunks=s.prefetch_chunks,
        max_hedges=s.max_hedges,
    )


def keepalive_options(settings: Settings) -> KeepAliveOptions:
    """The settings' ``keepalive`` section, field for field."""
    return KeepAliveOptions(**settings.keepalive.model_dump())


def cold_deploy_s(predictor: Predictor) -> Callable[[str], float]:
    """What a cold deployment of a runtime costs, as the predictor expects it: the
    median window, the tail above it, and a timeout's seconds at its probability."""

    def cold(runtime: str) -> float:
        model = predictor.deployment_model(runtime)
        risk = model.risk()
        ready = model.estimate().mean + risk.deployment_excess_s
        return (1.0 - risk.p_timeout) * ready + risk.p_timeout * risk.timeout_s

    return cold


def scheduler_options(settings: Settings) -> SchedulerOptions:
    i = settings.inquisitor
    return SchedulerOptions(
        bootstrap_tasks_per_runtime=settings.policy.bootstrap_tasks_per_runtime,
        probe_pricing=i.probe_pricing,
        probe_price_s_per_pod_s=i.probe_price_s_per_pod_s,
    )


def budget_options(settings: Settings) -> BudgetOptions:
    r = settings.requester
    return BudgetOptions(r.cloud_budget_pod_s_per_day, r.cloud_price_step)


def wants_inquisitor(settings: Settings) -> bool:
    """Whether a core of these settings probes: the inquisitor is on and there is a
    cloud runtime to probe."""
    return settings.controller.inquisitor and any(not r.is_edge for r in settings.runtime_list())


def build_core(
    settings: Settings,
    backends: Mapping[str, RuntimeBackend],
    clock: Clock,
    *,
    make_recorder: Callable[[Predictor], Recorder],
    runtimes: Iterable[Runtime] | None = None,
    down: Iterable[AvailabilityChange] = (),
    on_availability: Listener | None = None,
    probe_work: ProbeWork | None = None,
    uplink_check: UplinkCheck | None = None,
    policy: PolicyOptions | None = None,
    probing: Probing = Probing.LOOP,
    probe_options: InquisitorOptions | None = None,
    on_probe_held: Callable[[str, float], None] | None = None,
    on_warm_held: Callable[[str, float], None] | None = None,
    day_start: Callable[[float], float] = utc_day,
) -> Core:
    """Build the core (module docstring).

    ``make_recorder(predictor)`` is where samples go (the daemon: store, predictor and
    metrics; the replay: the predictor); ``runtimes`` defaults to the settings';
    ``down`` are runtimes already known to be unavailable (no listener hears them);
    ``policy`` replaces :meth:`PolicyOptions.from_settings` (the replay's modes),
    ``probe_options`` :func:`inquisitor_options` (the daemon's: its local stand-ins'
    own probe period); ``on_probe_held`` hears the pod seconds each probe holds,
    ``on_warm_held`` those each warm pod idled (``settings.keepalive``; the cloud
    budget is charged them too); ``day_start`` says when the cloud budget's day begins
    (the daemon's local midnight).
    """
    by_name = {r.name: r for r in (runtimes or settings.runtime_list())}
    probes = wants_inquisitor(settings)
    watch = (
        UplinkWatch(clock, settings.inquisitor.period_s)
        if probes and uplink_check is not None
        else None
    )
    predictor = Predictor(
        PredictorOptions.from_settings(settings),
        uplink=watch if probing is Probing.LOOP else None,
        clock=clock.now,
    )
    availability = Availability(by_name.values(), down=down, listener=on_availability)
    observed = ObservationCounter()
    measured = ProcessingClock() if probes else None
    chain = MultiRecorder(
        make_recorder(predictor), observed, *([measured] if measured is not None else [])
    )
    gpus = {name: r.gpus for name, r in by_name.items()}
    budget = CloudBudget(budget_options(settings), gpus, clock.now, day_start)
    keep = keepalive_options(settings)
    warm = (
        WarmPool(
            keep,
            clock=clock,
            cold_s=cold_deploy_s(predictor),
            release=partial(release_on, backends),
            on_held=partial(_warm_held, budget, on_warm_held),
            price=budget.quote,
        )
        if keep.enabled
        else None
    )
    legs = LegRunner(
        backends,
        by_name,
        chain,
        clock,
        leg_options(settings),
        availability,
        budget.charge,
        warm_pods=warm,
    )
    requester = Requester(
        legs,
        predictor,
        fallback_to_edge=settings.requester.fallback_to_edge,
        share=share_options(settings),
        price=budget.quote,
    )
    share = settings.inquisitor.probe_share
    clouds = [name for name, r in by_name.items() if not r.is_edge]
    ledger = ProbeLedger(share, gpus, clouds) if probes and share is not None else None
    scheduler = Scheduler(
        predictor,
        requester,
        availability,
        scheduler_options(settings),
        policy or PolicyOptions.from_settings(settings),
        observed=observed,
        budget=budget,
        ledger=ledger,
    )
    inquisitor = (
        Inquisitor(
            legs,
            availability,
            probe_work,
            uplink=(uplink_check, watch) if uplink_check is not None and watch else None,
            worth=scheduler.worth_probing,
            deploy_worth=scheduler.worth_deploy_probe,
            measured=measured,
            options=probe_options or inquisitor_options(settings),
            on_held=on_probe_held,
            ledger=ledger,
        )
        if probes
        else None
    )
    return Core(
        predictor=predictor,
        availability=availability,
        recorder=chain,
        observed=observed,
        legs=legs,
        requester=requester,
        scheduler=scheduler,
        inquisitor=inquisitor,
        uplink=watch,
        budget=budget,
    )


def warm_predictor(settings: Settings, core: Core, app: str, app_version: str) -> None:
    """Pay the predictor's lazy imports and first fits (calibration, the processing
    regression) on a throw-away predictor, then one estimate on the core's, so no
    batch's decision time includes them."""
    scratch = Predictor(PredictorOptions.from_settings(settings))
    name = core.predictor.runtimes[0]
    for i in range(1, 2 * settings.predictor.processing_history + 2):
        scratch.observe_processing(
            ProcessingSample("warm-up", "0", name, i, i * 1000, 1.0 + 0.5 * i, float(i))
        )
        scratch.observe_deployment(DeploymentSample(name, float(i), 1.0 + (i % 3)))
    scratch.estimate_all(10, 10_000, app="warm-up", app_version="0")
    core.predictor.estimate_all(1, 212_000, app=app, app_version=app_version)


def _warm_held(
    budget: CloudBudget, then: Callable[[str, float], None] | None, runtime: str, seconds: float
) -> None:
    """A warm pod's idle seconds: against the cloud budget, then to ``then`` (the
    daemon's cloud usage, cause ``warm``)."""
    budget.charge(runtime, seconds)
    if then is not None:
        then(runtime, seconds)
