"""Processing time (T_p): RANSAC around Bayesian ridge, on batch size (paper 3.4.3).

T_p of one application version on one runtime is close to linear in the number of
images (a fixed start-up cost plus a per-image cost). The paper fits a Bayesian ridge
regression on the most recent samples (10 by default, so the line follows the runtime's
current speed) and wraps it in RANSAC because sporadic congestion produces outliers that
would otherwise skew the line for as long as they stay in the window.

What each amount of data gives (``fit_processing``):

* 0 samples: the runtime's prior ``a·n + b`` (settings), spread 25 % of the mean.
* 1 sample ``(n1, y1)``: the prior *scaled* through it, ``k·(a·n + b)`` with
  ``k = y1 / (a·n1 + b)``: a runtime that is 20 % slower than assumed is so for every
  batch size. Spread 25 % of the mean. (With a zero prior it is the constant ``y1``.)
* 2 samples with different sizes: the line through both (no RANSAC: two points are
  always a consensus). Spread 25 % of the mean, as two points say nothing of noise.
* All sizes equal, or a fitted slope < 0 (noise over a small range of sizes; a
  negative per-image cost is never real): the prior scaled through the medians, spread
  the scaled MAD of the times.
* 3 or more: RANSAC around Bayesian ridge (:mod:`stoic.predict.bayes`), seeded with
  ``settings.predictor.seed``; the ridge refitted on the inliers gives the predictive
  standard deviation. If there are no more samples than ``min_samples``, or RANSAC
  finds no consensus, plain Bayesian ridge.
  When every sample is within the threshold of a robust Theil–Sen line there is no
  outlier to remove: RANSAC is skipped and Bayesian ridge is fitted on all samples
  (method ``ransac-all-inliers``), which saves most of the refit's cost.

Residual threshold: ``ransac_residual_threshold_s`` when set; otherwise 3.5 × the scaled
MAD of the residuals of a Theil–Sen line (median of pairwise slopes), floored at 1 % of
the median time. scikit-learn's own default (the MAD of *y*) grows with the spread of
batch sizes, so with sizes from 1 to 1000 it would accept almost any outlier.

Predicted means are floored at 0. A fit is a few numbers (:class:`LinearFit`); the
prediction for any ``n`` is then arithmetic, so a cached estimate costs microseconds.

With a shape history (``processing_shape_history``, off by default) the line is fitted
as above on the history's samples older than the window, for its *shape* only (the
fixed cost against the per-image cost), and the window scales it by the median of its
samples' ratios to it (:func:`scale_shape`): ``k·(a·n + b)``, the one-sample rule's,
with a learnt line for the prior. Ten recent batches of 20 % noise, all of a few
images, say little of a slope: on random-001's edge a line through batches of 1–25
images priced a 159-image one at 3.5 times its truth, and within the window's sizes
its two parameters erred more than one scale does (mean |log error| 0.16 against 0.10;
docs/predictor.md, "Where random-001's learning gap comes from"). A regime that
multiplies T_p, as a busy node or a slower clock does, moves the scale and keeps the
shape.

The spreads above are the line's; what :meth:`ProcessingModel.estimate` reports is
calibrated by the model's own one-step errors (:mod:`stoic.predict.spread`): each new
sample's distance from the line fitted before it, in units of that line's spread plus
5 % of its mean. RANSAC's ridge measures the scatter of the inliers it kept, so alone it
claimed a 90 % interval that held 44 % of the real batches.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stoic.predict.bayes import RidgeFit, bayesian_ridge, ransac
from stoic.predict.deployment import MAD_TO_STD, PRIOR_RELATIVE_STD, FloatArray
from stoic.predict.order import median
from stoic.predict.regime import ChangeDetector
from stoic.predict.spread import ErrorWindow
from stoic.predict.timeofday import DailyProfile
from stoic.values import Component, ProcessingSample


@dataclass(frozen=True, slots=True)
class LinearFit:
    """``mean(n) = slope·n + intercept``; ``std(n)`` from a Bayesian posterior
    (``sqrt(slope_var·(n - x_offset)² + noise_var)``) plus ``rel_std·mean(n)``."""

    slope: float
    intercept: float
    method: str
    n_samples: int
    inliers: int
    x_offset: float = 0.0
    slope_var: float = 0.0
    noise_var: float = 0.0
    rel_std: float = 0.0

    def predict(self, n_images: float) -> Component:
        mean = max(self.slope * n_images + self.intercept, 0.0)
        dx = n_images - self.x_offset
        std = math.sqrt(self.slope_var * dx * dx + self.noise_var) + self.rel_std * mean
        return Component(mean, std)

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "slope": self.slope,
            "intercept": self.intercept,
            "n_samples": self.n_samples,
            "inliers": self.inliers,
            "method": self.method,
        }


def _scaled_prior(
    prior_slope: float, prior_intercept: float, n_ref: float, y_ref: float
) -> tuple[float, float]:
    base = prior_slope * n_ref + prior_intercept
    if base > 0:
        k = y_ref / base
        return k * prior_slope, k * prior_intercept
    return 0.0, y_ref


@functools.lru_cache(maxsize=64)
def _pairs(n: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    i, j = np.triu_indices(n, k=1)
    return i, j


def theil_sen_residuals(x: FloatArray, y: FloatArray) -> FloatArray:
    """Absolute residuals of the Theil–Sen line (median of pairwise slopes)."""
    i, j = _pairs(x.size)
    dx = x[j] - x[i]
    ok = dx != 0
    slope = median((y[j] - y[i])[ok] / dx[ok]) if ok.any() else 0.0
    intercept = median(y - slope * x)
    resid: FloatArray = np.abs(y - slope * x - intercept)
    return resid


def robust_threshold(x: FloatArray, y: FloatArray) -> float:
    """3.5 × scaled MAD of the residuals of a Theil–Sen line, floored (module docstring)."""
    return _threshold(theil_sen_residuals(x, y), y)


def _threshold(resid: FloatArray, y: FloatArray) -> float:
    return max(3.5 * MAD_TO_STD * median(resid), 0.01 * median(np.abs(y)), 1e-9)


def _ridge_fit(x: FloatArray, fit: RidgeFit, method: str, n: int) -> LinearFit:
    return LinearFit(
        slope=fit.slope,
        intercept=fit.intercept,
        method=method,
        n_samples=n,
        inliers=x.size,
        x_offset=fit.x_offset,
        slope_var=fit.slope_var,
        noise_var=1.0 / fit.alpha,
    )


@dataclass(frozen=True, slots=True)
class RansacOptions:
    """How a line of 3 or more samples is fitted (``predictor.ransac_*`` and
    ``predictor.seed``): RANSAC's least consensus, its residual threshold (None: from
    the Theil–Sen residuals, as the module docstring says), its tries and its seed."""

    min_samples: int = 2
    residual_threshold_s: float | None = None
    max_trials: int = 100
    seed: int = 0


RANSAC_DEFAULTS = RansacOptions()


def fit_processing(
    images: FloatArray,
    seconds: FloatArray,
    *,
    prior_slope: float,
    prior_intercept: float,
    ransac: RansacOptions = RANSAC_DEFAULTS,
) -> LinearFit:
    """Fit T_p = slope·images + intercept as described in the module docstring."""
    x = np.asarray(images, dtype=np.float64)
    y = np.asarray(seconds, dtype=np.float64)
    n = x.size
    if n == 0:
        return LinearFit(prior_slope, prior_intercept, "prior", 0, 0, rel_std=PRIOR_RELATIVE_STD)
    if n == 1:
        a, b = _scaled_prior(prior_slope, prior_intercept, float(x[0]), float(y[0]))
        return LinearFit(a, b, "scaled-prior", 1, 1, rel_std=PRIOR_RELATIVE_STD)
    if n == 2 and x[0] != x[1]:
        slope = float((y[1] - y[0]) / (x[1] - x[0]))
        if slope >= 0:
            return LinearFit(
                slope, float(y[0] - slope * x[0]), "line", 2, 2, rel_std=PRIOR_RELATIVE_STD
            )
    fit = None if np.all(x == x[0]) or n == 2 else _ransac_ridge(x, y, ransac)
    if fit is not None and fit.slope >= 0 and fit.slope * fit.slope > fit.slope_var:
        return fit
    # One batch size, or a slope not told from zero: scale the prior (docs/predictor.md, T_p).
    y_med = median(y)
    a, b = _scaled_prior(prior_slope, prior_intercept, median(x), y_med)
    spread = MAD_TO_STD * median(np.abs(y - y_med))
    return LinearFit(a, b, "scaled-prior", n, n, noise_var=spread * spread)


def _ransac_ridge(x: FloatArray, y: FloatArray, options: RansacOptions) -> LinearFit:
    n = x.size
    min_samples = options.min_samples
    resid = theil_sen_residuals(x, y)
    threshold = options.residual_threshold_s or _threshold(resid, y)
    if n > min_samples and np.any(resid > threshold):
        found = ransac(
            x,
            y,
            min_samples=min_samples,
            residual_threshold=threshold,
            max_trials=options.max_trials,
            rng=np.random.default_rng(options.seed),
        )
        if found is not None:
            return _ridge_fit(x[found.inliers], found.ridge, "ransac", n)
        # No consensus: fall through to plain ridge on everything.
    elif n > min_samples:
        # Every sample lies within the threshold of the robust line: there is no
        # outlier for RANSAC to remove, and its consensus would be all samples.
        return _ridge_fit(x, bayesian_ridge(x, y), "ransac-all-inliers", n)
    return _ridge_fit(x, bayesian_ridge(x, y), "ridge", n)


def scale_shape(shape: LinearFit, images: FloatArray, seconds: FloatArray) -> LinearFit | None:
    """``shape`` scaled through the samples, ``k·(a·n + b)`` with ``k`` the median of
    their ratios to it and a spread the scaled MAD of their residuals (None where the
    shape predicts no positive time for one of them: no ratio to take)."""
    a, b = max(shape.slope, 0.0), max(shape.intercept, 0.0)
    ref = a * images + b
    if images.size == 0 or np.any(ref <= 0):
        return None
    k = median(seconds / ref)
    spread = MAD_TO_STD * median(np.abs(seconds - k * ref))
    n = int(images.size)
    return LinearFit(k * a, k * b, "scaled-shape", n, n, noise_var=spread * spread)


TAIL_PRIOR_SAMPLES = 10
"""Pseudo-samples at ratio 1 that :attr:`ProcessingModel.excess` starts from: a runtime
with few out-of-sample ratios is priced at its line, as the paper prices every one."""
TAIL_RATIO_CAP = 5.0
"""Ratios above this are counted at it: a line fitted on 100-image batches can call a
10-image probe 2 s and see 20 s, a misfit intercept rather than a congested run."""
TAIL_MIN_SAMPLES = 3
"""Below this many samples the prediction is the prior's, whose error says nothing of
the runtime's congestion, so no ratio is kept."""


ERROR_BASE_MEAN_SHARE = 0.05
"""The part of the mean added to the line's spread in the base a one-step error is
measured in: a line through two points, equal times or a ridge on a few samples can have
a spread near 0, and one error divided by it would widen every later interval."""


def _error_base(line: Component) -> float:
    return line.std + ERROR_BASE_MEAN_SHARE * line.mean


def _within(images: int, samples: list[ProcessingSample]) -> bool:
    """Whether a batch of ``images`` lies within the sizes of ``samples``: a ratio
    measured beyond them judges the line's extrapolation (a misfit intercept under
    small batches), not the runtime, and is no evidence of a regime."""
    return min(s.images for s in samples) <= images <= max(s.images for s in samples)


class ProcessingModel:
    """The recent samples of one (app, app_version, runtime) and their cached fit.

    The fit is recomputed only when the samples change (``fits`` counts them), so the
    many estimates between two samples cost one multiplication each.

    Beside the short window the line is fitted on, it keeps a long view of how far each
    new sample fell from the line predicted *before* it (out of sample): ``excess`` is
    their mean ratio minus 1. RANSAC's line leaves congested runs out, rightly for the
    next run's best guess, but a batch placed on a runtime that is congested one run in
    ten pays that tail; the selector's ``expected`` objective prices it, as it prices a
    deployment's. Ten samples say too little of a 1-in-10 rate, hence the long view and
    the prior (docs/scheduling.md, "Risk").
    """

    def __init__(
        self,
        *,
        history: int,
        prior_slope: float,
        prior_intercept: float,
        ransac: RansacOptions = RANSAC_DEFAULTS,
        tail_history: int = 100,
        max_age_s: float | None = None,
        detector: ChangeDetector | None = None,
        daily: DailyProfile | None = None,
        shape_history: int = 0,
    ) -> None:
        self._samples: deque[ProcessingSample] = deque(maxlen=history)
        self._shape_samples: deque[ProcessingSample] | None = (
            deque(maxlen=shape_history) if shape_history > 0 else None
        )
        self._ratios: deque[float] = deque(maxlen=tail_history)
        self._errors = ErrorWindow()
        self.prior_slope = prior_slope
        self.prior_intercept = prior_intercept
        self.ransac = ransac
        self.max_age_s = max_age_s
        self.detector = detector
        self.daily = daily
        self._daily_version = 0
        self._fit: LinearFit | None = None
        self._excess: float | None = None
        self.fits = 0

    def observe(self, sample: ProcessingSample) -> None:
        before = self._predict(sample.images, sample.at)
        self._errors.add(sample.duration_s, before.mean, _error_base(before))
        run = 0
        fitted = self._fitted()
        if len(fitted) >= TAIL_MIN_SAMPLES and before.mean > 0:
            ratio = sample.duration_s / before.mean
            self._ratios.append(min(ratio, TAIL_RATIO_CAP))
            self._excess = None
            if self.detector is not None and _within(sample.images, fitted):
                run = self.detector.update(ratio)
        self._samples.append(sample)
        if self._shape_samples is not None:
            self._shape_samples.append(sample)
        if self.daily is not None:
            self.daily.add(sample.at, sample.images, sample.duration_s)
        self._fit = None
        if run:
            self._new_regime(run)

    def _new_regime(self, run: int) -> None:
        """Keep the last ``run`` samples, the new regime's (:mod:`stoic.predict.regime`),
        and take their ratios out of the congestion tail: they measured the change."""
        while len(self._samples) > run:
            self._samples.popleft()
        for _ in range(min(run, len(self._ratios))):
            self._ratios.pop()
        self._excess = None

    def _fitted(self) -> list[ProcessingSample]:
        """The samples the line is fitted on: the window, less those older than
        ``max_age_s`` before the newest (docs/predictor.md, "Regimes")."""
        if self.max_age_s is None or not self._samples:
            return list(self._samples)
        oldest = self._samples[-1].at - self.max_age_s
        return [s for s in self._samples if s.at >= oldest]

    @property
    def excess(self) -> float:
        """E[T_p] / line − 1 from the out-of-sample ratios, shrunk toward 0 by
        :data:`TAIL_PRIOR_SAMPLES` and floored at 0: a line that over-predicts is the
        short window's lag, not a tail (class docstring)."""
        if self._excess is None:
            k = len(self._ratios)
            mean = (sum(self._ratios) + TAIL_PRIOR_SAMPLES) / (k + TAIL_PRIOR_SAMPLES)
            self._excess = max(mean - 1.0, 0.0)
        return self._excess

    @property
    def n_samples(self) -> int:
        return len(self._samples)

    @property
    def largest(self) -> int:
        """The largest batch among the samples (0 without samples)."""
        return max((s.images for s in self._samples), default=0)

    def factor(self, at: float | None) -> float:
        """The time-of-day factor of ``at`` (:mod:`stoic.predict.timeofday`; 1 without
        a profile or a time). The line is refitted when a new day changes the factors."""
        if self.daily is None or at is None:
            return 1.0
        self.daily.refresh(at)
        if self.daily.version != self._daily_version:
            self._daily_version = self.daily.version
            self._fit = None
        return self.daily.factor(at)

    def _predict(self, n_images: int, at: float | None) -> Component:
        f = self.factor(at)
        line = self.fit.predict(float(n_images))
        return line if f == 1.0 else Component(line.mean * f, line.std * f)

    def _durations(self, samples: list[ProcessingSample]) -> list[float]:
        """The samples' T_p, each divided by its hour's factor where a profile has one."""
        daily = self.daily
        if daily is None:
            return [s.duration_s for s in samples]
        return [s.duration_s / daily.factor(s.at) for s in samples]

    def _line(self, samples: list[ProcessingSample]) -> LinearFit:
        return fit_processing(
            np.array([s.images for s in samples], dtype=np.float64),
            np.array(self._durations(samples), dtype=np.float64),
            prior_slope=self.prior_slope,
            prior_intercept=self.prior_intercept,
            ransac=self.ransac,
        )

    def _shaped(self, samples: list[ProcessingSample]) -> LinearFit | None:
        """The line of the shape history's samples older than the window, scaled through
        ``samples`` (module docstring), once they are at least as many as the window
        holds; None before, or without a shape history. Older only: a new regime's
        first batches, all small, would otherwise tilt the shape they are scaled by."""
        longer = self._shape_samples
        if longer is None:
            return None
        older = list(longer)[: max(len(longer) - len(self._samples), 0)]
        if len(older) < max(len(self._samples), 1):
            return None
        shape = self._line(older)
        if shape.method in ("prior", "scaled-prior"):
            return None
        return scale_shape(
            shape,
            np.array([s.images for s in samples], dtype=np.float64),
            np.array(self._durations(samples), dtype=np.float64),
        )

    @property
    def fit(self) -> LinearFit:
        if self._fit is None:
            self.fits += 1
            samples = self._fitted()
            self._fit = self._shaped(samples) or self._line(samples)
        return self._fit

    def estimate(self, n_images: int, at: float | None = None) -> Component:
        """The line's T_p of ``n_images`` (times the time-of-day factor of ``at``), its
        spread calibrated by the model's one-step errors (:mod:`stoic.predict.spread`; the
        line's own before the first)."""
        line = self._predict(n_images, at)
        return Component(line.mean, self._errors.std(_error_base(line), line.std))
