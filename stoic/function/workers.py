"""Device workers: one per device draining a shared source of images (paper, section 4.1).

The paper's application "spawns a process (worker) for each GPU and adds all images in
a batch to a shared asynchronous queue. Workers remove images (one at a time) from the
shared queue until it is exhausted", so the GPUs divide the batch evenly whatever their
speed. We do the same with one *thread* per device rather than a process: TensorFlow
releases the GIL inside its kernels, the model is loaded once and replicated to each
device in memory (a process per GPU would load it once per process, which is exactly
the model-load cost the warm-up call is there to pay only once), and a thread needs no
pickling of images. Without GPUs there is one worker on ``CPU:0``.

A worker takes ``batch_size`` images at a time from the shared source (fewer at the
end), so with several devices the source drains in bites of one batch and the devices
finish within one batch of each other. The source is :class:`ImageSource`: a stacked
array (:func:`classify`) or the streaming hand-off of :mod:`stoic.function.pipeline`,
which the decoders fill while the devices run.

How a batch is run, and why (measured on the 2-core test machine, demo CNN, 64x64):

* **A compiled call, not eager Keras.** ``model(x)`` in eager mode dispatches every
  layer's ops from Python one by one, unoptimised (cProfile at 32 images per call:
  over a third of the time in Keras ``Layer.__call__`` and op dispatch, the
  convolutions through ``conv2d_eager_fallback``). Each device gets one
  ``tf.function`` with a fixed input signature ``uint8[None, S, S, 3]``: traced once
  at model load, no retracing for any batch size, optimised as a graph, 3-4x the
  eager throughput. ``model.predict`` is worse than both (a ``tf.data`` pipeline per
  call).
* **uint8 in, cast on the device.** The worker hands the decoded uint8 array over as is;
  the cast to the model's input dtype is inside the graph, so the host copies (and, on
  a GPU, transfers) a quarter of the bytes of float32.
* **Batch size measured, not assumed** (:func:`tune_batch_size`): on each device, at
  model load, a few candidate sizes are timed on random images and the smallest within
  a tolerance of the best throughput is kept. A small CNN on a CPU saturates near
  64-128 images; a GPU wants hundreds. A setting or the request can fix it instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

Call = Callable[[np.ndarray], Any]
"""A device's compiled model call: uint8 images ``(n, S, S, 3)`` -> scores tensor."""


@dataclass
class WorkerReport:
    """What one worker did: its device, how many images and batches, and its time
    spent running batches (``busy_s``) and waiting for images (``wait_s``)."""

    device: str
    batch_size: int = 0
    images: int = 0
    batches: int = 0
    busy_s: float = 0.0
    wait_s: float = 0.0
    error: str | None = None


@dataclass
class DeviceModels:
    """A model's replica, compiled call and batch size per device (built once at model
    load, cached with the model)."""

    devices: list[str]
    size: int
    n_classes: int
    replicas: dict[str, Any] = field(default_factory=dict)
    calls: dict[str, Call] = field(default_factory=dict)
    batch_sizes: dict[str, int] = field(default_factory=dict)
    tuning: dict[str, dict[int, float]] = field(default_factory=dict)
    """Per device, the measured images/s per candidate batch size (empty if fixed)."""


class ImageSource(Protocol):
    """Where workers take images from: ``take(n)`` returns up to ``n`` images as
    ``(rows, images)`` (rows: int positions, images: uint8 ``(k, S, S, 3)``), blocking
    until ``n`` are ready or no more will come; ``None`` when exhausted or aborted.
    ``abort(exc)`` stops the source (a worker failed)."""

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray] | None: ...

    def abort(self, exc: BaseException) -> None: ...


def visible_devices() -> list[str]:
    """``["GPU:0", "GPU:1", ...]`` for visible GPUs, else ``["CPU:0"]``."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name.removeprefix("/device:") for d in gpus]
    return ["CPU:0"]


def check_devices(devices: Sequence[str]) -> list[str]:
    """``devices`` if TensorFlow has them all, else FunctionError naming the missing ones
    (a deployment's configuration error, not the caller's: HTTP 500).

    Without the check a device that does not exist (``GPU:1`` on a 1-GPU node) is
    silently replaced by another (TensorFlow's soft placement): two workers would
    share one device and the operator would never know.
    """
    import tensorflow as tf

    from stoic.errors import FunctionError

    known = {d.name.removeprefix("/device:") for d in tf.config.list_logical_devices()}
    missing = [d for d in devices if d not in known]
    if missing or not devices:
        raise FunctionError(
            f"function.devices {list(devices)}: {missing or 'none given'} not visible "
            f"(TensorFlow sees {sorted(known)})"
        )
    return list(devices)


def replicate(
    model: Any, devices: Sequence[str], size: int, affine: tuple[float, float] = (1.0, 0.0)
) -> DeviceModels:
    """One copy of ``model`` whose variables live on each device, and its compiled call
    (``affine``: the input is ``pixels * scale + offset``, the model's declared scaling).

    With one device the model itself is used. With several, a clone per device avoids
    copying the weights from the first device to the others on every call.
    """
    import keras
    import tensorflow as tf

    out = DeviceModels(list(devices), size, int(model.output_shape[-1]))
    for dev in devices:
        if len(devices) == 1:
            replica = model
        else:
            with tf.device(dev):
                replica = keras.models.clone_model(model)
                replica.set_weights(model.get_weights())
        out.replicas[dev] = replica
        out.calls[dev] = compile_call(replica, dev, size, affine)
    return out


def compile_call(
    model: Any, device: str, size: int, affine: tuple[float, float] = (1.0, 0.0)
) -> Call:
    """``model(cast(x * scale + offset), training=False)`` as a ``tf.function`` pinned
    to ``device`` (raw pixels, ``affine`` = (1, 0), are cast straight to the model's
    dtype, as before models declared their scaling)."""
    import tensorflow as tf

    dtype = tf.as_dtype(getattr(model.inputs[0], "dtype", None) or "float32")
    scale, offset = affine

    def call(x: Any) -> Any:
        with tf.device(device):
            if (scale, offset) == (1.0, 0.0):
                return model(tf.cast(x, dtype), training=False)
            scaled = tf.cast(x, tf.float32) * scale + offset
            return model(tf.cast(scaled, dtype), training=False)

    spec = tf.TensorSpec([None, size, size, 3], tf.uint8)
    compiled: Call = tf.function(call, input_signature=[spec])
    return compiled


def warm(models: DeviceModels) -> None:
    """Trace each device's call and run one image through it (allocates once)."""
    x = np.zeros((1, models.size, models.size, 3), dtype=np.uint8)
    for call in models.calls.values():
        np.asarray(call(x))


def tune_batch_size(
    call: Call,
    size: int,
    candidates: Sequence[int],
    *,
    budget_s: float,
    tolerance: float,
    rounds: int = 5,
    max_call_s: float | None = None,
) -> tuple[int, dict[int, float]]:
    """Time ``call`` at each candidate batch size; the smallest within ``tolerance``
    of the best throughput, and the measured images/s per size.

    Each size gets one untimed call first (the first use of a shape allocates), in
    increasing order; the ladder stops at a size that runs out of device memory, and
    after the first size whose call takes over ``max_call_s`` (default a twentieth of
    ``budget_s``, 30 ms with the default budget): by then the fixed cost of a call
    (about a millisecond for a compiled call) is a few percent of it, so larger
    batches cannot gain more than that, and timing them would overrun the budget.
    Then ``rounds`` passes over the sizes, each timed for its share of ``budget_s``
    (at least one call), keeping each size's best rate: interleaving the sizes and
    keeping the best makes the choice robust to a burst of load from other processes,
    which would otherwise penalise whichever size it happened to hit.
    """
    import tensorflow as tf

    sizes = sorted(set(candidates))
    rng = np.random.default_rng(0)
    inputs: dict[int, np.ndarray] = {}
    for b in sizes:
        x = rng.integers(0, 256, size=(b, size, size, 3), dtype=np.uint8)
        t0 = time.perf_counter()
        try:
            np.asarray(call(x))
        except tf.errors.ResourceExhaustedError:
            break
        inputs[b] = x
        if time.perf_counter() - t0 > (budget_s / 20 if max_call_s is None else max_call_s):
            break
    share = budget_s / (rounds * max(1, len(inputs)))
    rates: dict[int, float] = {}
    for _ in range(rounds):
        for b, x in inputs.items():
            n, t0 = 0, time.perf_counter()
            while True:
                np.asarray(call(x))
                n += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= share:
                    break
            rates[b] = max(rates.get(b, 0.0), n * b / elapsed)
    if not rates:
        return sizes[0], rates
    best = max(rates.values())
    return min(b for b, r in rates.items() if r >= best * (1 - tolerance)), rates


def run_workers(
    models: DeviceModels,
    source: ImageSource,
    deliver: Callable[[np.ndarray, np.ndarray], None],
    batch_size: int | None = None,
) -> list[WorkerReport]:
    """Drain ``source`` with one worker per device; ``deliver(rows, scores)`` per batch.

    ``batch_size`` overrides the per-device sizes. With one device the worker runs in
    the calling thread (no hand-off). A worker that fails aborts the source, so the
    others and the producer stop; its report carries the error, device named.
    """
    reports = [
        WorkerReport(d, batch_size or models.batch_sizes.get(d) or 32) for d in models.devices
    ]

    def work(report: WorkerReport) -> None:
        call = models.calls[report.device]
        try:
            while True:
                t0 = time.perf_counter()
                got = source.take(report.batch_size)
                t1 = time.perf_counter()
                report.wait_s += t1 - t0
                if got is None:
                    return
                rows, images = got
                scores = np.asarray(call(images))
                deliver(rows, scores)
                report.busy_s += time.perf_counter() - t1
                report.images += len(rows)
                report.batches += 1
        except Exception as exc:  # surfaced by the caller, with the device named
            report.error = f"{report.device}: {type(exc).__name__}: {exc}"
            source.abort(exc)

    if len(reports) == 1:
        work(reports[0])
    else:
        threads = [
            threading.Thread(target=work, args=(r,), name=f"stoic-worker-{r.device}")
            for r in reports
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return reports


class ArraySource:
    """An :class:`ImageSource` over images already decoded (one array, or a list)."""

    def __init__(self, images: np.ndarray | Sequence[np.ndarray]) -> None:
        self._x = images if isinstance(images, np.ndarray) else np.stack(list(images))
        self._next = 0
        self._lock = threading.Lock()
        self._aborted = False

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        with self._lock:
            start = self._next
            if self._aborted or start >= len(self._x):
                return None
            stop = self._next = min(start + n, len(self._x))
        return np.arange(start, stop), self._x[start:stop]

    def abort(self, exc: BaseException) -> None:
        self._aborted = True


def classify(
    models: DeviceModels,
    images: np.ndarray | Sequence[np.ndarray],
    batch_size: int | None = None,
) -> tuple[np.ndarray, list[WorkerReport]]:
    """Scores ``(len(images), n_classes)`` for decoded uint8 images, in input order,
    and per-worker reports (the inference stage alone, without the pipeline)."""
    scores = np.zeros((len(images), models.n_classes), dtype=np.float32)
    if len(images) == 0:
        return scores, [WorkerReport(d) for d in models.devices]

    def deliver(rows: np.ndarray, out: np.ndarray) -> None:
        scores[rows] = out

    reports = run_workers(models, ArraySource(images), deliver, batch_size)
    return scores, reports
