"""Deployment-time prediction: sliding windows, calibration, timeouts, priors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from stoic.predict.deployment import (
    DeploymentModel,
    autoreg_predictions,
    best_window,
    mean_window_predictions,
    median_window_predictions,
    sample_value,
    window_mae,
)
from stoic.predict.spread import Z_LEVEL
from stoic.values import DeploymentSample, DeployOutcome

values_st = st.lists(
    st.floats(min_value=0, max_value=1e4, allow_nan=False, allow_infinity=False),
    min_size=2,
    max_size=40,
)


def _ok(v: float, runtime: str = "gpu1") -> DeploymentSample:
    return DeploymentSample(runtime=runtime, at=0.0, duration_s=v)


def _brute(x, w_max, method, start):
    f = np.median if method == "median" else np.mean
    out = np.empty((w_max, len(x) - start))
    for w in range(1, w_max + 1):
        for i, t in enumerate(range(start, len(x))):
            out[w - 1, i] = f(x[max(0, t - w) : t])
    return out


@settings(max_examples=60, deadline=None)
@given(values_st, st.integers(1, 50))
def test_window_predictions_match_numpy(xs, max_window):
    x = np.array(xs)
    for method, fn in (("median", median_window_predictions), ("mean", mean_window_predictions)):
        np.testing.assert_allclose(
            fn(x, max_window), _brute(x, max_window, method, 1), rtol=1e-9, atol=1e-6
        )


@settings(max_examples=60, deadline=None)
@given(values_st)
def test_median_window_of_one_is_last_value(xs):
    x = np.array(xs)
    np.testing.assert_array_equal(median_window_predictions(x, 1)[0], x[:-1])


@settings(max_examples=60, deadline=None)
@given(values_st, st.integers(1, 50))
def test_prediction_within_window_range(xs, max_window):
    x = np.array(xs)
    for fn in (median_window_predictions, mean_window_predictions):
        p = fn(x, max_window)
        for w in range(1, max_window + 1):
            for i, t in enumerate(range(1, len(x))):
                win = x[max(0, t - w) : t]
                assert win.min() - 1e-6 <= p[w - 1, i] <= win.max() + 1e-6


@settings(max_examples=40, deadline=None)
@given(values_st)
def test_window_larger_than_history_uses_all(xs):
    model = DeploymentModel(method="median", max_window=100, calibration_period=10_000)
    for v in xs:
        model.observe(_ok(v))
    assert model.estimate().mean == pytest.approx(float(np.median(xs)))
    mean_model = DeploymentModel(method="mean", max_window=100, calibration_period=10_000)
    for v in xs:
        mean_model.observe(_ok(v))
    assert mean_model.estimate().mean == pytest.approx(float(np.mean(xs)))


def test_median_beats_mean_on_sparse_spikes():
    x = np.full(300, 20.0)
    x[5::37] = 400.0  # sparse large spikes
    med = window_mae(x, 30, "median")
    mean = window_mae(x, 30, "mean")
    assert np.nanmin(med) < np.nanmin(mean)
    # A median over >= 3 samples ignores an isolated spike: only spikes themselves err.
    assert med[4] == pytest.approx(380.0 * np.sum(x[1:] == 400.0) / 299)


def test_step_change_is_tracked():
    rng = np.random.default_rng(3)
    period, max_window = 10, 50
    model = DeploymentModel(
        method="median", max_window=max_window, calibration_period=period, calibration_history=100
    )
    for v in 20.0 + rng.normal(0, 2, 200):
        model.observe(_ok(float(v)))
        model.estimate()
    before = model.window
    assert before > 5  # noise favours a long window
    step_errors = []
    for v in 120.0 + rng.normal(0, 2, 100):
        model.observe(_ok(float(v)))
        step_errors.append(abs(model.estimate().mean - 120.0))
    converged = next(i for i, e in enumerate(step_errors) if e < 5.0)
    assert converged <= period + before
    assert all(e < 5.0 for e in step_errors[converged:])
    assert model.window < before  # recalibrated to follow the step faster


def test_calibration_happens_every_period():
    model = DeploymentModel(max_window=10, calibration_period=5, calibration_history=20)
    for i in range(23):
        model.observe(_ok(float(i % 3)))
        model.estimate()
    assert model.calibrations == 4  # at 5, 10, 15, 20 new samples


def test_best_window_picks_least_mae_and_smallest_on_ties():
    assert best_window(np.array([3.0, 1.0, 1.0, 2.0])) == 2
    assert best_window(np.array([np.nan, 2.0])) == 2
    assert best_window(np.array([np.nan])) == 0


@given(
    arrays(np.float64, st.integers(1, 120), elements=st.one_of(st.just(np.nan), st.floats(0, 1e3)))
)
def test_best_window_is_nanargmin(mae: np.ndarray) -> None:
    """``best_window`` skips ``np.nanargmin``'s checks, not its answer."""
    expected = 0 if np.all(np.isnan(mae)) else int(np.nanargmin(mae)) + 1
    assert best_window(mae) == expected


def test_timeout_counts_as_at_least_the_timeout_and_failure_is_no_sample():
    t = DeploymentSample("gpu1", 0.0, 30.0, DeployOutcome.TIMEOUT)
    assert sample_value(t, 600.0) == 600.0
    assert sample_value(DeploymentSample("gpu1", 0.0, 700.0, DeployOutcome.TIMEOUT), 600.0) == 700.0
    assert sample_value(DeploymentSample("gpu1", 0.0, 5.0, DeployOutcome.FAILURE), 600.0) is None
    model = DeploymentModel(max_window=3, deploy_timeout_s=600.0, prior_s=30.0)
    assert model.observe(DeploymentSample("gpu1", 0.0, 5.0, DeployOutcome.FAILURE)) is False
    assert model.estimate().mean == 30.0  # still the prior
    model.observe(_ok(10.0))
    model.observe(t)
    model.observe(t)
    assert model.estimate().mean == 600.0
    assert len(model.recent(10)) == 4  # the failure is kept for introspection


def test_prior_when_no_data_and_spread():
    model = DeploymentModel(prior_s=45.0)
    est = model.estimate()
    assert est.mean == 45.0 and est.std > 0
    for v in (10.0, 10.0, 12.0, 10.0, 100.0):
        model.observe(_ok(v))
    est = model.estimate()
    assert est.mean == 10.0
    # The window's MAD is 0, yet one deployment in five took 100 s. Four one-step errors
    # (0, 2, 0, 90), fewer than nine: the conformal quantile is the largest, and the
    # 90 % interval reaches the outlier.
    assert est.mean + Z_LEVEL * est.std == pytest.approx(100.0)


def test_autoreg_matches_statsmodels_and_falls_back_to_median():
    from statsmodels.tsa.ar_model import AutoReg

    rng = np.random.default_rng(0)
    x = 30 + np.cumsum(rng.normal(0, 1, 80)) * 0.2 + rng.normal(0, 1, 80)
    res = AutoReg(x, lags=3, trend="c").fit()
    p = autoreg_predictions(x, 3)[2]
    np.testing.assert_allclose(p[2:], res.fittedvalues)
    model = DeploymentModel(method="autoreg", max_window=3, calibration_period=1000)
    for v in (10.0, 20.0, 30.0):
        model.observe(_ok(v))
    assert model.estimate().mean == 20.0  # too few samples for 3 lags: the median
    for v in x:
        model.observe(_ok(float(v)))
    est = model.estimate()
    assert est.mean > 0 and est.std > 0


# Risk: the distribution behind the estimate ----------------------------------------------


def _model(values: list[float], method: str = "median") -> DeploymentModel:
    m = DeploymentModel(
        method=method,  # type: ignore[arg-type]
        max_window=5,
        calibration_history=20,
        deploy_timeout_s=600.0,
    )
    for i, v in enumerate(values):
        outcome = DeployOutcome.TIMEOUT if v >= 600 else DeployOutcome.OK
        m.observe(DeploymentSample("gpu1", float(i), v, outcome))
    return m


def test_risk_prices_timeouts_under_a_weak_prior() -> None:
    assert _model([]).risk().p_timeout == pytest.approx(0.01)  # the prior's mean
    clean = _model([30.0] * 25).risk()
    assert clean.p_timeout == pytest.approx(0.1 / 35)
    risky = _model([30.0] * 20 + [600.0] * 5).risk()
    assert risky.p_timeout == pytest.approx(5.1 / 35)
    assert risky.timeout_s == 600.0


def test_risk_excess_is_the_tail_above_the_median() -> None:
    values = [30.0] * 22 + [330.0] * 3  # mean of what became ready 66, median 30
    r = _model(values).risk()
    assert r.deployment_excess_s == pytest.approx(36.0)
    assert _model(values, method="mean").risk().deployment_excess_s == 0.0


def test_risk_quantile_is_shifted_to_the_window_level_or_none_in_the_timeouts() -> None:
    # History 10..34 s; the window (last 5: 30..34) puts the level at 32 s.
    m = _model([10.0 + i for i in range(25)])
    level = m.estimate().mean
    r = m.risk(0.9)
    ready = np.arange(10.0, 35.0)
    q = 0.9 / (1 - r.p_timeout)
    assert r.deployment_quantile_s == pytest.approx(level + np.quantile(ready, q) - 22.0)
    assert _model([30.0] * 10 + [600.0] * 15).risk(0.9).deployment_quantile_s is None


def test_calibration_reusing_rows_is_window_mae_bit_for_bit() -> None:
    rng = np.random.default_rng(11)
    model = DeploymentModel(max_window=20, calibration_period=1, calibration_history=30)
    fed: list[float] = []
    for burst in [1, 3, 7, 0, 29, 31, 60, 2, 1, 0, 45, 5] * 3:
        for v in rng.lognormal(3.0, 0.8, burst):
            model.observe(_ok(float(v)))
            fed.append(float(v))
        model.calibrate()
        x = np.array(fed[-50:])
        if x.size >= 2:
            scored = min(30, x.size - 1)
            expected = window_mae(x, 20, "median", start=x.size - scored)
            assert model.last_mae is not None
            np.testing.assert_array_equal(model.last_mae, expected)
            assert model.window == best_window(expected)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.one_of(st.floats(0.5, 900.0), st.just(float("nan"))), min_size=0, max_size=60),
    st.integers(1, 4),
)
def test_bulk_probes_are_the_same_as_one_sample_each(durations, chunks) -> None:
    one = DeploymentModel(max_window=8, calibration_period=3, calibration_history=10)
    bulk = DeploymentModel(max_window=8, calibration_period=3, calibration_history=10)
    at = [float(i) for i in range(len(durations))]
    size = max(len(durations) // chunks, 1)
    for lo in range(0, len(durations), size):
        for t, d in zip(at[lo : lo + size], durations[lo : lo + size], strict=True):
            ready = d < one.deploy_timeout_s  # NaN: never ready
            outcome = DeployOutcome.OK if ready else DeployOutcome.TIMEOUT
            one.observe(DeploymentSample("gpu1", t, d if ready else 600.0, outcome))
        bulk.observe_probes("gpu1", at[lo : lo + size], durations[lo : lo + size])
        assert bulk.estimate() == one.estimate()
        assert bulk.window == one.window
        assert bulk.risk(0.9) == one.risk(0.9)
    assert bulk.recent(25) == one.recent(25)
    assert all(s.runtime == "gpu1" for s in bulk.recent(25))
