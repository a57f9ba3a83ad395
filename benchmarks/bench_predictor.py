"""Predictor speed: ``.venv/bin/python benchmarks/bench_predictor.py``.

* one ``estimate`` over the paper's 4 runtimes after 100,000 observed samples, cached
  (nothing changed since the last estimate) and cold (a new processing and deployment
  sample just arrived, so the regression is refitted), median and p99 over many calls;
* one window recalibration over 100 scored samples with windows 1..100 (median, mean),
  after 100 new samples (every scored sample new) and, for the median, after 10 (the
  model reuses the median rows of the samples it scored before);
* a processing refit alone (RANSAC around Bayesian ridge, 10 samples).

Targets (docs/predictor.md): estimate p99 < 5 ms, recalibration < 50 ms.
"""

from __future__ import annotations

import time

import numpy as np

from stoic.predict.deployment import DeploymentModel
from stoic.predict.predictor import Predictor
from stoic.predict.processing import fit_processing
from stoic.settings import Settings
from stoic.values import DeploymentSample, ProcessingSample, TransferSample

APP = {"app": "classify", "app_version": "1"}
PRIOR = {
    "edge": (2.3955, 13.60),
    "cpu": (1.3338, 14.91),
    "gpu1": (0.3272, 28.16),
    "gpu2": (0.1993, 21.27),
}


def _stats(samples_s: list[float]) -> str:
    a = np.array(samples_s) * 1e3
    return f"median {np.median(a):.3f} ms, p99 {np.percentile(a, 99):.3f} ms"


def main() -> None:
    rng = np.random.default_rng(0)
    p = Predictor.from_settings(Settings())
    runtimes = list(PRIOR)
    t0 = time.perf_counter()
    for i in range(100_000):
        rt = runtimes[i % 4]
        if rt != "edge":
            p.observe_deployment(DeploymentSample(rt, float(i), float(20 + rng.lognormal(2, 0.6))))
        n = int(rng.integers(1, 1000))
        a, b = PRIOR[rt]
        p.observe_processing(
            ProcessingSample("classify", "1", rt, n, n * 212_000, a * n + b + rng.normal(0, 2), i)
        )
        if i % 10 == 0:
            p.observe_transfer(TransferSample(10**7, float(rng.uniform(0.9, 1.4)), float(i)))
    print(f"observed 100,000 samples in {time.perf_counter() - t0:.2f} s")

    p.estimate_all(150, 150 * 212_000, **APP)  # warm every cache
    cached = []
    for _ in range(20_000):
        t = time.perf_counter()
        p.estimate_all(150, 150 * 212_000, **APP)
        cached.append(time.perf_counter() - t)
    print(f"estimate_all (4 runtimes), cached:            {_stats(cached)}")

    cold = []
    for i in range(300):
        n = int(rng.integers(1, 1000))
        p.observe_processing(ProcessingSample("classify", "1", "gpu1", n, 0, 0.33 * n + 28, i))
        p.observe_deployment(DeploymentSample("gpu1", float(i), float(20 + rng.lognormal(2, 0.6))))
        t = time.perf_counter()
        p.estimate_all(150, 150 * 212_000, **APP)
        cold.append(time.perf_counter() - t)
    print(f"estimate_all (4 runtimes), after new sample:  {_stats(cold)}")
    print("  (includes one RANSAC refit and, every 10th call, one window recalibration)")

    for method, new in (("median", 100), ("median", 10), ("mean", 100)):
        model = DeploymentModel(method=method, max_window=100, calibration_history=100)  # type: ignore[arg-type]
        for v in 20 + rng.lognormal(2, 0.6, 200):
            model.observe(DeploymentSample("gpu1", 0.0, float(v)))
        times = []
        for _ in range(50):
            for v in 20 + rng.lognormal(2, 0.6, new):
                model.observe(DeploymentSample("gpu1", 0.0, float(v)))
            t = time.perf_counter()
            model.calibrate()
            times.append(time.perf_counter() - t)
        print(
            f"recalibration, {method:6s} after {new:3d} new (100 scored, windows 1..100): "
            f"{_stats(times)}"
        )

    x = rng.integers(1, 1000, 10).astype(float)
    y = 0.33 * x + 28 + rng.normal(0, 2, 10)
    y[3] *= 10
    times = []
    for _ in range(200):
        t = time.perf_counter()
        fit_processing(x, y, prior_slope=0.33, prior_intercept=28.0)
        times.append(time.perf_counter() - t)
    print(f"processing refit, one outlier (RANSAC runs), 10 samples: {_stats(times)}")
    y_clean = 0.33 * x + 28 + rng.normal(0, 2, 10)
    times = []
    for _ in range(200):
        t = time.perf_counter()
        fit_processing(x, y_clean, prior_slope=0.33, prior_intercept=28.0)
        times.append(time.perf_counter() - t)
    print(f"processing refit, no outlier (ridge only), 10 samples: {_stats(times)}")


if __name__ == "__main__":
    main()
