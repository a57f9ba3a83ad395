"""The duplicator's execution: the speculative edge raced against a cloud runtime (paper §3.7).

For a :class:`~stoic.values.RacePlan` the edge starts at once while the cloud runtime
uploads and deploys in parallel; when the cloud is ready (deployed, warmed, uploaded) the
requester re-predicts: the edge's predicted *remaining* processing against the cloud's
predicted T_p (:func:`stoic.schedule.decide.policy.keep_cloud`), at the cloud budget's
price of that moment (a busy day may have raised it since the plan was made). The predicted loser is
dropped (the pod torn down at once) or raced (whichever finishes first wins; the other is
cancelled for real: the backend kills the work before the cancellation returns). If
either side fails before the decision, the other is all there is.

This is the one part of the requester where several tasks run at once, so it is kept
apart from the single-runtime path: every task it starts is in one list, and the
``finally`` cancels and awaits all of them and tears the pod down, whatever happened.
It also owns the cloud accounting of a race: a cloud that did not win used its pod time
for nothing (``cloud_wasted_s``), and ``choice_correct`` says whether keeping the cloud
paid off.

:class:`Duplicator` is built with a :class:`~stoic.schedule.execute.legs.LegRunner` (the
measured steps, shared with the requester) and the predictor it re-predicts with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from stoic.aio import cancel_and_wait, succeeded
from stoic.logging import get_logger
from stoic.schedule.decide.policy import keep_cloud
from stoic.schedule.execute.legs import Leg, LegRunner
from stoic.schedule.execute.recorder import PredictorLike
from stoic.schedule.execute.warm import PriceLike
from stoic.values import Job, Outcome, RacePlan

log = get_logger(__name__)


class Duplicator:
    """Runs a speculative-edge plan with ``legs``' steps and ``predictor``'s estimates;
    ``price`` quotes the cloud budget's price now (None: the plan's price)."""

    def __init__(
        self,
        legs: LegRunner,
        predictor: PredictorLike,
        price: Callable[[], PriceLike] | None = None,
    ) -> None:
        self.legs = legs
        self.predictor = predictor
        self.price = price

    async def _edge_part(self, job: Job, leg: Leg) -> None:
        try:
            await self.legs.deploy(job, leg)
            await self.legs.upload(job, leg)
            await self.legs.invoke(job, leg)
        finally:
            await self.legs.teardown(leg)

    async def _cloud_prepare(self, job: Job, leg: Leg) -> None:
        """Upload and deploy in parallel, then warm: afterwards only T_p remains."""
        await self.legs.deploy_uploading(job, leg)
        await self.legs.warm(job, leg)

    async def run(self, job: Job, plan: RacePlan, since: tuple[float, float]) -> Outcome:
        loop = asyncio.get_running_loop()
        edge = Leg(self.legs.runtime(plan.edge))
        cloud = Leg(self.legs.runtime(plan.cloud), deadline_s=plan.deadlines.get(plan.cloud))
        bid, cname = job.batch_id, cloud.runtime.name
        edge_task = asyncio.create_task(self._edge_part(job, edge), name=f"{bid}:edge")
        prep = asyncio.create_task(self._cloud_prepare(job, cloud), name=f"{bid}:prepare")
        cloud_task = prep  # the race's invocation, once there is one
        kept_cloud: bool | None = None
        try:
            await asyncio.wait([edge_task, prep], return_when=asyncio.FIRST_COMPLETED)
            if succeeded(edge_task):
                reason = f"edge finished before {cname} was ready; cancelled it"
                winner = edge
            elif edge_task.done():  # the edge failed: the cloud is all there is
                await asyncio.wait([prep])
                if not succeeded(prep):
                    await edge_task  # raises the edge's error
                reason = f"edge failed ({edge_task.exception()}); ran on {cname}"
                await self.legs.invoke(job, cloud)
                winner = cloud
            elif not succeeded(prep):  # the cloud failed: the edge is all there is
                reason = f"{cname} failed ({prep.exception()}); kept the edge"
                await edge_task
                winner = edge
            else:
                winner, invoke, kept_cloud, reason = await self._lagging_decision(
                    job, edge, cloud, edge_task, plan.pod_price
                )
                cloud_task = invoke or prep
        finally:
            await cancel_and_wait([edge_task, prep])
            await self.legs.teardown(cloud)
        cancelled = tuple(
            leg.runtime.name
            for leg, task in ((edge, edge_task), (cloud, cloud_task))
            if leg is not winner and task.cancelled()
        )
        used = cloud.cloud_used_s  # a cloud that did not win held its pod for nothing
        out = self.legs.outcome(
            job,
            plan.mode,
            winner,
            since,
            reason=reason,
            cancelled=cancelled,
            cloud_used_s=used,
            cloud_wasted_s=0.0 if winner is cloud else used,
            kept_cloud=kept_cloud,
            choice_correct=(winner is cloud) if kept_cloud else None,
        )
        log.info(
            "duplicator finished",
            batch_id=bid,
            winner=winner.runtime.name,
            kept_cloud=kept_cloud,
            choice_correct=out.choice_correct,
            cloud_used_s=out.cloud_used_s,
            cloud_wasted_s=out.cloud_wasted_s,
            elapsed_s=loop.time() - since[1],
        )
        return out

    async def _lagging_decision(
        self,
        job: Job,
        edge: Leg,
        cloud: Leg,
        edge_task: asyncio.Task[None],
        pod_price: float,
    ) -> tuple[Leg, asyncio.Task[None] | None, bool, str]:
        """The cloud is ready and the edge still running: re-predict and keep one (at
        the price of a pod-second now, else the plan's, :func:`keep_cloud`).

        Returns the winner, the cloud's invocation task if the race started one (it is
        finished or cancelled by then: this method owns it), the decision and why."""
        loop = asyncio.get_running_loop()
        started = edge.invoke_started
        elapsed = 0.0 if started is None else loop.time() - started
        remaining = self.predictor.remaining_processing(
            edge.runtime.name, job.n_images, elapsed, app=job.app, app_version=job.app_version
        )
        cloud_p = self.predictor.estimate(
            cloud.runtime.name, job.n_images, job.n_bytes, app=job.app, app_version=job.app_version
        ).processing
        if self.price is not None:
            pod_price = self.price().cost(cloud.runtime.name, 1.0)
        kept = keep_cloud(remaining, cloud_p, pod_price)
        log.info(
            "duplicator decision at pod ready",
            batch_id=job.batch_id,
            edge_elapsed_s=elapsed,
            edge_remaining_s=remaining.mean,
            cloud_processing_s=cloud_p.mean,
            kept_cloud=kept,
        )
        if not kept:
            reason = (
                f"at pod ready the edge needed {remaining.mean:.1f} s more, "
                f"{cloud.runtime.name} {cloud_p.mean:.1f} s: kept the edge, tore the pod down"
            )
            await self.legs.teardown(cloud)
            await edge_task
            return edge, None, kept, reason
        reason = (
            f"at pod ready the edge needed {remaining.mean:.1f} s more, "
            f"{cloud.runtime.name} {cloud_p.mean:.1f} s: invoked {cloud.runtime.name}, racing"
        )
        invoke = asyncio.create_task(self.legs.invoke(job, cloud), name=f"{job.batch_id}:cloud")
        try:
            pending = {edge_task, invoke}
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in (edge_task, invoke):  # the edge first on an exact tie
                    if task in done and succeeded(task):
                        await cancel_and_wait(pending)
                        await self.legs.teardown(cloud)
                        return (edge if task is edge_task else cloud), invoke, kept, reason
            # Both failed: report the cloud's error, the one the decision relied on.
            exc = invoke.exception()
            assert exc is not None
            raise exc
        finally:
            await cancel_and_wait([invoke])
