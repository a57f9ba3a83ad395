"""docs/evaluation/ts_budget.py: where T_s's one-step error comes from, on synthetic
sequences whose answer is known."""

from __future__ import annotations

import pytest

from stoic.predict.onestep import MeasuredBatch, Step, replay, score
from stoic.predict.predictor import Predictor
from stoic.settings import Settings
from tests.support.paths import REPO
from tests.support.scripts import load_script

tb = load_script(REPO / "docs" / "evaluation" / "ts_budget.py")


def _batch(at: float, runtime: str, images: int, td: float) -> MeasuredBatch:
    tp = 0.5 * images + 4 + (images % 3)  # a line with a little scatter
    if runtime == "edge":
        return MeasuredBatch(at, runtime, images, {"processing": 2 * tp, "total": 2 * tp})
    tt = 0.05 * images * (1 + (images % 5) / 10)
    return MeasuredBatch(
        at,
        runtime,
        images,
        {"transfer": tt, "deployment": td, "processing": tp, "total": tt + td + tp},
    )


def _steps(deployments: list[tuple[float, float]]) -> list[Step]:
    """gpu1 batches at (at, T_d), an edge batch beside each."""
    batches = []
    for i, (at, td) in enumerate(deployments):
        n = 10 + 7 * (i % 6)
        batches += [_batch(at, "gpu1", n, td), _batch(at + 10, "edge", n, 0.0)]
    return replay(Predictor.from_settings(Settings()), batches)


STEADY = [(1000.0 + 100 * i, 20.0 + (i % 3)) for i in range(12)]


def test_the_split_adds_up_to_the_evaluations_figure() -> None:
    steps = _steps(STEADY)
    rows = tb.scored_steps(steps)
    assert len(rows) == 18  # 12 of each runtime, the first 3 of each observed only
    assert tb.ts_mae(rows) == pytest.approx(score(steps)["all"]["total"]["mae_s"])
    assert tb.ts_mae(rows, exact=tb.PARTS) == 0.0
    # The predictor's own T_d as a rule changes nothing; an exact one removes T_d's part.
    assert tb.ts_mae(rows, td=tb.predictor_td) == pytest.approx(tb.ts_mae(rows))
    assert tb.ts_mae(rows, td=tb.exact_where(lambda *_: True)) == pytest.approx(
        tb.ts_mae(rows, exact=("deployment",))
    )


def test_a_first_deployment_after_an_idle_spell_is_priced_by_the_earlier_ones() -> None:
    idle = [(1000.0, 60.0), *((1100.0 + 100 * i, 20.0) for i in range(8))]
    idle += [(1000.0 + 100 * 8 + 2 * tb.IDLE_S, 58.0), (1000.0 + 100 * 9 + 2 * tb.IDLE_S, 20.0)]
    rows = [r for r in tb.scored_steps(_steps(idle)) if r.step.batch.runtime == "gpu1"]
    after_idle, following = rows[-2], rows[-1]
    assert tb.first_after_idle(after_idle.step, after_idle.history)
    assert tb.cold_level(after_idle.step, after_idle.history) == 60.0  # the first one's
    assert not tb.first_after_idle(following.step, following.history)
    assert tb.cold_level(following.step, following.history) == tb.predictor_td(
        following.step, following.history
    )


def test_the_bounds_take_away_exactly_what_they_name() -> None:
    spiked = [(at, 120.0 if i == 7 else td) for i, (at, td) in enumerate(STEADY)]
    rows = tb.scored_steps(_steps(spiked))
    spike = next(r for r in rows if r.step.batch.actual.get("deployment") == 120.0)
    spike_error = abs(sum(tb.errors(spike.step).values()))
    without = abs(sum(v for c, v in tb.errors(spike.step).items() if c != "deployment"))
    bound = tb.ts_mae(rows, td=tb.exact_where(lambda s, _: s is spike.step))
    assert bound * len(rows) == pytest.approx(tb.ts_mae(rows) * len(rows) - spike_error + without)
    # A level that steps up and stays: the best fixed window in hindsight is the last value.
    step = [(1000.0 + 100 * i, 20.0 if i < 6 else 40.0) for i in range(12)]
    assert tb.best_windows(tb.scored_steps(_steps(step))) == {"gpu1": 1}


def test_the_report_names_the_target_and_every_runtime() -> None:
    lines = tb.report(_steps(STEADY), target_s=0.0)
    assert lines[0].startswith("18 scored batches")
    assert any(line.startswith("| gpu1 | 9 |") for line in lines)
    assert any(line.startswith("| edge | 9 |") for line in lines)


def test_the_days_line_knows_each_day_and_leaves_the_batch_out_when_asked() -> None:
    day = 86_400.0
    batches = [
        MeasuredBatch(d * day + 100 * i, "edge", n, {"processing": slope * n + 3})
        for d, slope in ((1, 1.5), (4, 2.5))
        for i, n in enumerate((10, 40, 25, 70, 55))
    ]
    steps = replay(Predictor.from_settings(Settings()), batches)
    rows = tb.scored_steps(steps)
    for leave_out in (True, False):
        assert tb.tp_mae(rows, tb.day_line(steps, leave_out=leave_out)) < 1e-9
    # With a batch off the day's line, only the line that holds it moves toward it.
    off = [*batches[:-1], MeasuredBatch(batches[-1].at, "edge", 55, {"processing": 200.0})]
    steps = replay(Predictor.from_settings(Settings()), off)
    last = steps[-1]
    assert tb.day_line(steps, leave_out=True)(last) == pytest.approx(2.5 * 55 + 3)
    assert tb.day_line(steps, leave_out=False)(last) > 2.5 * 55 + 3 + 1
