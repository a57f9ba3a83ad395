"""One runtime's part in a batch (a :class:`Leg`) and the measured steps that run it.

Both ways of executing a plan are built from the same steps: the single-runtime path
runs deploy → upload → warm → invoke on one leg, and the duplicator runs an edge leg and
a cloud leg side by side (:mod:`stoic.duplicator`). Keeping the steps in one place means
each measurement is taken, and handed to the :class:`~stoic.recorder.Recorder`, the same
way whichever path ran it:

* deploy with retry and exponential back-off on :class:`DeployFailure` (0.1 s, ×2, 10
  attempts, then :class:`RetriesExhausted`); a :class:`DeployTimeout` is not retried and
  marks the runtime unavailable. T_d of the edge is zero by definition, so it is not
  recorded;
* upload the package (T_t, recorded for cloud runtimes);
* warm a cloud pod with a one-image call (paper §3.7);
* invoke (T_p, always recorded);
* tear down, idempotently, never masking the result.

:class:`LegRunner` is a layer of :class:`~stoic.requester.Requester`, not an object of its
own: the steps read the requester's backends, settings, clock, recorder and availability
from ``self``, so replacing ``requester.recorder`` or ``requester.backends`` (the scheduler
and the tests do) reaches every step at once.

The module-level helpers (:func:`backend_for`, :func:`deploy_guarded`,
:func:`cancel_and_wait`) are shared with the inquisitor, which deploys and tears down
runtimes the same way but outside any batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stoic.availability import Availability
from stoic.backends.base import Deployment, Invocation, RuntimeBackend, Upload
from stoic.clock import Clock
from stoic.errors import ConfigError, DeployFailure, DeployTimeout, RetriesExhausted
from stoic.model import (
    DeploymentSample,
    DeployOutcome,
    Job,
    Outcome,
    ProcessingSample,
    Runtime,
    TransferSample,
)
from stoic.recorder import Recorder
from stoic.settings import Settings

log = logging.getLogger(__name__)


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


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]]) -> None:
    """Cancel every unfinished task and wait until each has really finished."""
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending)
    for t in pending:  # retrieve exceptions so none is reported as "never retrieved"
        if not t.cancelled():
            t.exception()


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
    """The measured steps of a leg; the base layer of :class:`~stoic.requester.Requester`.

    It has no constructor: ``Requester.__init__`` sets the attributes declared here."""

    backends: Mapping[str, RuntimeBackend]
    runtimes: Mapping[str, Runtime]
    recorder: Recorder
    clock: Clock
    settings: Settings
    availability: Availability | None

    def _runtime(self, name: str) -> Runtime:
        try:
            return self.runtimes[name]
        except KeyError:
            raise ConfigError(
                f"unknown runtime {name!r}; configured: {list(self.runtimes)}"
            ) from None

    async def _run_leg(self, job: Job, leg: Leg) -> None:
        """deploy → upload → warm → invoke on one runtime; teardown whatever happens."""
        try:
            await self._deploy(job, leg)
            await self._upload(job, leg)
            await self._warm(job, leg)
            await self._invoke(job, leg)
        finally:
            await self._teardown(leg)

    def _finish(self, out: Outcome, leg: Leg, t0: float, *, add_used: bool) -> None:
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

    async def _deploy(self, job: Job, leg: Leg) -> None:
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
                    extra={
                        "batch_id": job.batch_id,
                        "runtime": rt.name,
                        "attempt": attempt,
                        "delay_s": delay,
                    },
                )
                await asyncio.sleep(delay)
                delay *= req.retry_factor
                continue
            leg.deployment = dep
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

    async def _upload(self, job: Job, leg: Leg) -> None:
        loop = asyncio.get_running_loop()
        at, t = self.clock.now(), loop.time()
        leg.upload = await backend_for(self.backends, leg.runtime).upload(leg.runtime, job)
        leg.transfer_s = loop.time() - t
        if not leg.runtime.is_edge and job.n_bytes > 0:
            await self.recorder.transfer(
                TransferSample(job.n_bytes, leg.transfer_s, at, leg.runtime.name)
            )

    async def _warm(self, job: Job, leg: Leg) -> None:
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

    async def _invoke(self, job: Job, leg: Leg) -> None:
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

    async def _teardown(self, leg: Leg) -> None:
        """Idempotent; a failing teardown is logged, never allowed to mask the result."""
        if leg.deployment is None or leg.torn_down_at is not None:
            return
        leg.torn_down_at = asyncio.get_running_loop().time()
        try:
            await backend_for(self.backends, leg.runtime).teardown(leg.deployment)
        except Exception:
            log.exception("teardown failed", extra={"runtime": leg.runtime.name})
