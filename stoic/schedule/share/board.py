"""The share board: which images of one batch each runtime labels (share mode).

A batch is a bag of independent images, so several runtimes can label one batch at
once. The board is the batch's shared queue, kept as plain data (no asyncio, no I/O) so
that its rules can be tested exhaustively:

* **Work stealing from both ends.** Unassigned images are a set of index ranges. The
  edge takes chunks from the front, cloud runtimes from the back: the edge starts at
  once and works forward while pods deploy; a pod's first chunks are the ones the edge
  would reach last, so nothing a pod is given is soon wanted by the edge.
* **Reservations.** A cloud runtime reserves chunks from the back while its pod deploys
  and uploads them meanwhile (in the order it will process them). A reserved chunk is
  not started, so an idle participant may steal it (the edge the front-most one): an
  upload the edge overtook is wasted bytes, never a wait.
* **Chunks of any size.** How large a chunk to take is the forecast's business
  (:meth:`stoic.schedule.share.forecast.Forecast.size`, guided self-scheduling): the
  board cuts what it is asked for.
* **Failure returns work.** :meth:`ShareBoard.release` puts a participant's reserved and
  unfinished chunks back (a pod that timed out, an invocation that failed).
* **Each image once**, except a bounded straggler hedge: when nothing is left to take
  or steal, an idle participant may duplicate the chunk of a slower one
  (:meth:`ShareBoard.hedge`, at most ``max_hedges`` per batch); the first result wins and
  the other's images count as waste.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True, order=True)
class Chunk:
    """Images ``start`` (inclusive) to ``stop`` (exclusive) of the batch's package."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    def __str__(self) -> str:
        return f"[{self.start}, {self.stop})"


@dataclass(slots=True)
class _Held:
    chunk: Chunk
    owner: str
    started: bool  # False: reserved (stealable); True: being labelled
    hedged_by: str | None = None


@dataclass(slots=True)
class BoardStats:
    """What the board saw: images labelled per participant, duplicates, steals."""

    labelled: dict[str, int] = field(default_factory=dict)
    chunks: dict[str, int] = field(default_factory=dict)
    duplicate_images: int = 0
    steals: int = 0
    hedges: int = 0
    released: int = 0


class ShareBoard:
    """The shared queue of one batch; see the module docstring."""

    def __init__(self, n_images: int, *, done: Iterable[int] = (), max_hedges: int = 1) -> None:
        if n_images < 0:
            raise ValueError("n_images must be >= 0")
        self.n_images = n_images
        self.max_hedges = max_hedges
        self.results: dict[int, tuple[str, Any]] = {}
        finished = sorted({i for i in done if 0 <= i < n_images})
        for i in finished:
            self.results[i] = ("", None)  # labelled before (a restart): not handed out
        self._pending: list[Chunk] = _ranges_without(n_images, finished)
        self._held: list[_Held] = []
        self.stats = BoardStats()

    # Queries ------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return len(self.results) == self.n_images

    def pending_images(self) -> int:
        """Images nobody holds yet."""
        return sum(c.size for c in self._pending)

    def open_images(self) -> int:
        """Images not labelled yet (pending, reserved or being labelled)."""
        return self.n_images - len(self.results)

    def held_by(self, owner: str) -> list[Chunk]:
        return [h.chunk for h in self._held if h.owner == owner]

    def reserved_by(self, owner: str) -> list[Chunk]:
        return [h.chunk for h in self._held if h.owner == owner and not h.started]

    def is_held(self, owner: str, chunk: Chunk) -> bool:
        return any(h.owner == owner and h.chunk == chunk for h in self._held)

    # Taking work --------------------------------------------------------------------

    def take(
        self, owner: str, size: int, *, from_back: bool, reserve: bool = False
    ) -> Chunk | None:
        """Up to ``size`` unassigned images from the front or the back (one range);
        started at once, or only reserved (``reserve``: stealable until started)."""
        if size < 1 or not self._pending:
            return None
        if from_back:
            last = self._pending[-1]
            chunk = Chunk(max(last.start, last.stop - size), last.stop)
            rest = Chunk(last.start, chunk.start)
            self._pending[-1:] = [rest] if rest.size else []
        else:
            first = self._pending[0]
            chunk = Chunk(first.start, min(first.stop, first.start + size))
            rest = Chunk(chunk.stop, first.stop)
            self._pending[:1] = [rest] if rest.size else []
        self._held.append(_Held(chunk, owner, started=not reserve))
        return chunk

    def start(self, owner: str, chunk: Chunk) -> bool:
        """Begin labelling a chunk ``owner`` reserved; False if it was stolen."""
        for h in self._held:
            if h.owner == owner and h.chunk == chunk and not h.started:
                h.started = True
                return True
        return False

    def steal(
        self,
        thief: str,
        size: int | None = None,
        *,
        front_most: bool = True,
        accept: Callable[[Chunk, str], bool] | None = None,
    ) -> Chunk | None:
        """Take over (part of) another participant's reserved, not started chunk: the
        front-most (the edge's natural next work) or the back-most. With ``size``, only
        that many of its images (its front or back end), the owner keeping the rest
        reserved; ``accept(part, owner)`` may refuse (the thief would not finish it
        first). The part is started for the thief."""
        candidates = [h for h in self._held if not h.started and h.owner != thief]
        candidates.sort(key=lambda x: x.chunk, reverse=not front_most)
        for h in candidates:
            c = h.chunk
            k = c.size if size is None else max(1, min(size, c.size))
            part = Chunk(c.start, c.start + k) if front_most else Chunk(c.stop - k, c.stop)
            if accept is not None and not accept(part, h.owner):
                continue
            if part == c:
                h.owner, h.started = thief, True
            else:
                rest = Chunk(part.stop, c.stop) if front_most else Chunk(c.start, part.start)
                h.chunk = rest
                self._held.append(_Held(part, thief, started=True))
            self.stats.steals += 1
            return part
        return None

    def hedge(self, owner: str, *, eligible: Sequence[str] | None = None) -> Chunk | None:
        """Duplicate the largest chunk another participant is labelling (a straggler
        hedge), within ``max_hedges``; None when there is none or the budget is spent."""
        if self.stats.hedges >= self.max_hedges:
            return None
        running = [
            h
            for h in self._held
            if h.started
            and h.owner != owner
            and h.hedged_by is None
            and (eligible is None or h.owner in eligible)
        ]
        if not running:
            return None
        h = max(running, key=lambda x: (x.chunk.size, x.chunk))
        h.hedged_by = owner
        self.stats.hedges += 1
        return h.chunk

    # Results and failures ------------------------------------------------------------

    def complete(self, owner: str, chunk: Chunk, results: Sequence[Any]) -> int:
        """Record ``results`` (one per image, in order) for ``chunk``; returns how many
        images were new (the rest were labelled first by someone else: waste)."""
        if len(results) != chunk.size:
            raise ValueError(f"{owner}: {len(results)} results for chunk {chunk} of {chunk.size}")
        new = 0
        for i, r in zip(range(chunk.start, chunk.stop), results, strict=True):
            if i not in self.results:
                self.results[i] = (owner, r)
                new += 1
        self.stats.duplicate_images += chunk.size - new
        self.stats.labelled[owner] = self.stats.labelled.get(owner, 0) + new
        self.stats.chunks[owner] = self.stats.chunks.get(owner, 0) + 1
        # Done for everyone: the holder's entry goes, and with it any hedge of it.
        self._held = [h for h in self._held if h.chunk != chunk]
        return new

    def release(self, owner: str) -> list[Chunk]:
        """``owner`` stops (failed, timed out, cancelled): its reserved and unfinished
        chunks go back to the queue, except images someone else already labelled or is
        labelling as a hedge."""
        back: list[Chunk] = []
        keep: list[_Held] = []
        for h in self._held:
            if h.owner != owner:
                if h.hedged_by == owner:
                    h.hedged_by = None
                keep.append(h)
                continue
            if h.hedged_by is not None:  # the hedger carries on with it
                keep.append(_Held(h.chunk, h.hedged_by, started=True))
                continue
            back.append(h.chunk)
        self._held = keep
        for c in back:
            for r in _open_runs(c, self.results):
                self._pending.append(r)
                self.stats.released += r.size
        self._pending = _merge(self._pending)
        return back

    def ordered_results(self) -> list[tuple[str, Any]]:
        """(owner, result) per image, in package order (call when :attr:`finished`)."""
        return [self.results[i] for i in range(self.n_images)]


def _ranges_without(n: int, done: Sequence[int]) -> list[Chunk]:
    out: list[Chunk] = []
    start = 0
    for i in done:
        if i > start:
            out.append(Chunk(start, i))
        start = i + 1
    if start < n:
        out.append(Chunk(start, n))
    return out


def _open_runs(chunk: Chunk, results: Mapping[int, Any]) -> list[Chunk]:
    """The runs of ``chunk`` whose images have no result yet."""
    done = [i for i in range(chunk.start, chunk.stop) if i in results]
    runs = _ranges_without(chunk.stop, done)
    return [Chunk(max(r.start, chunk.start), r.stop) for r in runs if r.stop > chunk.start]


def _merge(ranges: list[Chunk]) -> list[Chunk]:
    out: list[Chunk] = []
    for r in sorted(ranges):
        if out and r.start <= out[-1].stop:
            out[-1] = Chunk(out[-1].start, max(out[-1].stop, r.stop))
        else:
            out.append(r)
    return out
