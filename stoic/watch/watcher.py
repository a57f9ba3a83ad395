"""The watcher: new images under the folders → batches per deployment → the daemon →
results beside the images.

One :meth:`Watcher.tick` does every step once, in order:

1. **scan** the folders (:mod:`stoic.watch.scan`); an image whose size has been stable
   for ``stable_s`` joins its deployment's pending group;
2. **plan**: a group with ``max_images`` images, or whose oldest image has waited
   ``every_s``, becomes a batch, written down with its files and its idempotency key
   before anything is sent (:mod:`stoic.watch.state`);
3. **send** the planned batches (``skip_invalid``, the ``deployment`` label, the key).
   The daemon's refusal of one file (a 4xx naming it: not an image, over a limit)
   marks that file bad, reported with its path and left where it is, and the rest is
   planned again as a new batch (a refused request stores nothing, so a new key is
   safe); an upload over the batch limits is split in two; no answer, or a 5xx, leaves
   the batch planned for the next tick, same key, same files;
4. **poll** the sent batches; a done one's results are written beside its images (or
   under ``out``) in the format asked, then its files are moved to ``move_done`` if
   asked; a failed one is reported.

The key is a digest of the deployment's folder and of each file's name, size and
content: the same files give the same key after any restart, and the daemon answers a
repeated key with the batch it stored. Time comes from the caller (``clock``: seconds,
monotonic; ``now``: instants for the state file), so tests need no sleeping.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Protocol

from stoic.clock import Clock
from stoic.errors import ServerError
from stoic.watch.scan import Candidate, Stability, candidate, scan
from stoic.watch.state import Batch, BatchState, FileState, PlannedFile, WatchState

RESULT_SUFFIXES = {"megadetector": ".megadetector.json", "csv": ".csv", "json": ".json"}
"""The formats a watcher writes per batch (a Camtrap DP package spans batches: use
``stoic export``), and the suffix of their files."""

REFUSED = frozenset({400, 409, 413, 415, 422})
"""The answers with which the daemon refuses what was sent (and stores nothing). Any
other 4xx (a wrong token, a wrong URL), or a refused form field (a daemon that does
not know ``deployment``), is the watcher's configuration: it stops."""

HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Submitted:
    """The daemon's answer to an upload: its batch id and the files it skipped."""

    batch_id: str
    skipped: tuple[tuple[str, str], ...] = ()


class DaemonApi(Protocol):
    """What the watcher asks of a daemon (errors: :class:`~stoic.errors.ServerError`)."""

    def submit(
        self, files: Sequence[tuple[str, Path]], *, deployment: str, key: str
    ) -> Submitted: ...

    def batch_state(self, batch_id: str) -> tuple[str, str | None]:
        """(state, error) of a batch."""
        ...

    def results(self, batch_id: str, fmt: str) -> bytes: ...


@dataclass(frozen=True, slots=True)
class WatchOptions:
    roots: tuple[Path, ...]
    every_s: float = 3600.0
    max_images: int = 1000
    stable_s: float = 10.0
    results_format: str | None = "megadetector"
    out: Path | None = None
    move_done: Path | None = None


@dataclass
class _Group:
    root: Path
    folder: Path
    deployment: str
    ready: dict[str, tuple[Candidate, float]] = field(default_factory=dict)


def _retry(exc: ServerError) -> bool:
    """No answer, a 5xx (starting, draining, busy) or a timeout: send again later."""
    if exc.status is None or exc.status >= 500 or exc.status in (408, 429):
        return True
    if exc.status in REFUSED and exc.code != "invalid_field":
        return False
    raise exc


def batch_key(folder: Path, files: Sequence[PlannedFile]) -> str:
    """The idempotency key of a file set (order-free)."""
    canonical = [str(folder), sorted([f.name, f.size, f.sha256] for f in files)]
    digest = hashlib.sha256(json.dumps(canonical).encode()).hexdigest()
    return f"stoic-watch-{digest[:48]}"


@dataclass(eq=False)
class Watcher:
    """Folders → batches → daemon → results; one step of each per :meth:`tick`."""

    options: WatchOptions
    state: WatchState
    daemon: DaemonApi
    _: KW_ONLY
    clock: Callable[[], float]
    now: Clock
    report: Callable[[str], None]
    _stability: Stability = field(init=False)
    _groups: dict[Path, _Group] = field(default_factory=dict, init=False)
    _waiting: int = field(default=0, init=False)
    _unreachable: bool = field(default=False, init=False)
    _decided: dict[str, tuple[int, int]] = field(default_factory=dict, init=False)
    """Files the state file has a decision on, as (size, mtime): a season's tree is
    scanned every few seconds, and asking SQLite about each file each time costs."""

    def __post_init__(self) -> None:
        self._stability = Stability(self.options.stable_s)

    # The steps ------------------------------------------------------------------------

    def tick(self, *, flush: bool = False) -> None:
        """Scan, plan, send, poll. ``flush``: plan every ready image now (``--once``)."""
        self._scan()
        self._plan(flush)
        self._send()
        self._poll()

    def idle(self) -> bool:
        """Nothing seen that is not yet done: no image waiting, no batch in flight."""
        return (
            self._waiting == 0
            and not any(g.ready for g in self._groups.values())
            and not self.state.batches(BatchState.PLANNED)
            and not self.state.batches(BatchState.SENT)
        )

    def _scan(self) -> None:
        t = self.clock()
        exclude = [p for p in (self.options.move_done, self.options.out) if p is not None]
        seen: set[str] = set()
        waiting = 0
        for e in scan(self.options.roots, exclude):
            if self._decided.get(e.path) == (e.size, e.mtime_ns):
                continue
            if self.state.known(Path(e.path), e.size, e.mtime_ns):
                self._decided[e.path] = (e.size, e.mtime_ns)
                continue
            seen.add(e.path)
            c = candidate(e)
            group = self._groups.setdefault(c.folder, _Group(c.root, c.folder, c.deployment))
            held = group.ready.get(e.path)
            if held is not None and (held[0].size, held[0].mtime_ns) == (e.size, e.mtime_ns):
                continue
            group.ready.pop(e.path, None)
            if self._stability.seen(e, t):
                group.ready[e.path] = (c, t)
            else:
                waiting += 1
        self._stability.forget(seen)
        for group in self._groups.values():
            for path in [p for p in group.ready if p not in seen]:
                del group.ready[path]
        self._waiting = waiting

    def _plan(self, flush: bool) -> None:
        t = self.clock()
        for group in self._groups.values():
            while group.ready:
                oldest = min(ready_at for _, ready_at in group.ready.values())
                full = len(group.ready) >= self.options.max_images
                if not (full or flush or t - oldest >= self.options.every_s):
                    break
                chosen = sorted(group.ready.values(), key=lambda item: item[0].name)
                chosen = chosen[: self.options.max_images]
                for c, _ in chosen:
                    del group.ready[c.key]
                self._plan_batch(group, [c for c, _ in chosen])

    def _plan_batch(self, group: _Group, candidates: Sequence[Candidate]) -> None:
        files = []
        for c in candidates:
            planned = self._hash(c)
            if planned is not None:
                files.append(planned)
        if files:
            key = batch_key(group.folder, files)
            self.state.plan(key, group.root, group.deployment, group.folder, files, self.now.now())

    def _hash(self, c: Candidate) -> PlannedFile | None:
        """The file as it will be sent, or None: unreadable (bad) or still changing
        (back to the scan)."""
        digest = hashlib.sha256()
        try:
            with c.path.open("rb") as f:
                while chunk := f.read(HASH_CHUNK):
                    digest.update(chunk)
            st = c.path.stat()
        except OSError as exc:
            self._bad(c.path, c.name, c.size, c.mtime_ns, f"unreadable: {exc.strerror or exc}")
            return None
        if (st.st_size, st.st_mtime_ns) != (c.size, c.mtime_ns):
            return None
        return PlannedFile(c.path, c.name, c.size, c.mtime_ns, digest.hexdigest())

    def _bad(self, path: Path, name: str, size: int, mtime_ns: int, reason: str) -> None:
        self.state.mark_bad(path, name, size, mtime_ns, reason, self.now.now())
        self.report(f"bad file, left in place: {path}: {reason}")

    def _send(self) -> None:
        """Send every planned batch, those planned anew after a refusal included."""
        tried: set[str] = set()
        while todo := [b for b in self.state.batches(BatchState.PLANNED) if b.key not in tried]:
            for batch in todo:
                tried.add(batch.key)
                if not self._send_one(batch):
                    return

    def _send_one(self, batch: Batch) -> bool:
        """Send one batch; False when the daemon did not answer (try later)."""
        changed = [f for f in batch.files if not _unchanged(f)]
        if changed:
            reason = "changed or removed after it was planned: " + ", ".join(
                str(f.path) for f in changed
            )
            self.state.abandon(batch.key, reason, self.now.now())
            self.report(f"batch of {batch.folder} not sent: {reason}")
            return True
        try:
            answer = self.daemon.submit(
                [(f.name, f.path) for f in batch.files], deployment=batch.deployment, key=batch.key
            )
        except ServerError as exc:
            if _retry(exc):
                self._note_unreachable(exc)
                return False
            self._refused(batch, exc)
            return True
        self._unreachable = False
        self.state.sent(batch.key, answer.batch_id, answer.skipped, self.now.now())
        by_name = {f.name: f.path for f in batch.files}
        for name, reason in answer.skipped:
            self.report(f"bad file, left in place: {by_name.get(name, name)}: {reason}")
        self.report(
            f"sent {len(batch.files) - len(answer.skipped)} image(s) of "
            f"{batch.deployment} as batch {answer.batch_id}"
        )
        return True

    def _note_unreachable(self, exc: ServerError) -> None:
        if not self._unreachable:
            self.report(f"the daemon did not take the batch ({exc}); trying again")
        self._unreachable = True

    def _refused(self, batch: Batch, exc: ServerError) -> None:
        """A 4xx: nothing was stored. Drop the file it names, or split an oversized
        batch, and plan the rest anew; else give the batch up."""
        culprit = next((f for f in batch.files if f.name == exc.file), None)
        rest = [f for f in batch.files if f is not culprit]
        for f in batch.files:
            self._decided.pop(str(f.path), None)
        if culprit is not None:
            self.state.unplan(batch.key)
            self._bad(culprit.path, culprit.name, culprit.size, culprit.mtime_ns, str(exc))
            self._replan(batch, [rest] if rest else [])
        elif exc.status == 413 and len(batch.files) > 1:
            self.state.unplan(batch.key)
            half = len(batch.files) // 2
            self._replan(batch, [list(batch.files[:half]), list(batch.files[half:])])
            self.report(f"batch of {batch.folder} over the daemon's limits: split in two")
        else:
            self.state.abandon(batch.key, str(exc), self.now.now())
            self.report(f"batch of {batch.folder} refused: {exc}")

    def _replan(self, batch: Batch, parts: Sequence[Sequence[PlannedFile]]) -> None:
        for files in parts:
            key = batch_key(batch.folder, files)
            self.state.plan(key, batch.root, batch.deployment, batch.folder, files, self.now.now())

    def _poll(self) -> None:
        for batch in self.state.batches(BatchState.SENT):
            assert batch.batch_id is not None
            try:
                state, error = self.daemon.batch_state(batch.batch_id)
                if state == "done":
                    results = self._write_results(batch)
                elif state in ("failed", "cancelled"):
                    results = None
                else:
                    continue
            except ServerError as exc:
                if exc.status != 404 and _retry(exc):
                    self._note_unreachable(exc)
                    return
                state, error, results = "failed", str(exc), None
            if state == "done":
                if results is None and self.options.results_format is not None:
                    continue  # could not be written: tried again at the next tick
                self._move(batch)
                self.state.finished(batch.key, BatchState.DONE, self.now.now(), results=results)
                self.report(
                    f"batch {batch.batch_id} done"
                    + (f": results in {results}" if results is not None else "")
                )
            else:
                self.state.finished(batch.key, BatchState.FAILED, self.now.now(), error=error)
                self.report(f"batch {batch.batch_id} failed in the daemon: {error}")

    def _write_results(self, batch: Batch) -> Path | None:
        fmt = self.options.results_format
        if fmt is None:
            return None
        assert batch.batch_id is not None
        data = self.daemon.results(batch.batch_id, fmt)
        folder = self.options.out / batch.deployment if self.options.out else batch.folder
        path = folder / f"stoic-{batch.batch_id}{RESULT_SUFFIXES[fmt]}"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:
            self.report(f"cannot write the results of batch {batch.batch_id} to {path}: {exc}")
            return None
        return path

    def _move(self, batch: Batch) -> None:
        if self.options.move_done is None:
            return
        sent = set(self.state.paths(batch.key, FileState.SENT))
        for f in batch.files:
            if f.path not in sent:
                continue
            dest = self.options.move_done / batch.deployment / f.name
            if not f.path.exists():
                if dest.exists():
                    self.state.moved(f.path, dest)
                continue
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(f.path, dest)
            except OSError as exc:
                self.report(f"cannot move {f.path} to {dest}: {exc}; left in place")
                continue
            self.state.moved(f.path, dest)


def _unchanged(f: PlannedFile) -> bool:
    try:
        st = f.path.stat()
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (f.size, f.mtime_ns)
