"""The T_p line's learnt shape (``predictor.processing_shape_history``): the samples
older than the window fit the fixed cost against the per-image cost, the window only
scales it.

The failure it answers (docs/predictor.md, "Where random-001's learning gap comes
from"): ten recent batches of a few images each, with 20 % noise, give a slope that
says nothing, and the line through them priced a 159-image batch at 3.5 times its
truth.
"""

from __future__ import annotations

import numpy as np
import pytest

from stoic.predict.predictor import Predictor
from stoic.predict.processing import LinearFit, ProcessingModel, scale_shape
from stoic.settings import Settings
from stoic.values import ProcessingSample

SLOPE, FIXED = 0.52, 26.0  # random-001's edge: a large fixed cost, a small per-image one


def _true(n: int) -> float:
    return SLOPE * n + FIXED


def _feed(
    model: ProcessingModel, sizes: list[int], factor: float, rng: np.random.Generator
) -> None:
    for n in sizes:
        noise = float(np.exp(rng.normal(0.0, 0.2)))
        model.observe(ProcessingSample("a", "1", "edge", n, 0, _true(n) * factor * noise, 0.0))


def _history(shape_history: int, seed: int) -> ProcessingModel:
    """90 batches of 10-150 images, then a ×2 regime measured by 10 batches of 2-20."""
    rng = np.random.default_rng(seed)
    model = ProcessingModel(
        history=10, prior_slope=2.4, prior_intercept=13.6, shape_history=shape_history
    )
    _feed(model, [int(n) for n in rng.integers(10, 151, 90)], 1.0, rng)
    _feed(model, [int(n) for n in rng.integers(2, 21, 10)], 2.0, rng)
    return model


def test_the_window_alone_extrapolates_its_noise():
    # The defect the shape answers: over the same eight worlds, the window's line misses a
    # 150-image batch by far more than the shape scaled through the same window does.
    truth = 2.0 * _true(150)
    window = [abs(np.log(_history(0, s).estimate(150).mean / truth)) for s in range(8)]
    shaped = [abs(np.log(_history(100, s).estimate(150).mean / truth)) for s in range(8)]
    assert np.mean(shaped) < 0.1  # 0.06: within 17 % in every world
    assert np.mean(window) > 4 * np.mean(shaped)  # 0.53: 0.8 to 3.6 times the truth


def test_within_the_window_one_scale_is_less_noisy_than_a_line():
    truth = 2.0 * _true(10)
    window = [abs(np.log(_history(0, s).estimate(10).mean / truth)) for s in range(8)]
    shaped = [abs(np.log(_history(100, s).estimate(10).mean / truth)) for s in range(8)]
    assert np.mean(shaped) < np.mean(window)


def test_until_the_older_samples_fill_a_window_nothing_changes():
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    plain = ProcessingModel(history=10, prior_slope=2.4, prior_intercept=13.6)
    shaped = ProcessingModel(history=10, prior_slope=2.4, prior_intercept=13.6, shape_history=100)
    sizes = [5, 80, 12, 150, 40, 9, 33, 120, 7, 60, 22, 90, 14, 130, 50, 8, 28, 110, 6, 70]
    for k in range(1, len(sizes)):
        _feed(plain, sizes[k - 1 : k], 1.0, rng_a)
        _feed(shaped, sizes[k - 1 : k], 1.0, rng_b)
        assert shaped.fit == plain.fit
        assert shaped.estimate(150) == plain.estimate(150)
        assert shaped.excess == plain.excess
    _feed(shaped, sizes[-1:], 1.0, rng_b)  # the 20th: ten older than the window
    assert shaped.fit.method == "scaled-shape"


def test_scale_shape_takes_the_median_ratio():
    shape = LinearFit(0.5, 20.0, "ransac", 40, 40)
    images = np.array([10.0, 20.0, 40.0])
    seconds = np.array([2 * 25.0, 2 * 30.0, 9 * 40.0])  # two at x2, one congested
    fit = scale_shape(shape, images, seconds)
    assert fit is not None and fit.method == "scaled-shape"
    assert fit.slope == pytest.approx(1.0) and fit.intercept == pytest.approx(40.0)
    assert scale_shape(LinearFit(0.0, 0.0, "ransac", 40, 40), images, seconds) is None


def test_the_setting_reaches_the_model():
    settings = Settings.model_validate({"predictor": {"processing_shape_history": 50}})
    predictor = Predictor.from_settings(settings)
    name = predictor.runtimes[0]
    rng = np.random.default_rng(2)
    model = predictor.processing_model(name, "a", "1")
    _feed(model, [int(n) for n in rng.integers(10, 151, 20)], 1.0, rng)
    assert model.fit.method == "scaled-shape"
    off = Predictor.from_settings(Settings()).processing_model(name, "a", "1")
    _feed(off, [int(n) for n in rng.integers(10, 151, 20)], 1.0, rng)
    assert off.fit.method != "scaled-shape"
