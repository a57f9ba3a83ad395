"""Local backend figures with the real function server:
``.venv/bin/python benchmarks/bench_local_backend.py [--images N] [--rounds R]``.

Prints, in seconds (loop clock, as the predictor sees them):

* cold T_d: ``deploy(cpu)`` = start ``python -m stoic.function.server`` until
  ``/healthz`` answers 200 (TensorFlow import included), median over R rounds;
* warm T_d: ``deploy(edge)`` handing out the already-running standby;
* T_p of the first call (model load) and of a warm call on an N-image package of demo
  JPEGs, with the function's own ``total_s`` beside it (the gap is HTTP + JSON);
* the time to kill a busy process when its invoke is cancelled.

The model is the untrained demo CNN (its speed is the trained one's).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
from pathlib import Path

from stoic.backends.local import LocalBackend
from stoic.function.classifier import CLASSES, build_model, demo_images, save_model
from stoic.settings import LocalBackendSettings
from stoic.storage.objectstore import DirObjectStore
from stoic.storage.package import model_key, package_key, write_package
from stoic.values import Job, Runtime, RuntimeKind

CPU = Runtime("cpu", RuntimeKind.CPU)
EDGE = Runtime("edge", RuntimeKind.EDGE)


def prepare(data_dir: Path, n_images: int) -> Job:
    store = DirObjectStore(data_dir / "objects")
    save_model(build_model(), store, model_key("classify", "1"), CLASSES)
    pairs = demo_images(n_images // len(CLASSES) + 1)[:n_images]
    buf = io.BytesIO()
    write_package(buf, iter((f"img{i}.jpg", data) for i, (_, data) in enumerate(pairs)))
    store.put_bytes(package_key("bench"), buf.getvalue())
    return Job("bench", n_images, len(buf.getvalue()), package_key=package_key("bench"))


async def run(data_dir: Path, job: Job, rounds: int) -> None:
    loop = asyncio.get_running_loop()
    opts = LocalBackendSettings(terminate_grace_s=10.0)
    async with LocalBackend(data_dir=data_dir, options=opts, edge=EDGE) as backend:
        cold = []
        for _ in range(rounds):
            d = await backend.deploy(CPU, timeout_s=300)
            cold.append(d.deploy_s)
            await backend.teardown(d)
        print(
            f"cold T_d (cpu process to ready), median of {rounds}: {statistics.median(cold):.2f} s"
            f"  (min {min(cold):.2f}, max {max(cold):.2f})"
        )

        first = await backend.deploy(EDGE, timeout_s=300)  # waits for the standby launch
        warm = [(await backend.deploy(EDGE, timeout_s=300)).deploy_s for _ in range(20)]
        print(
            f"edge standby (launched by start()): first deploy {first.deploy_s:.2f} s, "
            f"warm hand-out median {statistics.median(warm) * 1e3:.1f} ms"
        )

        up = await backend.upload(EDGE, job)
        for label in ("first call (model load)", "warm call"):
            inv = await backend.invoke(first, job, up)
            t = inv.timings
            print(
                f"{label}, {job.n_images} images: T_p {inv.processing_s:.3f} s; function "
                f"total {t['total_s']:.3f} s (model load {t['model_load_s']:.3f}, decode "
                f"{t['decode_s']:.3f}, processing {t['processing_s']:.3f})"
            )

        task = asyncio.create_task(backend.invoke(first, job, up))
        await asyncio.sleep(0.2)
        t0 = loop.time()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            print(
                f"cancel of a busy invoke: process killed and reaped in "
                f"{(loop.time() - t0) * 1e3:.1f} ms"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="stoic-bench-local-") as tmp:
        job = prepare(Path(tmp), args.images)
        asyncio.run(run(Path(tmp), job, args.rounds))


if __name__ == "__main__":
    main()
