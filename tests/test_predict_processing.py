"""Processing-time regression: RANSAC around Bayesian ridge, and the 0/1/2-sample cases."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import BayesianRidge

from stoic.predict.processing import ProcessingModel, RansacOptions, fit_processing
from stoic.values import ProcessingSample

PRIOR: dict[str, Any] = {"prior_slope": 0.3272, "prior_intercept": 28.16}


def _line(n, rng, noise=1.0):
    x = rng.integers(1, 500, n).astype(float)
    return x, 0.33 * x + 28.0 + rng.normal(0, noise, n)


def test_no_samples_gives_the_prior():
    fit = fit_processing(np.array([]), np.array([]), **PRIOR)
    c = fit.predict(100)
    assert c.mean == pytest.approx(0.3272 * 100 + 28.16)
    assert c.std == pytest.approx(0.25 * c.mean)
    assert fit.method == "prior"


def test_one_sample_scales_the_prior_through_it():
    fit = fit_processing(np.array([100.0]), np.array([2 * (0.3272 * 100 + 28.16)]), **PRIOR)
    assert fit.predict(100).mean == pytest.approx(2 * (0.3272 * 100 + 28.16))
    assert fit.predict(500).mean == pytest.approx(2 * (0.3272 * 500 + 28.16))
    zero = fit_processing(np.array([10.0]), np.array([7.0]), prior_slope=0.0, prior_intercept=0.0)
    assert zero.predict(1000).mean == 7.0


def test_two_samples_give_the_line_through_both():
    fit = fit_processing(np.array([10.0, 110.0]), np.array([30.0, 80.0]), **PRIOR)
    assert fit.method == "line"
    assert fit.slope == pytest.approx(0.5) and fit.intercept == pytest.approx(25.0)
    # A negative slope from noise is not believed: the prior scaled through the medians.
    neg = fit_processing(np.array([10.0, 12.0]), np.array([40.0, 39.0]), **PRIOR)
    assert neg.method == "scaled-prior" and neg.slope > 0
    assert neg.predict(11).mean == pytest.approx(39.5)


def test_equal_batch_sizes_fall_back_to_scaled_prior():
    x = np.full(8, 50.0)
    y = np.array([40, 41, 39, 40, 42, 38, 40, 90], dtype=float)
    fit = fit_processing(x, y, **PRIOR)
    assert fit.method == "scaled-prior"
    assert fit.predict(50).mean == pytest.approx(40.0)
    assert fit.predict(50).std > 0


def test_a_slope_the_samples_cannot_tell_from_zero_falls_back_to_scaled_prior():
    # Share mode's edge on random-004: first chunks of 1-17 images at 58-362 s. Ridge
    # alone puts the slope at ~0.0001 +- 0.07 s per image and everything in the
    # intercept, which predicts a 1,000-image batch at the price of a 5-image one.
    x = np.array([17, 13, 11, 4, 7, 5, 5, 5, 1, 4], dtype=float)
    y = np.array([61.5, 264.8, 183.4, 361.7, 172.9, 120.2, 113.8, 58.4, 96.1, 96.2])
    edge = {"prior_slope": 2.3955, "prior_intercept": 13.6}
    fit = fit_processing(x, y, **edge)
    assert fit.method == "scaled-prior"
    median = float(np.median(y))
    assert fit.predict(float(np.median(x))).mean == pytest.approx(median)
    assert fit.predict(1000).mean > 10 * median
    # A slope the samples do pin down is kept, however small.
    rng = np.random.default_rng(3)
    x = rng.integers(1, 1000, 10).astype(float)
    clean = fit_processing(x, 0.01 * x + 20.0 + rng.normal(0, 0.5, 10), **PRIOR)
    assert clean.method != "scaled-prior" and clean.slope == pytest.approx(0.01, rel=0.2)


def test_ransac_ignores_an_outlier_that_plain_ridge_does_not():
    rng = np.random.default_rng(1)
    x, y = _line(10, rng)
    y_out = y.copy()
    y_out[3] *= 10.0
    fit = fit_processing(x, y_out, **PRIOR, ransac=RansacOptions(seed=0))
    assert fit.method == "ransac" and fit.inliers in (8, 9)
    clean = BayesianRidge().fit(x[:, None], y).predict(np.array([[300.0]]))[0]
    plain = BayesianRidge().fit(x[:, None], y_out).predict(np.array([[300.0]]))[0]
    robust = fit.predict(300).mean
    assert abs(robust - clean) < 2.0
    assert abs(plain - clean) > 20.0


def test_std_matches_bayesian_ridge_return_std():
    rng = np.random.default_rng(2)
    x, y = _line(10, rng, noise=3.0)
    fit = fit_processing(x, y, **PRIOR, ransac=RansacOptions(residual_threshold_s=1e6))
    assert fit.inliers == 10
    mean, std = BayesianRidge().fit(x[:, None], y).predict(np.array([[250.0]]), return_std=True)
    c = fit.predict(250)
    assert c.mean == pytest.approx(mean[0]) and c.std == pytest.approx(std[0])


def test_seeded_fits_are_reproducible():
    rng = np.random.default_rng(4)
    x, y = _line(10, rng, noise=8.0)
    y[[1, 6]] *= 5
    a = fit_processing(x, y, **PRIOR, ransac=RansacOptions(seed=7))
    b = fit_processing(x, y, **PRIOR, ransac=RansacOptions(seed=7))
    assert a == b


def test_model_keeps_recent_history_and_refits_only_on_change():
    model = ProcessingModel(history=3, prior_slope=1.0, prior_intercept=0.0)
    for n, s in ((1, 100.0), (2, 200.0), (10, 10.0), (20, 20.0), (30, 30.0)):
        model.observe(ProcessingSample("a", "1", "cpu", n, 0, s, 0.0))
    assert model.n_samples == 3
    fits = model.fits  # observing fits the line before a sample, for its out-of-sample ratio
    assert model.estimate(40).mean == pytest.approx(40.0, rel=1e-3)
    model.estimate(50)
    model.estimate(60)
    assert model.fits == fits + 1
    model.observe(ProcessingSample("a", "1", "cpu", 40, 0, 40.0, 0.0))  # line cached: no fit
    model.estimate(40)
    assert model.fits == fits + 2


def test_clean_data_skips_ransac_and_equals_plain_ridge():
    rng = np.random.default_rng(5)
    x, y = _line(10, rng, noise=0.5)
    fit = fit_processing(x, y, **PRIOR)
    assert fit.method == "ransac-all-inliers" and fit.inliers == 10
    ridge = BayesianRidge().fit(x[:, None], y).predict(np.array([[321.0]]))[0]
    assert fit.predict(321).mean == pytest.approx(ridge)


def _sample(n: int, seconds: float) -> ProcessingSample:
    return ProcessingSample("a", "1", "edge", n, 0, seconds, 0.0)


def test_excess_is_the_long_run_price_of_congestion_that_ransac_leaves_out():
    # One run in ten is congested (x3): RANSAC keeps it out of the line, as it should for
    # the next run's best guess, but a batch pays 0.1 x 2 = 20 % more on average.
    rng = np.random.default_rng(3)
    model = ProcessingModel(history=10, prior_slope=0.3, prior_intercept=10.0)
    for i in range(300):
        n = int(rng.integers(10, 200))
        model.observe(_sample(n, (0.3 * n + 10.0) * (3.0 if i % 10 == 9 else 1.0)))
    assert model.estimate(100).mean == pytest.approx(40.0, rel=0.02)  # the line: uncongested
    assert 0.15 < model.excess < 0.21  # 100 ratios, 10 of them 3, shrunk by 10 at 1


def test_excess_is_zero_without_tail_and_shrinks_a_few_outliers():
    model = ProcessingModel(history=10, prior_slope=0.3, prior_intercept=10.0)
    for n in (10, 20, 30):  # below TAIL_MIN_SAMPLES: the prior's errors are not kept
        model.observe(_sample(n, 100.0 * n))
    assert model.excess == 0.0
    for n in range(40, 90, 10):
        model.observe(_sample(n, 100.0 * n))
    assert model.excess == pytest.approx(0.0, abs=1e-9)  # on the line: no tail
    model.observe(_sample(100, 100.0 * 100 * 50))  # a 50x run counts as TAIL_RATIO_CAP (5)
    assert model.excess == pytest.approx(4.0 / 16, rel=1e-6)  # 5 ones, one 5, 10 prior ones
    fast = ProcessingModel(history=10, prior_slope=1.0, prior_intercept=0.0)
    for n in range(10, 200, 10):
        fast.observe(_sample(n, n * (0.5 if n > 100 else 1.0)))
    assert fast.excess == 0.0  # a line that over-predicts is lag, not a negative tail
