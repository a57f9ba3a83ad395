"""A programmable in-memory :class:`~stoic.backends.base.RuntimeBackend` for tests.

It does nothing but ``asyncio.sleep`` for scripted durations, so under ``looptime`` a
test can assert measured times *exactly*. It keeps a log of every call and its loop
time, the deployments that are live (a test asserts that everything was torn down), and
the invocations that were cancelled (a cancelled invocation really stops: its sleep is
interrupted, and it is logged as ``invoke-cancelled``).

Scripting, per runtime name:

* :class:`FakeSpec` gives the steady behaviour: deployment seconds, upload seconds,
  warm-up seconds, and processing seconds ``fixed_s + per_image_s * n_images``.
* :meth:`FakeBackend.script_deploys` queues individual deployment attempts (a delay, a
  failure after a delay, or a delay past the timeout, which produces ``DeployTimeout``
  after exactly ``timeout_s``); :meth:`FakeBackend.script_invokes` queues individual
  invocations (a duration or a failure). Queued steps are used first, then the spec.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from stoic.backends.base import Deployment, Invocation, RuntimeBackend, Upload
from stoic.errors import DeployFailure, DeployTimeout, InvocationError
from stoic.values import Job, Runtime


@dataclass(frozen=True, slots=True)
class FakeSpec:
    """Steady behaviour of one runtime."""

    deploy_s: float = 0.0
    upload_s: float = 0.0
    upload_per_image_s: float = 0.0
    warmup_s: float = 0.0
    per_image_s: float = 1.0
    fixed_s: float = 0.0

    def processing_s(self, n_images: int) -> float:
        return self.fixed_s + self.per_image_s * n_images


@dataclass(frozen=True, slots=True)
class DeployStep:
    """One scripted deployment attempt: ready after ``delay_s``, or fail after it.

    ``delay_s=math.inf`` (or anything beyond the timeout) never becomes ready.
    """

    delay_s: float = 0.0
    fail: bool = False


@dataclass(frozen=True, slots=True)
class InvokeStep:
    """One scripted invocation: returns after ``duration_s``, or fails after it."""

    duration_s: float
    fail: bool = False


@dataclass(frozen=True, slots=True)
class FakeEvent:
    """One thing the fake did, at a loop time."""

    op: str
    runtime: str
    at: float
    batch_id: str = ""
    detail: str = ""


@dataclass(slots=True)
class FakeBackend(RuntimeBackend):
    """In-memory backend; one instance may serve every runtime."""

    specs: Mapping[str, FakeSpec] = field(default_factory=dict)
    default: FakeSpec = field(default_factory=FakeSpec)
    events: list[FakeEvent] = field(default_factory=list)
    live: dict[int, Deployment] = field(default_factory=dict)
    running: dict[int, tuple[str, str]] = field(default_factory=dict)
    _deploys: dict[str, list[DeployStep]] = field(default_factory=dict)
    _invokes: dict[str, list[InvokeStep]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # Scripting -------------------------------------------------------------------

    def spec(self, runtime: str) -> FakeSpec:
        return self.specs.get(runtime, self.default)

    def script_deploys(self, runtime: str, *steps: DeployStep | float) -> None:
        """Queue deployment attempts for ``runtime`` (a float is a plain delay)."""
        self._deploys.setdefault(runtime, []).extend(
            s if isinstance(s, DeployStep) else DeployStep(float(s)) for s in steps
        )

    def script_invokes(self, runtime: str, *steps: InvokeStep | float) -> None:
        """Queue (non-warm-up) invocations for ``runtime`` (a float is a duration)."""
        self._invokes.setdefault(runtime, []).extend(
            s if isinstance(s, InvokeStep) else InvokeStep(float(s)) for s in steps
        )

    # Queries for assertions ------------------------------------------------------

    def ops(self, op: str, runtime: str | None = None) -> list[FakeEvent]:
        return [e for e in self.events if e.op == op and runtime in (None, e.runtime)]

    def times(self, op: str, runtime: str | None = None) -> list[float]:
        return [e.at for e in self.ops(op, runtime)]

    # RuntimeBackend --------------------------------------------------------------

    def _log(self, op: str, runtime: str, batch_id: str = "", detail: str = "") -> None:
        now = asyncio.get_running_loop().time()
        self.events.append(FakeEvent(op, runtime, now, batch_id, detail))

    async def deploy(self, runtime: Runtime, *, timeout_s: float) -> Deployment:
        queue = self._deploys.get(runtime.name)
        step = queue.pop(0) if queue else DeployStep(self.spec(runtime.name).deploy_s)
        self._log("deploy", runtime.name)
        try:
            if step.delay_s >= timeout_s or math.isinf(step.delay_s):
                await asyncio.sleep(timeout_s)
                self._log("deploy-timeout", runtime.name)
                raise DeployTimeout(runtime.name, timeout_s)
            await asyncio.sleep(step.delay_s)
        except asyncio.CancelledError:
            self._log("deploy-cancelled", runtime.name)
            raise
        if step.fail:
            self._log("deploy-failed", runtime.name)
            raise DeployFailure(runtime.name, "scripted deployment failure")
        ident = next(self._ids)
        dep = Deployment(
            runtime, step.delay_s, endpoint=f"fake://{runtime.name}/{ident}", handle=ident
        )
        self.live[ident] = dep
        self._log("ready", runtime.name, detail=str(ident))
        return dep

    async def upload(self, runtime: Runtime, job: Job) -> Upload:
        spec = self.spec(runtime.name)
        seconds = spec.upload_s + spec.upload_per_image_s * job.n_images
        detail = "" if job.subset is None else f"{job.subset[0]}-{job.subset[1]}"
        self._log("upload", runtime.name, job.batch_id, detail)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self._log("upload-cancelled", runtime.name, job.batch_id)
            raise
        self._log("uploaded", runtime.name, job.batch_id)
        return Upload(f"fake://{runtime.name}/{job.batch_id}", job.n_bytes, seconds)

    async def invoke(
        self, deployment: Deployment, job: Job, upload: Upload, *, warmup: bool = False
    ) -> Invocation:
        name = deployment.runtime.name
        if deployment.handle not in self.live:
            raise InvocationError(name, f"deployment {deployment.handle} is not live")
        spec = self.spec(name)
        if warmup:
            step = InvokeStep(spec.warmup_s)
        else:
            queue = self._invokes.get(name)
            step = queue.pop(0) if queue else InvokeStep(spec.processing_s(job.n_images))
        op = "warmup" if warmup else "invoke"
        ident = next(self._ids)
        self.running[ident] = (name, job.batch_id)
        detail = "" if job.subset is None else f"{job.subset[0]}-{job.subset[1]}"
        self._log(op, name, job.batch_id, detail)
        try:
            await asyncio.sleep(step.duration_s)
        except asyncio.CancelledError:
            self._log(f"{op}-cancelled", name, job.batch_id)
            raise
        finally:
            del self.running[ident]
        if step.fail:
            self._log(f"{op}-failed", name, job.batch_id)
            raise InvocationError(name, "scripted invocation failure")
        self._log(f"{op}-done", name, job.batch_id)
        n = 1 if warmup else job.n_images
        first = job.subset[0] if job.subset is not None and not warmup else 0
        results = [{"index": first + i, "label": f"fake:{name}"} for i in range(n)]
        return Invocation(step.duration_s, results, {"processing_s": step.duration_s})

    async def teardown(self, deployment: Deployment) -> None:
        if self.live.pop(deployment.handle, None) is not None:
            self._log("teardown", deployment.runtime.name, detail=str(deployment.handle))
