"""Device workers: one per visible GPU sharing one queue of images (paper, section 4.1).

The paper's application "spawns a process (worker) for each GPU and adds all images in
a batch to a shared asynchronous queue. Workers remove images (one at a time) from the
shared queue until it is exhausted", so the GPUs divide the batch evenly whatever their
speed. We do the same with one *thread* per device rather than a process: TensorFlow
releases the GIL inside its kernels, the model is loaded once and replicated to each
device in memory (a process per GPU would load it once per process, which is exactly
the model-load cost the warm-up call is there to pay only once), and a thread needs no
pickling of images. Without GPUs there is one worker on ``CPU:0``.

Batching inside a worker: a worker takes the next image from the queue and then, without
waiting, up to ``batch_size - 1`` more, and classifies them in one call. With several
GPUs the queue therefore drains in small bites while it is long and finishes evenly.
The model is called directly on a tensor, ``model(x, training=False)``: ``predict``
builds a tf.data pipeline per call, which costs far more than the inference itself for
batches of a few dozen 64x64 images.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class WorkerReport:
    """What one worker did: its device and how many images it classified."""

    device: str
    images: int = 0
    batches: int = 0
    error: str | None = None


@dataclass
class DeviceModels:
    """A model and its replica per device (built once, cached with the model)."""

    devices: list[str]
    replicas: dict[str, Any] = field(default_factory=dict)


def visible_devices() -> list[str]:
    """``["GPU:0", "GPU:1", ...]`` for visible GPUs, else ``["CPU:0"]``."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name.removeprefix("/device:") for d in gpus]
    return ["CPU:0"]


def replicate(model: Any, devices: Sequence[str]) -> DeviceModels:
    """One copy of ``model`` whose variables live on each device.

    On CPU the model itself is used. On GPUs a clone per device avoids copying the
    weights from GPU:0 to the others on every call.
    """
    import keras
    import tensorflow as tf

    out = DeviceModels(list(devices))
    for dev in devices:
        if dev.startswith("CPU") or len(devices) == 1:
            out.replicas[dev] = model
            continue
        with tf.device(dev):
            clone = keras.models.clone_model(model)
            clone.set_weights(model.get_weights())
        out.replicas[dev] = clone
    return out


def warm(models: DeviceModels, size: int) -> None:
    """Run one dummy image through each replica (traces and allocates once)."""
    import tensorflow as tf

    x = np.zeros((1, size, size, 3), dtype=np.float32)
    for dev, model in models.replicas.items():
        with tf.device(dev):
            model(tf.constant(x), training=False)


def classify(
    models: DeviceModels, images: Sequence[np.ndarray], batch_size: int = 32
) -> tuple[np.ndarray, list[WorkerReport]]:
    """Scores ``(len(images), n_classes)`` for uint8 images, and per-worker counts.

    One thread per device drains a shared queue of image indices; results land in a
    preallocated array by index, so the output order is the input order.
    """
    import tensorflow as tf

    if not images:
        return np.zeros((0, 0), dtype=np.float32), [WorkerReport(d) for d in models.devices]
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(images)):
        todo.put(i)
    first = next(iter(models.replicas.values()))
    scores = np.zeros((len(images), int(first.output_shape[-1])), dtype=np.float32)
    reports = [WorkerReport(d) for d in models.devices]

    def work(report: WorkerReport) -> None:
        model = models.replicas[report.device]
        try:
            with tf.device(report.device):
                while True:
                    idx = _take(todo, batch_size)
                    if not idx:
                        return
                    x = tf.constant(np.stack([images[i] for i in idx]), dtype=tf.float32)
                    out = model(x, training=False)
                    scores[idx] = np.asarray(out)
                    report.images += len(idx)
                    report.batches += 1
        except Exception as exc:  # surfaced by the caller, with the device named
            report.error = f"{report.device}: {type(exc).__name__}: {exc}"

    if len(reports) == 1:  # no thread hop for the common single-device case
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
    return scores, reports


def _take(todo: queue.SimpleQueue[int], batch_size: int) -> list[int]:
    """Up to ``batch_size`` indices from the queue without blocking."""
    idx: list[int] = []
    while len(idx) < batch_size:
        try:
            idx.append(todo.get_nowait())
        except queue.Empty:
            break
    return idx
