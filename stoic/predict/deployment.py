"""Deployment time (T_d) as a time series: sliding windows with a calibrated window.

The paper (section 3.4.2) compares three one-step-ahead predictors of the next
deployment time of a cloud runtime: auto-regression, the mean of the last ``w``
samples and the median of the last ``w`` samples, and adopts the median because
deployment times on a shared cluster are heavy-tailed: one 400 s outlier drags a mean
for ``w`` samples but barely moves a median. Every ``calibration_period`` new samples
the window ``w`` in ``1..max_window`` with the least mean absolute error (MAE) over the
last ``calibration_history`` samples is chosen again.

Scoring protocol (shared by the live calibrator and ``stoic evaluate deployment``)
----------------------------------------------------------------------------------
For each scored index ``t`` the prediction of ``x[t]`` uses the ``w`` samples before
``t``; where fewer than ``w`` exist, it uses all that exist (``min(w, t)``), which is
exactly what the live predictor does before it has ``w`` samples. Index 0 has no
predecessor and is never scored. AutoReg with ``p`` lags is fitted once per ``p`` over
the whole series (statsmodels, in-sample one-step-ahead fitted values, so its MAE is
optimistic); indices with fewer than ``p`` predecessors get the median-of-what-exists
fallback so that all methods score the same indices.

The sliding windows are vectorised: the mean via cumulative sums, the median by
:func:`stoic.predict.medians.median_rows` (every window size of every scored sample in
one call; numba's kernel where the ``fast`` extra is installed, bottleneck's otherwise).
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Sequence
from typing import Literal

import bottleneck as bn
import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from stoic.extras import require
from stoic.predict.medians import median_rows
from stoic.predict.mixture import TwoModes, fit_two_modes
from stoic.predict.order import sorted_median, sorted_quantile
from stoic.predict.spread import Z_LEVEL, conformal_quantile
from stoic.values import Component, DeploymentSample, DeployOutcome, Risk

Method = Literal["median", "mean", "autoreg"]
METHODS: tuple[Method, ...] = ("autoreg", "mean", "median")

#: Scale that turns a median absolute deviation into a standard deviation (normal data).
MAD_TO_STD = 1.4826
#: Relative spread assumed for a prior (no data): the prior is a guess, say so.
PRIOR_RELATIVE_STD = 0.25
#: Beta(a, b) prior of the timeout probability: mean 1 %, worth 10 deployments, so a
#: runtime with no history is not assumed safe, and 200 clean deployments bring it to
#: 0.05 %; a runtime whose deployments time out is priced by its own rate within a few.
TIMEOUT_PRIOR = (0.1, 9.9)

FloatArray = npt.NDArray[np.float64]


# Scoring of every window size ------------------------------------------------------


def _as_array(values: Sequence[float] | FloatArray) -> FloatArray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def median_window_predictions(
    values: Sequence[float] | FloatArray, max_window: int, start: int = 1
) -> FloatArray:
    """Predictions ``P[w-1, i]`` of ``x[start+i]`` by the median of the ``min(w, t)``
    samples before it, for ``w`` in ``1..max_window``."""
    x = _as_array(values)
    n = x.size
    start = max(start, 1)
    if n <= start:
        return np.full((max_window, max(n - start, 0)), np.nan)
    return median_rows(x, max_window, np.arange(start, n)).T


def mean_window_predictions(
    values: Sequence[float] | FloatArray, max_window: int, start: int = 1
) -> FloatArray:
    """Like :func:`median_window_predictions` with the mean (cumulative sums)."""
    x = _as_array(values)
    n = x.size
    start = max(start, 1)
    if n <= start:
        return np.full((max_window, 0), np.nan)
    cs = np.concatenate([[0.0], np.cumsum(x)])
    t = np.arange(start, n)[None, :]
    w = np.arange(1, max_window + 1)[:, None]
    lo = np.maximum(t - w, 0)
    result: FloatArray = (cs[t] - cs[lo]) / (t - lo)
    return result


def _fit_autoreg(x: FloatArray, lags: int) -> FloatArray | None:
    """statsmodels AutoReg(lags) with a constant: its params, or None when the series
    is too short for that many lags."""
    if lags < 1 or x.size < 2 * lags + 2:
        return None
    from statsmodels.tsa.ar_model import AutoReg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = AutoReg(x, lags=lags, trend="c").fit()
        except (ValueError, np.linalg.LinAlgError):
            return None
    params = np.asarray(res.params, dtype=np.float64)
    if not np.all(np.isfinite(params)):
        return None
    return params


def _autoreg_next(params: FloatArray, history: FloatArray) -> float:
    """One-step forecast: params = [const, phi_1..phi_p]; phi_1 multiplies x[t-1]."""
    p = params.size - 1
    lagged = history[-1 : -p - 1 : -1]
    return float(params[0] + params[1:] @ lagged)


def autoreg_predictions(
    values: Sequence[float] | FloatArray, max_window: int, start: int = 1
) -> FloatArray:
    """Predictions by AutoReg(p) fitted in-sample for each ``p`` in ``1..max_window``;
    NaN rows where the series is too short for ``p`` lags (see the module docstring)."""
    require("analysis", "the AutoReg deployment predictions", "statsmodels")
    x = _as_array(values)
    n = x.size
    start = max(start, 1)
    out = np.full((max_window, max(n - start, 0)), np.nan)
    if n <= start:
        return out
    fallback = median_window_predictions(x, max_window, start)
    for p in range(1, max_window + 1):
        params = _fit_autoreg(x, p)
        if params is None:
            continue
        row = fallback[p - 1].copy()
        first = max(start, p)
        if first < n:
            # X[t] = [1, x[t-1], ..., x[t-p]] for every t >= p.
            lagged = sliding_window_view(x, p)[first - p : n - p][:, ::-1]
            row[first - start :] = params[0] + lagged @ params[1:]
        out[p - 1] = row
    return out


_PREDICTIONS = {
    "median": median_window_predictions,
    "mean": mean_window_predictions,
    "autoreg": autoreg_predictions,
}


def window_mae(
    values: Sequence[float] | FloatArray, max_window: int, method: Method, start: int = 1
) -> FloatArray:
    """MAE of every window size ``1..max_window`` (index ``w-1``) over ``x[start:]``.

    NaN where a window could not be scored (AutoReg with too many lags, or nothing to
    score)."""
    x = _as_array(values)
    preds = _PREDICTIONS[method](x, max_window, start)
    if preds.shape[1] == 0:
        return np.full(max_window, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
        return _mae(preds, x[max(start, 1) :])


def _mae(preds: FloatArray, truth: FloatArray) -> FloatArray:
    """Mean over each row of ``|preds - truth|``: the row's sum over its length, which
    is what ``np.mean`` computes, less its per-call checks (the live model asks at
    every calibration). numpy's summation order follows the memory layout, so the
    model's cached median rows are laid out as :func:`median_window_predictions` lays
    them out (the transpose of C-ordered rows)."""
    errors = np.abs(preds - truth[None, :])
    mae: FloatArray = np.add.reduce(errors, axis=1) / errors.shape[1]
    return mae


def best_window(mae: FloatArray) -> int:
    """The window (1-based) with the least MAE; ties go to the smaller window; 0 when
    no window could be scored.

    ``np.nanargmin`` without its checks and copies (it too reads NaN as +inf and takes
    the first least): the live model asks once per calibration, every replayed batch."""
    unscored = np.isnan(mae)
    if mae.size == 0 or unscored.all():
        return 0
    return int(np.argmin(np.where(unscored, np.inf, mae))) + 1


# Live predictor ------------------------------------------------------------------


def sample_value(sample: DeploymentSample, deploy_timeout_s: float) -> float | None:
    """The T_d a sample stands for: a timeout counts as at least the timeout (the pod was
    not ready by then), a failure says nothing about T_d (None)."""
    if sample.outcome is DeployOutcome.FAILURE:
        return None
    if sample.outcome is DeployOutcome.TIMEOUT:
        return max(sample.duration_s, deploy_timeout_s)
    return sample.duration_s


class DeploymentModel:
    """T_d of one cloud runtime: a calibrated sliding window over recent samples.

    Keeps ``calibration_history + max_window`` values (enough to score the last
    ``calibration_history`` with any window), so memory and cost do not grow with the
    number of samples. Calibration is lazy: it runs at the first estimate after at
    least ``calibration_period`` new samples arrived since the previous one (a replay
    feeding a probe per simulated minute would otherwise recalibrate hundreds of
    thousands of times for nothing). Before the first calibration the window is
    ``max_window``, i.e. all samples there are.

    A sample's median predictions depend only on the samples before it, which never
    change, so the ``median`` method keeps those of the samples it scored last time
    (by sample number) and computes only the new ones' at the next calibration. Every
    other cache (the estimate, the risk, the values as an array) is dropped by the next
    sample: ``observe`` only marks them stale, as it runs for every probe.

    Spread: calibrated on the model's own one-step errors (:mod:`stoic.predict.spread`):
    the absolute errors, in seconds, of the predictions its method and window make of
    the last ``calibration_history`` values, each from the values before it (the errors
    the calibration scores: the median's has them at hand), so that the 90 % interval
    ``mean ± 1.645·std`` holds nine deployments in ten, heavy tail and timeouts
    included. The window's own scatter (its scaled MAD) said 0 for a window of equal
    values and one 100 s outlier. With one value and no error yet: 25 % of it, as for
    the prior.

    Two options, both off by default (docs/predictor.md, "Deployment time: mixtures,
    cold starts and model selection"):

    * ``mixture_history > 0``: each calibration also fits a two-mode log-normal mixture
      (:mod:`stoic.predict.mixture`) to the last ``mixture_history`` ready values; while
      they show two modes, the estimate is E[T_d], their mean (the window's median sits
      in one mode or flips between them), the spread is calibrated on the errors of that
      mean, and the risk has no tail beyond it and their quantile. The mean of the
      samples rather than the mixture's Σ w·exp(μ + σ²/2): a log-normal mode stretched
      over a Lomax tail (nautilus-2020-real's gpu2) overstates it; the mixture decides
      *whether*, the samples *how much*.
    * ``cold_ratio``: a deployment that is the runtime's first, or its first after
      ``cold_idle_s`` without one, and exceeds ``cold_ratio`` times the estimate (the
      prior before any value) is a *cold start*, an image pulled after a new version or
      evicted over an idle spell: recorded (``recent``, ``cold_starts``) but kept out of
      the values, so one 605 s pull does not become the next prediction. Probes fed in
      bulk (``observe_probes``: the replay's shortcut, one a minute, never idle) are not
      tested. The estimate does not yet *predict* a cold start after an idle spell: it
      is asked without the time of the batch.

    A third, also off by default: ``tail_history`` longer than the values kept makes
    :meth:`risk` read the last ``tail_history`` values instead (a deque of its own).
    The tail's price, ``deployment_excess_s`` and ``p_timeout``, rests on the few
    outliers and timeouts of the long view: 200 values of nautilus-2020-real's GPU2
    hold ~42 outliers and ~2.5 timeouts, and the two scatter by ~3.5 s and ~5 s of
    E[T_s] from one view to the next, enough to flip GPU1 against GPU2 where the two
    are close. Deployments are capped by the timeout, so the ready values have a
    finite variance and their mean converges as 1/√n: a longer view, not a heavier
    estimator (a generalised Pareto fit of 200 values is no closer), is what helps.
    The window's level still comes from the last ``max_window`` values.
    """

    def __init__(
        self,
        *,
        method: Method = "median",
        max_window: int = 100,
        calibration_period: int = 10,
        calibration_history: int = 100,
        deploy_timeout_s: float = 600.0,
        prior_s: float = 30.0,
        mixture_history: int = 0,
        cold_ratio: float | None = None,
        cold_idle_s: float = 3600.0,
        tail_history: int = 0,
    ) -> None:
        if method == "autoreg":
            require("analysis", "predictor.deployment_method = 'autoreg'", "statsmodels")
        self.method: Method = method
        self.max_window = max_window
        self.calibration_period = calibration_period
        self.calibration_history = calibration_history
        self.deploy_timeout_s = deploy_timeout_s
        self.prior_s = prior_s
        self.mixture_history = mixture_history
        self.cold_ratio = cold_ratio
        self.cold_idle_s = cold_idle_s
        self.cold_starts = 0
        self._last_at: float | None = None
        self.modes: TwoModes | None = None
        self._mixed: FloatArray | None = None  # the sorted ready values the modes came from
        self._values: deque[float] = deque(maxlen=calibration_history + max_window)
        # The risk's longer view (None: the values above): tail_history in the docstring.
        self._tail: deque[float] | None = (
            deque(maxlen=tail_history) if tail_history > calibration_history + max_window else None
        )
        self._tail_array: FloatArray | None = None
        # A sample's fields rather than a sample: a replay feeds millions of probes in
        # bulk (observe_probes) and only the REST API reads a few back.
        self._samples: deque[tuple[str, float, float, DeployOutcome]] = deque(
            maxlen=calibration_history + max_window
        )
        self._total = 0  # values ever kept: the number of the next one
        self._since_calibration = 0
        self._window = max_window
        self._stale = False
        self._array: FloatArray | None = None
        self._cached: Component | None = None
        self._risk: dict[float, Risk] = {}
        self._ar_params: FloatArray | None = None
        self._rows: FloatArray | None = None  # median predictions, a row per sample
        self._rows_from = 0  # the sample number of the first row
        # (values kept so far, the conformal quantile of the window's one-step errors)
        self._spread: tuple[int, float] | None = None
        self.calibrations = 0
        self.last_mae: FloatArray | None = None

    # Feeding --------------------------------------------------------------------

    def observe(self, sample: DeploymentSample) -> bool:
        """Record a sample; False when it carries no T_d (a failure)."""
        outcome = sample.outcome
        self._samples.append((sample.runtime, sample.at, sample.duration_s, outcome))
        if outcome is DeployOutcome.FAILURE:
            return False
        if self._cold(sample):
            self.cold_starts += 1
            return True
        value = sample.duration_s
        if outcome is DeployOutcome.TIMEOUT:
            value = max(value, self.deploy_timeout_s)
        self._values.append(float(value))
        if self._tail is not None:
            self._tail.append(float(value))
        self._total += 1
        self._since_calibration += 1
        self._stale = True
        return True

    def observe_probes(
        self, runtime: str, at: Sequence[float], duration_s: Sequence[float]
    ) -> None:
        """Record probes in bulk, oldest first, the same as :meth:`observe` on each one:
        a duration of at least the deploy timeout, or NaN (never ready), is a timeout.
        The replay's probe shortcut feeds millions this way; a sample object and a call
        per probe were a sixth of a full replay's time."""
        timeout = self.deploy_timeout_s
        values = [v if v < timeout else timeout for v in duration_s]  # NaN < t is False
        ok, late = DeployOutcome.OK, DeployOutcome.TIMEOUT
        outcomes = [ok if v < timeout else late for v in duration_s]
        self._samples.extend(zip([runtime] * len(values), at, values, outcomes, strict=True))
        if len(at):
            self._last_at = at[-1]
        self._values.extend(values)
        if self._tail is not None:
            self._tail.extend(values)
        self._total += len(values)
        self._since_calibration += len(values)
        self._stale = self._stale or bool(values)

    def _cold(self, sample: DeploymentSample) -> bool:
        """Whether a ready ``sample`` is a cold start to keep out (class docstring)."""
        last, self._last_at = self._last_at, sample.at
        if self.cold_ratio is None or sample.outcome is not DeployOutcome.OK:
            return False
        if last is not None and sample.at - last < self.cold_idle_s:
            return False
        n = len(self._values)
        # The window's level as it stands: calibrating here would move the window.
        level = sorted_median(np.sort(self._x()[-min(self._window, n) :])) if n else self.prior_s
        return sample.duration_s > self.cold_ratio * level

    def _fresh(self) -> None:
        """Drop what the samples since the last call made stale."""
        if self._stale:
            self._stale = False
            self._array = None
            self._tail_array = None
            self._cached = None
            self._risk.clear()
            self._ar_params = None

    def _x(self) -> FloatArray:
        """The values kept, oldest first, as an array."""
        self._fresh()
        if self._array is None:
            self._array = np.fromiter(self._values, dtype=np.float64, count=len(self._values))
        return self._array

    def _risk_values(self) -> FloatArray:
        """The values the risk reads, oldest first: the tail's view where it is longer."""
        if self._tail is None:
            return self._x()
        self._fresh()
        if self._tail_array is None:
            self._tail_array = np.fromiter(self._tail, dtype=np.float64, count=len(self._tail))
        return self._tail_array

    def recent(self, n: int) -> list[DeploymentSample]:
        """The last ``n`` samples (failures included), oldest first."""
        if n <= 0:
            return []
        return [DeploymentSample(*s) for s in list(self._samples)[-n:]]

    # Calibration ----------------------------------------------------------------

    @property
    def window(self) -> int:
        """The window in use (recalibrated first if it is due)."""
        self._maybe_calibrate()
        return self._window

    def _maybe_calibrate(self) -> None:
        if self._since_calibration >= self.calibration_period and len(self._values) >= 2:
            self.calibrate()

    def calibrate(self) -> int:
        """Choose the window with the least MAE over the last ``calibration_history``."""
        x = self._x()
        n = x.size
        self._since_calibration = 0
        self.calibrations += 1
        if n < 2:
            return self._window
        scored = min(self.calibration_history, n - 1)
        if self.method == "median":
            mae = self._median_mae(x, n - scored)
        else:
            mae = window_mae(x, self.max_window, self.method, start=n - scored)
        self.last_mae = mae
        w = best_window(mae)
        if w:
            self._window = w
        self._spread = None
        if self.mixture_history:
            recent = x[-self.mixture_history :]
            ready = recent[recent < self.deploy_timeout_s]
            self.modes = fit_two_modes(ready)
            self._mixed = None if self.modes is None else np.sort(ready)
        if self.modes is None and self.method == "median" and self._rows is not None:
            # The calibration's rows hold the window's predictions of the values it
            # scored: their errors are the spread's, at no cost (``_error_quantile``).
            errors = np.abs(x[n - scored :] - self._rows[:, self._window - 1])
            self._spread = (self._total, conformal_quantile(errors))
        self._cached = None
        self._risk.clear()
        self._ar_params = None
        return self._window

    def _median_mae(self, x: FloatArray, start: int) -> FloatArray:
        """:func:`window_mae` of the median method from ``x[start]`` on, reusing the
        rows of the samples the last calibration scored (class docstring)."""
        first = self._total - x.size + start  # the sample number of x[start]
        skip = first - self._rows_from
        kept = 0 if self._rows is None or skip < 0 else max(len(self._rows) - skip, 0)
        new = median_rows(x, self.max_window, np.arange(start + kept, x.size))
        rows = np.concatenate([self._rows[skip:], new]) if self._rows is not None and kept else new
        self._rows, self._rows_from = rows, first
        return _mae(rows.T, x[start:])

    # Prediction -----------------------------------------------------------------

    def estimate(self) -> Component:
        """The predicted T_d of the next deployment (mean, spread)."""
        self._maybe_calibrate()
        self._fresh()
        if self._cached is None:
            self._cached = self._compute()
        return self._cached

    def risk(self, quantile: float = 0.9) -> Risk:
        """What the estimate hides, from every value kept (the last
        ``calibration_history + max_window``, or ``tail_history``: a longer view than
        the window):

        * ``p_timeout``: the share of timeouts, under the :data:`TIMEOUT_PRIOR`;
        * ``deployment_excess_s``: mean minus median of the deployments that became
          ready: the heavy tail's share of E[T_d], which a median window leaves out by
          design (0 for the ``mean`` and ``autoreg`` methods, which estimate a mean);
        * ``deployment_quantile_s``: the ``quantile`` of T_d, timeouts included: None
          when it lies in the timeouts, else the ready deployments' quantile shifted by
          the window's estimate (the long view gives the shape, the window the level);
        * ``ready_s``: the ready deployments, shifted the same way (the deadline's
          distribution; their mean is the window's estimate plus ``deployment_excess_s``).
        """
        level = self.estimate().mean
        cached = self._risk.get(quantile)
        if cached is not None:
            return cached
        a, b = TIMEOUT_PRIOR
        x = self._risk_values()
        n = x.size
        timed_out = x >= self.deploy_timeout_s
        p = (float(timed_out.sum()) + a) / (n + a + b)
        ready = x[~timed_out]
        if ready.size == 0:
            risk = Risk(p, self.deploy_timeout_s, 0.0, level if n == 0 else None)
        else:
            q_ready = quantile / (1.0 - p) if p < 1.0 else math.inf
            mixed = self._mixed
            if mixed is not None:  # the estimate is E[T_d]: no tail beyond it
                q_mix = None if q_ready > 1.0 else sorted_quantile(mixed, q_ready)
                risk = Risk(p, self.deploy_timeout_s, 0.0, q_mix, ready_s=tuple(mixed.tolist()))
            else:
                ordered = np.sort(ready)
                med = sorted_median(ordered)
                mean = float(ready.sum()) / ready.size  # ready.mean(), less its checks
                excess = max(mean - med, 0.0) if self.method == "median" else 0.0
                q_value = (
                    None
                    if q_ready > 1.0
                    else max(level + sorted_quantile(ordered, q_ready) - med, 0.0)
                )
                centre = med if self.method == "median" else mean
                shifted = np.maximum(ordered + (level - centre), 0.0)
                risk = Risk(
                    p, self.deploy_timeout_s, excess, q_value, ready_s=tuple(shifted.tolist())
                )
        self._risk[quantile] = risk
        return risk

    def _compute(self) -> Component:
        n = len(self._values)
        if n == 0:
            return Component(self.prior_s, PRIOR_RELATIVE_STD * self.prior_s)
        if n == 1:  # one value, no error yet: as unsure as the prior
            v = self._values[0]
            return Component(v, PRIOR_RELATIVE_STD * v)
        x = self._x()
        w = min(self._window, n)
        if self._mixed is not None:
            return Component(float(self._mixed.mean()), self._error_quantile(x, w) / Z_LEVEL)
        ar = self._autoreg_next() if self.method == "autoreg" else None
        if ar is not None:
            mean = ar
        elif self.method == "mean":
            mean = float(x[n - w :].mean())
        else:
            mean = sorted_median(np.sort(x[n - w :]))
        return Component(mean, self._error_quantile(x, w) / Z_LEVEL)

    def _error_quantile(self, x: FloatArray, w: int) -> float:
        """The conformal quantile of the absolute one-step errors of the last
        ``calibration_history`` values (those a calibration scores), with the window
        in use, or of the mixture's mean while one holds; a calibration since the last
        value has left it (``calibrate``)."""
        if self._spread is None or self._spread[0] != self._total:
            scored = min(self.calibration_history, x.size - 1)
            if self._mixed is not None:
                errors = np.abs(x[-scored:] - float(self._mixed.mean()))
            else:
                errors = np.abs(x[-scored:] - self._one_step(x, w)[-scored:])
            self._spread = (self._total, conformal_quantile(errors))
        return self._spread[1]

    def _one_step(self, x: FloatArray, w: int) -> FloatArray:
        """The predictions of ``x[1:]`` this model makes now (its method and window, each
        from the samples before it), aligned with ``x[1:]``: the errors its spread is
        calibrated on (:mod:`stoic.predict.spread`)."""
        if self.method == "mean":
            cs = np.concatenate([[0.0], np.cumsum(x)])
            t = np.arange(1, x.size)
            lo = np.maximum(t - w, 0)
            means: FloatArray = (cs[t] - cs[lo]) / (t - lo)
            return means
        medians: FloatArray = bn.move_median(x[:-1], window=min(w, x.size - 1), min_count=1)
        if self.method == "autoreg" and self._ar_params is not None:
            p = self._ar_params.size - 1
            lagged = sliding_window_view(x[:-1], p)[:, ::-1]
            medians[p - 1 :] = np.maximum(self._ar_params[0] + lagged @ self._ar_params[1:], 0.0)
        return medians

    def _autoreg_next(self) -> float | None:
        x = self._x()
        if self._ar_params is None:
            self._ar_params = _fit_autoreg(x, self._window)
            if self._ar_params is None:
                return None
        # A deployment never takes negative time, however the fit extrapolates.
        return max(_autoreg_next(self._ar_params, x), 0.0)


def evaluate_series(
    values: Sequence[float] | FloatArray, max_window: int, methods: Sequence[Method] = METHODS
) -> dict[Method, FloatArray]:
    """MAE per window size for each method over a whole series (the CLI's analysis)."""
    return {m: window_mae(values, max_window, m, start=1) for m in methods}
