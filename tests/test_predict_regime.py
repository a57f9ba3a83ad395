"""T_p regimes (stoic/predict/regime.py, ProcessingModel's reaction, max sample age):
the change point of a step and of each end of a daily spell is recovered within a few
batches; congestion alone rarely raises an alarm (rates over fixed seeds)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from stoic.predict.predictor import Predictor
from stoic.predict.processing import ProcessingModel
from stoic.predict.regime import ChangeDetector
from stoic.settings import Settings
from stoic.values import ProcessingSample

DETECT_WITHIN = 4
"""Batches of a new regime after which the detector has raised its alarm."""


def _detector() -> ChangeDetector:
    p = Settings().predictor
    return ChangeDetector(
        hazard=p.processing_change_hazard,
        min_run=p.processing_change_min_run,
        threshold=p.processing_change_threshold,
    )


def _ratios(
    rng: np.random.Generator, n: int, sigma: float, factor: list[float], congestion: float
) -> list[float]:
    """Out-of-sample ratios of a line that stays put: lognormal noise, the regime's
    factor of each batch, and congestion outliers ×1.5–3 at rate ``congestion``."""
    out = []
    for t in range(n):
        r = factor[t] * math.exp(rng.normal(0.0, sigma))
        if rng.random() < congestion:
            r *= rng.uniform(1.5, 3.0)
        out.append(r)
    return out


def _alarms(ratios: list[float]) -> list[tuple[int, int]]:
    """(index of the ratio that raised it, the new segment's length) per alarm."""
    d = _detector()
    return [(t, run) for t, r in enumerate(ratios) if (run := d.update(r))]


# The detector is a statistical test, so what it does on noise is a rate, not a property:
# hypothesis found a congestion-only sequence (seed 45122, σ 0.0625, one congested run
# in 21) with two alarms. These tests draw fixed seeds over a grid of the environments'
# noise and congestion and hold the detector to the rates measured on them (and on
# ten times as many seeds when the tests were written, in the comments).


def _steps() -> list[tuple[int, float, float, bool]]:
    return [
        (seed, sigma, factor, up)
        for sigma, factor, up in itertools.product((0.02, 0.05, 0.08), (1.8, 3.0), (True, False))
        for seed in range(40)
    ]


def test_a_step_is_found_within_a_few_batches_at_its_change_point() -> None:
    """A permanent step (×factor, or ÷factor) after 40 batches, 480 sequences (σ 2-8 %,
    ×1.8 or ×3 either way): in at least 99 % of them one alarm within DETECT_WITHIN
    batches whose segment starts exactly at the step (1 miss in 2,400 measured: σ 8 %,
    ×1.8 up)."""
    missed = 0
    for seed, sigma, factor, up in _steps():
        f = factor if up else 1.0 / factor
        ratios = _ratios(np.random.default_rng(seed), 60, sigma, [1.0] * 40 + [f] * 20, 0.0)
        alarms = _alarms(ratios)
        found = bool(alarms) and 40 <= alarms[0][0] < 40 + DETECT_WITHIN
        missed += not (found and alarms[0][0] - alarms[0][1] + 1 == 40)
    assert missed <= 0.01 * len(_steps())


def test_each_end_of_a_daily_spell_is_found() -> None:
    """A spell of 20 batches at ×factor between normal stretches, the ratios taken over
    the line the model refits after each alarm (1 inside the spell once it is found),
    240 sequences (σ 2-8 %, ×1.8-3): in at least 99 % an alarm at each end, each within
    DETECT_WITHIN batches of it, and no other (none missed in 600 measured)."""
    missed = 0
    grid = list(itertools.product((0.02, 0.05, 0.08), (1.8, 2.4, 3.0), range(27)))
    for i, (sigma, factor, _) in enumerate(grid):
        rng = np.random.default_rng(10_000 + i)
        d = _detector()
        level = 1.0  # what the refitted line believes
        found = []
        for t in range(80):
            truth = factor if 40 <= t < 60 else 1.0
            if d.update(truth / level * math.exp(rng.normal(0.0, sigma))):
                found.append(t)
                level = truth
        missed += not (
            len(found) == 2
            and 40 <= found[0] < 40 + DETECT_WITHIN
            and 60 <= found[1] < 60 + DETECT_WITHIN
        )
    assert missed <= 0.01 * len(grid)


def test_congestion_alone_rarely_raises_an_alarm() -> None:
    """200 batches of noise and congestion outliers (up to one run in 20 ×1.5-3, as the
    environments draw them), 450 sequences: no alarm without congestion, and an alarm
    in at most 2 % of those with it (measured over 300 seeds each: 1-1.7 % at one run in
    20, none at one in 40). An alarm is cheap where it is wrong (the line is refitted on
    the runs since, and the next ratios restart the detector), so a rare one is the
    price of finding a real step within a few batches."""
    quiet, noisy = 0, []
    for sigma, congestion in itertools.product((0.02, 0.06, 0.1), (0.0, 0.025, 0.05)):
        for seed in range(50):
            ratios = _ratios(np.random.default_rng(seed), 200, sigma, [1.0] * 200, congestion)
            if congestion == 0.0:
                quiet += len(_alarms(ratios))
            else:
                noisy.append(bool(_alarms(ratios)))
    assert quiet == 0
    assert np.mean(noisy) <= 0.02


def _sample(t: float, images: int, seconds: float) -> ProcessingSample:
    return ProcessingSample("app", "1", "edge", images, 0, seconds, t)


def test_an_alarm_refits_the_line_on_the_new_regime_and_clears_its_ratios() -> None:
    """A clean ×2.5 step in a runtime of 1.5 s/image + 4 s: after the alarm the model
    fits only the new regime's samples (its slope recovered within 5 %), and their
    ratios are not counted as congestion."""
    rng = np.random.default_rng(7)
    m = ProcessingModel(history=10, prior_slope=2.0, prior_intercept=10.0, detector=_detector())
    sizes = rng.integers(20, 200, size=40)
    for t, n in enumerate(sizes):
        factor = 2.5 if t >= 30 else 1.0
        m.observe(_sample(600.0 * t, int(n), factor * (1.5 * n + 4.0)))
        if t == 29:
            assert m.excess == 0.0
            assert m.fit.slope == pytest.approx(1.5, rel=0.01)
    assert m.detector is not None and m.detector.alarms == 1
    assert m.fit.slope == pytest.approx(2.5 * 1.5, rel=0.05)
    assert m.excess == pytest.approx(0.0, abs=1e-9)  # the step left the congestion tail


def test_samples_older_than_the_maximum_age_are_not_fitted() -> None:
    """A day-old line is no guide today: with max_age_s, the first batch after a long
    idle spell is fitted alone (the prior scaled through it), as in the real runs."""
    m = ProcessingModel(history=10, prior_slope=1.0, prior_intercept=10.0, max_age_s=86_400)
    for t, n in enumerate((20, 60, 100, 140)):
        m.observe(_sample(600.0 * t, n, 1.0 * n + 10.0))
    assert m.fit.slope == pytest.approx(1.0)
    m.observe(_sample(3 * 86_400.0, 50, 90.0))  # 1.5x slower, three days later
    assert m.fit.method == "scaled-prior" and m.fit.n_samples == 1
    assert m.estimate(50).mean == pytest.approx(90.0)
    assert m.n_samples == 5  # kept, only not fitted


def test_the_predictor_builds_what_the_settings_ask() -> None:
    off = Predictor.from_settings(Settings())
    model = off.processing_model("edge", "app", "1")
    assert model.detector is None and model.max_age_s is None
    on = Predictor.from_settings(
        Settings(predictor={"processing_change_detection": True, "processing_max_age_s": 3600})
    )
    model = on.processing_model("edge", "app", "1")
    assert isinstance(model.detector, ChangeDetector) and model.max_age_s == 3600
