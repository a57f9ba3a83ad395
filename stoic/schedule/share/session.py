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
from stoic.schedule.share.fluid import Capacity, fluid_bound
from stoic.values import Estimate, Job, Outcome, SharePlan

log = get_logger(__name__)

_EPS_S = 1e-3  # a look again is at least this far ahead: never a zero-time spin
STEAL_POLL_S = 2.0
"""How often an idle participant looks again at the reservations of a pod that is
late (its readiness is overdue, so stealing grows more attractive as time passes)."""

ChunkSink = Callable[[Chunk, str, Sequence[Any]], Awaitable[None]]
"""Called with each finished chunk: the chunk, who labelled it, its results in order."""


@dataclass(slots=True)
class _Part:
    """One participant's state in a shared batch."""

    name: str
    leg: Leg
    rate: float  # images per second, predicted
    fixed_s: float  # predicted fixed cost of a call
    cloud: bool
    ready_by: float  # loop time it is predicted to be ready by
    active: bool = False  # deployed and labelling
    gone: bool = False  # its part is over (failed, cancelled, or nothing left for it)
    deploy_started: float = 0.0
    calls: int = 0
    productive_s: float = 0.0  # invocation seconds that labelled new images
    uploads: dict[Chunk, asyncio.Task[Upload]] = field(default_factory=dict)
    started: dict[Chunk, float] = field(default_factory=dict)
    error: BaseException | None = None


class Sharer:
    """Runs share plans with the leg runner's backends and the predictor's rates."""

    def __init__(self, legs: LegRunner) -> None:
        self.legs = legs

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
        return await _Session(self.legs, job, plan, since, done or {}, on_chunk).run()


class _Session:
    def __init__(
        self,
        legs: LegRunner,
        job: Job,
        plan: SharePlan,
        since: tuple[float, float],
        done: Mapping[int, Any],
        on_chunk: ChunkSink | None,
    ) -> None:
        self.legs, self.job, self.plan = legs, job, plan
        self.started_at, self.t0 = since
        self.s = legs.settings.share
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

    def _part(self, name: str, e: Estimate | None) -> _Part:
        runtime = self.legs.runtime(name)
        n = max(self.job.n_images, 1)
        per_image = e.per_image_s(n) if e is not None else 1.0
        fixed = e.fixed_s() if e is not None else 0.0
        ready = 0.0 if e is None else e.deployment.mean + e.risk.deployment_excess_s
        return _Part(
            name,
            Leg(runtime),
            rate=1.0 / per_image if per_image > 0 else math.inf,
            fixed_s=fixed,
            cloud=not runtime.is_edge,
            ready_by=self.loop.time() + ready,
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
            if self._nothing_left_for(p):
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

    def _others_rate(self, p: _Part) -> float:
        return sum(q.rate for q in self.parts.values() if q is not p and q.active)

    def _nothing_left_for(self, p: _Part) -> bool:
        """Cancel a deploying pod only when there is really nothing left for it: no
        image unassigned and none reserved for it. A *prediction* that the others will
        get there first only stops it reserving more (:meth:`_overtaken`): predictions
        of the edge lag its regimes, and a pod cancelled on one leaves the edge alone
        with a batch it is slow at."""
        if self.board.finished:
            return True
        return not self.board.reserved_by(p.name) and self.board.pending_images() == 0

    def _size(self, p: _Part, *, stealing: bool = False) -> int:
        """Guided self-scheduling over the fluid forecast: ``p``'s chunk takes it
        ``1/chunk_factor`` of the time the open images would take everyone still in the
        batch, counting the pods still deploying from when they are predicted ready (a
        chunk sized as if the edge were alone would leave the pods nothing to do)."""
        open_images = self.board.pending_images() + sum(
            c.size for q in self.parts.values() for c in self.board.reserved_by(q.name)
        )
        if stealing:  # what is left is others' reservations: size against all open work
            open_images = max(open_images, 1)
        if open_images <= 0:
            return 0
        now = self.loop.time()
        caps = [
            Capacity(
                0.0 if q.active else max(q.ready_by - now, 0.0),
                0.0 if q.calls else q.fixed_s,
                1.0 / q.rate,
            )
            for q in self.parts.values()
            if q.error is None and q.rate > 0 and (q.active or q.cloud)
        ]
        seconds_left = fluid_bound(open_images, caps)
        if not p.active:  # a pod still deploying works only from when it is ready
            seconds_left -= max(p.ready_by - now, 0.0) + (0.0 if p.calls else p.fixed_s)
        if seconds_left <= 0 or not math.isfinite(seconds_left):
            return 0 if not p.active else 1
        min_images = math.ceil(self.s.min_chunk_s * p.rate) if math.isfinite(p.rate) else 1
        size = max(math.ceil(p.rate * seconds_left / self.s.chunk_factor), min_images)
        if any(q is not p and not q.gone and q.error is None for q in self.parts.values()):
            # Never more than 1/chunk_factor of the open work while anyone else may still
            # help (classic guided self-scheduling): the sizes above trust the predicted
            # rates, and one bad T_p line (random-004: the edge fitted at 0.0005 s per
            # image + 97 s, truly 1.9-5.5 s per image) made the edge take a whole
            # 156-image batch in one chunk and leave its pod nothing: 1,375 s where GPU1
            # alone would have taken 66 s.
            size = min(size, math.ceil(open_images / self.s.chunk_factor))
        return max(1, min(open_images, size))

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
            size = self._size(p)
            wanted = len(mine) < self.s.prefetch_chunks and size > 0 and not self._overtaken(p)
            if wanted and self.board.take(p.name, size, from_back=True, reserve=True):
                continue
            changed = self._changed
            await changed.wait()

    def _overtaken(self, p: _Part) -> bool:
        """Would the others label what is left before ``p`` is ready? Then reserving
        (and uploading) more for it is wasted."""
        if p.active:
            return False
        wait = max(p.ready_by - self.loop.time(), 0.0)
        return self.board.pending_images() <= self._others_rate(p) * wait

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
                if not self._may_get_more(p):
                    return
                # Idle: wake on any change, when a running chunk may turn straggler, or,
                # while a late pod sits on reservations, to see whether to steal them.
                _, wake = self._straggling(p)
                if self._late_reservations(p):
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
        c = b.take(p.name, self._size(p), from_back=p.cloud)
        if c is None:
            c = b.steal(
                p.name,
                self._size(p, stealing=True),
                front_most=not p.cloud,
                accept=lambda c, o: self._sooner(p, c, o),
            )
        if c is None:
            c = self._hedge(p)
        return c

    def _free_at(self, q: _Part, before: Chunk | None = None) -> float:
        """When ``q`` is predicted to be through with the work it holds (the chunk it is
        labelling, its reservations it labels before ``before``)."""
        now = self.loop.time()
        if q.active:
            t = now
        else:  # still deploying: as predicted, or, once late, as long again as so far
            ready = q.ready_by if q.ready_by > now else now + (now - q.deploy_started)
            t = ready + (0.0 if q.calls else q.fixed_s)
        for c, started in q.started.items():
            t = max(t, self._expected_end(q, c, started))
        ahead = [c for c in self.board.reserved_by(q.name) if before is None or c > before]
        return t + sum(c.size for c in ahead) / q.rate

    def _sooner(self, p: _Part, chunk: Chunk, owner: str) -> bool:
        """Would ``p`` finish ``chunk`` before its owner (who labels its reservations
        back-most first) would?"""
        q = self.parts[owner]
        owner_done = self._free_at(q, before=chunk) + chunk.size / q.rate
        mine = self.loop.time() + (p.fixed_s if p.calls == 0 else 0.0) + chunk.size / p.rate
        return mine < owner_done

    def _predicted_end(self, q: _Part, c: Chunk, started: float) -> float:
        return started + (q.fixed_s if q.calls == 0 else 0.0) + c.size / q.rate

    def _expected_end(self, q: _Part, c: Chunk, started: float) -> float:
        """When ``q`` will finish ``c``: as predicted, or, once past that, after as long
        again as it has taken (a straggler's tail is long)."""
        now = self.loop.time()
        end = self._predicted_end(q, c, started)
        return end if end > now else now + (now - started)

    def _straggling(self, p: _Part) -> tuple[list[str], float]:
        """The participants whose running chunk ``p`` would finish sooner than they
        are expected to, and when to look again (a loop time strictly after now, or
        inf: no hedge is left to make, or nothing can turn straggler). A holder past its
        predicted end is expected to need as long again as it has taken."""
        now = self.loop.time()
        if self.board.stats.hedges >= self.board.max_hedges:
            return [], math.inf
        eligible: list[str] = []
        wake = math.inf
        for q in self.parts.values():
            if q is p:
                continue
            for c, started in q.started.items():
                if not self.board.is_held(q.name, c):
                    continue
                predicted_end = self._predicted_end(q, c, started)
                mine = (p.fixed_s if p.calls == 0 else 0.0) + c.size / p.rate
                if mine < self._expected_end(q, c, started) - now:
                    eligible.append(q.name)
                else:  # it turns straggler once overdue by more than ``mine``
                    wake = min(wake, max(predicted_end, started + mine) + _EPS_S)
        return eligible, max(wake, now + _EPS_S)

    def _hedge(self, p: _Part) -> Chunk | None:
        eligible, _ = self._straggling(p)
        return self.board.hedge(p.name, eligible=eligible) if eligible else None

    def _late_reservations(self, p: _Part) -> bool:
        """Does a pod past its predicted ready time hold chunks nobody started?"""
        now = self.loop.time()
        return any(
            not q.active and not q.gone and q.ready_by < now and self.board.reserved_by(q.name)
            for q in self.parts.values()
            if q is not p
        )

    def _may_get_more(self, p: _Part) -> bool:
        """Could work still come to ``p``: chunks others hold may be released."""
        return any(
            q.active and self.board.held_by(q.name) for q in self.parts.values() if q is not p
        )

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
