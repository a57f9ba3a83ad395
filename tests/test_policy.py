from __future__ import annotations

import pytest

from stoic.errors import PredictorError
from stoic.schedule.decide.policy import PolicyOptions, decide, keep_cloud, select_min
from stoic.values import Component, Estimate, Job, Mode, RacePlan, Risk


def est(name: str, t: float, d: float, p: float, risk: Risk | None = None) -> Estimate:
    return Estimate(name, Component(t), Component(d), Component(p), risk or Risk())


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
    assert plan.chosen == expected
    assert not isinstance(plan, RacePlan)
    assert plan.estimates == table


def test_selector_ignores_unavailable_runtime() -> None:
    table = {k: v for k, v in TABLE.items() if k != "gpu1"}
    assert decide(Mode.SELECTOR, JOB, table).chosen == "gpu2"


def test_duplicator_speculates_on_edge() -> None:
    plan = decide(Mode.DUPLICATOR, JOB, TABLE, options=PolicyOptions(duplicator_runtime="gpu2"))
    assert isinstance(plan, RacePlan) and (plan.cloud, plan.edge) == ("gpu2", "edge")


def test_duplicator_falls_back_to_edge_without_gpu() -> None:
    table = {k: v for k, v in TABLE.items() if k != "gpu1"}
    plan = decide(Mode.DUPLICATOR, JOB, table, options=PolicyOptions(duplicator_runtime="gpu1"))
    assert plan.chosen == "edge" and not isinstance(plan, RacePlan)
    assert "unavailable" in plan.reason


@pytest.mark.parametrize(("n", "expected"), [(34, "edge"), (35, "gpu1"), (2000, "gpu1")])
def test_threshold(n: int, expected: str) -> None:
    job = Job("b", n_images=n, n_bytes=n)
    assert decide(Mode.THRESHOLD, job, TABLE).chosen == expected


def test_oracle_uses_truth_from_its_options_and_needs_it() -> None:
    truth = {"edge": 90.0, "cpu": 80.0, "gpu1": 99.0, "gpu2": 81.0}
    asked: list[str] = []

    def oracle(job: Job) -> dict[str, float]:
        asked.append(job.batch_id)
        return truth

    assert decide(Mode.ORACLE, JOB, TABLE, options=PolicyOptions(oracle=oracle)).chosen == "cpu"
    assert asked == [JOB.batch_id]
    with pytest.raises(PredictorError, match="ground truth"):
        decide(Mode.ORACLE, JOB, TABLE)


def test_pinned_and_baselines() -> None:
    assert decide(Mode.PINNED, JOB, TABLE, pinned="cpu").chosen == "cpu"
    assert decide(Mode.EDGE_ONLY, JOB, TABLE).chosen == "edge"
    assert decide(Mode.GPU1_ONLY, JOB, TABLE).chosen == "gpu1"


def test_no_runtime_is_an_error() -> None:
    with pytest.raises(PredictorError, match="no runtime"):
        select_min({})


def test_keep_cloud_compares_remaining_edge_with_cloud_processing() -> None:
    assert keep_cloud(Component(50), Component(20))
    assert not keep_cloud(Component(20), Component(50))
    assert not keep_cloud(Component(20), Component(20))  # tie keeps the edge


# Risk-aware objectives ------------------------------------------------------------------

RISKY = Risk(p_timeout=0.1, timeout_s=600.0, deployment_excess_s=0.0)


def test_expected_objective_prices_timeouts_at_timeout_plus_fallback() -> None:
    # gpu1: 55 s, but one deployment in ten times out, then the requester falls back to
    # the runtime predicted soonest among the others (gpu2, 65 s): 0.9*55 + 0.1*665.
    table = dict(TABLE, gpu1=est("gpu1", 5, 30, 20, RISKY))
    mean = decide(Mode.SELECTOR, JOB, table, options=PolicyOptions(objective="mean"))
    expected = decide(Mode.SELECTOR, JOB, table, options=PolicyOptions(objective="expected"))
    assert mean.runtime == "gpu1"
    assert expected.runtime == "gpu2"  # 65 s and no risk
    assert expected.scores["gpu1"] == pytest.approx(0.9 * 55 + 0.1 * (600 + 65))
    assert expected.scores["edge"] == 100 and "expected T_s" in expected.reason


def test_expected_objective_adds_the_deployment_tail() -> None:
    tail = Risk(deployment_excess_s=12.0)
    table = dict(TABLE, gpu1=est("gpu1", 5, 30, 20, tail))
    plan = decide(Mode.SELECTOR, JOB, table)  # default objective: expected
    assert plan.scores["gpu1"] == 67 and plan.chosen == "gpu2"  # 67 > 65


def test_expected_objective_adds_the_processing_tail_of_the_edge_too() -> None:
    # The edge's line says 52 s, but its runs are congested: E[T_p] is 25 % more (65 s),
    # which the gpu1 pod (55 s) beats. The mean objective keeps the edge.
    congested = est("edge", 0, 0, 52, Risk(processing_excess=0.25))
    table = dict(TABLE, edge=congested)
    mean = PolicyOptions(objective="mean")
    assert decide(Mode.SELECTOR, JOB, table, options=mean).chosen == "edge"
    plan = decide(Mode.SELECTOR, JOB, table)
    assert plan.chosen == "gpu1" and plan.scores["edge"] == pytest.approx(65.0)
    # A cloud runtime's processing tail is priced the same way, not its transfer or T_d.
    tailed = dict(TABLE, gpu1=est("gpu1", 5, 30, 20, Risk(processing_excess=0.5)))
    assert decide(Mode.SELECTOR, JOB, tailed).scores["gpu1"] == pytest.approx(65.0)


def test_quantile_objective_uses_the_deployment_quantile() -> None:
    q = Risk(p_timeout=0.01, timeout_s=600.0, deployment_quantile_s=90.0)
    beyond = Risk(p_timeout=0.2, timeout_s=600.0, deployment_quantile_s=None)
    table = dict(TABLE, gpu1=est("gpu1", 5, 30, 20, q), gpu2=est("gpu2", 5, 45, 15, beyond))
    plan = decide(Mode.SELECTOR, JOB, table, options=PolicyOptions(objective="quantile"))
    assert plan.scores["gpu1"] == 5 + 90 + 20
    assert plan.scores["gpu2"] == 600 + 55  # the quantile is a timeout, then the fallback (gpu1)
    assert plan.chosen == "cpu"  # 85 s, no risk drawn


# The adaptive duplicator -----------------------------------------------------------------


def test_auto_duplicator_races_the_pod_that_finishes_first() -> None:
    # Upload and deployment overlap: cpu max(5,10)+70 = 80, gpu1 30+20 = 50, gpu2 45+15 = 60.
    plan = decide(Mode.DUPLICATOR, JOB, TABLE)
    assert (plan.chosen, isinstance(plan, RacePlan)) == ("gpu1", True)
    assert plan.scores == {"cpu": 80, "gpu1": 50, "gpu2": 60, "edge": 100}


def test_auto_duplicator_can_choose_the_cpu_pod() -> None:
    table = dict(TABLE, gpu1=est("gpu1", 5, 300, 20), gpu2=est("gpu2", 5, 400, 15))
    plan = decide(Mode.DUPLICATOR, JOB, table)
    assert (plan.chosen, isinstance(plan, RacePlan)) == ("cpu", True)


def test_auto_duplicator_deploys_no_pod_when_the_edge_wins_by_the_margin() -> None:
    table = dict(TABLE, edge=est("edge", 0, 0, 44))  # best pod 50 s: 44 <= 0.9 * 50
    plan = decide(Mode.DUPLICATOR, JOB, table)
    assert (plan.chosen, isinstance(plan, RacePlan)) == ("edge", False)
    assert "no pod" in plan.reason
    close = dict(TABLE, edge=est("edge", 0, 0, 46))  # within the margin: hedge with a pod
    assert isinstance(decide(Mode.DUPLICATOR, JOB, close), RacePlan)
    wide = PolicyOptions(edge_margin=0.0)
    assert not isinstance(decide(Mode.DUPLICATOR, JOB, close, options=wide), RacePlan)


def test_auto_duplicator_prices_a_timeout_as_the_edge_keeping_the_batch() -> None:
    table = dict(TABLE, gpu1=est("gpu1", 5, 30, 20, RISKY))
    plan = decide(Mode.DUPLICATOR, JOB, table)
    assert plan.scores["gpu1"] == pytest.approx(0.9 * 50 + 0.1 * 100)
    assert plan.chosen == "gpu1"  # 55 s still beats gpu2's 60 s


def test_auto_duplicator_without_edge_or_cloud() -> None:
    no_edge = {k: v for k, v in TABLE.items() if k != "edge"}
    plan = decide(Mode.DUPLICATOR, JOB, no_edge)
    assert (plan.chosen, isinstance(plan, RacePlan)) == ("gpu1", False)
    only_edge = {"edge": TABLE["edge"]}
    plan = decide(Mode.DUPLICATOR, JOB, only_edge)
    assert (plan.chosen, isinstance(plan, RacePlan)) == ("edge", False)


def test_auto_duplicator_deploys_a_pod_when_the_edge_estimate_is_an_extrapolation() -> None:
    """An edge T_p line fitted on batches of at most 20 images may call a 40-image
    batch quick; the duplicator then hedges with a pod instead of trusting it alone."""
    fast_edge = dict(TABLE, edge=est("edge", 0, 0, 44))  # 44 <= 0.9 * 50: no pod...
    seen_20 = dict(fast_edge, edge=Estimate("edge", Component(0), Component(0),
                                            Component(44), processing_seen=20))  # fmt: skip
    seen_40 = dict(fast_edge, edge=Estimate("edge", Component(0), Component(0),
                                            Component(44), processing_seen=40))  # fmt: skip
    assert isinstance(decide(Mode.DUPLICATOR, JOB, seen_20), RacePlan)  # 40 > 20 seen
    assert not isinstance(decide(Mode.DUPLICATOR, JOB, seen_40), RacePlan)


def test_share_deploys_a_second_pod_as_insurance_against_the_first_timing_out() -> None:
    # A slow edge (10 s/image); GPU1 fast and likely ready first; the CPU pod adds
    # little while GPU1 works. With GPU1's timeouts priced only on its own gain, the
    # CPU pod is not worth 5 s; in expectation over GPU1 timing out (then the edge
    # alone would take 1,000 s) it is.
    job = Job("b", n_images=100, n_bytes=100)

    def line(name: str, d: float, per_image: float, p_timeout: float) -> Estimate:
        risk = Risk(p_timeout=p_timeout, timeout_s=600.0)
        return Estimate(
            name,
            Component(0.0),
            Component(d),
            Component(per_image * 100),
            risk,
            processing_line=(per_image, 0.0),
        )

    table = {"edge": line("edge", 0, 10.0, 0.0), "gpu1": line("gpu1", 10, 0.1, 0.0),
             "cpu": line("cpu", 20, 1.0, 0.0)}  # fmt: skip
    assert decide(Mode.SHARE, job, table).clouds == ("gpu1",)  # gpu1 done at ~20 s
    risky = dict(table, gpu1=line("gpu1", 10, 0.1, 0.05))
    plan = decide(Mode.SHARE, job, risky)
    assert plan.clouds == ("gpu1", "cpu")
    # 5 % x (edge alone 1,000 s vs edge + cpu ~ 109 s) = ~45 s of insurance.
    assert plan.scores["cpu"] > 40
