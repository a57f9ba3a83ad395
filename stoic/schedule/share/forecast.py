"""Share mode's forecast: when each participant of a shared batch is predicted to be done.

Plain arithmetic over predicted capacities and the board, no asyncio and no I/O (an
import contract keeps it so), used on both sides of share mode:

* **before the batch**, the policy (:func:`stoic.schedule.decide.policy.decide`,
  ``Mode.SHARE``) prices a set of participants with :func:`share_capacity` and
  :func:`expected_finish`: the fluid bound (:mod:`stoic.schedule.share.fluid`) in
  expectation over which pods time out;
* **during the batch**, the session (:mod:`stoic.schedule.share.session`) asks a
  :class:`Forecast` how large a chunk to take (guided self-scheduling over the fluid
  forecast), whether a pod still deploying is overtaken, whether stealing a reservation
  or hedging a straggler would finish it sooner, and when to look again.

Each :class:`Pace` is one participant as the forecast sees it; the session updates it
(active, calls, chunks started) and passes the loop time in as ``now``.
docs/scheduling.md ("Share mode") gives the rules and docs/evaluation/README.md the runs
that chose them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from stoic.schedule.share.board import Chunk, ShareBoard
from stoic.schedule.share.fluid import Capacity, fluid_bound
from stoic.values import Estimate

EPS_S = 1e-3
"""A look again is at least this far ahead: never a zero-time spin."""


# Before the batch: the policy's price of a set of participants -----------------------


def share_capacity(e: Estimate, n_images: int, n_bytes: int, edge: bool) -> Capacity:
    """How a runtime would take part in a shared batch, as predicted: when it can start
    (0 at the edge; a pod when deployed, its first images uploaded meanwhile), its fixed
    cost per call and its seconds per image. A pod is fed over the uplink while it
    works, so it cannot go faster than its images arrive."""
    per_image = e.per_image_s(n_images)
    if edge:
        return Capacity(0.0, e.fixed_s(), per_image)
    # A pod starts without the wait for a down uplink (docs/evaluation/README.md, "Uplink checks").
    upload = e.transfer.mean - e.uplink_wait_s
    upload_per_image = upload / n_images if n_images else 0.0
    ready = e.deployment.mean + e.risk.deployment_excess_s
    return Capacity(ready, e.fixed_s(), max(per_image, upload_per_image))


def expected_finish(
    n: int,
    members: list[str],
    caps: Mapping[str, Capacity],
    estimates: Mapping[str, Estimate],
    edge: str,
) -> float:
    """The fluid finish of ``members`` in expectation over which cloud deployments time
    out (independently, each with its ``p_timeout``; a timed-out pod labels nothing and
    the others take its share). So a second pod is worth its gain when the first is
    ready *and* its insurance when the first times out (docs/evaluation/README.md)."""
    clouds = [m for m in members if m != edge]
    always = [caps[m] for m in members if m == edge]
    total = 0.0
    for up in itertools.product((True, False), repeat=len(clouds)):
        weight = 1.0
        for c, ok in zip(clouds, up, strict=True):
            p = estimates[c].risk.p_timeout
            weight *= (1.0 - p) if ok else p
        if weight == 0.0:
            continue
        present = always + [caps[c] for c, ok in zip(clouds, up, strict=True) if ok]
        if present:
            total += weight * fluid_bound(n, present)
        else:  # no edge and every pod timed out: the timeout, then a fresh try
            timeout_s = max(estimates[c].risk.timeout_s for c in clouds)
            total += weight * (timeout_s + fluid_bound(n, [caps[c] for c in clouds]))
    return total


# During the batch: the session's forecast -----------------------------------------------


@dataclass(slots=True)
class Pace:
    """One participant of a shared batch as the forecast sees it (loop times)."""

    name: str
    rate: float  # images per second, predicted
    fixed_s: float  # predicted fixed cost of a call
    cloud: bool
    ready_by: float  # loop time it is predicted to be ready by
    active: bool = False  # deployed and labelling
    gone: bool = False  # its part is over (failed, cancelled, or nothing left for it)
    error: BaseException | None = None  # why it stopped, if it failed
    deploy_started: float = 0.0
    calls: int = 0
    started: dict[Chunk, float] = field(default_factory=dict)  # chunk -> loop time


class Forecast:
    """Predicted finishes of a shared batch's participants over its board."""

    def __init__(
        self,
        board: ShareBoard,
        paces: Mapping[str, Pace],
        *,
        chunk_factor: float,
        min_chunk_s: float,
    ) -> None:
        self.board = board
        self.paces = paces
        self.chunk_factor = chunk_factor
        self.min_chunk_s = min_chunk_s

    def others_rate(self, p: Pace) -> float:
        return sum(q.rate for q in self.paces.values() if q is not p and q.active)

    def nothing_left_for(self, p: Pace) -> bool:
        """Cancel a deploying pod only when there is really nothing left for it: no
        image unassigned and none reserved for it. A *prediction* that the others will
        get there first only stops it reserving more (:meth:`overtaken`): predictions
        of the edge lag its regimes (docs/scheduling.md, "Share mode")."""
        if self.board.finished:
            return True
        return not self.board.reserved_by(p.name) and self.board.pending_images() == 0

    def size(self, p: Pace, now: float, *, stealing: bool = False) -> int:
        """Guided self-scheduling over the fluid forecast: ``p``'s chunk takes it
        ``1/chunk_factor`` of the time the open images would take everyone still in the
        batch, counting the pods still deploying from when they are predicted ready (a
        chunk sized as if the edge were alone would leave the pods nothing to do)."""
        open_images = self.board.pending_images() + sum(
            c.size for q in self.paces.values() for c in self.board.reserved_by(q.name)
        )
        if stealing:  # what is left is others' reservations: size against all open work
            open_images = max(open_images, 1)
        if open_images <= 0:
            return 0
        caps = [
            Capacity(
                0.0 if q.active else max(q.ready_by - now, 0.0),
                0.0 if q.calls else q.fixed_s,
                1.0 / q.rate,
            )
            for q in self.paces.values()
            if q.error is None and q.rate > 0 and (q.active or q.cloud)
        ]
        seconds_left = fluid_bound(open_images, caps)
        if not p.active:  # a pod still deploying works only from when it is ready
            seconds_left -= max(p.ready_by - now, 0.0) + (0.0 if p.calls else p.fixed_s)
        if seconds_left <= 0 or not math.isfinite(seconds_left):
            return 0 if not p.active else 1
        min_images = math.ceil(self.min_chunk_s * p.rate) if math.isfinite(p.rate) else 1
        size = max(math.ceil(p.rate * seconds_left / self.chunk_factor), min_images)
        if any(q is not p and not q.gone and q.error is None for q in self.paces.values()):
            # At most 1/chunk_factor of the open work while anyone else may still help:
            # one bad T_p line must not take a whole batch (docs/evaluation/README.md).
            size = min(size, math.ceil(open_images / self.chunk_factor))
        return max(1, min(open_images, size))

    def overtaken(self, p: Pace, now: float) -> bool:
        """Would the others label what is left before ``p`` is ready? Then reserving
        (and uploading) more for it is wasted."""
        if p.active:
            return False
        wait = max(p.ready_by - now, 0.0)
        return self.board.pending_images() <= self.others_rate(p) * wait

    def free_at(self, q: Pace, now: float, before: Chunk | None = None) -> float:
        """When ``q`` is predicted to be through with the work it holds (the chunk it is
        labelling, its reservations it labels before ``before``)."""
        if q.active:
            t = now
        else:  # still deploying: as predicted, or, once late, as long again as so far
            ready = q.ready_by if q.ready_by > now else now + (now - q.deploy_started)
            t = ready + (0.0 if q.calls else q.fixed_s)
        for c, started in q.started.items():
            t = max(t, self.expected_end(q, c, started, now))
        ahead = [c for c in self.board.reserved_by(q.name) if before is None or c > before]
        return t + sum(c.size for c in ahead) / q.rate

    def sooner(self, p: Pace, chunk: Chunk, owner: str, now: float) -> bool:
        """Would ``p`` finish ``chunk`` before its owner (who labels its reservations
        back-most first) would?"""
        q = self.paces[owner]
        owner_done = self.free_at(q, now, before=chunk) + chunk.size / q.rate
        mine = now + (p.fixed_s if p.calls == 0 else 0.0) + chunk.size / p.rate
        return mine < owner_done

    @staticmethod
    def predicted_end(q: Pace, c: Chunk, started: float) -> float:
        return started + (q.fixed_s if q.calls == 0 else 0.0) + c.size / q.rate

    def expected_end(self, q: Pace, c: Chunk, started: float, now: float) -> float:
        """When ``q`` will finish ``c``: as predicted, or, once past that, after as long
        again as it has taken (a straggler's tail is long)."""
        end = self.predicted_end(q, c, started)
        return end if end > now else now + (now - started)

    def straggling(self, p: Pace, now: float) -> tuple[list[str], float]:
        """The participants whose running chunk ``p`` would finish sooner than they
        are expected to, and when to look again (a loop time strictly after now, or
        inf: no hedge is left to make, or nothing can turn straggler). A holder past its
        predicted end is expected to need as long again as it has taken."""
        if self.board.stats.hedges >= self.board.max_hedges:
            return [], math.inf
        eligible: list[str] = []
        wake = math.inf
        for q in self.paces.values():
            if q is p:
                continue
            for c, started in q.started.items():
                if not self.board.is_held(q.name, c):
                    continue
                predicted_end = self.predicted_end(q, c, started)
                mine = (p.fixed_s if p.calls == 0 else 0.0) + c.size / p.rate
                if mine < self.expected_end(q, c, started, now) - now:
                    eligible.append(q.name)
                else:  # it turns straggler once overdue by more than ``mine``
                    wake = min(wake, max(predicted_end, started + mine) + EPS_S)
        return eligible, max(wake, now + EPS_S)

    def late_reservations(self, p: Pace, now: float) -> bool:
        """Does a pod past its predicted ready time hold chunks nobody started?"""
        return any(
            not q.active and not q.gone and q.ready_by < now and self.board.reserved_by(q.name)
            for q in self.paces.values()
            if q is not p
        )

    def may_get_more(self, p: Pace) -> bool:
        """Could work still come to ``p``: chunks others hold may be released."""
        return any(
            q.active and self.board.held_by(q.name) for q in self.paces.values() if q is not p
        )
