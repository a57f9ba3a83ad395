"""One runtime's part in a batch (a :class:`Leg`) and the :class:`LegRunner` that runs it.

Both ways of executing a plan are built from the same steps: the single-runtime path
runs deploy → upload → warm → invoke on one leg, and the duplicator runs an edge leg and
a cloud leg side by side (:mod:`stoic.schedule.execute.duplicator`). Keeping the steps in one
place means each measurement is taken, and handed to the
:class:`~stoic.schedule.execute.recorder.Recorder`, the same way whichever path ran it:

* deploy with retry and exponential back-off on :class:`DeployFailure` (0.1 s, ×2, 10
  attempts, then :class:`RetriesExhausted`); a :class:`DeployTimeout` is not retried and
  marks the runtime unavailable. T_d of the edge is zero by definition, so it is not
  recorded;
* upload the package (T_t, recorded for cloud runtimes);
* warm a cloud pod with a one-image call (paper §3.7);
* invoke (T_p, always recorded);
* tear down, idempotently, never masking the result.

:class:`LegRunner` is a concrete object built with exactly what the steps need
(backends, runtimes, recorder, clock, settings, availability); the requester, its
duplicator and the inquisitor hold the same one, as an httpx ``Client`` holds its
transport, so its recorder (the whole chain, built by
:func:`stoic.schedule.assembly.build_core`: the scheduler's observation counter among
them) sees every measurement. The inquisitor deploys and tears down runtimes with the
module-level helpers (:func:`backend_for`, :func:`deploy_guarded`), outside any batch.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from stoic.backends.base import Deployment, Invocation, RuntimeBackend, Upload
from stoic.clock import Clock
from stoic.errors import ConfigError, DeployFailure, DeployTimeout, RetriesExhausted
from stoic.logging import get_logger
from stoic.schedule.execute.recorder import Recorder
from stoic.schedule.probe.availability import Availability
from stoic.settings import Settings
from stoic.values import (
    DeploymentSample,
    DeployOutcome,
    Job,
    Outcome,
    ProcessingSample,
    Runtime,
    TransferSample,
)

log = get_logger(__name__)


# Helpers shared with the inquisitor ---------------------------------------------------


def backend_for(backends: Mapping[str, RuntimeBackend], runtime: Runtime) -> RuntimeBackend:
    """The backend of ``runtime``: a key equal to the runtime's name wins (tests and the
    replay give each runtime its own), else the key named by ``runtime.backend``."""
    backend = backends.get(runtime.name) or backends.get(runtime.backend)
    if backend is None:
        raise ConfigError(
            f"runtime {runtime.name!r}: no backend {runtime.backend!r}; have {sorted(backends)}"
        )
    return backend


async def deploy_guarded(
    backend: RuntimeBackend, runtime: Runtime, timeout_s: float, grace_s: float
) -> Deployment:
    """``backend.deploy`` bounded by ``timeout_s``; a backend that overruns its own
    timeout by more than ``grace_s`` is cancelled (it cleans up) and reported as a
    :class:`DeployTimeout` all the same."""
    try:
        async with asyncio.timeout(timeout_s + grace_s):
            return await backend.deploy(runtime, timeout_s=timeout_s)
    except TimeoutError:
        raise DeployTimeout(runtime.name, timeout_s) from None


# One leg and its steps ----------------------------------------------------------------


@dataclass(slots=True)
class Leg:
    """One runtime's part in a batch; loop times, so differences are durations."""

    runtime: Runtime
    deployment: Deployment | None = None
    upload: Upload | None = None
    invocation: Invocation | None = None
    deploy_s: float = 0.0  # deploy phase, retries and back-off included
    transfer_s: float = 0.0
    warmup_s: float = 0.0
    processing_s: float = 0.0
    ready_at: float | None = None
    invoke_started: float | None = None
    done_at: float | None = None
    torn_down_at: float | None = None

    @property
    def cloud_used_s(self) -> float:
        if self.runtime.is_edge or self.ready_at is None or self.torn_down_at is None:
            return 0.0
        return self.torn_down_at - self.ready_at


class LegRunner:
    """The measured steps of a leg, and the runtimes and backends they run on."""

    def __init__(
        self,
        backends: Mapping[str, RuntimeBackend],
        runtimes: Mapping[str, Runtime],
        recorder: Recorder,
        clock: Clock,
        settings: Settings,
        availability: Availability | None = None,
    ) -> None:
        self.backends = backends
        self.runtimes = runtimes
        self.recorder: Recorder = recorder
        self.clock = clock
        self.settings = settings
        self.availability = availability
        # runtime -> legs deployed and not yet torn down: the inquisitor does not probe
        # the edge while a batch runs there (they would share its CPUs).
        self.in_use: Counter[str] = Counter()
        for r in runtimes.values():
            backend_for(backends, r)  # fail at start-up, not on the first batch

    def runtime(self, name: str) -> Runtime:
        try:
            return self.runtimes[name]
        except KeyError:
            raise ConfigError(
                f"unknown runtime {name!r}; configured: {list(self.runtimes)}"
            ) from None

    async def run_leg(self, job: Job, leg: Leg) -> None:
        """deploy → upload → warm → invoke on one runtime; teardown whatever happens."""
        try:
            await self.deploy(job, leg)
            await self.upload(job, leg)
            await self.warm(job, leg)
            await self.invoke(job, leg)
        finally:
            await self.teardown(leg)

    def finish(self, out: Outcome, leg: Leg, t0: float, *, add_used: bool) -> None:
        """Fill ``out`` from the leg that produced the results."""
        assert leg.invocation is not None and leg.done_at is not None
        out.runtime = out.winner = leg.runtime.name
        out.transfer_s = leg.transfer_s
        out.deployment_s = leg.deploy_s
        out.warmup_s = leg.warmup_s
        out.processing_s = leg.processing_s
        out.total_s = leg.done_at - t0
        out.finished_at = self.clock.now()
        out.results = leg.invocation.results
        if add_used:  # the winner's own pod time (a fallback already counted the failed one)
            out.cloud_used_s += leg.cloud_used_s

    # The steps, each measured and recorded -----------------------------------------------

    async def deploy(self, job: Job, leg: Leg) -> None:
        """Deploy with exponential back-off on DeployFailure; DeployTimeout is final."""
        loop = asyncio.get_running_loop()
        rt = leg.runtime
        req, timeout = self.settings.requester, self.settings.predictor.deploy_timeout_s
        backend = backend_for(self.backends, rt)
        delay = req.retry_initial_s
        start = loop.time()
        last: BaseException | None = None
        for attempt in range(1, req.retry_attempts + 1):
            at, t = self.clock.now(), loop.time()
            try:
                dep = await deploy_guarded(backend, rt, timeout, req.deploy_guard_grace_s)
            except DeployTimeout as exc:
                await self._record_deploy(rt, at, timeout, DeployOutcome.TIMEOUT)
                if self.availability is not None:
                    self.availability.mark_unavailable(rt.name, self.clock.now(), str(exc))
                raise
            except DeployFailure as exc:
                last = exc
                await self._record_deploy(rt, at, loop.time() - t, DeployOutcome.FAILURE)
                if attempt == req.retry_attempts:
                    break
                log.info(
                    "deployment failed; backing off",
                    batch_id=job.batch_id,
                    runtime=rt.name,
                    attempt=attempt,
                    delay_s=delay,
                )
                await asyncio.sleep(delay)
                delay *= req.retry_factor
                continue
            leg.deployment = dep
            self.in_use[rt.name] += 1
            leg.ready_at = loop.time()
            leg.deploy_s = leg.ready_at - start
            await self._record_deploy(rt, at, leg.ready_at - t, DeployOutcome.OK)
            return
        raise RetriesExhausted(rt.name, req.retry_attempts, last)

    async def _record_deploy(
        self, rt: Runtime, at: float, duration_s: float, outcome: DeployOutcome
    ) -> None:
        if rt.is_edge:  # T_d of the edge is zero by definition (paper §3.4.2)
            return
        await self.recorder.deployment(DeploymentSample(rt.name, at, duration_s, outcome))

    async def upload(self, job: Job, leg: Leg) -> None:
        loop = asyncio.get_running_loop()
        at, t = self.clock.now(), loop.time()
        leg.upload = await backend_for(self.backends, leg.runtime).upload(leg.runtime, job)
        leg.transfer_s = loop.time() - t
        if not leg.runtime.is_edge and job.n_bytes > 0:
            await self.recorder.transfer(
                TransferSample(job.n_bytes, leg.transfer_s, at, leg.runtime.name)
            )

    async def warm(self, job: Job, leg: Leg) -> None:
        """One-image call to load the model on a cloud pod (paper §3.7); the edge keeps a
        warm standby, so it needs none."""
        if leg.runtime.is_edge or not self.settings.requester.warmup:
            return
        assert leg.deployment is not None and leg.upload is not None
        loop = asyncio.get_running_loop()
        t = loop.time()
        backend = backend_for(self.backends, leg.runtime)
        await backend.invoke(leg.deployment, job, leg.upload, warmup=True)
        leg.warmup_s = loop.time() - t

    async def invoke(self, job: Job, leg: Leg) -> None:
        assert leg.deployment is not None and leg.upload is not None
        loop = asyncio.get_running_loop()
        backend = backend_for(self.backends, leg.runtime)
        leg.invoke_started = t = loop.time()
        leg.invocation = await backend.invoke(leg.deployment, job, leg.upload)
        leg.done_at = loop.time()
        leg.processing_s = leg.done_at - t
        await self.recorder.processing(
            ProcessingSample(
                job.app,
                job.app_version,
                leg.runtime.name,
                job.n_images,
                job.n_bytes,
                leg.processing_s,
                self.clock.now(),
            )
        )

    async def teardown(self, leg: Leg) -> None:
        """Idempotent; a failing teardown is logged, never allowed to mask the result."""
        if leg.deployment is None or leg.torn_down_at is not None:
            return
        leg.torn_down_at = asyncio.get_running_loop().time()
        self.in_use[leg.runtime.name] -= 1
        try:
            await backend_for(self.backends, leg.runtime).teardown(leg.deployment)
        except Exception:
            log.exception("teardown failed", runtime=leg.runtime.name)
