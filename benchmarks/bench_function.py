"""Throughput of the serverless function against its bare model, per-instance and per-call
costs, chunked calls, and peak memory of a large call.

    .venv/bin/python benchmarks/bench_function.py [--sizes 10 150 1000] [--repeat 7]
        [--devices CPU:0,CPU:1 --logical-cpus 2] [--no-http] [--no-rss]

Generated JPEG scenes (128x96, ~3.6 KB, the demo model's data) in a directory object
store; the demo CNN (64x64 input). Sections:

1. **Per-instance model load**, in process: the first call on a cold ``Function`` (model
   read, replication, tracing the compiled call, batch-size measurement, gc) vs the
   second; and over HTTP (``python -m stoic.function.server``): process start to ready
   (TensorFlow import), the first call (model load) and later calls.
2. **Throughput** per batch size, images/s, best of ``--repeat`` interleaved runs:
   ``raw eager``: ``model(x, training=False)`` on decoded tensors, batches of 32 (the
   baseline of issue 15); ``raw compiled``: the bare model in a ``tf.function`` at the
   function's batch size (the model's ceiling on this machine); ``fn stage``: the
   function's inference stage (``workers.classify``: shared source, batching,
   delivery) on the same decoded images; ``fn e2e``: a whole call (read the package,
   decode, classify, overlapped; ``total_s``); ``decode``: the same call's read and
   decode side alone (a device that does nothing). Ratios: ``stage/compiled`` (the
   function's own overhead) and ``e2e/eager``, ``e2e/compiled``.
3. **Chunked calls** (issue 11's share mode): N images as calls of ``--chunk`` on one
   warm instance vs one call, in process and over HTTP, and the per-call overhead:
   calls of 1, 10 and 50 images on a warm instance, fitted as ``a + b·n``.
4. **Peak RSS** of a call on 2,450 camera-trap-sized images (1920x1080 JPEG, ~160 KB;
   the workload's largest batch) and on 500, in a child process: peak resident memory
   during the call above the resident memory before it (``VmHWM`` reset by
   ``/proc/self/clear_refs``).

The machine is shared: the load average is printed before and after; quote ranges of
several runs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from stoic.storage.objectstore import DirObjectStore
from stoic.storage.package import PackageWriter, model_key, package_key

REPO = Path(__file__).resolve().parents[1]


def _package(store: DirObjectStore, batch: str, blobs: list[bytes], n: int) -> str:
    buf = io.BytesIO()
    with PackageWriter(buf) as writer:
        for i in range(n):
            writer.add_bytes(f"{i:05d}.jpg", blobs[i % len(blobs)])
    key = package_key(batch)
    store.put_bytes(key, buf.getvalue())
    return key


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# Section 1 and 3 over HTTP ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    """The function server as a child process (what the local backend runs)."""

    def __init__(self, store_root: str, env: dict[str, str]) -> None:
        self.port = _free_port()
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stoic.function.server", "--host", "127.0.0.1"],
            env={
                **os.environ,
                **env,
                "STOIC_OBJECTSTORE__KIND": "dir",
                "STOIC_OBJECTSTORE__PATH": store_root,
                "FUNC_PORT": str(self.port),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "ready on" in line or "failed" in line:
                break
        if "ready on" not in line:
            raise RuntimeError(f"function server did not start: {line}")
        self.ready_s = time.perf_counter() - t0
        import httpx

        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=600)

    def call(self, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        t0 = time.perf_counter()
        r = self.client.post("/", json=body)
        wall = time.perf_counter() - t0
        r.raise_for_status()
        return wall, r.json()

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# Section 4: peak RSS in a child process -----------------------------------------------

_RSS_CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from stoic.function.handler import Function
from stoic.storage.objectstore import DirObjectStore
from stoic.settings import load_settings

def rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
root, model, package = sys.argv[1:4]
f = Function(DirObjectStore(root), settings=load_settings().function)
f({"package": package, "model": model, "warmup": True})
before = rss("VmRSS:")
with open("/proc/self/clear_refs", "w") as c:
    c.write("5")
t0 = time.perf_counter()
out = f({"package": package, "model": model})
print(json.dumps({"before_mb": before, "peak_mb": rss("VmHWM:"), "n": out["n_images"],
                  "wall_s": time.perf_counter() - t0, "timings": out["timings"]}))
"""


def rss_section(store: DirObjectStore, root: str, model: str) -> None:
    from stoic.function.classifier import CLASSES, draw_scene

    rng = np.random.default_rng(0)
    big = []
    for i in range(10):
        buf = io.BytesIO()
        draw_scene(CLASSES[i % 5], rng, size=(1920, 1080)).save(buf, format="JPEG", quality=75)
        big.append(buf.getvalue())
    kb = float(np.mean([len(b) for b in big])) / 1024
    print(f"\n4. peak RSS of one call, 1920x1080 JPEGs (~{kb:.0f} KB each), child process")
    print(
        f"{'images':>7} {'package MB':>11} {'RSS before MB':>14} {'peak MB':>8} "
        f"{'peak-before MB':>15} {'call s':>7} {'img/s':>6}"
    )
    for n in (500, 2450):
        key = _package(store, f"rss{n}", big, n)
        size_mb = store.size(key) / 2**20
        proc = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, root, model, key],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode:
            print(f"{n:>7} child failed: {proc.stderr[-500:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"{n:>7} {size_mb:>11.0f} {r['before_mb']:>14.0f} {r['peak_mb']:>8.0f} "
            f"{r['peak_mb'] - r['before_mb']:>15.0f} {r['wall_s']:>7.2f} "
            f"{n / r['wall_s']:>6.0f}"
        )
        store.delete(key)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 150, 1000])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--chunk", type=int, default=50, help="images per chunked call")
    parser.add_argument("--chunk-images", type=int, default=1000)
    parser.add_argument("--devices", default=None, help="e.g. GPU:0,GPU:1 (default: all)")
    parser.add_argument(
        "--logical-cpus", type=int, default=0, help="split the CPU into N logical devices"
    )
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--no-rss", action="store_true")
    args = parser.parse_args()

    import tensorflow as tf

    if args.logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(args.logical_cpus)]
        )
    from stoic.function import workers
    from stoic.function.classifier import decode_image, demo_images, save_model, train_demo_model
    from stoic.function.handler import Function
    from stoic.function.pipeline import run_pipeline
    from stoic.settings import FunctionSettings

    devices = args.devices.split(",") if args.devices else None
    settings = FunctionSettings(devices=devices)
    print(f"load average before: {_load()}  (cores: {os.cpu_count()})")
    with tempfile.TemporaryDirectory() as tmp:
        store = DirObjectStore(tmp)
        key = model_key("bench", "1")
        print("training a small demo model ...", flush=True)
        result = train_demo_model(n_per_class=10, epochs=1)
        save_model(result.model, store, key, result.classes)
        blobs = [data for _, data in demo_images(40, seed=5)]  # 200 distinct scenes

        # 1. Per-instance model load vs later calls ------------------------------------
        warm_pkg = _package(store, "warm", blobs, 1)
        function = Function(store, settings=settings)
        t0 = time.perf_counter()
        first = function({"package": warm_pkg, "model": key, "warmup": True})
        first_wall = time.perf_counter() - t0
        later = []
        for _ in range(5):
            t0 = time.perf_counter()
            function({"package": warm_pkg, "model": key, "warmup": True})
            later.append(time.perf_counter() - t0)
        loaded = function.get_model(key)[0]
        steps = ", ".join(f"{k} {v:.3f}" for k, v in loaded.load_s.items())
        print("\n1. per-instance model load (in process, demo model)")
        print(
            f"first call {first_wall:.3f} s (model_load_s "
            f"{first['timings']['model_load_s']:.3f}: {steps}); later 1-image calls "
            f"{min(later) * 1e3:.1f}-{max(later) * 1e3:.1f} ms"
        )
        tuning = {
            d: {b: round(r) for b, r in rates.items()} for d, rates in loaded.devices.tuning.items()
        }
        print(f"batch size per device {loaded.devices.batch_sizes}; measured img/s {tuning}")
        batch = max(loaded.devices.batch_sizes.values())
        model = loaded.model
        server = None
        if args.logical_cpus > 1 and not args.no_http:
            print("(no HTTP sections with --logical-cpus: the server process has one CPU device)")
        elif not args.no_http:
            env = {"STOIC_FUNCTION__DEVICES": json.dumps(devices)} if devices else {}
            server = _Server(tmp, env)
            first_http, body = server.call({"package": warm_pkg, "model": key, "warmup": True})
            later_http = [
                server.call({"package": warm_pkg, "model": key, "warmup": True})[0]
                for _ in range(5)
            ]
            print(
                f"over HTTP: process start to ready {server.ready_s:.2f} s; first call "
                f"{first_http:.3f} s (model_load_s {body['timings']['model_load_s']:.3f}); "
                f"later 1-image calls {min(later_http) * 1e3:.1f}-"
                f"{max(later_http) * 1e3:.1f} ms"
            )

        # 2. Throughput ----------------------------------------------------------------
        def raw_eager(x: np.ndarray) -> float:
            t0 = time.perf_counter()
            for s in range(0, len(x), 32):
                np.asarray(model(tf.constant(x[s : s + 32], dtype=tf.float32), training=False))
            return len(x) / (time.perf_counter() - t0)

        compiled = tf.function(
            lambda t: model(tf.cast(t, tf.float32), training=False),
            input_signature=[tf.TensorSpec([None, 64, 64, 3], tf.uint8)],
        )

        def raw_compiled(x: np.ndarray) -> float:
            t0 = time.perf_counter()
            for s in range(0, len(x), batch):
                np.asarray(compiled(x[s : s + batch]))
            return len(x) / (time.perf_counter() - t0)

        def fn_stage(x: np.ndarray) -> float:
            t0 = time.perf_counter()
            workers.classify(loaded.devices, x)
            return len(x) / (time.perf_counter() - t0)

        idle = workers.DeviceModels(["none"], 64, 5)
        idle.calls["none"] = lambda x: np.zeros((len(x), 5), np.float32)
        idle.batch_sizes["none"] = batch
        pool = ThreadPoolExecutor(function.decode_threads)

        def decode_only(pkg: str, n: int) -> float:
            t0 = time.perf_counter()
            with store.open_read(pkg) as stream:
                run_pipeline(
                    stream, idle, pool, decode_image, decode_threads=function.decode_threads
                )
            return n / (time.perf_counter() - t0)

        raw_eager(np.zeros((64, 64, 64, 3), np.uint8))
        raw_compiled(np.zeros((batch, 64, 64, 3), np.uint8))
        print(
            f"\n2. throughput, images/s, best of {args.repeat} interleaved runs "
            f"(median in brackets); function batch {batch}, "
            f"{function.decode_threads} decode threads"
        )
        head = (
            f"{'images':>6} {'raw eager@32':>13} {'raw compiled':>13} {'fn stage':>13} "
            f"{'fn e2e':>13} {'decode':>13} {'in-call proc':>13} "
            f"{'stage/compiled':>15} {'e2e/eager':>10} {'e2e/compiled':>13}"
        )
        print(head)
        for n in args.sizes:
            pkg = _package(store, f"n{n}", blobs, n)
            x = np.stack([decode_image(blobs[i % len(blobs)]) for i in range(n)])
            cols: dict[str, list[float]] = {
                k: [] for k in ("eager", "compiled", "stage", "e2e", "decode", "proc")
            }
            ratio_stage, ratio_eager = [], []
            for _ in range(args.repeat):  # interleaved, so all see the same machine load
                cols["eager"].append(raw_eager(x))
                cols["compiled"].append(raw_compiled(x))
                cols["stage"].append(fn_stage(x))
                out = function({"package": pkg, "model": key})
                cols["e2e"].append(n / out["timings"]["total_s"])
                cols["proc"].append(n / out["timings"]["processing_s"])
                cols["decode"].append(decode_only(pkg, n))
                ratio_stage.append(cols["stage"][-1] / cols["compiled"][-1])
                ratio_eager.append(cols["e2e"][-1] / cols["eager"][-1])

            def cell(k: str, cols: dict[str, list[float]] = cols) -> str:
                v = cols[k]
                return f"{max(v):>6.0f} ({float(np.median(v)):>4.0f})"

            best = {k: max(v) for k, v in cols.items()}
            print(
                f"{n:>6} {cell('eager')} {cell('compiled')} {cell('stage')} {cell('e2e')} "
                f"{cell('decode')} {cell('proc')} "
                f"{best['stage'] / best['compiled']:>6.2f} ({float(np.median(ratio_stage)):.2f})"
                f" {best['e2e'] / best['eager']:>10.2f} "
                f"{best['e2e'] / best['compiled']:>13.2f}"
            )
            store.delete(pkg)
        pool.shutdown()

        # 3. Chunked calls and per-call overhead ---------------------------------------
        n = args.chunk_images
        pkg = _package(store, "chunked", blobs, n)
        print(
            f"\n3. chunked calls: {n} images as calls of {args.chunk} on one warm "
            f"instance vs one call (best of 5, interleaved; img/s = {n} / summed wall time)"
        )
        print(f"{'path':>10} {'one call img/s':>15} {'chunked img/s':>14} {'ratio':>6}")
        paths: list[tuple[str, Any]] = [
            ("in-process", lambda body: _timed(function, body)),
        ]
        if server is not None:
            paths.append(("HTTP", server.call))
        for name, call in paths:
            one, chunked = [], []
            for _ in range(5):
                one.append(n / call({"package": pkg, "model": key})[0])
                t = 0.0
                for start in range(0, n, args.chunk):
                    body = {"package": pkg, "model": key, "start": start}
                    body["stop"] = min(start + args.chunk, n)
                    t += call(body)[0]
                chunked.append(n / t)
            print(
                f"{name:>10} {max(one):>15.0f} {max(chunked):>14.0f} "
                f"{max(chunked) / max(one):>6.2f}"
            )
        print("per-call wall time on a warm instance, ms (median of 9 calls; fit a + b*n)")
        for name, call in paths:
            sizes = (1, 10, 50)
            med = []
            for k in sizes:
                walls = [call({"package": pkg, "model": key, "stop": k})[0] for _ in range(9)]
                med.append(float(np.median(walls)))
            b, a = np.polyfit(sizes, med, 1)
            cells = "  ".join(f"{k}: {m * 1e3:6.1f}" for k, m in zip(sizes, med, strict=True))
            print(
                f"{name:>10} {cells}   per-call overhead a = {a * 1e3:.1f} ms, "
                f"per image b = {b * 1e3:.3f} ms"
            )
        if server is not None:
            server.close()
        function.close()

        # 4. Peak RSS ------------------------------------------------------------------
        if not args.no_rss:
            rss_section(store, tmp, key)
    print(f"\nload average after: {_load()}")


def _timed(function: Any, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    out = function(body)
    return time.perf_counter() - t0, out


if __name__ == "__main__":
    main()
