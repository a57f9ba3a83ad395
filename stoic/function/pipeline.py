"""The classify pipeline: read the package, decode the images, run the model, overlapped.

The three stages of a classify call used to run one after another (download the whole
package into memory, decode every image, then classify), so a call took the sum of
their times and held every image of the batch in memory at once: end to end ran at
about 60 % of the model's speed, and memory grew with the batch (a 2,450-image batch of
camera-trap JPEGs held ~0.5 GB of encoded bytes). Here they run at the same time, and
what is in flight is bounded whatever the batch size:

* **reader** (one thread per call) reads members from the object-store stream in
  package order (:func:`stoic.storage.package.iter_package_range`: a member range for the
  chunked calls of the share mode), groups them in chunks of ``decode_chunk`` images,
  waits for room (:meth:`HandOff.reserve`) and submits one decode task per chunk;
* **decoders** (a thread pool shared by the function's calls; Pillow releases the GIL
  while it decodes and resizes) turn a chunk into one uint8 array and hand it over;
* **device workers** (:func:`stoic.function.workers.run_workers`, one per device)
  take one batch at a time from the :class:`HandOff` and run the model, while the
  decoders prepare the next batches.

Bounds: at most ``capacity`` images are between the reader and the model (read but not
yet taken by a worker; ``capacity`` = ``max_inflight_images``, raised to the largest
batch plus one chunk so that a full batch can always form), and at most two decode
tasks per decoder are pending, so encoded bytes waiting for a decoder are at most
``2 × decode_threads × decode_chunk`` images. Per image in flight that is its encoded
bytes until decoded, then ``S × S × 3`` bytes. Memory therefore does not grow with
the batch, except for the per-image results (a name and a few scores).

A decode failure is that image's ``error``; a bad package (not a tar, unsafe member,
member range out of range) raises ``InputError`` from the reader; a failing device
aborts the call. Every path waits for the call's own decode tasks before returning,
so a call never leaves work running in the shared pool.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from stoic.errors import FunctionError, InputError
from stoic.function.workers import DeviceModels, WorkerReport, run_workers
from stoic.storage.package import PackageIndex, iter_package_range


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup v2 CPU quota
    (a Kubernetes CPU limit) when there is one."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


Decode = Callable[[bytes, int], np.ndarray]
"""``decode(data, size)`` -> uint8 ``(size, size, 3)``; raises InputError."""


class HandOff:
    """The bounded hand-off between the reader and decoders and the device workers.

    One condition variable guards the counts; the reader blocks in :meth:`reserve`,
    workers in :meth:`take`, and :meth:`abort` wakes everyone.
    """

    def __init__(self, capacity: int, max_pending: int) -> None:
        self.capacity = capacity
        self.max_pending = max_pending
        self._cond = threading.Condition()
        self._ready: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self._ready_n = 0
        self._inflight = 0  # images reserved by the reader and not yet taken
        self._pending = 0  # decode tasks submitted and not yet done
        self._reading = True
        self.error: BaseException | None = None
        self.errors: dict[int, str] = {}
        self.decode_s = 0.0
        self.peak_inflight = 0

    # Producer side ----------------------------------------------------------------

    def reserve(self, n: int) -> bool:
        """Wait for room for ``n`` more images and one more decode task; False once
        aborted. An empty pipeline always has room, so a chunk larger than the
        capacity still goes through."""
        with self._cond:
            while self.error is None and (
                (self._inflight and self._inflight + n > self.capacity)
                or self._pending >= self.max_pending
            ):
                self._cond.wait()
            if self.error is not None:
                return False
            self._inflight += n
            self._pending += 1
            self.peak_inflight = max(self.peak_inflight, self._inflight)
            return True

    def decoded(
        self, rows: np.ndarray, images: np.ndarray, failed: dict[int, str], busy_s: float
    ) -> None:
        """One decode task is done: ``images`` for ``rows``, and its failures."""
        with self._cond:
            self._pending -= 1
            self._inflight -= len(failed)
            self.errors.update(failed)
            self.decode_s += busy_s
            if len(rows):
                self._ready.append((rows, images))
                self._ready_n += len(rows)
            self._cond.notify_all()

    def done_reading(self) -> None:
        with self._cond:
            self._reading = False
            self._cond.notify_all()

    def abort(self, exc: BaseException) -> None:
        """Stop everyone; the first error is kept."""
        with self._cond:
            if self.error is None:
                self.error = exc
            self._cond.notify_all()

    def aborted(self) -> bool:
        return self.error is not None

    def wait_idle(self) -> None:
        """Wait until no decode task of this call is pending."""
        with self._cond:
            while self._pending:
                self._cond.wait()

    # Consumer side (workers.ImageSource) ------------------------------------------

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        with self._cond:
            while True:
                if self.error is not None:
                    return None
                closed = not self._reading and not self._pending
                if self._ready_n >= n or (closed and self._ready_n):
                    break
                if closed:
                    return None
                self._cond.wait()
            rows: list[np.ndarray] = []
            parts: list[np.ndarray] = []
            need = n
            while need and self._ready:
                r, x = self._ready.popleft()
                if len(r) > need:  # split: the rest stays at the head
                    self._ready.appendleft((r[need:], x[need:]))
                    r, x = r[:need], x[:need]
                rows.append(r)
                parts.append(x)
                need -= len(r)
            taken = n - need
            self._ready_n -= taken
            self._inflight -= taken
            self._cond.notify_all()
        if len(parts) == 1:
            return rows[0], parts[0]
        return np.concatenate(rows), np.concatenate(parts)


@dataclass
class PipelineResult:
    """What a pipeline run produced, in selection order."""

    names: list[str] = field(default_factory=list)
    """Member names of the selection, in package order."""
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Sorted positions (in ``names``) of the images that were classified."""
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    """One row of scores per entry of ``rows``."""
    errors: dict[int, str] = field(default_factory=dict)
    """Position -> decode error, for the images that could not be decoded."""
    reports: list[WorkerReport] = field(default_factory=list)
    download_s: float = 0.0
    decode_s: float = 0.0
    peak_inflight: int = 0


def run_pipeline(
    stream: BinaryIO,
    models: DeviceModels,
    pool: Executor,
    decode: Decode,
    *,
    start: int = 0,
    stop: int | None = None,
    first_only: bool = False,
    batch_size: int | None = None,
    decode_threads: int = 1,
    decode_chunk: int = 16,
    max_inflight_images: int = 1024,
    index: PackageIndex | None = None,
) -> PipelineResult:
    """Classify the members ``start:stop`` of the package ``stream`` (only the first of
    them if ``first_only``), decoding in ``pool`` while ``models`` run. ``index``: the
    package's member offsets learnt by earlier calls (extended by this one).

    Raises InputError for a bad package or an out-of-range selection, FunctionError if
    a device fails, and whatever the store's stream raises.
    """
    sizes = [batch_size] if batch_size else list(models.batch_sizes.values()) or [32]
    capacity = max(max_inflight_images, max(sizes) + decode_chunk)
    handoff = HandOff(capacity, max_pending=2 * decode_threads)
    result = PipelineResult()
    size = models.size

    def decode_task(rows: np.ndarray, blobs: list[bytes]) -> None:
        t0 = time.perf_counter()
        out = np.empty((len(blobs), size, size, 3), dtype=np.uint8)
        ok: list[int] = []
        failed: dict[int, str] = {}
        try:
            if not handoff.aborted():
                for row, data in zip(rows.tolist(), blobs, strict=True):
                    try:
                        out[len(ok)] = decode(data, size)
                        ok.append(row)
                    except InputError as exc:
                        failed[row] = str(exc)
        except BaseException as exc:  # not an image error: the call fails
            handoff.abort(exc)
        n = len(ok)
        handoff.decoded(np.asarray(ok, dtype=np.int64), out[:n], failed, time.perf_counter() - t0)

    def submit(first_row: int, blobs: list[bytes]) -> bool:
        if not handoff.reserve(len(blobs)):
            return False
        rows = np.arange(first_row, first_row + len(blobs), dtype=np.int64)
        try:
            pool.submit(decode_task, rows, blobs)
        except BaseException:
            handoff.decoded(rows[:0], np.zeros((0, size, size, 3), np.uint8), {}, 0.0)
            raise
        return True

    def read() -> None:
        members = iter_package_range(stream, start, stop, index)
        try:
            chunk: list[bytes] = []
            chunk_row = 0
            while True:
                t0 = time.perf_counter()
                item = next(members, None)
                result.download_s += time.perf_counter() - t0
                if item is None:
                    break
                _, name, data = item
                result.names.append(name)
                chunk.append(data)
                if first_only:
                    break
                if len(chunk) >= decode_chunk:
                    if not submit(chunk_row, chunk):
                        return
                    chunk_row += len(chunk)
                    chunk = []
            if chunk:
                submit(chunk_row, chunk)
        except BaseException as exc:
            handoff.abort(exc)
        finally:
            members.close()
            handoff.done_reading()

    reader = threading.Thread(target=read, name="stoic-reader", daemon=True)
    rows_out: list[np.ndarray] = []
    scores_out: list[np.ndarray] = []

    def deliver(rows: np.ndarray, scores: np.ndarray) -> None:
        rows_out.append(rows)
        scores_out.append(scores)

    reader.start()
    try:
        result.reports = run_workers(models, handoff, deliver, batch_size)
    except BaseException as exc:  # not a device error (those are in the reports)
        handoff.abort(exc)
        raise
    finally:
        reader.join()
        handoff.wait_idle()
    failed = [r.error for r in result.reports if r.error]
    if failed:
        raise FunctionError("classification failed: " + "; ".join(failed))
    if handoff.error is not None:
        raise handoff.error
    if rows_out:
        rows = np.concatenate(rows_out)
        order = np.argsort(rows, kind="stable")
        result.rows = rows[order]
        result.scores = np.concatenate(scores_out)[order]
    else:
        result.scores = np.zeros((0, models.n_classes), dtype=np.float32)
    result.errors = handoff.errors
    result.decode_s = handoff.decode_s
    result.peak_inflight = handoff.peak_inflight
    return result
