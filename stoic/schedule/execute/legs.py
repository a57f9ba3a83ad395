"""The measurer: one runtime's part in a batch (a :class:`Leg`) and the :class:`LegRunner`.

:class:`LegRunner` is the only code that talks to a backend (deploy, upload, invoke,
teardown) and turns what happened into samples; ``tests/test_measurer.py`` checks by
the AST that no other module calls a backend's ``deploy``, ``upload`` or ``invoke``.
Every way of executing a plan is built from its steps: the single-runtime path runs
deploy → upload → warm → invoke on one leg, the duplicator runs an edge leg and a cloud
leg side by side (:mod:`stoic.schedule.execute.duplicator`), share mode uploads and
labels chunks (:meth:`LegRunner.upload_chunk`, :meth:`LegRunner.label_chunk`), and the
inquisitor deploys probes and times processing on them (:meth:`LegRunner.probe_deploy`,
:meth:`LegRunner.time_processing`). Keeping the steps in one place means each
measurement is taken, and handed to the
:class:`~stoic.schedule.execute.recorder.Recorder`, the same way whichever path ran it:

* deploy with retry and exponential back-off on :class:`DeployFailure` (0.1 s, ×2, 10
  attempts, then :class:`RetriesExhausted`); a :class:`DeployTimeout` is not retried and
  marks the runtime unavailable. A leg with a deploy deadline
  (:mod:`stoic.schedule.decide.deadline`) asks the backend for no more than what is left
  of it, and past it raises :class:`DeployAbandoned` (the backend has torn the
  deployment down; the runtime stays available). Such a leg records no T_d: a deadline
  censors the sample, and recording only the deployments ready by it would teach the
  predictor a faster cloud than there is (the inquisitor's probes, which wait to the
  timeout, carry the distribution). T_d of the edge is zero by definition, so it is not
  recorded;
* upload the package (T_t, recorded for cloud runtimes);
* warm a cloud pod with a one-image call (paper §3.7);
* invoke (T_p, always recorded);
* tear down, idempotently, never masking the result, to its end even when cancelled
  twice;
* with warm pods (``warm_pods``, :mod:`stoic.schedule.execute.warm`): deploy takes a
  warm pod of the runtime when one is kept (no T_d, no sample: nothing was deployed),
  and teardown hands a leg whose call returned to the pool, which keeps it if the
  keep-alive rule says so.
* tell the ``meter`` (the cloud budget's :meth:`~stoic.schedule.decide.budget.CloudBudget.charge`)
  each cloud pod's seconds, from its deployment's request to its teardown, probes' too.

:class:`LegRunner` is a concrete object built with exactly what the steps need
(backends, runtimes, recorder, clock, its LegOptions, availability); the requester, its
duplicator, the share session and the inquisitor hold the same one, as an httpx
``Client`` holds its transport, so its recorder (the whole chain, built by
:func:`stoic.schedule.assembly.build_core`: the scheduler's observation counter among
them) sees every measurement.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stoic.aio import cancel_and_wait, to_the_end
from stoic.backends.base import Deployment, Invocation, RuntimeBackend, Upload
from stoic.clock import Clock
from stoic.errors import (
    BackendError,
    ConfigError,
    DeployAbandoned,
    DeployFailure,
    DeployTimeout,
    RetriesExhausted,
)
from stoic.logging import get_logger
from stoic.schedule.execute.recorder import Recorder
from stoic.schedule.execute.warm import WarmPool
from stoic.schedule.probe.availability import Availability
from stoic.values import (
    DeploymentSample,
    DeployOutcome,
    Job,
    Mode,
    Outcome,
    ProcessingSample,
    Runtime,
    TransferSample,
)

log = get_logger(__name__)


Meter = Callable[[str, float], None]
"""Told ``(runtime, seconds)`` of cloud pod time held (the cloud budget's ``charge``)."""

Placer = Callable[[Job], Awaitable[Upload]]
"""Places a job's package where one runtime reads it, unmeasured (a probe's images)."""


def _backend_for(backends: Mapping[str, RuntimeBackend], runtime: Runtime) -> RuntimeBackend:
    """The backend of ``runtime``: a key equal to the runtime's name wins (tests and the
    replay give each runtime its own), else the key named by ``runtime.backend``."""
    backend = backends.get(runtime.name) or backends.get(runtime.backend)
    if backend is None:
        raise ConfigError(
            f"runtime {runtime.name!r}: no backend {runtime.backend!r}; have {sorted(backends)}"
        )
    return backend


async def _deploy_guarded(
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


@dataclass(slots=True)
class UplinkShare:
    """The uploads of one shared batch in flight, and how many have started."""

    in_flight: int = 0
    starts: int = 0


@dataclass(frozen=True, slots=True)
class Probe:
    """A probe deployment: its sample, the backend's error, or the pod to tear down."""

    sample: DeploymentSample
    error: BackendError | None
    deployment: Deployment | None = None


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
    requested_at: float | None = None  # the successful deployment's request
    invoke_started: float | None = None
    done_at: float | None = None
    torn_down_at: float | None = None
    warm: bool = False  # its pod was a warm one, taken from the pool: no T_d
    finished: bool = False  # the batch's call returned: the pod may be kept warm
    deadline_s: float | None = None
    """Abandon the deployment this long after it starts (the plan's deploy deadline)."""

    @property
    def cloud_used_s(self) -> float:
        if self.runtime.is_edge or self.ready_at is None or self.torn_down_at is None:
            return 0.0
        return self.torn_down_at - self.ready_at


@dataclass(frozen=True, slots=True)
class LegOptions:
    """How a leg deploys and warms (``settings.requester``, ``predictor.deploy_timeout_s``;
    built by :func:`~stoic.schedule.assembly.build_core`)."""

    deploy_timeout_s: float = 600.0  # a deployment not ready by then is a timeout
    deploy_guard_grace_s: float = 5.0  # extra wait for a backend that ignores the timeout
    retry_attempts: int = 10  # deployments tried on DeployFailure, back-off between them
    retry_initial_s: float = 0.1
    retry_factor: float = 2.0
    warmup: bool = True  # a one-image call on a cloud pod before the timed one


class LegRunner:
    """The measured steps of a leg, and the runtimes and backends they run on."""

    def __init__(
        self,
        backends: Mapping[str, RuntimeBackend],
        runtimes: Mapping[str, Runtime],
        recorder: Recorder,
        clock: Clock,
        options: LegOptions = LegOptions(),
        availability: Availability | None = None,
        meter: Meter | None = None,
        warm_pods: WarmPool | None = None,
    ) -> None:
        self.backends = backends
        self.meter = meter
        self._probe_since: dict[int, float] = {}  # id(probe deployment) -> its request
        self.runtimes = runtimes
        self.recorder: Recorder = recorder
        self.clock = clock
        self.options = options
        self.availability = availability
        # runtime -> legs deployed and not yet torn down: the inquisitor does not probe
        # the edge while a batch runs there (they would share its CPUs).
        self.in_use: Counter[str] = Counter()
        for r in runtimes.values():
            _backend_for(backends, r)  # fail at start-up, not on the first batch
        self.warm_pods = warm_pods  # warm pods (execute/warm.py): None keeps none

    def _backend(self, runtime: Runtime) -> RuntimeBackend:
        return _backend_for(self.backends, runtime)

    def runtime(self, name: str) -> Runtime:
        try:
            return self.runtimes[name]
        except KeyError:
            raise ConfigError(
                f"unknown runtime {name!r}; configured: {list(self.runtimes)}"
            ) from None

    async def run_leg(self, job: Job, leg: Leg, *, pipelined: bool = False) -> None:
        """deploy → upload → warm → invoke on one runtime (``pipelined``: a cloud leg
        uploads while it deploys); teardown whatever happens."""
        try:
            if pipelined and not leg.runtime.is_edge:
                await self.deploy_uploading(job, leg)
            else:
                await self.deploy(job, leg)
                await self.upload(job, leg)
            await self.warm(job, leg)
            await self.invoke(job, leg)
        finally:
            await self.teardown(leg)

    async def deploy_uploading(self, job: Job, leg: Leg) -> None:
        """Upload while the pod deploys (the duplicator's cloud leg, a pipelined
        selector's): ready when both are done; a failed deployment cancels the upload."""
        upload = asyncio.create_task(self.upload(job, leg), name=f"{job.batch_id}:upload")
        try:
            await self.deploy(job, leg)
            await upload
        finally:
            await cancel_and_wait([upload])

    def outcome(
        self, job: Job, mode: Mode, leg: Leg, since: tuple[float, float], **rest: Any
    ) -> Outcome:
        """The outcome of a batch whose results ``leg`` produced; ``since`` is the
        batch's start (clock instant, loop time), ``rest`` what the executor adds (its
        reason, its cloud accounting)."""
        assert leg.invocation is not None and leg.done_at is not None
        started_at, t0 = since
        return Outcome(
            job.batch_id,
            leg.runtime.name,
            mode,
            transfer_s=leg.transfer_s,
            deployment_s=leg.deploy_s,
            warmup_s=leg.warmup_s,
            processing_s=leg.processing_s,
            total_s=leg.done_at - t0,
            started_at=started_at,
            finished_at=self.clock.now(),
            winner=leg.runtime.name,
            results=leg.invocation.results,
            **rest,
        )

    # The steps, each measured and recorded -----------------------------------------------

    async def deploy(self, job: Job, leg: Leg) -> None:
        """Deploy with exponential back-off on DeployFailure; DeployTimeout is final."""
        loop = asyncio.get_running_loop()
        rt = leg.runtime
        req, timeout = self.options, self.options.deploy_timeout_s
        backend = self._backend(rt)
        if self.warm_pods is not None and (dep := self.warm_pods.take(rt)) is not None:
            leg.deployment, leg.warm = dep, True
            self.in_use[rt.name] += 1
            leg.ready_at = leg.requested_at = loop.time()
            return  # no deployment happened: no T_d to record
        delay = req.retry_initial_s
        start = loop.time()
        last: BaseException | None = None
        deadline = leg.deadline_s if leg.deadline_s is not None and not rt.is_edge else None
        for attempt in range(1, req.retry_attempts + 1):
            at, t = self.clock.now(), loop.time()
            limit = timeout if deadline is None else min(timeout, deadline - (t - start))
            try:
                if limit <= 0.0:
                    raise DeployTimeout(rt.name, 0.0)
                dep = await _deploy_guarded(backend, rt, limit, req.deploy_guard_grace_s)
            except asyncio.CancelledError:  # a race's loser: its pod was held till now
                self._charge(rt, loop.time() - t)
                raise
            except DeployTimeout as exc:
                self._charge(rt, loop.time() - t)
                if deadline is not None and limit < timeout:
                    assert leg.deadline_s is not None
                    log.info(
                        "deployment abandoned at its deadline",
                        batch_id=job.batch_id,
                        runtime=rt.name,
                        deadline_s=leg.deadline_s,
                    )
                    raise DeployAbandoned(rt.name, leg.deadline_s) from None
                await self._record_deploy(rt, at, timeout, DeployOutcome.TIMEOUT)
                if self.availability is not None:
                    self.availability.mark_unavailable(rt.name, self.clock.now(), str(exc))
                raise
            except DeployFailure as exc:
                self._charge(rt, loop.time() - t)
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
            leg.requested_at = t
            leg.deploy_s = leg.ready_at - start
            if deadline is None or deadline >= timeout:
                # A deadline censors: only the fast deployments would be recorded.
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
        leg.upload = await self._backend(leg.runtime).upload(leg.runtime, job)
        leg.transfer_s = loop.time() - t
        if not leg.runtime.is_edge and job.n_bytes > 0:
            await self.recorder.transfer(
                TransferSample(job.n_bytes, leg.transfer_s, at, leg.runtime.name)
            )

    async def warm(self, job: Job, leg: Leg) -> None:
        """One-image call to load the model on a cloud pod (paper §3.7); the edge keeps a
        warm standby, so it needs none."""
        if leg.runtime.is_edge or not self.options.warmup:
            return
        assert leg.deployment is not None and leg.upload is not None
        loop = asyncio.get_running_loop()
        t = loop.time()
        backend = self._backend(leg.runtime)
        await backend.invoke(leg.deployment, job, leg.upload, warmup=True)
        leg.warmup_s = loop.time() - t

    async def invoke(self, job: Job, leg: Leg) -> None:
        assert leg.deployment is not None and leg.upload is not None
        loop = asyncio.get_running_loop()
        backend = self._backend(leg.runtime)
        leg.invoke_started = t = loop.time()
        leg.invocation = await backend.invoke(leg.deployment, job, leg.upload)
        leg.done_at = loop.time()
        leg.finished = True
        leg.processing_s = leg.done_at - t
        await self._record_processing(job, leg.runtime.name, leg.processing_s)

    async def _record_processing(self, job: Job, runtime: str, seconds: float) -> None:
        await self.recorder.processing(
            ProcessingSample(
                job.app,
                job.app_version,
                runtime,
                job.n_images,
                job.n_bytes,
                seconds,
                self.clock.now(),
            )
        )

    async def teardown(self, leg: Leg) -> None:
        """Idempotent; a failing teardown is logged, never allowed to mask the result.
        Runs to its end even if the batch is cancelled again meanwhile (an operator's
        cancel, then a stop's drain), so no pod is left half torn down."""
        if leg.deployment is None or leg.torn_down_at is not None:
            return
        leg.torn_down_at = asyncio.get_running_loop().time()
        self.in_use[leg.runtime.name] -= 1
        if leg.requested_at is not None:
            self._charge(leg.runtime, leg.torn_down_at - leg.requested_at)
        if (
            leg.finished
            and self.warm_pods is not None
            and self.warm_pods.park(leg.runtime, leg.deployment)
        ):
            return
        try:
            await to_the_end(self._backend(leg.runtime).teardown(leg.deployment))
        except Exception:
            log.exception("teardown failed", runtime=leg.runtime.name)

    def _charge(self, runtime: Runtime, seconds: float) -> None:
        if self.meter is not None and not runtime.is_edge:
            self.meter(runtime.name, seconds)

    # Share mode's chunks (stoic.schedule.share.session) --------------------------------

    async def upload_chunk(self, leg: Leg, job: Job, uplink: UplinkShare) -> Upload:
        """Upload one chunk, adding its seconds to the leg's T_t; the uplink's bandwidth
        is learnt only from an upload that had the uplink to itself (``uplink`` counts
        the batch's uploads in flight): concurrent ones would teach a slower uplink."""
        loop = asyncio.get_running_loop()
        at, t = self.clock.now(), loop.time()
        alone, generation = uplink.in_flight == 0, uplink.starts
        uplink.in_flight += 1
        uplink.starts += 1
        try:
            upload = await self._backend(leg.runtime).upload(leg.runtime, job)
        finally:
            uplink.in_flight -= 1
        seconds = loop.time() - t
        leg.transfer_s += seconds
        alone = alone and uplink.in_flight == 0 and uplink.starts == generation + 1
        if alone and job.n_bytes > 0:
            await self.recorder.transfer(TransferSample(job.n_bytes, seconds, at, leg.runtime.name))
        return upload

    async def label_chunk(
        self, leg: Leg, job: Job, upload: Upload, *, learn: bool
    ) -> tuple[Invocation, float]:
        """Label one chunk on the leg's deployment; returns the call and its seconds,
        added to the leg's T_p. ``learn``: record it as a processing sample (the first
        call of a participant only: a later call on the same warm instance skips the
        model load and would bias the T_p line's intercept low)."""
        assert leg.deployment is not None
        loop = asyncio.get_running_loop()
        t = loop.time()
        leg.invoke_started = leg.invoke_started or t
        invocation = await self._backend(leg.runtime).invoke(leg.deployment, job, upload)
        seconds = loop.time() - t
        leg.processing_s += seconds
        leg.done_at = loop.time()
        if learn:
            await self._record_processing(job, leg.runtime.name, seconds)
        return invocation, seconds

    async def place(self, runtime: Runtime, job: Job) -> Upload:
        """Upload ``job``'s package for ``runtime``, unmeasured: the edge's copy of a
        shared batch, a probe's images (placed once, reused)."""
        return await self._backend(runtime).upload(runtime, job)

    # The inquisitor's probes (stoic.schedule.probe.inquisitor) -------------------------

    async def probe_deploy(self, runtime: Runtime) -> Probe:
        """Deploy ``runtime`` outside any batch, timed to ready. Backend errors become
        the sample (a timeout lasts the timeout: it took *at least* that long), never
        exceptions. The sample is returned, not recorded: the prober records it
        (:meth:`record_deployment`) once the pod is torn down."""
        loop = asyncio.get_running_loop()
        timeout, grace = self.options.deploy_timeout_s, self.options.deploy_guard_grace_s
        at, t = self.clock.now(), loop.time()
        try:
            deployment = await _deploy_guarded(self._backend(runtime), runtime, timeout, grace)
        except DeployTimeout as exc:
            self._charge(runtime, loop.time() - t)
            return Probe(DeploymentSample(runtime.name, at, timeout, DeployOutcome.TIMEOUT), exc)
        except BackendError as exc:
            duration = loop.time() - t
            self._charge(runtime, duration)
            return Probe(DeploymentSample(runtime.name, at, duration, DeployOutcome.FAILURE), exc)
        sample = DeploymentSample(runtime.name, at, loop.time() - t, DeployOutcome.OK)
        self._probe_since[id(deployment)] = t
        return Probe(sample, None, deployment)

    async def record_deployment(self, sample: DeploymentSample) -> None:
        await self.recorder.deployment(sample)

    async def standby(self, runtime: Runtime) -> Deployment:
        """The edge's warm standby, for a processing probe: no T_d to time."""
        timeout = self.options.deploy_timeout_s
        return await self._backend(runtime).deploy(runtime, timeout_s=timeout)

    async def time_processing(
        self, runtime: Runtime, deployment: Deployment, job: Job, upload: Upload
    ) -> float:
        """A processing probe: warm the pod as :meth:`warm` would, then time the call and
        record it as a batch's T_p sample; returns its seconds."""
        backend = self._backend(runtime)
        if self.options.warmup and not runtime.is_edge:
            await backend.invoke(deployment, job, upload, warmup=True)
        loop = asyncio.get_running_loop()
        t = loop.time()
        await backend.invoke(deployment, job, upload)
        seconds = loop.time() - t
        await self._record_processing(job, runtime.name, seconds)
        return seconds

    async def release(self, runtime: Runtime, deployment: Deployment) -> None:
        """Tear down a probe's deployment; a failing teardown is logged, never raised."""
        since = self._probe_since.pop(id(deployment), None)
        if since is not None:
            self._charge(runtime, asyncio.get_running_loop().time() - since)
        await release_on(self.backends, runtime, deployment)


async def release_on(
    backends: Mapping[str, RuntimeBackend], runtime: Runtime, deployment: Deployment
) -> None:
    """Tear ``deployment`` down on ``runtime``'s backend (a probe's, a warm pod whose
    keep-alive ran out); a failing teardown is logged, never raised."""
    try:
        await _backend_for(backends, runtime).teardown(deployment)
    except Exception:
        log.exception("teardown failed", runtime=runtime.name)
