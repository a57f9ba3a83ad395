"""Throughput of the serverless function vs the raw Keras model, and the warm-up effect.

    .venv/bin/python benchmarks/bench_function.py [--sizes 10 150 1000] [--repeat 3]

For batches of 10, 150 and 1,000 generated JPEG scenes in a directory object store:

* ``function``: images/s of the function's processing stage (``timings.processing_s``:
  the device workers draining the queue of decoded images, batch 32), and end to end
  (``total_s``: download + decode + processing) for reference;
* ``raw``: images/s of ``model(x, training=False)`` on the *same decoded tensors* in
  batches of 32, with nothing around it.

The target is function/raw >= 0.90 on 150+ images. It also prints the warm-up effect:
the first call on a cold function (model load + first trace) vs the second call.
Throughputs are the best of ``--repeat`` interleaved runs (the machine is shared);
``median ratio`` is the median of the per-run function/raw ratios.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from stoic.function.classifier import decode_image, demo_images, save_model, train_demo_model
from stoic.function.handler import Function
from stoic.storage.objectstore import DirObjectStore
from stoic.storage.package import PackageWriter, model_key, package_key


def raw_throughput(model: Any, x: np.ndarray, batch_size: int) -> float:
    import tensorflow as tf

    t0 = time.perf_counter()
    for start in range(0, len(x), batch_size):
        batch = tf.constant(x[start : start + batch_size], dtype=tf.float32)
        np.asarray(model(batch, training=False))
    return len(x) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 150, 1000])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = DirObjectStore(tmp)
        key = model_key("bench", "1")
        print("training a small demo model ...", flush=True)
        result = train_demo_model(n_per_class=10, epochs=1)
        save_model(result.model, store, key, result.classes)
        pool = demo_images(40, seed=5)  # 200 distinct scenes, cycled

        # Warm-up effect on a cold function.
        first_pkg = _package(store, "warm", pool, 1)
        cold = Function(store)
        t0 = time.perf_counter()
        first = cold({"package": first_pkg, "model": key, "warmup": True})
        first_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = cold({"package": first_pkg, "model": key, "warmup": True})
        second_wall = time.perf_counter() - t0
        print(
            f"warm-up: first call {first_wall:.3f} s (model_load_s "
            f"{first['timings']['model_load_s']:.3f}), second call {second_wall:.3f} s "
            f"(model_load_s {second['timings']['model_load_s']:.3f})"
        )

        function = cold
        model = function.get_model(key)[0].model
        print(
            f"{'images':>7} {'function img/s':>15} {'raw img/s':>10} {'ratio':>6} "
            f"{'median ratio':>12} {'end-to-end img/s':>17} {'decode img/s':>13}"
        )
        for n in args.sizes:
            pkg = _package(store, f"n{n}", pool, n)
            x = np.stack([decode_image(pool[i % len(pool)][1]) for i in range(n)])
            fn, raw, e2e, dec = [], [], [], []
            for _ in range(args.repeat):  # interleaved, so both see the same machine load
                out = function({"package": pkg, "model": key, "batch_size": args.batch_size})
                t = out["timings"]
                fn.append(n / t["processing_s"])
                e2e.append(n / t["total_s"])
                dec.append(n / t["decode_s"])
                raw.append(raw_throughput(model, x, args.batch_size))
            ratios = [f / r for f, r in zip(fn, raw, strict=True)]
            print(
                f"{n:>7} {max(fn):>15.1f} {max(raw):>10.1f} {max(fn) / max(raw):>6.2f} "
                f"{float(np.median(ratios)):>12.2f} {max(e2e):>17.1f} {max(dec):>13.1f}"
            )


def _package(store: DirObjectStore, batch: str, pool: list[tuple[str, bytes]], n: int) -> str:
    buf = io.BytesIO()
    with PackageWriter(buf) as writer:
        for i in range(n):
            writer.add_bytes(f"{i:05d}.jpg", pool[i % len(pool)][1])
    key = package_key(batch)
    store.put_bytes(key, buf.getvalue())
    return key


if __name__ == "__main__":
    main()
