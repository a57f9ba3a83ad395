"""The inquisitor: background deployment probes of the cloud runtimes (paper §3.1, §3.7).

Every ``inquisitor.period_s`` it deploys each cloud runtime, records
how long the pod took to become ready, and tears it down without running anything. This
gives the deployment predictor a time series before any batch needs a T_d estimate.

A probe that hits ``settings.predictor.deploy_timeout_s`` is recorded as a timeout sample
(its duration is the timeout: the deployment took *at least* that long) and marks the
runtime unavailable, so the scheduler stops offering it; the next successful probe marks
it available again. A refused or crashed deployment is recorded as a failure sample and
leaves availability alone (the requester retries those with back-off).

Probes of different runtimes run **concurrently**, each started on the period's grid
(``start + k·period``, so the schedule does not drift); a runtime whose previous probe
is still running (a probe can last up to the 600 s timeout, ten periods) is skipped for
that tick rather than probed twice. A runtime an operator has taken out of service
(:meth:`Availability.take_out_of_service`) is not probed until it is put back. The
replay calls :meth:`Inquisitor.probe` or
:meth:`Inquisitor.probe_all` at instants of its own choosing instead of :meth:`run`.

**Processing probes** (ours, not the paper's; every
``inquisitor.processing_probe_period_s``, default an hour, 0 turns them off).
The selector learns a runtime's T_p only from the batches it sends there, so a runtime
that had a slow spell is not chosen again and its line never learns that the spell ended
(a bandit's trap), and a runtime that only ever ran small batches has a slope its
samples cannot identify. Every period, on a pod it has deployed anyway, the inquisitor
also times the function on a probe batch (sizes ``processing_probe_images`` in turn, so
the slope is identified) and records the sample as a batch's would be: warm-up call
first, then the timed call. The images come from a :class:`ProbeWork`, which places them
where the runtime reads them *once* (the daemon: a few images of an accepted batch; the
replay: nothing to move), so a probe costs pod time, not uplink. Pod time held after
ready is counted per runtime in :attr:`Inquisitor.cloud_s`. A runtime is probed only
when nothing (no batch, no probe) has measured its T_p for a period, so a runtime in use
costs no probes, and only while :attr:`Inquisitor.worth` says its T_p could still change
a decision (the scheduler's ``worth_probing``: it could have won a recent batch with no
processing time at all). On the edge there is no pod to deploy: the edge is probed on
the inquisitor's tick when it is due and no batch is running there (a probe would share
its CPUs with the batch; one that starts while a probe runs still does, for the probe's
remainder).

**Deployment probes of their own period** (ours): ``InquisitorOptions.deploy_periods``
gives a runtime a period of its own, a whole number of ticks, first probed one such
period after the start rather than at once. The daemon sets it for cloud runtimes on
its local backend (``local.probe_period_s``): there a probe starts a TensorFlow process
on the edge's own machine, whose start-up time changes only with that machine's load,
so a probe a minute would cost a third of a core and a gigabyte of memory to learn
nothing new (docs/operations.md, "An idle daemon"). The replay never sets it.

An edge processing probe asks its :class:`ProbeWork` for images before it takes the
edge's standby, so a daemon that has no batch to probe with wakes no standby.
Pod seconds a probe holds are told to ``on_held(runtime, seconds)`` as they are
counted in :attr:`Inquisitor.cloud_s` (the daemon counts them as cloud time used).

**What a probe costs** (ours): ``deploy_worth`` (the scheduler's
``worth_deploy_probe``) may hold a deployment probe back, as ``worth`` holds back a
processing probe: when the day's cloud budget is spent, or, with probe pricing, when
what the probe would teach is worth less than its pod time (docs/scheduling.md, "The
cloud budget").

**The probe ledger** (ours; ``inquisitor.probe_share``, off by default): with a
:class:`~stoic.schedule.probe.ledger.ProbeLedger`, a cloud runtime's processing probe
starts only while that runtime's probes' pod-seconds so far are below its equal part
of that share of the batches' (the scheduler tells the ledger each batch's), its first
one excepted; a runtime it holds back stays due and asks again on its next deployment
probe.

**Uplink checks** (ours): with ``uplink`` given, every tick also asks the
:class:`~stoic.predict.uplink.UplinkCheck` whether the uplink is up and records the
answer in the :class:`~stoic.predict.uplink.UplinkWatch` the predictor reads, so a batch
that arrives while the link is down is priced with the wait (``predict/uplink.py``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from stoic.aio import cancel_and_wait
from stoic.backends.base import Deployment, Upload
from stoic.errors import BackendError, ConfigError, DeployTimeout
from stoic.logging import get_logger
from stoic.predict.uplink import UplinkCheck, UplinkWatch
from stoic.schedule.execute.legs import LegRunner, Placer
from stoic.schedule.probe.availability import Availability
from stoic.schedule.probe.ledger import ProbeLedger
from stoic.values import (
    DeploymentSample,
    Job,
    ProcessingSample,
    Runtime,
    TransferSample,
    runtime_named,
)

log = get_logger(__name__)

UPLINK_TASK = "<uplink>"  # the uplink check's key among the tasks in flight (no runtime name)


class ProbeWork(Protocol):
    """Where a processing probe's images come from."""

    async def prepare(
        self, runtime: Runtime, place: Placer, n_images: int
    ) -> tuple[Job, Upload] | None:
        """A job of ``n_images`` images (fewer if fewer exist) that ``runtime`` can
        already read, and its upload, placed once (with ``place``, the measurer's) and
        reused; None while there is nothing to probe with (no batch accepted yet)."""
        ...


@dataclass(frozen=True, slots=True)
class InquisitorOptions:
    """The inquisitor's knobs (``settings.inquisitor``; built by
    :func:`~stoic.schedule.assembly.build_core`)."""

    period_s: float = 60.0  # the probes' tick
    processing_probe_period_s: float = 3600.0  # 0: no processing probes
    processing_probe_images: tuple[int, ...] = (10, 100)  # probe sizes, in turn
    # (runtime, seconds): a deployment-probe period of its own, rounded to whole ticks,
    # the first one a period after the start (the daemon's local stand-ins)
    deploy_periods: tuple[tuple[str, float], ...] = ()

    def ticks_between_probes(self, name: str) -> int | None:
        """Ticks between deployment probes of ``name`` when it has a period of its
        own, else None (every tick, from the first)."""
        for runtime, seconds in self.deploy_periods:
            if runtime == name:
                return max(1, round(seconds / self.period_s))
        return None


class ProcessingClock:
    """A recorder that notes when each runtime's T_p was last measured (a batch's or a
    probe's): it sits in the leg runner's recorder chain, and the inquisitor reads it."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    async def deployment(self, sample: DeploymentSample) -> None:
        return None

    async def processing(self, sample: ProcessingSample) -> None:
        self.last[sample.runtime] = max(sample.at, self.last.get(sample.runtime, sample.at))

    async def transfer(self, sample: TransferSample) -> None:
        return None


class Inquisitor:
    """Probes cloud deployment times and keeps :class:`Availability` up to date."""

    def __init__(
        self,
        legs: LegRunner,
        availability: Availability,
        work: ProbeWork | None = None,
        *,
        uplink: tuple[UplinkCheck, UplinkWatch] | None = None,
        worth: Callable[[str], bool] = lambda _name: True,
        deploy_worth: Callable[[str], bool] = lambda _name: True,
        measured: ProcessingClock | None = None,
        options: InquisitorOptions = InquisitorOptions(),
        on_held: Callable[[str, float], None] | None = None,
        ledger: ProbeLedger | None = None,
    ) -> None:
        self.legs = legs  # the requester's: the same backends, recorder, clock, options
        self.availability = availability
        self.runtimes = legs.runtimes
        self.work = work
        self.uplink = uplink
        self.options = options
        # Whether a runtime's T_p could still change a decision (the scheduler's
        # Scheduler.worth_probing); default: always.
        self.worth = worth
        # Whether a deployment probe may run now (the scheduler's worth_deploy_probe:
        # the cloud budget and probe pricing); default: always.
        self.deploy_worth = deploy_worth
        self.probes = 0  # probes started (metrics)
        self.skipped = 0  # ticks skipped because the previous probe still ran
        self.processing_probes = 0  # processing probes timed
        # runtime -> pod seconds held after ready (the processing probes' cloud cost)
        self.cloud_s: dict[str, float] = {}
        self.on_held = on_held
        # The scheduler's probe ledger (inquisitor.probe_share): a cloud processing
        # probe starts only while the batches have paid for it; None: always.
        self.ledger = ledger
        # runtime -> clock time of its newest T_p sample, a batch's or a probe's: a
        # runtime that batches keep measuring needs no probe. ``measured`` must be in
        # legs' recorder chain to see the batches' (build_core puts it there).
        self._last_processing = (measured or ProcessingClock()).last
        self._turn: dict[str, int] = {}  # runtime -> processing probes started

    def cloud_runtimes(self) -> list[Runtime]:
        """The cloud runtimes to probe: those an operator has not taken out of service."""
        return [
            r
            for r in self.runtimes.values()
            if not r.is_edge and self.availability.in_service(r.name)
        ]

    async def probe(self, name: str) -> DeploymentSample:
        """Deploy ``name``, measure readiness, record the sample, tear down.

        Backend errors become samples (timeout or failure), never exceptions; anything
        else (a bug) propagates, and :meth:`run` logs it and carries on.
        """
        runtime = runtime_named(self.runtimes, name, ConfigError)
        if runtime.is_edge:
            raise ConfigError(f"runtime {name!r} is the edge; only cloud runtimes are probed")
        loop = asyncio.get_running_loop()
        self.probes += 1
        probe = await self.legs.probe_deploy(runtime)
        sample = probe.sample
        if isinstance(probe.error, DeployTimeout):
            self.availability.mark_unavailable(name, self.legs.clock.now(), f"probe: {probe.error}")
        elif probe.error is not None:
            log.warning("probe failed", runtime=name, error=str(probe.error))
        else:
            assert probe.deployment is not None
            ready = loop.time()
            admitted = ran = False
            try:
                if self._processing_due(name) and self._admitted(name):
                    admitted = True
                    ran = await self._time_processing(runtime, probe.deployment)
            finally:
                now = loop.time()
                self.cloud_s[name] = self.cloud_s.get(name, 0.0) + now - ready
                if self.ledger is not None:
                    if admitted and not ran:
                        self.ledger.returned(name)
                    self.ledger.held(name, now - ready, admitted=ran)
                if self.on_held is not None:
                    self.on_held(name, now - ready)
                await self.legs.release(runtime, probe.deployment)
            self.availability.mark_available(name, self.legs.clock.now(), "probe succeeded")
        log.info(
            "deployment probed",
            runtime=name,
            duration_s=sample.duration_s,
            outcome=str(sample.outcome),
        )
        await self.legs.record_deployment(sample)
        return sample

    def _admitted(self, name: str) -> bool:
        """Whether the probe ledger lets a processing probe of cloud runtime ``name``
        start now (always without a ledger)."""
        return self.ledger is None or self.ledger.admit(name)

    def _processing_due(self, name: str) -> bool:
        period = self.options.processing_probe_period_s
        if self.work is None or period <= 0:
            return False
        last = self._last_processing.get(name)
        stale = last is None or self.legs.clock.now() - last >= period
        return stale and self.worth(name)

    async def _time_processing(self, runtime: Runtime, deployment: Deployment) -> bool:
        """Warm the pod and time the function on a probe batch (the measurer records
        T_p). A backend error is logged (the next period tries again), never raised.
        False where there was no probe batch (no images yet): the probe ledger then
        keeps the runtime's first probe for one that can run."""
        got = await self._probe_job(runtime)
        if got is not None:
            await self._time_on(runtime, deployment, *got)
        return got is not None

    async def _probe_job(self, runtime: Runtime) -> tuple[Job, Upload] | None:
        """The probe batch of this turn, placed where ``runtime`` reads it (None: no
        images yet, or placing them failed). Counts as a probe's measurement, so a
        runtime is not asked again before its period is over."""
        assert self.work is not None
        name = runtime.name
        self._last_processing[name] = self.legs.clock.now()  # also when it fails
        sizes = self.options.processing_probe_images
        turn = self._turn.get(name, 0)
        self._turn[name] = turn + 1
        try:
            return await self.work.prepare(
                runtime, functools.partial(self.legs.place, runtime), sizes[turn % len(sizes)]
            )
        except BackendError as exc:
            log.warning("processing probe failed", runtime=name, error=str(exc))
            return None

    async def _time_on(
        self, runtime: Runtime, deployment: Deployment, job: Job, upload: Upload
    ) -> None:
        name = runtime.name
        try:
            seconds = await self.legs.time_processing(runtime, deployment, job, upload)
        except BackendError as exc:
            log.warning("processing probe failed", runtime=name, error=str(exc))
            return
        self.processing_probes += 1
        log.info("processing probed", runtime=name, images=job.n_images, duration_s=seconds)

    async def check_uplink(self) -> bool | None:
        """One uplink check, recorded in the watch (None: no check configured). A check
        that raises is a bug of ours: logged, not recorded."""
        if self.uplink is None:
            return None
        check, watch = self.uplink
        try:
            up = await check()
        except Exception:
            log.exception("uplink check crashed; continuing")
            return None
        was_up = watch.up
        ended = watch.observe(up)
        if ended is not None:
            log.info("uplink up again", outage_s=ended)
        elif was_up and not up:
            log.warning("uplink down", expected_wait_s=watch.wait_s())
        return up

    async def probe_all(self) -> list[DeploymentSample]:
        """Probe every cloud runtime concurrently; returns the samples in runtime order."""
        return list(await asyncio.gather(*(self.probe(r.name) for r in self.cloud_runtimes())))

    def edge_runtimes(self) -> list[Runtime]:
        return [r for r in self.runtimes.values() if r.is_edge]

    async def probe_edge_processing(self, runtime: Runtime) -> None:
        """A processing probe on the edge: no deployment to time, nothing to tear down
        but the backend's handle; the standby is taken only once there are images."""
        got = await self._probe_job(runtime)
        if got is None:
            return
        deployment = await self.legs.standby(runtime)
        try:
            await self._time_on(runtime, deployment, *got)
        finally:
            await self.legs.release(runtime, deployment)

    async def _guarded_edge(self, runtime: Runtime) -> None:
        try:
            await self.probe_edge_processing(runtime)
        except Exception:
            log.exception("edge processing probe crashed; continuing", runtime=runtime.name)

    async def _guarded(self, name: str) -> None:
        try:
            await self.probe(name)
        except Exception:
            log.exception("probe crashed; continuing", runtime=name)

    async def run(self) -> None:
        """Probe forever on the period's grid (first tick at once); cancel to stop.

        Cancelling waits for the probes in flight to stop (their backends tear down).
        """
        loop = asyncio.get_running_loop()
        period = self.options.period_s
        start = loop.time()
        in_flight: dict[str, asyncio.Task[object]] = {}
        tick = 0
        log.info("inquisitor started", period_s=period)
        try:
            while True:
                checking = in_flight.get(UPLINK_TASK)
                if self.uplink is not None and (checking is None or checking.done()):
                    in_flight[UPLINK_TASK] = asyncio.create_task(
                        self.check_uplink(), name="inquisitor:uplink"
                    )
                for runtime in self.cloud_runtimes():
                    every = self.options.ticks_between_probes(runtime.name)
                    if every is not None and (tick == 0 or tick % every):
                        continue
                    previous = in_flight.get(runtime.name)
                    if previous is not None and not previous.done():
                        self.skipped += 1
                        log.info("previous probe still running", runtime=runtime.name)
                        continue
                    if not self.deploy_worth(runtime.name):
                        continue
                    in_flight[runtime.name] = asyncio.create_task(
                        self._guarded(runtime.name), name=f"inquisitor:{runtime.name}"
                    )
                for runtime in self.edge_runtimes():
                    previous = in_flight.get(runtime.name)
                    free = previous is None or previous.done()
                    idle = not self.legs.in_use[runtime.name]  # no batch on its CPUs
                    if free and idle and self._processing_due(runtime.name):
                        in_flight[runtime.name] = asyncio.create_task(
                            self._guarded_edge(runtime), name=f"inquisitor:{runtime.name}"
                        )
                tick += 1
                await asyncio.sleep(max(0.0, start + tick * period - loop.time()))
        finally:
            await cancel_and_wait(in_flight.values())
            log.info("inquisitor stopped", probes=self.probes)
