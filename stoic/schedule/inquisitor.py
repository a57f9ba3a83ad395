"""The inquisitor: background deployment probes of the cloud runtimes (paper §3.1, §3.7).

Every ``settings.predictor.inquisitor_period_s`` it deploys each cloud runtime, records
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
that tick rather than probed twice. The replay calls :meth:`Inquisitor.probe` or
:meth:`Inquisitor.probe_all` at instants of its own choosing instead of :meth:`run`.
"""

from __future__ import annotations

import asyncio

from stoic.aio import cancel_and_wait
from stoic.errors import BackendError, ConfigError, DeployTimeout
from stoic.logging import get_logger
from stoic.schedule.availability import Availability
from stoic.schedule.legs import LegRunner, backend_for, deploy_guarded
from stoic.values import DeploymentSample, DeployOutcome, Runtime

log = get_logger(__name__)


class Inquisitor:
    """Probes cloud deployment times and keeps :class:`Availability` up to date."""

    def __init__(self, legs: LegRunner, availability: Availability) -> None:
        self.legs = legs  # the requester's: the same backends, recorder, clock, settings
        self.availability = availability
        self.runtimes = legs.runtimes
        self.settings = legs.settings
        self.probes = 0  # probes started (metrics)
        self.skipped = 0  # ticks skipped because the previous probe still ran
        for r in self.cloud_runtimes():
            backend_for(legs.backends, r)  # fail at start-up on a missing backend

    def cloud_runtimes(self) -> list[Runtime]:
        return [r for r in self.runtimes.values() if not r.is_edge]

    async def probe(self, name: str) -> DeploymentSample:
        """Deploy ``name``, measure readiness, record the sample, tear down.

        Backend errors become samples (timeout or failure), never exceptions; anything
        else (a bug) propagates, and :meth:`run` logs it and carries on.
        """
        try:
            runtime = self.runtimes[name]
        except KeyError:
            raise ConfigError(f"unknown runtime {name!r}; have {list(self.runtimes)}") from None
        if runtime.is_edge:
            raise ConfigError(f"runtime {name!r} is the edge; only cloud runtimes are probed")
        loop = asyncio.get_running_loop()
        backend = backend_for(self.legs.backends, runtime)
        timeout = self.settings.predictor.deploy_timeout_s
        grace = self.settings.requester.deploy_guard_grace_s
        self.probes += 1
        at, t = self.legs.clock.now(), loop.time()
        try:
            deployment = await deploy_guarded(backend, runtime, timeout, grace)
        except DeployTimeout as exc:
            sample = DeploymentSample(name, at, timeout, DeployOutcome.TIMEOUT)
            self.availability.mark_unavailable(name, self.legs.clock.now(), f"probe: {exc}")
        except BackendError as exc:
            sample = DeploymentSample(name, at, loop.time() - t, DeployOutcome.FAILURE)
            log.warning("probe failed", runtime=name, error=str(exc))
        else:
            sample = DeploymentSample(name, at, loop.time() - t, DeployOutcome.OK)
            try:
                await backend.teardown(deployment)
            except Exception:
                log.exception("probe teardown failed", runtime=name)
            self.availability.mark_available(name, self.legs.clock.now(), "probe succeeded")
        log.info(
            "deployment probed",
            runtime=name,
            duration_s=sample.duration_s,
            outcome=str(sample.outcome),
        )
        await self.legs.recorder.deployment(sample)
        return sample

    async def probe_all(self) -> list[DeploymentSample]:
        """Probe every cloud runtime concurrently; returns the samples in runtime order."""
        return list(await asyncio.gather(*(self.probe(r.name) for r in self.cloud_runtimes())))

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
        period = self.settings.predictor.inquisitor_period_s
        start = loop.time()
        in_flight: dict[str, asyncio.Task[None]] = {}
        tick = 0
        log.info("inquisitor started", period_s=period)
        try:
            while True:
                for runtime in self.cloud_runtimes():
                    previous = in_flight.get(runtime.name)
                    if previous is not None and not previous.done():
                        self.skipped += 1
                        log.info("previous probe still running", runtime=runtime.name)
                        continue
                    in_flight[runtime.name] = asyncio.create_task(
                        self._guarded(runtime.name), name=f"inquisitor:{runtime.name}"
                    )
                tick += 1
                await asyncio.sleep(max(0.0, start + tick * period - loop.time()))
        finally:
            await cancel_and_wait(in_flight.values())
            log.info("inquisitor stopped", probes=self.probes)
