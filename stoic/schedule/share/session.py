"""Share mode's execution: one batch labelled by the edge and cloud runtimes at once.

The policy (:func:`stoic.schedule.decide.policy.decide`, ``Mode.SHARE``) names the cloud
runtimes worth deploying; this module runs the batch on them through a
:class:`~stoic.schedule.share.board.ShareBoard`:

* **Every participant is a loop over the board.** The edge deploys (its warm standby)
  and labels chunks from the front at once; each cloud runtime deploys and, meanwhile,
  reserves chunks from the back and uploads them in the order it will label them
  (``share.prefetch_chunks`` ahead), then labels them, keeping its uploads ahead of its
  work. An idle participant steals a reservation nobody started (the edge the front-most
  one), and when nothing is left to take, may hedge a straggler's chunk once per batch
  if it would finish it sooner (:meth:`ShareBoard.hedge`; first result wins).
* **A pod that cannot help goes.** A cloud runtime reserves only what the others are
  not predicted to have labelled by the time its pod is ready; when nothing is left for
  it (no image unassigned, none reserved for it), its deployment is cancelled. When the
  board is done, everything still running (a hedged duplicate, a pod still deploying) is
  cancelled and every pod torn down.
* **Failures return work.** A cloud runtime whose deployment times out or whose call
  fails releases its chunks to the board and stops; the batch completes on the others,
  the edge at least. Only when every participant has failed does the batch fail.
* **Chunks are jobs.** A chunk is ``job.chunk(start, stop)`` (``Job.subset``): each
  backend uploads and labels just those images (the local backend passes the range to
  the function; Kubernetes cuts a sub-package; the simulator charges their bytes and
  seconds). The first call on a pod is its warm-up too: it loads the model while it
  labels.
* **Results are stored chunk by chunk.** ``on_chunk`` (the daemon's: an object per
  chunk) sees each chunk's results as they land; a restart passes the images already
  labelled as ``done`` and only the others are handed out.

What is learnt: every deployment (T_d); an upload's bandwidth only when no other upload
shared the uplink (concurrent uploads would teach the selector a slower uplink); the
first call of each participant as a processing sample (a later call on the same warm
instance skips the model load and would bias the T_p line's intercept low).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stoic.aio import cancel_and_wait
from stoic.backends.base import Upload
from stoic.errors import BackendError
from stoic.logging import get_logger
from stoic.schedule.execute.legs import Leg, LegRunner, UplinkShare
from stoic.schedule.share.board import Chunk, ShareBoard
from stoic.schedule.share.forecast import Forecast, Pace
from stoic.values import Estimate, Job, Outcome, SharePlan

log = get_logger(__name__)

STEAL_POLL_S = 2.0
"""How often an idle participant looks again at the reservations of a pod that is
late (its readiness is overdue, so stealing grows more attractive as time passes)."""

ChunkSink = Callable[[Chunk, str, Sequence[Any]], Awaitable[None]]
"""Called with each finished chunk: the chunk, who labelled it, its results in order."""


@dataclass(slots=True, kw_only=True)
class _Part(Pace):
    """One participant's state in a shared batch: its pace, its leg and its uploads."""

    leg: Leg
    productive_s: float = 0.0  # invocation seconds that labelled new images
    uploads: dict[Chunk, asyncio.Task[Upload]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ShareOptions:
    """How a share session cuts and hedges (``settings.share``; built by
    :func:`~stoic.schedule.assembly.build_core`; docs/configuration.md says why each)."""

    chunk_factor: float = 2.0  # a chunk takes 1/chunk_factor of the time the batch has left
    min_chunk_s: float = 2.0  # smallest chunk, in seconds of its taker's processing
    prefetch_chunks: int = 2  # chunks a cloud runtime keeps uploaded ahead of its work
    max_hedges: int = 1  # straggler hedges per batch (a chunk labelled twice)


class Sharer:
    """Runs share plans with the leg runner's backends and the predictor's rates."""

    def __init__(self, legs: LegRunner, options: ShareOptions = ShareOptions()) -> None:
        self.legs = legs
        self.options = options

    async def run(
        self,
        job: Job,
        plan: SharePlan,
        since: tuple[float, float],
        *,
        done: Mapping[int, Any] | None = None,
        on_chunk: ChunkSink | None = None,
    ) -> Outcome:
        """Label ``job`` with ``plan``'s participants; ``since`` is the batch's start
        (clock instant, loop time)."""
        session = _Session(self.legs, self.options, job, plan, since, done or {}, on_chunk)
        return await session.run()


class _Session:
    def __init__(
        self,
        legs: LegRunner,
        options: ShareOptions,
        job: Job,
        plan: SharePlan,
        since: tuple[float, float],
        done: Mapping[int, Any],
        on_chunk: ChunkSink | None,
    ) -> None:
        self.legs, self.job, self.plan = legs, job, plan
        self.started_at, self.t0 = since
        self.s = options
        self.done = done
        self.on_chunk = on_chunk
        self.board = ShareBoard(job.n_images, done=done, max_hedges=self.s.max_hedges)
        self.loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._uplink = UplinkShare()
        self._edge_upload: Upload | None = None
        avail = legs.availability
        clouds = [c for c in plan.clouds if avail is None or avail.is_available(c)]
        names = [plan.lead, *clouds]  # a cloud marked down since the decision sits out
        self.parts = {n: self._part(n, plan.estimates.get(n)) for n in names}
        self.forecast = Forecast(
            self.board, self.parts, chunk_factor=self.s.chunk_factor, min_chunk_s=self.s.min_chunk_s
        )

    def _part(self, name: str, e: Estimate | None) -> _Part:
        runtime = self.legs.runtime(name)
        n = max(self.job.n_images, 1)
        per_image = e.per_image_s(n) if e is not None else 1.0
        fixed = e.fixed_s() if e is not None else 0.0
        ready = 0.0 if e is None else e.deployment.mean + e.risk.deployment_excess_s
        return _Part(
            name,
            rate=1.0 / per_image if per_image > 0 else math.inf,
            fixed_s=fixed,
            cloud=not runtime.is_edge,
            ready_by=self.loop.time() + ready,
            leg=Leg(runtime),
        )

    # The session ---------------------------------------------------------------------

    async def run(self) -> Outcome:
        tasks = {
            asyncio.create_task(self._participate(p), name=f"{self.job.batch_id}:share:{p.name}")
            for p in self.parts.values()
        }
        try:
            pending = set(tasks)
            while pending and not self.board.finished:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(tasks)
            for p in self.parts.values():
                await self.legs.teardown(p.leg)
        out = self._outcome()
        if not self.board.finished:
            errors = [p.error for p in self.parts.values() if p.error is not None]
            if errors:
                raise errors[-1]
            raise BackendError(self.plan.lead, "share: every participant stopped early")
        return out

    def _outcome(self) -> Outcome:
        board = self.board
        total_s = self.loop.time() - self.t0
        finished_at = self.legs.clock.now()
        results = None
        if board.finished:
            results = [
                {**(r if isinstance(r, dict) else {"result": r}), "runtime": owner or "earlier"}
                if owner
                else self.done[i]
                for i, (owner, r) in enumerate(board.ordered_results())
            ]
        labelled = {n: k for n, k in board.stats.labelled.items() if k}
        lead = self.plan.lead
        legs = [p.leg for p in self.parts.values()]
        ready = [leg.deploy_s for leg in legs if leg.runtime.is_edge is False and leg.ready_at]
        used = wasted = 0.0
        cloud_by: dict[str, tuple[float, float]] = {}
        for p in self.parts.values():
            if p.cloud:
                u = p.leg.cloud_used_s
                w = max(u - p.productive_s, 0.0)
                used += u
                wasted += w
                cloud_by[p.name] = (u, w)
        failed = [f"{p.name} failed ({p.error})" for p in self.parts.values() if p.error]
        shares = ", ".join(f"{n} {k}" for n, k in labelled.items())
        out = Outcome(
            self.job.batch_id,
            lead,
            self.plan.mode,
            transfer_s=sum(leg.transfer_s for leg in legs),
            deployment_s=min(ready) if ready else 0.0,
            processing_s=sum(leg.processing_s for leg in legs),
            total_s=total_s,
            started_at=self.started_at,
            finished_at=finished_at,
            winner=max(labelled, key=lambda n: labelled[n]) if labelled else lead,
            cloud_used_s=used,
            cloud_wasted_s=wasted,
            results=results,
            error="; ".join(failed) or None,
            reason=f"share: {shares or 'nothing'} images"
            + ("; " + "; ".join(failed) if failed else ""),
            shares=dict(board.stats.labelled),
            cloud_by=cloud_by,
            duplicate_images=board.stats.duplicate_images,
        )
        log.info(
            "share finished",
            batch_id=self.job.batch_id,
            shares=out.shares,
            duplicates=out.duplicate_images,
            steals=board.stats.steals,
            hedges=board.stats.hedges,
            released=board.stats.released,
            cloud_used_s=used,
            cloud_wasted_s=wasted,
            total_s=out.total_s,
        )
        return out

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # One participant -------------------------------------------------------------------

    async def _participate(self, p: _Part) -> None:
        prefetch: asyncio.Task[None] | None = None
        p.deploy_started = self.loop.time()
        try:
            if p.cloud:
                prefetch = asyncio.create_task(
                    self._prefetch(p), name=f"{self.job.batch_id}:share:{p.name}:upload"
                )
                deploy = asyncio.create_task(self.legs.deploy(self.job, p.leg))
                try:
                    await self._until_useful(p, deploy)
                finally:
                    await cancel_and_wait([deploy])
                if p.leg.deployment is None:
                    return  # nothing left for it: its deployment was cancelled
            else:
                await self.legs.deploy(self.job, p.leg)
            p.active = True
            self._notify()
            await self._work(p)
        except BackendError as exc:
            p.error = exc
            log.warning(
                "share participant failed; its chunks go back",
                batch_id=self.job.batch_id,
                runtime=p.name,
                error=str(exc),
            )
        finally:
            p.active, p.gone = False, True
            await cancel_and_wait([t for t in (prefetch, *p.uploads.values()) if t is not None])
            if not self.board.finished:
                self.board.release(p.name)
            self._notify()

    async def _until_useful(self, p: _Part, deploy: asyncio.Task[None]) -> None:
        """Wait for the deployment while there is still work it could do; cancel it
        (no error) once the others are predicted to finish everything first."""
        while not deploy.done():
            if self.forecast.nothing_left_for(p):
                log.info(
                    "share: cancelling a pod that would be ready too late",
                    batch_id=self.job.batch_id,
                    runtime=p.name,
                )
                return
            changed = self._changed
            with_timeout = asyncio.create_task(changed.wait())
            await asyncio.wait({deploy, with_timeout}, return_when=asyncio.FIRST_COMPLETED)
            await cancel_and_wait([with_timeout])
        deploy.result()  # raises its error

    async def _prefetch(self, p: _Part) -> None:
        """Keep ``prefetch_chunks`` of ``p``'s chunks reserved and uploaded ahead."""
        while not self.board.finished:
            mine = self.board.reserved_by(p.name)
            missing = [
                c
                for c in mine
                if not any(u.start <= c.start and c.stop <= u.stop for u in p.uploads)
            ]
            if missing:
                # The back-most first: the order it will label them. Waited on, not
                # awaited: the labelling loop may take the task over.
                await asyncio.wait([self._start_upload(p, max(missing))])
                continue
            now = self.loop.time()
            size = self.forecast.size(p, now)
            wanted = (
                len(mine) < self.s.prefetch_chunks
                and size > 0
                and not self.forecast.overtaken(p, now)
            )
            if wanted and self.board.take(p.name, size, from_back=True, reserve=True):
                continue
            changed = self._changed
            await changed.wait()

    def _start_upload(self, p: _Part, chunk: Chunk) -> asyncio.Task[Upload]:
        task = asyncio.create_task(self._upload(p, chunk), name=f"{p.name}:upload:{chunk}")
        p.uploads[chunk] = task
        return task

    async def _upload(self, p: _Part, chunk: Chunk) -> Upload:
        job = self.job.chunk(chunk.start, chunk.stop)
        return await self.legs.upload_chunk(p.leg, job, self._uplink)

    async def _work(self, p: _Part) -> None:
        while not self.board.finished:
            chunk = self._next_chunk(p)
            if chunk is None:
                if not self.forecast.may_get_more(p):
                    return
                # Idle: wake on any change, when a running chunk may turn straggler, or,
                # while a late pod sits on reservations, to see whether to steal them.
                now = self.loop.time()
                _, wake = self.forecast.straggling(p, now)
                if self.forecast.late_reservations(p, now):
                    wake = min(wake, self.loop.time() + STEAL_POLL_S)
                timeout = None if not math.isfinite(wake) else wake - self.loop.time()
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await changed.wait()
                continue
            await self._label(p, chunk)

    def _next_chunk(self, p: _Part) -> Chunk | None:
        b = self.board
        for mine in sorted(b.reserved_by(p.name), reverse=True):
            if b.start(p.name, mine):
                return mine
        f, now = self.forecast, self.loop.time()
        c = b.take(p.name, f.size(p, now), from_back=p.cloud)
        if c is None:
            c = b.steal(
                p.name,
                f.size(p, now, stealing=True),
                front_most=not p.cloud,
                accept=lambda c, o: f.sooner(p, c, o, now),
            )
        if c is None:
            c = self._hedge(p)
        return c

    def _hedge(self, p: _Part) -> Chunk | None:
        eligible, _ = self.forecast.straggling(p, self.loop.time())
        return self.board.hedge(p.name, eligible=eligible) if eligible else None

    async def _label(self, p: _Part, chunk: Chunk) -> None:
        job = self.job.chunk(chunk.start, chunk.stop)
        if p.cloud:
            # An upload of a larger range covers a chunk cut from it (a partial steal
            # left the rest of a reservation to its owner).
            covering = next(
                (c for c in p.uploads if c.start <= chunk.start and chunk.stop <= c.stop), None
            )
            task = p.uploads[covering] if covering is not None else self._start_upload(p, chunk)
            upload = await task
            if covering is None or covering == chunk:
                p.uploads.pop(chunk, None)
        else:
            if self._edge_upload is None:
                self._edge_upload = await self.legs.place(p.leg.runtime, self.job)
            upload = self._edge_upload
        p.started[chunk] = self.loop.time()
        try:
            inv, seconds = await self.legs.label_chunk(p.leg, job, upload, learn=p.calls == 0)
        finally:
            p.started.pop(chunk, None)
        p.calls += 1
        results = list(inv.results or [])
        if len(results) != chunk.size:
            raise BackendError(
                p.name, f"share: {len(results)} results for chunk {chunk} of {chunk.size} images"
            )
        new = self.board.complete(p.name, chunk, results)
        if new:
            p.productive_s += seconds
            if self.on_chunk is not None:
                await self.on_chunk(chunk, p.name, results)
        self._notify()
