"""docs/evaluation/tail_gap.py: the expected totals it prices picks by, and the
substitution of one component of an estimate by the spec's."""

from __future__ import annotations

import pytest

from stoic.schedule.decide.policy import select_min
from stoic.values import Component, Estimate, Risk
from tests.support.paths import REPO
from tests.support.scripts import load_script

tg = load_script(REPO / "docs" / "evaluation" / "tail_gap.py")


def test_a_timeout_costs_the_timeout_and_the_best_other_runtime() -> None:
    truth = {
        "edge": {"t_p": 100.0},
        "gpu1": {"t_p": 20.0, "t_t": 5.0, "t_d": 25.0, "t_d_median": 20.0, "p_timeout": 0.0},
        "gpu2": {"t_p": 10.0, "t_t": 5.0, "t_d": 35.0, "t_d_median": 18.0, "p_timeout": 0.1},
    }
    totals = tg.true_totals(truth, 600.0)
    assert totals["edge"] == 100.0
    assert totals["gpu1"] == 50.0
    assert totals["gpu2"] == pytest.approx(0.9 * 50.0 + 0.1 * (600.0 + 50.0))
    assert tg.true_totals({"gpu2": truth["gpu2"]}, 600.0)["gpu2"] == pytest.approx(
        0.9 * 50.0 + 0.1 * 650.0
    )


def test_the_spec_s_tail_flips_a_pick_the_estimate_s_tail_made() -> None:
    """GPU2's estimated tail (40 s of excess) makes GPU1 the pick; with the spec's
    excess (5 s) and nothing else replaced, GPU2 is."""
    estimates = {
        "gpu1": Estimate("gpu1", Component(5, 1), Component(20, 1), Component(20, 1)),
        "gpu2": Estimate(
            "gpu2", Component(5, 1), Component(18, 1), Component(10, 1), Risk(0.0, 600.0, 40.0)
        ),
    }
    truth = {
        "gpu1": {"t_p": 20.0, "t_t": 5.0, "t_d": 20.0, "t_d_median": 20.0, "p_timeout": 0.0},
        "gpu2": {"t_p": 10.0, "t_t": 5.0, "t_d": 23.0, "t_d_median": 18.0, "p_timeout": 0.0},
    }
    assert select_min(estimates, objective="expected") == "gpu1"
    for label, pick in (("none", "gpu1"), ("t_p", "gpu1"), ("excess", "gpu2"), ("all", "gpu2")):
        parts = tg.SUBSTITUTIONS[label]
        fixed = {n: tg.substituted(e, truth[n], parts) for n, e in estimates.items()}
        assert select_min(fixed, objective="expected") == pick, label
    kept = tg.substituted(estimates["gpu2"], truth["gpu2"], ("excess",))
    assert kept.deployment == Component(18, 1) and kept.risk.deployment_excess_s == 5.0
