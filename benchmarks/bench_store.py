"""Store throughput on SQLite (a temp file): the per-batch database cost of the daemon.

Run: ``.venv/bin/python benchmarks/bench_store.py``. Prints operations per second for
the calls the controller makes on each batch and the predictor on each decision.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from stoic.store import Store, migrate
from stoic.values import BatchState, DeploymentSample

N = 500


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{Path(d) / 'bench.db'}"
        migrate(url)
        with Store(url) as s:
            t0 = time.perf_counter()
            for i in range(N):
                s.create_batch(created_at=float(i), n_images=10, n_bytes=1, package_key="p")
            t1 = time.perf_counter()
            for i in range(N):
                b = s.claim_next_queued(float(i))
                assert b is not None
                s.record_decision(b.id, "edge", "bench", {"edge": {"total_s": 1.0}})
                s.finish_batch(b.id, state=BatchState.DONE, finished_at=float(i), total_s=1.0)
            t2 = time.perf_counter()
            for i in range(N):
                s.add_deployment_sample(DeploymentSample("gpu1", float(i), 30.0))
            t3 = time.perf_counter()
            for _ in range(N):
                s.deployment_samples("gpu1", limit=100)
            t4 = time.perf_counter()
    print(f"sqlite create_batch:                  {N / (t1 - t0):8.0f} /s")
    print(f"sqlite claim+decision+finish (batch): {N / (t2 - t1):8.0f} /s")
    print(f"sqlite add_deployment_sample:         {N / (t3 - t2):8.0f} /s")
    print(f"sqlite deployment_samples(limit=100): {N / (t4 - t3):8.0f} /s")


if __name__ == "__main__":
    main()
