"""The requester: executes a :class:`~stoic.values.Plan` on runtime backends (paper §3.7).

It is the one place where a batch meets real (or simulated) runtimes, and it is the
same code in the daemon and the replay: only the backends and the clock differ.

* **Single runtime** (selector and every other non-speculative plan): deploy the chosen
  runtime with retry and back-off, upload the package (T_t), warm a cloud pod with a
  one-image call, invoke (T_p), tear down in ``finally``. A cloud runtime that is
  unavailable or fails falls back (``settings.requester.fallback_to_edge``) to the
  runtime predicted soonest among the others still available: the edge, unless a cloud
  runtime beats it.
* **Duplicator** (``plan.speculative_edge``): the edge races a cloud runtime that is
  re-predicted at pod-ready; see :mod:`stoic.schedule.execute.duplicator`. A cloud runtime
  marked down since the decision leaves the edge alone.

This module keeps what is the requester's own: running batches by id (so one can be
cancelled, like arq's jobs), choosing the path, and the fallback. It holds the parts it
is built from, one concept each, rather than inheriting from them:

* ``legs``: a :class:`~stoic.schedule.execute.legs.LegRunner`, the measured steps (deploy with
  back-off, upload, warm, invoke, teardown) on the configured backends;
* ``duplicator``: a :class:`~stoic.schedule.execute.duplicator.Duplicator` built on the same
  leg runner and the predictor, for the speculative-edge race.

Measurements go to the leg runner's :class:`~stoic.schedule.execute.recorder.Recorder`.

Durations are measured with the event loop's clock (``loop.time()``), which ``looptime``
fast-forwards in tests and the replay; instants come from the injected
:class:`~stoic.clock.Clock`. Every measurement goes to the :class:`Recorder` as soon as it
is taken, so a batch that fails half-way still teaches the predictor what it measured.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

from stoic.errors import BackendError, BatchCancelled, RuntimeUnavailable
from stoic.logging import get_logger
from stoic.schedule.execute.duplicator import Duplicator
from stoic.schedule.execute.legs import Leg, LegRunner
from stoic.schedule.execute.recorder import PredictorLike
from stoic.schedule.share.session import ChunkSink, Sharer
from stoic.values import Job, Mode, Outcome, Plan

log = get_logger(__name__)


class Requester:
    """Executes plans; running batches are kept by id so one can be cancelled."""

    def __init__(self, legs: LegRunner, predictor: PredictorLike) -> None:
        self.legs = legs
        self.duplicator = Duplicator(legs, predictor)
        self.sharer = Sharer(legs)
        self.settings = legs.settings
        self.clock = legs.clock
        self.availability = legs.availability
        self._jobs: dict[str, asyncio.Task[Outcome]] = {}
        edges = [r.name for r in legs.runtimes.values() if r.is_edge]
        self.edge_runtime: str | None = edges[0] if edges else None

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

    async def run(
        self,
        job: Job,
        plan: Plan,
        *,
        fallback: bool | None = None,
        done: Mapping[int, Any] | None = None,
        on_chunk: ChunkSink | None = None,
    ) -> Outcome:
        """Execute ``plan`` for ``job``. ``fallback`` overrides
        ``settings.requester.fallback_to_edge`` (bootstrapping turns it off). Share
        mode only: ``done`` holds the images labelled before a restart (not labelled
        again), ``on_chunk`` sees each chunk's results as they land."""
        if job.batch_id in self._jobs:
            raise BackendError(plan.runtime, f"batch {job.batch_id!r} is already running")
        allow = self.settings.requester.fallback_to_edge if fallback is None else fallback
        task = asyncio.create_task(
            self._execute(job, plan, allow, done, on_chunk), name=f"batch:{job.batch_id}"
        )
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

    async def _execute(
        self,
        job: Job,
        plan: Plan,
        allow_fallback: bool,
        done: Mapping[int, Any] | None,
        on_chunk: ChunkSink | None,
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        out = Outcome(job.batch_id, plan.runtime, plan.mode, started_at=self.clock.now())
        t0 = loop.time()
        log.info(
            "batch started",
            batch_id=job.batch_id,
            runtime=plan.runtime,
            mode=str(plan.mode),
            speculative=plan.speculative_edge,
        )
        down = self.availability is not None and not self.availability.is_available(plan.runtime)
        if plan.speculative_edge and down:  # marked down since the decision: edge alone
            out.reason = f"{plan.runtime} became unavailable; ran on {plan.edge_runtime} alone"
            edge_leg = Leg(self.legs.runtime(plan.edge_runtime))
            await self.legs.run_leg(job, edge_leg)
            self.legs.finish(out, edge_leg, t0, add_used=False)
        elif plan.speculative_edge:
            await self.duplicator.run(job, plan, out, t0)
        elif plan.mode is Mode.SHARE:
            await self.sharer.run(job, plan, out, t0, done=done, on_chunk=on_chunk)
        else:
            await self._single(job, plan, out, t0, allow_fallback)
        log.info(
            "batch finished",
            batch_id=job.batch_id,
            runtime=out.runtime,
            total_s=out.total_s,
            fell_back=out.fell_back,
            cloud_used_s=out.cloud_used_s,
            cloud_wasted_s=out.cloud_wasted_s,
        )
        return out

    # Selector / single runtime --------------------------------------------------------

    async def _single(
        self, job: Job, plan: Plan, out: Outcome, t0: float, allow_fallback: bool
    ) -> None:
        """Run the planned runtime; if a cloud runtime fails (a timed-out or refused
        deployment, a failed call), fall back to the runtime with the least predicted
        total among those still available and not yet tried — the edge, unless a
        cloud runtime is predicted sooner (a 2,000-image batch should not wait for
        the edge because one pod timed out) — until one succeeds or the edge fails."""
        tried: list[str] = []
        name = plan.runtime
        while True:
            runtime = self.legs.runtime(name)
            leg = Leg(runtime)
            tried.append(name)
            try:
                if self.availability and not self.availability.is_available(runtime.name):
                    raise RuntimeUnavailable(runtime.name, "marked unavailable")
                await self.legs.run_leg(job, leg)
                self.legs.finish(out, leg, t0, add_used=not out.fell_back)
                if out.fell_back:  # the fallback's own pod time (the failed ones counted)
                    out.cloud_used_s += leg.cloud_used_s
                return
            except BackendError as exc:
                out.cloud_used_s += leg.cloud_used_s
                out.cloud_wasted_s += leg.cloud_used_s
                nxt = self._fallback(plan, tried) if allow_fallback else None
                if runtime.is_edge or nxt is None:
                    raise
                log.warning(
                    "falling back", batch_id=job.batch_id, runtime=name, to=nxt, error=str(exc)
                )
                out.fell_back = True
                because = f"{name} failed ({type(exc).__name__}: {exc})"
                out.reason = f"{out.reason}; {because}" if out.reason else because
                out.reason += f"; ran on {nxt}"
                out.error = str(exc)
                name = nxt

    def _fallback(self, plan: Plan, tried: list[str]) -> str | None:
        """Where a failed batch goes next: the edge, or a cloud runtime still available
        and untried whose predicted total (the plan's estimates) beats the edge's."""
        edge = self.edge_runtime
        if edge is None or edge in tried:
            return None
        edge_total = plan.estimates[edge].total.mean if edge in plan.estimates else math.inf
        best, best_total = edge, edge_total
        for name, e in plan.estimates.items():
            if name in tried or name == edge:
                continue
            if self.availability is not None and not self.availability.is_available(name):
                continue
            if e.total.mean < best_total:
                best, best_total = name, e.total.mean
        return best
