"""The requester: executes a :class:`~stoic.model.Plan` on runtime backends (paper §3.7).

It is the one place where a batch meets real (or simulated) runtimes, and it is the
same code in the daemon and the replay: only the backends and the clock differ.

* **Single runtime** (selector and every other non-speculative plan): deploy the chosen
  runtime with retry and exponential back-off on :class:`DeployFailure` (0.1 s, ×2, 10
  attempts, then :class:`RetriesExhausted`; a :class:`DeployTimeout` is not retried and
  marks the runtime unavailable), upload the package (T_t), warm a cloud pod with a
  one-image call, invoke (T_p), tear down in ``finally``. A cloud runtime that is
  unavailable or fails falls back to the edge when ``settings.requester.fallback_to_edge``.
* **Duplicator** (``plan.speculative_edge``): the edge starts at once; the cloud runtime
  uploads and deploys in parallel; when it is ready (deployed, warmed, uploaded) the
  requester re-predicts: the edge's predicted *remaining* processing against the cloud's
  predicted T_p (:func:`stoic.policy.keep_cloud`). The predicted loser is dropped (the pod
  torn down at once) or raced (whichever finishes first wins; the other is cancelled for
  real: the backend kills the work before the cancellation returns).

Durations are measured with the event loop's clock (``loop.time()``), which ``looptime``
fast-forwards in tests and the replay; instants come from the injected
:class:`~stoic.clock.Clock`. Every measurement goes to the :class:`Recorder` as soon as it
is taken, so a batch that fails half-way still teaches the predictor what it measured.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from stoic.availability import Availability
from stoic.backends.base import Deployment, Invocation, RuntimeBackend, Upload
from stoic.clock import Clock
from stoic.errors import (
    BackendError,
    BatchCancelled,
    ConfigError,
    DeployFailure,
    DeployTimeout,
    RetriesExhausted,
    RuntimeUnavailable,
)
from stoic.model import (
    Component,
    DeploymentSample,
    DeployOutcome,
    Estimate,
    Job,
    Outcome,
    Plan,
    ProcessingSample,
    Runtime,
    TransferSample,
)
from stoic.policy import keep_cloud
from stoic.settings import Settings

log = logging.getLogger(__name__)


# Interfaces -------------------------------------------------------------------------


class PredictorLike(Protocol):
    """What the scheduling core needs of ``stoic.predict.predictor.Predictor``.

    The ``observe_*`` results are ignored (the real one says whether it kept the sample)."""

    def observe_deployment(self, sample: DeploymentSample) -> object: ...

    def observe_processing(self, sample: ProcessingSample) -> object: ...

    def observe_transfer(self, sample: TransferSample) -> object: ...

    def estimate(
        self, runtime: str, n_images: int, n_bytes: int, *, app: str, app_version: str
    ) -> Estimate: ...

    def estimate_all(
        self,
        n_images: int,
        n_bytes: int,
        *,
        app: str,
        app_version: str,
        runtimes: list[str] | None = None,
    ) -> dict[str, Estimate]: ...

    def remaining_processing(
        self, runtime: str, n_images: int, elapsed_s: float, *, app: str, app_version: str
    ) -> Component: ...


class Recorder(Protocol):
    """Where every measured component goes (the daemon: store + predictor + metrics)."""

    async def deployment(self, sample: DeploymentSample) -> None: ...

    async def processing(self, sample: ProcessingSample) -> None: ...

    async def transfer(self, sample: TransferSample) -> None: ...


class PredictorRecorder:
    """Feeds every sample straight into the predictor (the replay needs no more)."""

    def __init__(self, predictor: PredictorLike) -> None:
        self.predictor = predictor

    async def deployment(self, sample: DeploymentSample) -> None:
        self.predictor.observe_deployment(sample)

    async def processing(self, sample: ProcessingSample) -> None:
        self.predictor.observe_processing(sample)

    async def transfer(self, sample: TransferSample) -> None:
        self.predictor.observe_transfer(sample)


class MultiRecorder:
    """Fans samples out to several recorders, in order. One failing recorder (a database
    hiccup) is logged and skipped: the batch and the other recorders carry on."""

    def __init__(self, *recorders: Recorder) -> None:
        self.recorders: list[Recorder] = list(recorders)

    def add(self, recorder: Recorder) -> None:
        self.recorders.append(recorder)

    async def deployment(self, sample: DeploymentSample) -> None:
        for r in self.recorders:
            try:
                await r.deployment(sample)
            except Exception:
                log.exception("recorder failed", extra={"sample": "deployment"})

    async def processing(self, sample: ProcessingSample) -> None:
        for r in self.recorders:
            try:
                await r.processing(sample)
            except Exception:
                log.exception("recorder failed", extra={"sample": "processing"})

    async def transfer(self, sample: TransferSample) -> None:
        for r in self.recorders:
            try:
                await r.transfer(sample)
            except Exception:
                log.exception("recorder failed", extra={"sample": "transfer"})


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


# The requester ------------------------------------------------------------------------


@dataclass(slots=True)
class _Leg:
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


class Requester:
    """Executes plans; running batches are kept by id so one can be cancelled."""

    def __init__(
        self,
        backends: Mapping[str, RuntimeBackend],
        runtimes: Mapping[str, Runtime],
        predictor: PredictorLike,
        recorder: Recorder,
        clock: Clock,
        settings: Settings,
        *,
        availability: Availability | None = None,
    ) -> None:
        self.backends = backends
        self.runtimes = runtimes
        self.predictor = predictor
        self.recorder: Recorder = recorder
        self.clock = clock
        self.settings = settings
        self.availability = availability
        self._jobs: dict[str, asyncio.Task[Outcome]] = {}
        edges = [r.name for r in runtimes.values() if r.is_edge]
        self.edge_runtime: str | None = edges[0] if edges else None
        for r in runtimes.values():
            backend_for(backends, r)  # fail at start-up, not on the first batch

    def add_recorder(self, recorder: Recorder) -> None:
        """Also send every sample to ``recorder`` (the scheduler counts observations)."""
        if isinstance(self.recorder, MultiRecorder):
            self.recorder.add(recorder)
        else:
            self.recorder = MultiRecorder(self.recorder, recorder)

    # Running batches by id ------------------------------------------------------------

    def running(self) -> list[str]:
        return list(self._jobs)

    def cancel(self, batch_id: str) -> bool:
        """Cancel a running batch; its :meth:`run` raises :class:`BatchCancelled` once
        every sub-task has stopped and every deployment is torn down."""
        task = self._jobs.get(batch_id)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def run(self, job: Job, plan: Plan, *, fallback: bool | None = None) -> Outcome:
        """Execute ``plan`` for ``job``. ``fallback`` overrides
        ``settings.requester.fallback_to_edge`` (bootstrapping turns it off)."""
        if job.batch_id in self._jobs:
            raise BackendError(plan.runtime, f"batch {job.batch_id!r} is already running")
        allow = self.settings.requester.fallback_to_edge if fallback is None else fallback
        task = asyncio.create_task(self._execute(job, plan, allow), name=f"batch:{job.batch_id}")
        self._jobs[job.batch_id] = task
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                raise BatchCancelled(plan.runtime, job.batch_id) from None
            raise
        finally:
            self._jobs.pop(job.batch_id, None)

    async def _execute(self, job: Job, plan: Plan, allow_fallback: bool) -> Outcome:
        loop = asyncio.get_running_loop()
        out = Outcome(job.batch_id, plan.runtime, plan.mode, started_at=self.clock.now())
        t0 = loop.time()
        log.info(
            "batch started",
            extra={
                "batch_id": job.batch_id,
                "runtime": plan.runtime,
                "mode": str(plan.mode),
                "speculative": plan.speculative_edge,
            },
        )
        down = self.availability is not None and not self.availability.is_available(plan.runtime)
        if plan.speculative_edge and down:  # marked down since the decision: edge alone
            out.reason = f"{plan.runtime} became unavailable; ran on {plan.edge_runtime} alone"
            edge_leg = _Leg(self._runtime(plan.edge_runtime))
            await self._run_leg(job, edge_leg)
            self._finish(out, edge_leg, t0, add_used=False)
        elif plan.speculative_edge:
            await self._duplicate(job, plan, out, t0)
        else:
            await self._single(job, plan, out, t0, allow_fallback)
        log.info(
            "batch finished",
            extra={
                "batch_id": job.batch_id,
                "runtime": out.runtime,
                "total_s": out.total_s,
                "fell_back": out.fell_back,
                "cloud_used_s": out.cloud_used_s,
                "cloud_wasted_s": out.cloud_wasted_s,
            },
        )
        return out

    def _runtime(self, name: str) -> Runtime:
        try:
            return self.runtimes[name]
        except KeyError:
            raise ConfigError(
                f"unknown runtime {name!r}; configured: {list(self.runtimes)}"
            ) from None

    # Selector / single runtime --------------------------------------------------------

    async def _single(
        self, job: Job, plan: Plan, out: Outcome, t0: float, allow_fallback: bool
    ) -> None:
        runtime = self._runtime(plan.runtime)
        leg = _Leg(runtime)
        try:
            if self.availability and not self.availability.is_available(runtime.name):
                raise RuntimeUnavailable(runtime.name, "marked unavailable")
            await self._run_leg(job, leg)
            self._finish(out, leg, t0, add_used=True)
            return
        except BackendError as exc:
            out.cloud_used_s = out.cloud_wasted_s = leg.cloud_used_s
            edge = self.edge_runtime
            if runtime.is_edge or not allow_fallback or edge is None:
                raise
            log.warning(
                "falling back to the edge",
                extra={"batch_id": job.batch_id, "runtime": runtime.name, "error": str(exc)},
            )
            out.fell_back = True
            out.reason = f"{runtime.name} failed ({type(exc).__name__}: {exc}); ran on {edge}"
            out.error = str(exc)
        edge_leg = _Leg(self._runtime(edge))
        await self._run_leg(job, edge_leg)
        self._finish(out, edge_leg, t0, add_used=False)

    async def _run_leg(self, job: Job, leg: _Leg) -> None:
        """deploy → upload → warm → invoke on one runtime; teardown whatever happens."""
        try:
            await self._deploy(job, leg)
            await self._upload(job, leg)
            await self._warm(job, leg)
            await self._invoke(job, leg)
        finally:
            await self._teardown(leg)

    def _finish(self, out: Outcome, leg: _Leg, t0: float, *, add_used: bool) -> None:
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

    async def _deploy(self, job: Job, leg: _Leg) -> None:
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

    async def _upload(self, job: Job, leg: _Leg) -> None:
        loop = asyncio.get_running_loop()
        at, t = self.clock.now(), loop.time()
        leg.upload = await backend_for(self.backends, leg.runtime).upload(leg.runtime, job)
        leg.transfer_s = loop.time() - t
        if not leg.runtime.is_edge and job.n_bytes > 0:
            await self.recorder.transfer(
                TransferSample(job.n_bytes, leg.transfer_s, at, leg.runtime.name)
            )

    async def _warm(self, job: Job, leg: _Leg) -> None:
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

    async def _invoke(self, job: Job, leg: _Leg) -> None:
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

    async def _teardown(self, leg: _Leg) -> None:
        """Idempotent; a failing teardown is logged, never allowed to mask the result."""
        if leg.deployment is None or leg.torn_down_at is not None:
            return
        leg.torn_down_at = asyncio.get_running_loop().time()
        try:
            await backend_for(self.backends, leg.runtime).teardown(leg.deployment)
        except Exception:
            log.exception("teardown failed", extra={"runtime": leg.runtime.name})

    # Duplicator -------------------------------------------------------------------------

    async def _edge_part(self, job: Job, leg: _Leg) -> None:
        try:
            await self._deploy(job, leg)
            await self._upload(job, leg)
            await self._invoke(job, leg)
        finally:
            await self._teardown(leg)

    async def _cloud_prepare(self, job: Job, leg: _Leg) -> None:
        """Upload and deploy in parallel, then warm: afterwards only T_p remains."""
        upload = asyncio.create_task(self._upload(job, leg), name=f"{job.batch_id}:upload")
        try:
            await self._deploy(job, leg)
            await upload
            await self._warm(job, leg)
        finally:
            await cancel_and_wait([upload])

    async def _duplicate(self, job: Job, plan: Plan, out: Outcome, t0: float) -> None:
        loop = asyncio.get_running_loop()
        edge, cloud = _Leg(self._runtime(plan.edge_runtime)), _Leg(self._runtime(plan.runtime))
        bid, cname = job.batch_id, cloud.runtime.name
        edge_task = asyncio.create_task(self._edge_part(job, edge), name=f"{bid}:edge")
        prep = asyncio.create_task(self._cloud_prepare(job, cloud), name=f"{bid}:prepare")
        # _lagging_decision appends the cloud invocation here, so cleanup sees it too.
        tasks: list[asyncio.Task[None]] = [edge_task, prep]
        try:
            await asyncio.wait([edge_task, prep], return_when=asyncio.FIRST_COMPLETED)
            if _succeeded(edge_task):
                out.reason = f"edge finished before {cname} was ready; cancelled it"
                winner = edge
            elif edge_task.done():  # the edge failed: the cloud is all there is
                await asyncio.wait([prep])
                if not _succeeded(prep):
                    await edge_task  # raises the edge's error
                out.reason = f"edge failed ({edge_task.exception()}); ran on {cname}"
                await self._invoke(job, cloud)
                winner = cloud
            elif not _succeeded(prep):  # the cloud failed: the edge is all there is
                out.reason = f"{cname} failed ({prep.exception()}); kept the edge"
                await edge_task
                winner = edge
            else:
                winner = await self._lagging_decision(job, edge, cloud, edge_task, out, tasks)
        finally:
            await cancel_and_wait(tasks)
            await self._teardown(cloud)
        cloud_task = tasks[2] if len(tasks) > 2 else prep
        out.cancelled = tuple(
            leg.runtime.name
            for leg, task in ((edge, edge_task), (cloud, cloud_task))
            if leg is not winner and task.cancelled()
        )
        self._finish(out, winner, t0, add_used=winner is cloud)
        if winner is not cloud:  # every cloud second went for nothing
            out.cloud_used_s = out.cloud_wasted_s = cloud.cloud_used_s
        if out.kept_cloud:
            out.choice_correct = winner is cloud
        log.info(
            "duplicator finished",
            extra={
                "batch_id": bid,
                "winner": winner.runtime.name,
                "kept_cloud": out.kept_cloud,
                "choice_correct": out.choice_correct,
                "cloud_used_s": out.cloud_used_s,
                "cloud_wasted_s": out.cloud_wasted_s,
                "elapsed_s": loop.time() - t0,
            },
        )

    async def _lagging_decision(
        self,
        job: Job,
        edge: _Leg,
        cloud: _Leg,
        edge_task: asyncio.Task[None],
        out: Outcome,
        tasks: list[asyncio.Task[None]],
    ) -> _Leg:
        """The cloud is ready and the edge still running: re-predict and keep one."""
        loop = asyncio.get_running_loop()
        started = edge.invoke_started
        elapsed = 0.0 if started is None else loop.time() - started
        remaining = self.predictor.remaining_processing(
            edge.runtime.name, job.n_images, elapsed, app=job.app, app_version=job.app_version
        )
        cloud_p = self.predictor.estimate(
            cloud.runtime.name, job.n_images, job.n_bytes, app=job.app, app_version=job.app_version
        ).processing
        out.kept_cloud = keep_cloud(remaining, cloud_p)
        log.info(
            "duplicator decision at pod ready",
            extra={
                "batch_id": job.batch_id,
                "edge_elapsed_s": elapsed,
                "edge_remaining_s": remaining.mean,
                "cloud_processing_s": cloud_p.mean,
                "kept_cloud": out.kept_cloud,
            },
        )
        if not out.kept_cloud:
            out.reason = (
                f"at pod ready the edge needed {remaining.mean:.1f} s more, "
                f"{cloud.runtime.name} {cloud_p.mean:.1f} s: kept the edge, tore the pod down"
            )
            await self._teardown(cloud)
            await edge_task
            return edge
        out.reason = (
            f"at pod ready the edge needed {remaining.mean:.1f} s more, "
            f"{cloud.runtime.name} {cloud_p.mean:.1f} s: invoked {cloud.runtime.name}, racing"
        )
        invoke = asyncio.create_task(self._invoke(job, cloud), name=f"{job.batch_id}:cloud")
        tasks.append(invoke)
        pending = {edge_task, invoke}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in (edge_task, invoke):  # the edge first on an exact tie
                if task in done and _succeeded(task):
                    await cancel_and_wait(pending)
                    await self._teardown(cloud)
                    return edge if task is edge_task else cloud
        # Both failed: report the cloud's error, the one the decision relied on.
        exc = invoke.exception()
        assert exc is not None
        raise exc


def _succeeded(task: asyncio.Task[None]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None
