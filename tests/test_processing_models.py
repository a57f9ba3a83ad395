"""docs/evaluation/processing_models.py: the day-aged candidates and the replay switch."""

from __future__ import annotations

from collections.abc import Sequence

from stoic.predict.onestep import MeasuredBatch, replay
from stoic.predict.predictor import Predictor
from stoic.settings import Settings
from tests.support.paths import REPO
from tests.support.scripts import load_script

pm = load_script(REPO / "docs" / "evaluation" / "processing_models.py")


def _count(samples: Sequence[tuple[float, float, float]], *_: float) -> float:
    return float(len(samples))


def test_last_day_keeps_the_samples_of_the_day_before_the_newest() -> None:
    day = pm.DAY_S
    samples = [(0.0, 10.0, 5.0), (10.0, 20.0, 9.0), (day + 5.0, 30.0, 12.0)]
    assert pm.last_day(_count)(samples, 40.0, day + 6.0, 0.5, 1.0) == 2.0
    assert pm.last_day(_count)([], 40.0, 0.0, 0.5, 1.0) == 0.0
    # Only the last WINDOW samples are looked at, however recent the others.
    recent = [(float(i), 10.0, 5.0) for i in range(pm.WINDOW + 5)]
    assert pm.last_day(_count)(recent, 40.0, 100.0, 0.5, 1.0) == pm.WINDOW


def test_a_line_is_learnt_by_every_candidate_and_hgb_can_be_left_out() -> None:
    day = pm.DAY_S
    batches = [
        MeasuredBatch(d * day + 100 * i, "gpu1", n, {"processing": slope * n + 4 + 0.1 * (i % 3)})
        for d, slope in ((1, 0.5), (4, 0.9))
        for i, n in enumerate((10, 40, 25, 70, 55, 15))
    ]
    settings = Settings()
    figures = pm.score(replay(Predictor.from_settings(settings), batches), settings, hgb=False)
    assert not any(k.startswith("hgb") for k in figures)
    aged = {k: v[0] for k, v in figures.items() if k.endswith("max age 24 h")}
    assert len(aged) == 4
    # The day-aged models leave day 1's line out of day 2's; their all-history twins do not.
    twins = {"ransac-ridge": "ransac-ridge (today's)"}
    for name, mae in aged.items():
        twin = name.removesuffix(", max age 24 h")
        assert mae < figures[twins.get(twin, twin)][0]
