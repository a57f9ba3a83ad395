"""stoic.predict.bayes against scikit-learn, which stays the reference implementation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import BayesianRidge, RANSACRegressor

from stoic.predict.bayes import bayesian_ridge, ransac


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(3, 40),
    slope=st.floats(0.0, 5.0),
    intercept=st.floats(0.0, 100.0),
    noise=st.floats(0.01, 30.0),
)
def test_bayesian_ridge_matches_sklearn(
    seed: int, n: int, slope: float, intercept: float, noise: float
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 2450, n).astype(float)
    if np.all(x == x[0]):
        x[0] += 1
    y = slope * x + intercept + rng.normal(0, noise, n)
    ours = bayesian_ridge(x, y)
    ref = BayesianRidge().fit(x[:, None], y)
    assert ours.slope == pytest.approx(float(ref.coef_[0]), rel=1e-6, abs=1e-9)
    assert ours.intercept == pytest.approx(float(ref.intercept_), rel=1e-6, abs=1e-6)
    assert ours.alpha == pytest.approx(float(ref.alpha_), rel=1e-6)
    assert ours.slope_var == pytest.approx(float(ref.sigma_[0, 0]), rel=1e-6)
    assert ours.n_iter == ref.n_iter_
    q = np.array([1.0, 150.0, 2450.0])
    mean, std = ref.predict(q[:, None], return_std=True)
    np.testing.assert_allclose(ours.predict(q), mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours.predict_std(q), std, rtol=1e-6)


def test_ransac_drops_a_10x_outlier_like_sklearn() -> None:
    rng = np.random.default_rng(3)
    x = np.array([10, 40, 80, 150, 200, 300, 450, 600, 800, 1000], dtype=float)
    y = 0.33 * x + 28 + rng.normal(0, 2, x.size)
    y[4] *= 10
    fit = ransac(
        x, y, min_samples=2, residual_threshold=15.0, max_trials=100, rng=np.random.default_rng(0)
    )
    assert fit is not None
    assert not fit.inliers[4] and fit.inliers.sum() == 9
    ref = RANSACRegressor(
        estimator=BayesianRidge(), min_samples=2, residual_threshold=15.0, random_state=0
    ).fit(x[:, None], y)
    np.testing.assert_array_equal(fit.inliers, ref.inlier_mask_)
    assert fit.ridge.slope == pytest.approx(float(ref.estimator_.coef_[0]), rel=1e-6)
    assert fit.ridge.slope == pytest.approx(0.33, abs=0.01)


def test_ransac_without_consensus_returns_none() -> None:
    # No line passes within 1 ms of three points that are far from collinear.
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([0.0, 100.0, -50.0, 70.0])
    assert (
        ransac(
            x,
            y,
            min_samples=3,
            residual_threshold=0.001,
            max_trials=20,
            rng=np.random.default_rng(0),
        )
        is None
    )
