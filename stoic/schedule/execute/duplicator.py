"""The duplicator's execution: the speculative edge raced against a cloud runtime (paper §3.7).

When the plan says ``speculative_edge``, the edge starts at once while the cloud runtime
uploads and deploys in parallel; when the cloud is ready (deployed, warmed, uploaded) the
requester re-predicts: the edge's predicted *remaining* processing against the cloud's
predicted T_p (:func:`stoic.schedule.decide.policy.keep_cloud`). The predicted loser is
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

from stoic.aio import cancel_and_wait, succeeded
from stoic.logging import get_logger
from stoic.schedule.decide.policy import keep_cloud
from stoic.schedule.execute.legs import Leg, LegRunner
from stoic.schedule.execute.recorder import PredictorLike
from stoic.values import Job, Outcome, Plan

log = get_logger(__name__)


class Duplicator:
    """Runs a speculative-edge plan with ``legs``' steps and ``predictor``'s estimates."""

    def __init__(self, legs: LegRunner, predictor: PredictorLike) -> None:
        self.legs = legs
        self.predictor = predictor

    async def _edge_part(self, job: Job, leg: Leg) -> None:
        try:
            await self.legs.deploy(job, leg)
            await self.legs.upload(job, leg)
            await self.legs.invoke(job, leg)
        finally:
            await self.legs.teardown(leg)

    async def _cloud_prepare(self, job: Job, leg: Leg) -> None:
        """Upload and deploy in parallel, then warm: afterwards only T_p remains."""
        upload = asyncio.create_task(self.legs.upload(job, leg), name=f"{job.batch_id}:upload")
        try:
            await self.legs.deploy(job, leg)
            await upload
            await self.legs.warm(job, leg)
        finally:
            await cancel_and_wait([upload])

    async def run(self, job: Job, plan: Plan, out: Outcome, t0: float) -> None:
        loop = asyncio.get_running_loop()
        edge, cloud = (
            Leg(self.legs.runtime(plan.edge_runtime)),
            Leg(self.legs.runtime(plan.runtime)),
        )
        bid, cname = job.batch_id, cloud.runtime.name
        edge_task = asyncio.create_task(self._edge_part(job, edge), name=f"{bid}:edge")
        prep = asyncio.create_task(self._cloud_prepare(job, cloud), name=f"{bid}:prepare")
        cloud_task = prep  # the race's invocation, once there is one
        try:
            await asyncio.wait([edge_task, prep], return_when=asyncio.FIRST_COMPLETED)
            if succeeded(edge_task):
                out.reason = f"edge finished before {cname} was ready; cancelled it"
                winner = edge
            elif edge_task.done():  # the edge failed: the cloud is all there is
                await asyncio.wait([prep])
                if not succeeded(prep):
                    await edge_task  # raises the edge's error
                out.reason = f"edge failed ({edge_task.exception()}); ran on {cname}"
                await self.legs.invoke(job, cloud)
                winner = cloud
            elif not succeeded(prep):  # the cloud failed: the edge is all there is
                out.reason = f"{cname} failed ({prep.exception()}); kept the edge"
                await edge_task
                winner = edge
            else:
                winner, invoke = await self._lagging_decision(job, edge, cloud, edge_task, out)
                cloud_task = invoke or prep
        finally:
            await cancel_and_wait([edge_task, prep])
            await self.legs.teardown(cloud)
        out.cancelled = tuple(
            leg.runtime.name
            for leg, task in ((edge, edge_task), (cloud, cloud_task))
            if leg is not winner and task.cancelled()
        )
        self.legs.finish(out, winner, t0, add_used=winner is cloud)
        if winner is not cloud:  # every cloud second went for nothing
            out.cloud_used_s = out.cloud_wasted_s = cloud.cloud_used_s
        if out.kept_cloud:
            out.choice_correct = winner is cloud
        log.info(
            "duplicator finished",
            batch_id=bid,
            winner=winner.runtime.name,
            kept_cloud=out.kept_cloud,
            choice_correct=out.choice_correct,
            cloud_used_s=out.cloud_used_s,
            cloud_wasted_s=out.cloud_wasted_s,
            elapsed_s=loop.time() - t0,
        )

    async def _lagging_decision(
        self,
        job: Job,
        edge: Leg,
        cloud: Leg,
        edge_task: asyncio.Task[None],
        out: Outcome,
    ) -> tuple[Leg, asyncio.Task[None] | None]:
        """The cloud is ready and the edge still running: re-predict and keep one.

        Returns the winner and the cloud's invocation task if the race started one (it
        is finished or cancelled by then: this method owns it)."""
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
            batch_id=job.batch_id,
            edge_elapsed_s=elapsed,
            edge_remaining_s=remaining.mean,
            cloud_processing_s=cloud_p.mean,
            kept_cloud=out.kept_cloud,
        )
        if not out.kept_cloud:
            out.reason = (
                f"at pod ready the edge needed {remaining.mean:.1f} s more, "
                f"{cloud.runtime.name} {cloud_p.mean:.1f} s: kept the edge, tore the pod down"
            )
            await self.legs.teardown(cloud)
            await edge_task
            return edge, None
        out.reason = (
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
                        return (edge if task is edge_task else cloud), invoke
            # Both failed: report the cloud's error, the one the decision relied on.
            exc = invoke.exception()
            assert exc is not None
            raise exc
        finally:
            await cancel_and_wait([invoke])
