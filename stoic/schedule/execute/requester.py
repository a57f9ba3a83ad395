"""The requester: executes a :class:`~stoic.values.Plan` on runtime backends (paper §3.7).

It is the one place where a batch meets real (or simulated) runtimes, and it is the
same code in the daemon and the replay: only the backends and the clock differ.

* **Single runtime** (a :class:`~stoic.values.SinglePlan`): deploy the chosen
  runtime with retry and back-off, upload the package (T_t; during the deployment if
  the plan is ``pipelined``), warm a cloud pod with a one-image call, invoke (T_p), tear
  down in ``finally``. A deployment past the plan's deploy deadline for its runtime is
  abandoned (:class:`~stoic.errors.DeployAbandoned`) and falls back like a failure; a
  fallback leg has the plan's fallback deadline for its runtime
  (``policy.deploy_deadline_fallback``, priced for it as a fallback), or none and waits
  to the timeout (both the selector's and the informed reference's deadlines price the
  fallback so). A
  cloud runtime that is unavailable or fails falls back
  (``settings.requester.fallback_to_edge``) to the runtime predicted soonest among the
  others still available: the edge, unless a cloud runtime beats it.
* **Duplicator** (a :class:`~stoic.values.RacePlan`): the edge races a cloud runtime
  that is re-predicted at pod-ready; see :mod:`stoic.schedule.execute.duplicator`. A
  cloud runtime marked down since the decision leaves the edge alone.
* **Share** (a :class:`~stoic.values.SharePlan`): :mod:`stoic.schedule.share.session`.

This module keeps what is the requester's own: matching the plan to its executor, and
the fallback. Each executor returns the frozen :class:`~stoic.values.Outcome` it built.
It holds the parts it is built from, one concept each, rather than inheriting from them:

* ``legs``: a :class:`~stoic.schedule.execute.legs.LegRunner`, the measured steps (deploy with
  back-off, upload, warm, invoke, teardown) on the configured backends;
* ``duplicator``: a :class:`~stoic.schedule.execute.duplicator.Duplicator` built on the same
  leg runner, the predictor and the cloud budget's quote, for the speculative-edge race.

Measurements go to the leg runner's :class:`~stoic.schedule.execute.recorder.Recorder`.

Durations are measured with the event loop's clock (``loop.time()``), which ``looptime``
fast-forwards in tests and the replay; instants come from the injected
:class:`~stoic.clock.Clock`. Every measurement goes to the :class:`Recorder` as soon as it
is taken, so a batch that fails half-way still teaches the predictor what it measured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from stoic.errors import BackendError, DeployAbandoned, RuntimeUnavailable
from stoic.logging import get_logger
from stoic.schedule.decide.policy import predicted_totals
from stoic.schedule.execute.duplicator import Duplicator
from stoic.schedule.execute.legs import Leg, LegRunner
from stoic.schedule.execute.recorder import PredictorLike
from stoic.schedule.execute.warm import PriceLike
from stoic.schedule.share.session import ChunkSink, ShareOptions, Sharer
from stoic.values import Job, Outcome, Plan, RacePlan, SharePlan, SinglePlan, fallback_after

log = get_logger(__name__)


class Requester:
    """Executes plans: each executor returns the :class:`Outcome` it built."""

    def __init__(
        self,
        legs: LegRunner,
        predictor: PredictorLike,
        *,
        fallback_to_edge: bool = True,
        share: ShareOptions = ShareOptions(),
        price: Callable[[], PriceLike] | None = None,
    ) -> None:
        self.legs = legs
        self.duplicator = Duplicator(legs, predictor, price)
        self.sharer = Sharer(legs, share)
        self.fallback_to_edge = fallback_to_edge  # settings.requester.fallback_to_edge
        self.clock = legs.clock
        self.availability = legs.availability
        edges = [r.name for r in legs.runtimes.values() if r.is_edge]
        self.edge_runtime: str | None = edges[0] if edges else None

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
        again), ``on_chunk`` sees each chunk's results as they land. Cancelling the
        task that runs it stops every sub-task and tears every deployment down first."""
        allow = self.fallback_to_edge if fallback is None else fallback
        return await self._execute(job, plan, allow, done, on_chunk)

    async def _execute(
        self,
        job: Job,
        plan: Plan,
        allow_fallback: bool,
        done: Mapping[int, Any] | None,
        on_chunk: ChunkSink | None,
    ) -> Outcome:
        since = (self.clock.now(), asyncio.get_running_loop().time())
        log.info(
            "batch started",
            batch_id=job.batch_id,
            runtime=plan.chosen,
            mode=str(plan.mode),
            speculative=isinstance(plan, RacePlan),
        )
        match plan:
            case RacePlan() if not self._available(plan.cloud):
                # Marked down since the decision: the edge alone.
                edge_leg = Leg(self.legs.runtime(plan.edge))
                await self.legs.run_leg(job, edge_leg)
                because = f"{plan.cloud} became unavailable; ran on {plan.edge} alone"
                out = self.legs.outcome(job, plan.mode, edge_leg, since, reason=because)
            case RacePlan():
                out = await self.duplicator.run(job, plan, since)
            case SharePlan():
                out = await self.sharer.run(job, plan, since, done=done, on_chunk=on_chunk)
            case SinglePlan():
                out = await self._single(job, plan, since, allow_fallback)
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

    def _available(self, name: str) -> bool:
        return self.availability is None or self.availability.is_available(name)

    # Selector / single runtime --------------------------------------------------------

    async def _single(
        self, job: Job, plan: SinglePlan, since: tuple[float, float], allow_fallback: bool
    ) -> Outcome:
        """Run the planned runtime; if a cloud runtime fails (a timed-out or refused
        deployment, a failed call), fall back to the runtime with the least predicted
        total among those still available and not yet tried — the edge, unless a
        cloud runtime is predicted sooner (a 2,000-image batch should not wait for
        the edge because one pod timed out) — until one succeeds or the edge fails."""
        tried: list[str] = []
        abandoned: list[str] = []
        name = plan.runtime
        used = wasted = 0.0
        reason, error = "", None
        while True:
            runtime = self.legs.runtime(name)
            # A fallback leg has the deadline priced for it as a fallback, if any; else it
            # waits to the timeout, as the deadline that sent the batch here priced it
            # (docs/scheduling.md, "Deploy deadlines").
            deadlines = plan.fallback_deadlines if tried else plan.deadlines
            leg = Leg(runtime, deadline_s=deadlines.get(name))
            tried.append(name)
            try:
                if not self._available(runtime.name):
                    raise RuntimeUnavailable(runtime.name, "marked unavailable")
                await self.legs.run_leg(job, leg, pipelined=plan.pipelined)
                used += leg.cloud_used_s  # the winner's own pod time
                return self.legs.outcome(
                    job,
                    plan.mode,
                    leg,
                    since,
                    cloud_used_s=used,
                    cloud_wasted_s=wasted,
                    fell_back=len(tried) > 1,
                    reason=reason,
                    error=error,
                    abandoned=tuple(abandoned),
                )
            except BackendError as exc:
                used += leg.cloud_used_s
                wasted += leg.cloud_used_s
                if isinstance(exc, DeployAbandoned):
                    abandoned.append(name)
                nxt = self._fallback(plan, tried) if allow_fallback else None
                if runtime.is_edge or nxt is None:
                    raise
                log.warning(
                    "falling back", batch_id=job.batch_id, runtime=name, to=nxt, error=str(exc)
                )
                because = f"{name} failed ({type(exc).__name__}: {exc})"
                reason = f"{reason}; {because}" if reason else because
                reason += f"; ran on {nxt}"
                error = str(exc)
                name = nxt

    def _fallback(self, plan: SinglePlan, tried: list[str]) -> str | None:
        """Where a failed batch goes next (:func:`fallback_after` on the plan's predicted
        totals, or its ``fallback_totals`` where it has them, the informed oracle's;
        among the runtimes still available)."""
        if self.edge_runtime is None:
            return None
        ranks = plan.fallback_totals or predicted_totals(plan.estimates)
        return fallback_after(ranks, self.edge_runtime, tried, self._available)
