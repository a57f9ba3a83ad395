"""Calibrated spreads (stoic/predict/spread.py): the 90 % interval mean ± 1.645·std of
each component holds nine outcomes in ten, whatever the distribution of the samples.

On 3,000 one-step predictions each, the bound is 87–93 % (the issue asks 85–95 %; a
binomial's standard error is 0.55 points here). Before calibration these runs covered
T_d 87/85/70 % (normal, lognormal, mixture), T_p 72/72/64 % and T_t 78 %."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from stoic.predict.deployment import DeploymentModel
from stoic.predict.processing import ProcessingModel
from stoic.predict.spread import Z_LEVEL, ErrorWindow, conformal_quantile
from stoic.predict.transfer import BandwidthMonitor
from stoic.values import Component, DeploymentSample, ProcessingSample, TransferSample

Draw = Callable[[np.random.Generator, int], np.ndarray]
STEPS, WARMUP = 3000, 200
LOW, HIGH = 0.87, 0.93


def _covered(c: Component, actual: float) -> bool:
    return abs(actual - c.mean) <= Z_LEVEL * c.std


def test_conformal_quantile_is_the_finite_sample_rank() -> None:
    assert math.isnan(conformal_quantile([]))
    assert conformal_quantile([3.0, 1.0, 2.0]) == 3.0  # k < 9: the largest
    errors = [float(v) for v in range(100, 0, -1)]  # 1..100
    assert conformal_quantile(errors) == 91.0  # ceil(101 * 0.9) = 91st smallest


def test_error_window_falls_back_and_skips_unusable_bases() -> None:
    w = ErrorWindow(history=3)
    assert w.std(10.0, fallback=7.0) == 7.0  # no error yet: the model's own spread
    w.add(5.0, 3.0, 0.0)  # a base of 0 says nothing
    w.add(math.nan, 3.0, 1.0)
    assert len(w) == 0
    for actual in (4.0, 5.0, 7.0, 13.0):  # errors 1, 2, 4, 10; the first falls out
        w.add(actual, 3.0, 2.0)
    assert len(w) == 3
    assert w.std(1.0, fallback=0.0) == pytest.approx(5.0 / Z_LEVEL)  # largest of 1, 2, 5


DEPLOYMENTS: dict[str, Draw] = {
    "normal": lambda rng, n: rng.normal(60.0, 10.0, n).clip(1.0),
    "lognormal": lambda rng, n: rng.lognormal(math.log(40.0), 0.6, n),
    # cache hits and misses: a bimodal deployment time
    "mixture": lambda rng, n: np.where(
        rng.random(n) < 0.7, rng.normal(20.0, 3.0, n), rng.normal(120.0, 15.0, n)
    ).clip(1.0),
}


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_deployment_interval_covers_nine_in_ten(name: str) -> None:
    rng = np.random.default_rng(11)
    model = DeploymentModel(prior_s=30.0)
    hits = 0
    for i, v in enumerate(DEPLOYMENTS[name](rng, STEPS + WARMUP)):
        if i >= WARMUP:
            hits += _covered(model.estimate(), float(v))
        model.observe(DeploymentSample("gpu1", float(i), float(v)))
    assert LOW <= hits / STEPS <= HIGH


PROCESSING: dict[str, Callable[[np.random.Generator, float], float]] = {
    "normal": lambda rng, line: line + rng.normal(0.0, 0.1 * line),
    "lognormal": lambda rng, line: line * rng.lognormal(0.0, 0.25),
    # one run in five on a congested node takes twice as long
    "mixture": lambda rng, line: line * (2.0 if rng.random() < 0.2 else 1.0) + rng.normal(0.0, 2.0),
}


@pytest.mark.parametrize("name", sorted(PROCESSING))
def test_processing_interval_covers_nine_in_ten(name: str) -> None:
    rng = np.random.default_rng(12)
    model = ProcessingModel(history=10, prior_slope=0.5, prior_intercept=20.0)
    noise = PROCESSING[name]
    hits = 0
    for i in range(STEPS + WARMUP):
        n = int(rng.integers(1, 300))
        y = max(noise(rng, 0.4 * n + 15.0), 0.1)
        if i >= WARMUP:
            hits += _covered(model.estimate(n), y)
        model.observe(ProcessingSample("a", "1", "gpu1", n, 0, y, float(i)))
    assert LOW <= hits / STEPS <= HIGH


def test_transfer_interval_covers_nine_in_ten() -> None:
    rng = np.random.default_rng(13)
    mon = BandwidthMonitor(history=10, default_bps=1e6)
    hits = 0
    for i in range(STEPS + WARMUP):
        n_bytes = int(rng.integers(10_000, 10_000_000))
        seconds = n_bytes / (rng.lognormal(math.log(2e6), 0.4))
        if i >= WARMUP:
            hits += _covered(mon.estimate(n_bytes), seconds)
        mon.observe(TransferSample(n_bytes, seconds, float(i)))
    assert LOW <= hits / STEPS <= HIGH


def test_calibration_leaves_the_means_alone() -> None:
    """The spread is calibrated beside the models; their means are what they were: the
    window's median and the fitted line."""
    rng = np.random.default_rng(14)
    model = DeploymentModel(max_window=5, calibration_period=1000)
    values = rng.lognormal(3.0, 0.5, 30)
    for i, v in enumerate(values):
        model.observe(DeploymentSample("gpu1", float(i), float(v)))
    assert model.estimate().mean == float(np.median(values[-5:]))
    proc = ProcessingModel(history=10, prior_slope=0.5, prior_intercept=20.0)
    for i in range(30):
        n = 10 * (i % 7 + 1)
        proc.observe(ProcessingSample("a", "1", "gpu1", n, 0, 0.4 * n + 15 + i % 3, float(i)))
    assert proc.estimate(50).mean == proc.fit.predict(50).mean
    assert proc.estimate(50).std != proc.fit.predict(50).std
