"""Bayesian ridge regression on one feature, and RANSAC around it, in plain numpy.

This is scikit-learn's ``BayesianRidge`` (evidence maximisation, MacKay 1992, the same
update rules, defaults and stopping rule, ``fit_intercept=True``) specialised to one
regressor, the batch size, and a RANSAC consensus search around it as in the paper's
Algorithm 1.

Rule: scikit-learn is the reference, not a dependency (why, and how
``tests/test_predict_bayes.py`` holds this module to it: docs/predictor.md, T_p).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stoic.predict.deployment import FloatArray

# scikit-learn's defaults: Gamma(1e-6, 1e-6) hyper-priors on alpha and lambda.
ALPHA_1 = ALPHA_2 = LAMBDA_1 = LAMBDA_2 = 1e-6
MAX_ITER = 300
TOL = 1e-3
EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True, slots=True)
class RidgeFit:
    """Posterior of ``y = slope·x + intercept``: ``slope_var`` is sklearn's ``sigma_``,
    ``alpha`` the noise precision; predictive std at x is
    ``sqrt(slope_var·(x - x_offset)² + 1/alpha)``."""

    slope: float
    intercept: float
    x_offset: float
    slope_var: float
    alpha: float
    lambda_: float
    n_iter: int

    def predict(self, x: FloatArray) -> FloatArray:
        out: FloatArray = self.slope * x + self.intercept
        return out

    def predict_std(self, x: FloatArray) -> FloatArray:
        dx = x - self.x_offset
        out: FloatArray = np.sqrt(self.slope_var * dx * dx + 1.0 / self.alpha)
        return out


def _mean(a: FloatArray) -> float:
    """``float(a.mean())`` of a non-empty 1-D array: numpy's sum over the count, without
    the wrapper (a fit takes several on ten values)."""
    return float(np.add.reduce(a)) / a.size


def bayesian_ridge(x: FloatArray, y: FloatArray) -> RidgeFit:
    """Fit as ``sklearn.linear_model.BayesianRidge().fit(x[:, None], y)`` does."""
    n = x.size
    x_mean, y_mean = _mean(x), _mean(y)
    xc, yc = x - x_mean, y - y_mean
    eig = float(xc @ xc)  # the single squared singular value of the centred design
    xty = float(xc @ yc)
    alpha = 1.0 / (float(y.var()) + EPS)
    lam = 1.0
    coef_old = 0.0
    it = 0
    for it in range(MAX_ITER):
        coef = xty / (eig + lam / alpha)
        r = yc - coef * xc
        sse = float(r @ r)
        gamma = alpha * eig / (lam + alpha * eig)
        lam = (gamma + 2 * LAMBDA_1) / (coef * coef + 2 * LAMBDA_2)
        alpha = (n - gamma + 2 * ALPHA_1) / (sse + 2 * ALPHA_2)
        if it != 0 and abs(coef_old - coef) < TOL:
            break
        coef_old = coef
    coef = xty / (eig + lam / alpha)
    return RidgeFit(
        slope=coef,
        intercept=y_mean - x_mean * coef,
        x_offset=x_mean,
        slope_var=1.0 / (alpha * eig + lam),
        alpha=alpha,
        lambda_=lam,
        n_iter=it + 1,
    )


@dataclass(frozen=True, slots=True)
class RansacFit:
    """The ridge refitted on the consensus set, and which samples are in it."""

    ridge: RidgeFit
    inliers: np.ndarray  # bool mask over the samples
    trials: int


def _dynamic_max_trials(n_inliers: int, n: int, min_samples: int, p: float) -> float:
    """Trials needed to draw an all-inlier sample with probability ``p`` (as sklearn)."""
    ratio = n_inliers / n
    good = ratio**min_samples
    if good >= 1.0:
        return 0.0
    if good <= 0.0:
        return math.inf
    return math.ceil(math.log(1 - p) / math.log(1 - good))


def ransac(
    x: FloatArray,
    y: FloatArray,
    *,
    min_samples: int,
    residual_threshold: float,
    max_trials: int,
    rng: np.random.Generator,
    stop_probability: float = 0.99,
) -> RansacFit | None:
    """RANSAC with Bayesian ridge as the model (paper, Algorithm 1; sklearn's rules).

    Each trial fits the ridge on ``min_samples`` random distinct samples whose sizes
    differ, counts the samples within ``residual_threshold`` of it, and keeps the
    largest consensus set (ties: the smaller mean absolute error over the set, the
    paper's criterion). Trials stop early once a consensus this large would have been
    found with ``stop_probability``. Returns None when no trial finds a consensus of at
    least ``min_samples`` samples with two distinct sizes.
    """
    n = x.size
    best_mask: np.ndarray | None = None
    best_count, best_err = -1, math.inf
    needed = float(max_trials)
    trials = 0
    while trials < min(max_trials, needed):
        trials += 1
        idx = rng.choice(n, size=min_samples, replace=False)
        xs = x[idx]
        if np.all(xs == xs[0]):
            continue  # a vertical "line": not a valid sample (sklearn's is_data_valid)
        fit = bayesian_ridge(xs, y[idx])
        resid = np.abs(y - fit.predict(x))
        mask = resid <= residual_threshold
        count = int(mask.sum())
        if count < min_samples or count < best_count:
            continue
        err = float(np.add.reduce(resid[mask])) / count if count else math.nan
        if count == best_count and err >= best_err:
            continue
        best_mask, best_count, best_err = mask, count, err
        if count == n:
            break
        needed = _dynamic_max_trials(count, n, min_samples, stop_probability)
    if best_mask is None or np.all(x[best_mask] == x[best_mask][0]):
        return None
    return RansacFit(bayesian_ridge(x[best_mask], y[best_mask]), best_mask, trials)
