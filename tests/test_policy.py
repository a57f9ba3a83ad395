from __future__ import annotations

import pytest

from stoic.errors import PredictorError
from stoic.schedule.policy import PolicyOptions, decide, keep_cloud, select_min
from stoic.values import Component, Estimate, Job, Mode


def est(name: str, t: float, d: float, p: float) -> Estimate:
    return Estimate(name, Component(t), Component(d), Component(p))


TABLE = {
    "edge": est("edge", 0, 0, 100),
    "cpu": est("cpu", 5, 10, 70),
    "gpu1": est("gpu1", 5, 30, 20),
    "gpu2": est("gpu2", 5, 45, 15),
}
JOB = Job("b1", n_images=40, n_bytes=40 * 212_000)


@pytest.mark.parametrize(
    ("edge_p", "expected"),
    [(100, "gpu1"), (50, "edge"), (56, "gpu1"), (55, "edge")],  # gpu1 total = 55; tie → edge
)
def test_selector_picks_minimum_total(edge_p: float, expected: str) -> None:
    table = dict(TABLE, edge=est("edge", 0, 0, edge_p))
    plan = decide(Mode.SELECTOR, JOB, table)
    assert plan.runtime == expected
    assert not plan.speculative_edge
    assert plan.estimates == table


def test_selector_ignores_unavailable_runtime() -> None:
    table = {k: v for k, v in TABLE.items() if k != "gpu1"}
    assert decide(Mode.SELECTOR, JOB, table).runtime == "gpu2"


def test_duplicator_speculates_on_edge() -> None:
    plan = decide(Mode.DUPLICATOR, JOB, TABLE, options=PolicyOptions(duplicator_runtime="gpu2"))
    assert (plan.runtime, plan.speculative_edge, plan.edge_runtime) == ("gpu2", True, "edge")


def test_duplicator_falls_back_to_edge_without_gpu() -> None:
    table = {k: v for k, v in TABLE.items() if k != "gpu1"}
    plan = decide(Mode.DUPLICATOR, JOB, table)
    assert plan.runtime == "edge" and not plan.speculative_edge
    assert "unavailable" in plan.reason


@pytest.mark.parametrize(("n", "expected"), [(34, "edge"), (35, "gpu1"), (2000, "gpu1")])
def test_threshold(n: int, expected: str) -> None:
    job = Job("b", n_images=n, n_bytes=n)
    assert decide(Mode.THRESHOLD, job, TABLE).runtime == expected


def test_oracle_uses_truth_and_needs_it() -> None:
    truth = {"edge": 90.0, "cpu": 80.0, "gpu1": 99.0, "gpu2": 81.0}
    assert decide(Mode.ORACLE, JOB, TABLE, truth=truth).runtime == "cpu"
    with pytest.raises(PredictorError, match="ground truth"):
        decide(Mode.ORACLE, JOB, TABLE)


def test_pinned_and_baselines() -> None:
    assert decide(Mode.PINNED, JOB, TABLE, pinned="cpu").runtime == "cpu"
    assert decide(Mode.EDGE_ONLY, JOB, TABLE).runtime == "edge"
    assert decide(Mode.GPU1_ONLY, JOB, TABLE).runtime == "gpu1"


def test_no_runtime_is_an_error() -> None:
    with pytest.raises(PredictorError, match="no runtime"):
        select_min({})


def test_keep_cloud_compares_remaining_edge_with_cloud_processing() -> None:
    assert keep_cloud(Component(50), Component(20))
    assert not keep_cloud(Component(20), Component(50))
    assert not keep_cloud(Component(20), Component(20))  # tie keeps the edge
