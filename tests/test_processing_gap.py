"""docs/evaluation/processing_gap.py: re-deciding a batch with one runtime's T_p the spec's."""

from __future__ import annotations

from stoic.schedule.decide.policy import select_min
from stoic.values import Component, Estimate, Risk
from tests.support.paths import REPO
from tests.support.scripts import load_script

pg = load_script(REPO / "docs" / "evaluation" / "processing_gap.py")


def test_the_edge_s_true_t_p_takes_back_a_batch_its_noisy_line_gave_cpu() -> None:
    """random-001's commonest costly pick: the edge's line 40 % high (and a 10 % tail on
    it) sends a small batch to CPU; with the edge's T_p the spec's, the edge keeps it,
    and CPU's T_p replaced alone changes nothing."""
    estimates = {
        "edge": Estimate(
            "edge", Component(0, 0), Component(0, 0), Component(45, 5), Risk(processing_excess=0.1)
        ),
        "cpu": Estimate("cpu", Component(3, 1), Component(12, 2), Component(24, 3)),
    }
    truth = {"edge": {"t_p": 36.0}, "cpu": {"t_p": 24.0, "t_t": 3.0, "t_d": 12.0}}
    assert select_min(estimates, objective="expected") == "cpu"
    fixed = pg.with_true_tp(estimates, truth, {"edge"})
    assert fixed["edge"].processing.mean == 36.0 and fixed["edge"].risk.processing_excess == 0.0
    assert fixed["cpu"] is estimates["cpu"]
    assert select_min(fixed, objective="expected") == "edge"
    assert select_min(pg.with_true_tp(estimates, truth, {"cpu"}), objective="expected") == "cpu"
    assert pg.with_true_tp(estimates, truth, {"gpu1"}) == estimates
