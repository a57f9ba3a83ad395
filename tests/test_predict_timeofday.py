"""The time-of-day term of T_p (stoic/predict/timeofday.py, predictor.processing_time_of_day):
a daily spell is recovered from the past days and priced at the hours it comes, also
after the last slow sample; noise, congestion, day-to-day drift and a permanent step
leave every factor at exactly 1, so predictions are the line's bit for bit."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from stoic.predict.predictor import Predictor, PredictorOptions
from stoic.predict.processing import ProcessingModel
from stoic.predict.timeofday import DAY_S, SHRINK_DAYS, DailyProfile
from stoic.settings import Settings
from stoic.values import ProcessingSample

T0 = 1_588_291_200.0
"""A UTC midnight (the replay's epoch)."""
PER_IMAGE_S, FIXED_S = 1.5, 4.0
BATCH_EVERY_S = 540.0
"""160 batches a day, as the replays' 162."""


def _spell(t: float) -> float:
    """×2.5 from 13:00 to 18:00 every day (edge-afternoon-spell)."""
    return 2.5 if 13 <= (t % DAY_S) / 3600 < 18 else 1.0


def _samples(
    seed: int,
    days: float,
    factor: Callable[[float], float],
    *,
    sigma: float = 0.03,
    congestion: float = 0.05,
) -> list[ProcessingSample]:
    """A runtime measured every BATCH_EVERY_S from T0: a line in batch size times
    ``factor(t)``, lognormal noise, congestion ×1.5–3 at rate ``congestion``."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(int(days * DAY_S / BATCH_EVERY_S)):
        at = T0 + k * BATCH_EVERY_S
        n = int(rng.integers(1, 200))
        y = (PER_IMAGE_S * n + FIXED_S) * factor(at) * math.exp(rng.normal(0.0, sigma))
        if rng.random() < congestion:
            y *= rng.uniform(1.5, 3.0)
        out.append(ProcessingSample("app", "1", "edge", n, n * 1000, y, at))
    return out


def _model(daily: bool) -> ProcessingModel:
    return ProcessingModel(
        history=10,
        prior_slope=2.4,
        prior_intercept=10.0,
        daily=DailyProfile() if daily else None,
    )


def _fed(samples: list[ProcessingSample], daily: bool = True) -> ProcessingModel:
    model = _model(daily)
    for s in samples:
        model.observe(s)
    return model


@pytest.mark.parametrize("seed", range(5))
def test_a_daily_spell_is_recovered_from_the_past_days(seed: int) -> None:
    """Five days of a ×2.5 afternoon spell: on the sixth, the spell's hours have the
    factor five days give (2.5 shrunk by SHRINK_DAYS pseudo-days, within 5 %) and every
    other hour exactly 1."""
    model = _fed(_samples(seed, 5, _spell))
    assert model.daily is not None
    model.daily.refresh(T0 + 5 * DAY_S)
    expected = math.exp(math.log(2.5) * 5 / (5 + SHRINK_DAYS))
    for hour, f in enumerate(model.daily.factors):
        if 13 <= hour < 18:
            assert f == pytest.approx(expected, rel=0.05)
        else:
            assert f == 1.0


def test_the_spell_is_priced_at_its_hours_and_not_after_it() -> None:
    """After five days, on the sixth: at 15:00 the estimate is the slow runtime's, and
    at 18:30, with no sample since the spell's last slow run, the usual one (the line
    alone still says slow, docs/predictor.md "Regimes")."""
    samples = [s for s in _samples(0, 6, _spell) if s.at < T0 + 5 * DAY_S + 18 * 3600]
    at_three = T0 + 5 * DAY_S + 15 * 3600
    usual = PER_IMAGE_S * 100 + FIXED_S
    with_term = _fed([s for s in samples if s.at < at_three])
    assert with_term.estimate(100, at_three).mean == pytest.approx(2.5 * usual, rel=0.15)
    after = T0 + 5 * DAY_S + 18.5 * 3600
    assert _fed(samples).estimate(100, after).mean == pytest.approx(usual, rel=0.15)
    assert _fed(samples, daily=False).estimate(100, after).mean > 2 * usual


@pytest.mark.parametrize(
    ("name", "factor"),
    [
        ("noise and congestion", lambda t: 1.0),
        ("30 % slower each day", lambda t: 1.3 ** math.floor((t - T0) / DAY_S)),
        ("a permanent step ×2 at hour 36", lambda t: 2.0 if t >= T0 + 36 * 3600 else 1.0),
    ],
)
@pytest.mark.parametrize("seed", range(3))
def test_no_daily_pattern_leaves_every_prediction_as_the_lines(
    name: str, factor: Callable[[float], float], seed: int
) -> None:
    """Six days without a daily pattern (noise 3 %, 5 % congested runs): every factor
    stays exactly 1 and every estimate is, bit for bit, the one without the term."""
    samples = _samples(seed, 6, factor)
    with_term, without = _model(True), _model(False)
    for s in samples:
        assert with_term.estimate(s.images, s.at) == without.estimate(s.images)
        with_term.observe(s)
        without.observe(s)
    assert with_term.daily is not None
    assert with_term.daily.factors == [1.0] * 24
    assert with_term.excess == without.excess


def test_a_congested_probe_at_one_hour_on_two_days_is_no_regime() -> None:
    """A runtime measured only by its hourly probe (one sample a day at each hour),
    congested ×2.5 at 18:00 on both past days (random-004's cloud, where one run in
    seven is): that hour alone is no daily regime, every factor stays 1."""
    rng = np.random.default_rng(0)
    profile = DailyProfile()
    for k in range(48):
        at = T0 + k * 3600.0
        n = 10 if k % 2 else 100
        slow = 2.5 if k % 24 == 18 else 1.0
        profile.add(at, n, (PER_IMAGE_S * n + FIXED_S) * slow * math.exp(rng.normal(0, 0.03)))
    profile.refresh(T0 + 2 * DAY_S)
    assert profile.factors == [1.0] * 24


def test_the_predictor_reads_its_clock_only_with_the_setting() -> None:
    """Off (the default), the clock is never read; on, the estimate is for the clock's
    hour; on without a clock (the one-step evaluation of a CSV), no hour, no term."""

    def never() -> float:
        raise AssertionError("clock read")

    off = Predictor(PredictorOptions.from_settings(Settings()), clock=never)
    now = [T0]
    on_settings = Settings(predictor={"processing_time_of_day": True})
    on = Predictor(PredictorOptions.from_settings(on_settings), clock=lambda: now[0])
    for s in _samples(1, 5, _spell):
        off.observe_processing(s)
        on.observe_processing(s)
    kw = {"app": "app", "app_version": "1"}
    now[0] = T0 + 5 * DAY_S + 15 * 3600
    afternoon = on.estimate("edge", 100, 0, **kw)
    now[0] = T0 + 5 * DAY_S + 20 * 3600
    evening = on.estimate("edge", 100, 0, **kw)
    assert afternoon.processing.mean > 2 * evening.processing.mean
    assert afternoon.per_image_s(100) > 2 * evening.per_image_s(100)
    assert off.estimate("edge", 100, 0, **kw).processing.mean > 0
    assert off.processing_model("edge", "app", "1").daily is None
    no_clock = Predictor(PredictorOptions.from_settings(on_settings))
    assert no_clock.processing_model("edge", "app", "1").daily is None
