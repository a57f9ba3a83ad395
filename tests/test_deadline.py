"""Deploy deadlines and pipelined uploads (stoic.schedule.decide.deadline): the choice on
known distributions, the policy's plans, and the requester executing them on the fake
backend and virtual time (every duration exact)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stoic.backends.simulated import EnvSpec, SimEnvironment
from stoic.errors import DeployAbandoned
from stoic.replay.runner import DEFAULT_ENV
from stoic.schedule.decide.budget import Price
from stoic.schedule.decide.deadline import (
    DeadlineChoice,
    Deployments,
    choose_deadline,
    cloud_choice,
    expected_at,
    pod_s_at,
    race_deadline,
)
from stoic.schedule.decide.policy import PolicyOptions, decide
from stoic.settings import Settings
from stoic.values import (
    Component,
    DeploymentSample,
    DeployOutcome,
    Estimate,
    Job,
    Mode,
    RacePlan,
    Risk,
    SinglePlan,
    TransferSample,
    fallback_after,
)
from tests.support.core import EPOCH, JOB, TABLE, World, est, make_world

TIMEOUT = 600.0
BIMODAL = Deployments([10.0] * 50 + [500.0] * 50, 0.0, TIMEOUT)


# The choice on known distributions ------------------------------------------------------


def test_a_bimodal_deployment_is_abandoned_after_its_fast_mode() -> None:
    # Ready at 10 s half the time (total 30 s), at 500 s otherwise: waiting costs
    # 0.5·30 + 0.5·520 = 275 s; abandoning at 10 s costs 0.5·30 + 0.5·(10 + 60) = 50 s.
    choice = choose_deadline(BIMODAL, overlap_s=0, after_s=20, fallback_s=60)
    assert choice.deadline_s == 10.0
    assert choice.expected_s == pytest.approx(50.0)
    assert expected_at(BIMODAL, TIMEOUT, overlap_s=0, after_s=20, fallback_s=60) == 275.0


def test_no_deadline_where_the_fallback_is_slower_than_the_tail() -> None:
    # The fallback takes 2,000 s: waiting for the slow mode beats giving up on it.
    choice = choose_deadline(BIMODAL, overlap_s=0, after_s=20, fallback_s=2_000)
    assert choice.deadline_s is None
    assert choice.expected_s == pytest.approx(275.0)


def test_a_deadline_that_buys_less_than_the_minimum_gain_is_not_set() -> None:
    # A tight distribution with a rare timeout: a deadline at the slowest sample saves
    # p·(600 − 31) ≈ 0.3 s in expectation, under the 1 s asked for.
    tight = Deployments([30.0, 30.5, 31.0], 0.0005, TIMEOUT)
    assert choose_deadline(tight, overlap_s=0, after_s=20, fallback_s=60).deadline_s == 31.0
    kept = choose_deadline(tight, overlap_s=0, after_s=20, fallback_s=60, min_gain_s=1.0)
    assert kept.deadline_s is None
    assert kept.expected_s == pytest.approx(
        expected_at(tight, TIMEOUT, overlap_s=0, after_s=20, fallback_s=60)
    )


deployments = st.builds(
    Deployments,
    st.lists(st.floats(0.0, 700.0), min_size=1, max_size=40),
    st.floats(0.0, 0.6),
    st.just(TIMEOUT),
)
seconds = st.floats(0.0, 300.0)


@settings(max_examples=200, deadline=None)
@given(deployments, seconds, seconds, seconds, st.floats(0.0, 5.0))
def test_the_deadline_is_never_worse_in_expectation_than_none(
    dist: Deployments, overlap: float, after: float, fallback: float, min_gain: float
) -> None:
    kw: dict[str, Any] = {"overlap_s": overlap, "after_s": after, "fallback_s": fallback}
    choice = choose_deadline(dist, min_gain_s=min_gain, **kw)
    none = expected_at(dist, TIMEOUT, **kw)
    assert choice.expected_s <= none + 1e-9
    # What it says it expects is what its deadline gives.
    d = TIMEOUT if choice.deadline_s is None else choice.deadline_s
    assert choice.expected_s == pytest.approx(expected_at(dist, d, **kw), rel=1e-9, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(deployments, seconds, seconds, seconds, st.floats(0.0, TIMEOUT), st.floats(0.0, 2.0))
def test_no_deadline_in_between_beats_the_chosen_one(
    dist: Deployments, overlap: float, after: float, fallback: float, other: float, price: float
) -> None:
    # Below the fastest sample a deadline only ever falls back: not choosing the runtime
    # at all, which the selector weighs by itself. At a price, the objective is the
    # expected total plus the price of the pod-seconds held, and the choice says both.
    other = max(other, min(dist.ready_s))
    kw: dict[str, Any] = {"overlap_s": overlap, "after_s": after, "fallback_s": fallback}
    pod: dict[str, Any] = {"overlap_s": overlap, "after_s": after}

    def objective(d: float) -> float:
        return expected_at(dist, d, **kw) + price * pod_s_at(dist, d, **pod)

    choice = choose_deadline(dist, pod_price=price, **kw)
    chosen = TIMEOUT if choice.deadline_s is None else choice.deadline_s
    assert choice.pod_s == pytest.approx(pod_s_at(dist, chosen, **pod), rel=1e-9, abs=1e-9)
    assert choice.expected_s + price * choice.pod_s <= objective(other) + 1e-6


def test_a_price_on_pod_seconds_gives_up_on_a_slow_deployment_sooner() -> None:
    # Ready in 10 s or 100 s, then 30 s of upload and processing; the fallback takes
    # 140 s. Waiting expects 85 s (and holds the pod 85 s), giving up at 10 s 95 s (25
    # s held): no deadline for free, one at a price above 1/6 s per pod-second.
    dist = Deployments([10.0] * 50 + [100.0] * 50, 0.0, TIMEOUT)
    kw: dict[str, Any] = {"overlap_s": 0, "after_s": 30, "fallback_s": 140}
    assert choose_deadline(dist, **kw) == DeadlineChoice(None, 85.0, 85.0)
    assert choose_deadline(dist, pod_price=0.5, **kw) == DeadlineChoice(10.0, 95.0, 25.0)


def _cloud(transfer: float, ready: tuple[float, ...], processing: float) -> Estimate:
    risk = Risk(0.0, TIMEOUT, ready_s=ready)
    return Estimate("gpu1", Component(transfer), Component(ready[0]), Component(processing), risk)


def test_a_pipelined_upload_overlaps_the_deployment() -> None:
    e = _cloud(50.0, (30.0,), 10.0)
    sequential = cloud_choice(e, 500.0, deadline=False, pipelined=False)
    pipelined = cloud_choice(e, 500.0, deadline=False, pipelined=True)
    assert sequential.expected_s == 90.0  # 50 + 30 + 10
    assert pipelined.expected_s == 60.0  # max(50, 30) + 10


def test_no_deadline_on_too_few_deployments() -> None:
    # Nine fast deployments and a timeout rate of 10 %: too little to give up on a
    # tenth that is slower, however much a deadline would promise.
    few = Estimate("gpu1", Component(5), Component(10), Component(30), Risk(0.1, TIMEOUT))
    few = replace(few, risk=replace(few.risk, ready_s=(10.0,) * 9))
    assert cloud_choice(few, 100.0, deadline=True, pipelined=False).deadline_s is None
    more = replace(few, risk=replace(few.risk, ready_s=(10.0,) * 10))
    assert cloud_choice(more, 100.0, deadline=True, pipelined=False).deadline_s == 10.0


def test_the_race_gives_up_when_the_pod_could_no_longer_beat_the_edge() -> None:
    cloud = est("gpu1", 5, 30, 30)
    assert race_deadline(100.0, cloud, TIMEOUT) == 70.0
    assert race_deadline(1_000.0, cloud, TIMEOUT) is None


# The policy -------------------------------------------------------------------------------

ACTIONS = PolicyOptions(deploy_deadline=True, pipelined_upload=True)


def _bimodal_table() -> dict[str, Estimate]:
    """gpu1 ready in 10 s or 500 s, its transfer 5 s; the edge takes 100 s."""
    risk = Risk(0.0, TIMEOUT, 245.0, ready_s=(10.0,) * 50 + (500.0,) * 50)
    gpu1 = Estimate("gpu1", Component(5), Component(10), Component(30), risk)
    return {"edge": TABLE["edge"], "gpu1": gpu1}


def test_the_selector_plans_a_deadline_and_a_pipelined_upload() -> None:
    plan = decide(Mode.SELECTOR, JOB, _bimodal_table(), options=ACTIONS)
    assert isinstance(plan, SinglePlan) and plan.runtime == "gpu1"
    assert plan.deadlines == {"gpu1": 10.0} and plan.pipelined
    # 0.5·(max(5, 10) + 30) + 0.5·(10 + 100): the edge's 100 s after the deadline.
    assert plan.scores["gpu1"] == pytest.approx(75.0)
    assert "deadline 10 s" in plan.reason
    assert plan.estimates_as_dicts()["gpu1"]["deadline_s"] == 10.0


def test_a_binding_price_keeps_the_deadline_and_the_pipelined_upload() -> None:
    # gpu1 at its deadline: 75 s expected, and 0.5·40 + 0.5·10 = 25 pod-seconds held. At
    # 0.1 s per pod-second it still beats the edge (100 s) by its actions, which the
    # price enters rather than turns off; at 2 s the edge takes the batch.
    table = _bimodal_table()
    priced = decide(Mode.SELECTOR, JOB, table, options=ACTIONS, price=Price(0.1, 1e6))
    assert isinstance(priced, SinglePlan) and priced.runtime == "gpu1"
    assert priced.deadlines == {"gpu1": 10.0} and priced.pipelined
    assert priced.scores["gpu1"] == pytest.approx(75.0 + 0.1 * 25.0)
    assert "deadline 10 s" in priced.reason and "cloud price" in priced.reason
    dear = decide(Mode.SELECTOR, JOB, table, options=ACTIONS, price=Price(2.0, 1e6))
    assert dear.chosen == "edge"


def test_a_price_moves_the_selectors_deadline_earlier() -> None:
    # gpu1 ready in 10 s or 100 s (of 20 samples); the edge takes 140 s. Free, waiting
    # for the slow mode pays; at 0.5 s per pod-second giving up at 10 s does.
    risk = Risk(0.0, TIMEOUT, 45.0, ready_s=(10.0,) * 10 + (100.0,) * 10)
    table = {
        "edge": est("edge", 0, 0, 140),
        "gpu1": Estimate("gpu1", Component(5), Component(10), Component(25), risk),
    }
    options = replace(ACTIONS, pipelined_upload=False)
    assert decide(Mode.SELECTOR, JOB, table, options=options).deadlines == {}
    priced = decide(Mode.SELECTOR, JOB, table, options=options, price=Price(0.5, 1e6))
    assert priced.chosen == "gpu1" and priced.deadlines == {"gpu1": 10.0}


def test_a_priced_race_counts_the_pod_seconds_its_deadline_saves() -> None:
    # gpu1 ready in 10 s nine times in ten, else in 500 s (excess 49 s over the median):
    # the race finishes in 89 s against the edge's 100 s, an 11 s gain. Without its
    # deadline the leg is priced for 89 pod-seconds; with one at 70 s (100 − 30) a slow
    # pod is released then: 0.9 · 40 + 0.1 · 70 = 43. At 0.2 s per pod-second only the
    # race with a deadline pays.
    risk = Risk(0.0, TIMEOUT, 49.0, ready_s=(10.0,) * 18 + (500.0,) * 2)
    table = {
        "edge": TABLE["edge"],
        "gpu1": Estimate("gpu1", Component(5), Component(10), Component(30), risk),
    }
    options = replace(ACTIONS, duplicator_runtime="gpu1")
    price = Price(0.2, 1e6)
    plan = decide(Mode.DUPLICATOR, Job("b", 40, 1), table, options=options, price=price)
    assert isinstance(plan, RacePlan) and plan.deadlines == {"gpu1": 70.0}
    bare = replace(options, deploy_deadline=False)
    assert (
        decide(Mode.DUPLICATOR, Job("b", 40, 1), table, options=bare, price=price).chosen == "edge"
    )


def test_an_abandoned_deployment_falls_back_at_the_fallbacks_expected_total() -> None:
    # gpu2 looks fast on its bare mean (50 s) but half its deployments take 520 s: its
    # expected total is 300 s. gpu1 is slow (ready in 20 s one time in twenty, else 300 s).
    # Abandoned at 20 s, gpu1 falls back to gpu2 priced at its mean, 50 s, would "cost"
    # 0.05·55 + 0.95·(20 + 50) = 69 s and pass for a cheap gpu2; at gpu2's expected
    # total its fallback is the edge, 100 s (116.75 s): gpu2 with its own deadline wins,
    # 0.5·(20 + 30) + 0.5·(20 + 100) = 85 s.
    gpu2_risk = Risk(0.0, TIMEOUT, 250.0, ready_s=(20.0,) * 10 + (520.0,) * 10)
    gpu1_risk = Risk(0.0, TIMEOUT, 0.0, ready_s=(20.0,) + (300.0,) * 19)
    table = {
        "edge": TABLE["edge"],
        "gpu1": Estimate("gpu1", Component(5), Component(300), Component(30), gpu1_risk),
        "gpu2": Estimate("gpu2", Component(5), Component(20), Component(25), gpu2_risk),
    }
    plan = decide(Mode.SELECTOR, JOB, table, options=replace(ACTIONS, pipelined_upload=False))
    assert plan.chosen == "gpu2" and plan.deadlines["gpu2"] == 20.0
    assert plan.scores["gpu1"] == pytest.approx(0.05 * 55 + 0.95 * 120)


def test_selector_paper_keeps_the_papers_actions_whatever_the_options() -> None:
    table = _bimodal_table()
    paper = decide(Mode.SELECTOR_PAPER, JOB, table, options=ACTIONS)
    today = decide(Mode.SELECTOR, JOB, table)
    assert not paper.deadlines and not paper.pipelined
    assert (paper.chosen, paper.scores, paper.reason) == (today.chosen, today.scores, today.reason)
    assert paper.chosen == "edge"  # gpu1 without a deadline: 45 s + 245 s of tail


def test_the_duplicators_cloud_leg_gets_the_race_deadline() -> None:
    options = replace(ACTIONS, duplicator_runtime="gpu1")
    plan = decide(Mode.DUPLICATOR, Job("b", 40, 1), dict(TABLE), options=options)
    assert isinstance(plan, RacePlan) and plan.deadlines == {"gpu1": 70.0}  # 100 − 30


# A fallback leg's own deadline (policy.deploy_deadline_fallback) --------------------------

CHAINED = replace(ACTIONS, pipelined_upload=False, fallback_deadline=True)


def _two_bimodal_pods(edge_s: float = 100.0, gpu1_slow_s: float = 500.0) -> dict[str, Estimate]:
    """gpu1 ready in 10 s or 500 s (then 35 s of upload and processing), gpu2 in 20 s or
    400 s (then 30 s), half and half; the edge takes 100 s. By their predicted (median)
    totals gpu1 (45 s) goes first, then gpu2 (50 s), then the edge."""
    gpu1 = Risk(0.0, TIMEOUT, (gpu1_slow_s - 10) / 2, ready_s=(10.0,) * 10 + (gpu1_slow_s,) * 10)
    gpu2 = Risk(0.0, TIMEOUT, 190.0, ready_s=(20.0,) * 10 + (400.0,) * 10)
    return {
        "edge": est("edge", 0, 0, edge_s),
        "gpu1": Estimate("gpu1", Component(5), Component(10), Component(30), gpu1),
        "gpu2": Estimate("gpu2", Component(5), Component(20), Component(25), gpu2),
    }


def test_a_fallback_leg_gets_its_own_deadline_priced_as_a_fallback() -> None:
    # gpu1 abandoned at 10 s falls back to gpu2, whose own fallback is the edge: abandoned
    # at 20 s it costs 0.5·50 + 0.5·(20 + 100) = 85 s, against 240 s waiting for its pod.
    # gpu1 with that fallback: 0.5·45 + 0.5·(10 + 85) = 70 s. First, gpu2 falls back on
    # gpu1 (0.5·45 + 0.5·(10 + 100) = 77.5 s): 0.5·50 + 0.5·(20 + 77.5) = 73.75 s.
    plan = decide(Mode.SELECTOR, JOB, _two_bimodal_pods(), options=CHAINED)
    assert isinstance(plan, SinglePlan) and plan.runtime == "gpu1"
    assert plan.deadlines == {"gpu1": 10.0, "gpu2": 20.0}
    assert plan.fallback_deadlines == {"gpu2": 20.0}
    assert plan.scores == pytest.approx({"edge": 100.0, "gpu1": 70.0, "gpu2": 73.75})


def test_without_the_setting_a_fallback_leg_has_no_deadline_and_nothing_moves() -> None:
    # Off (the default): gpu1's fallback is priced waiting for its pod, as today
    # (0.5·45 + 0.5·(10 + 100) = 77.5 s: the edge beats gpu2's 240 s), and the plan
    # gives the fallback legs no deadline.
    table = _two_bimodal_pods()
    off = decide(Mode.SELECTOR, JOB, table, options=replace(CHAINED, fallback_deadline=False))
    assert PolicyOptions().fallback_deadline is False
    assert isinstance(off, SinglePlan) and off.fallback_deadlines == {}
    assert off.scores["gpu1"] == pytest.approx(77.5)
    today = decide(Mode.SELECTOR, JOB, table, options=replace(ACTIONS, pipelined_upload=False))
    assert off == today
    # The rule needs the deadline: without one nothing has a deadline.
    bare = decide(Mode.SELECTOR, JOB, table, options=replace(CHAINED, deploy_deadline=False))
    assert isinstance(bare, SinglePlan) and not bare.deadlines and not bare.fallback_deadlines


def _informed_env(
    monkeypatch: pytest.MonkeyPatch, edge_s: float, ready: dict[str, tuple[float, float]]
) -> SimEnvironment:
    """An environment whose informed draws are two, half and half: each cloud runtime
    ready at ``ready[name]``'s T_d then done 30 s later (gpu1: 35 s), the edge at
    ``edge_s``."""
    dep = {n: np.array(d) for n, d in ready.items()}
    ok = {"edge": np.array([edge_s, edge_s])}
    ok |= {n: d + (35 if n == "gpu1" else 30) for n, d in dep.items()}

    def dice(
        env: SimEnvironment, job: Job, at_s: float, draws: int, **kw: Any
    ) -> dict[str, np.ndarray]:
        if kw.get("deployments") is not None:
            kw["deployments"].update(dep)
        return dict(ok)

    monkeypatch.setattr(SimEnvironment, "_dice", dice)
    return SimEnvironment(EnvSpec.load(DEFAULT_ENV), Settings().runtime_list(), seed=0)


def test_the_informed_reference_prices_the_chain_as_the_selector_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two pods the informed reference knows as draws, and the selector as the same
    # distributions, both ranking fallbacks gpu1, gpu2, the edge (300 s): the selector by
    # its predicted totals (45 s, 50 s), the reference by its expected totals (190 s,
    # 240 s). gpu2 as gpu1's fallback: 0.5·50 + 0.5·(20 + 300) = 185 s; gpu1 then
    # 0.5·45 + 0.5·(10 + 185) = 120 s. gpu1 as gpu2's: 0.5·45 + 0.5·(10 + 300) = 177.5 s;
    # gpu2 then 0.5·50 + 0.5·(20 + 177.5) = 123.75 s. The same, chain for chain.
    table = _two_bimodal_pods(edge_s=300.0, gpu1_slow_s=300.0)
    env = _informed_env(monkeypatch, 300.0, {"gpu1": (10.0, 300.0), "gpu2": (20.0, 400.0)})
    chains: dict[str, dict[str, float]] = {}
    ranking: dict[str, float] = {}
    totals, deadlines = env.expected_with_actions(
        JOB, 0.0, deadline=True, pipelined=False, fallbacks=chains, ranking=ranking
    )
    plan = decide(Mode.SELECTOR, JOB, table, options=CHAINED)
    assert ranking == {"edge": 300.0, "gpu1": 190.0, "gpu2": 240.0}
    assert plan.scores == pytest.approx({"edge": 300.0, "gpu1": 120.0, "gpu2": 123.75})
    assert totals == pytest.approx(dict(plan.scores))
    assert deadlines == plan.deadlines == {"gpu1": 10.0, "gpu2": 20.0}
    assert isinstance(plan, SinglePlan) and chains["gpu1"] == plan.fallback_deadlines
    assert chains == {"edge": {}, "gpu1": {"gpu2": 20.0}, "gpu2": {"gpu1": 10.0}}
    # Without the rule, gpu1's fallback waits for its pod: 0.5·45 + 0.5·(10 + 240).
    plain, _ = env.expected_with_actions(JOB, 0.0, deadline=True, pipelined=False)
    assert plain["gpu1"] == pytest.approx(147.5)


def test_the_informed_reference_prices_the_chain_the_requester_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # After gpu1 (ready in 5 s or 595 s) the requester falls back to gpu2, its expected
    # total (240 s) the least that beats the edge's 300 s; cpu (ready in 10 s or 590 s:
    # 330 s expected) never, as it does not. The best order would run cpu first, at its
    # 10 s deadline, then gpu2 (117.5 s): a chain the requester never runs. gpu2 with
    # the edge after it, abandoned at 20 s: 0.5·50 + 0.5·(20 + 300) = 185 s, so gpu1
    # costs 0.5·40 + 0.5·(5 + 185) = 115 s (81.25 s priced on the best order).
    ready = {"gpu1": (5.0, 595.0), "gpu2": (20.0, 400.0), "cpu": (10.0, 590.0)}
    env = _informed_env(monkeypatch, 300.0, ready)
    chains: dict[str, dict[str, float]] = {}
    ranking: dict[str, float] = {}
    totals, deadlines = env.expected_with_actions(
        JOB, 0.0, deadline=True, pipelined=False, fallbacks=chains, ranking=ranking
    )
    assert fallback_after(ranking, "edge", ["gpu1"]) == "gpu2"
    assert fallback_after(ranking, "edge", ["gpu1", "gpu2"]) == "edge"
    assert chains["gpu1"] == {"gpu2": 20.0}
    assert (totals["gpu1"], deadlines["gpu1"]) == (pytest.approx(115.0), 5.0)


@given(
    st.dictionaries(
        st.sampled_from(["edge", "cpu", "gpu1", "gpu2", "gpu3"]),
        st.floats(0.0, 1e4),
        min_size=1,
    ),
    st.sets(st.sampled_from(["edge", "cpu", "gpu1", "gpu2", "gpu3"])),
    st.sets(st.sampled_from(["cpu", "gpu1", "gpu2", "gpu3"])),
)
def test_the_fallback_is_the_least_untried_total_that_beats_the_edge(
    totals: dict[str, float], tried: set[str], down: set[str]
) -> None:
    # The one rule the requester, the selector's chain and the informed reference share.
    got = fallback_after(totals, "edge", tried, lambda n: n not in down)
    if "edge" in tried:
        assert got is None
        return
    rivals = {n: t for n, t in totals.items() if n not in tried | down | {"edge"}}
    beat = {n: t for n, t in rivals.items() if t < totals.get("edge", np.inf)}
    assert got == (min(beat, key=lambda n: beat[n]) if beat else "edge")


def test_the_informed_oracle_falls_back_by_the_spec_ranking() -> None:
    # The informed requester ranks its fallbacks by the spec's expected totals, among
    # the runtimes it was offered, not by the predictor's estimates.
    offered = {n: TABLE[n] for n in ("edge", "gpu1", "gpu2")}
    options = replace(
        CHAINED,
        oracle=lambda job: {"edge": 100.0, "gpu1": 50.0, "gpu2": 90.0},
        oracle_deadlines=lambda job: {"gpu1": 12.0},
        oracle_fallback_deadlines=lambda job: {"gpu1": {"gpu2": 20.0}},
        oracle_fallback_totals=lambda job: {"edge": 100.0, "cpu": 60.0, "gpu2": 80.0},
    )
    plan = decide(Mode.ORACLE, JOB, offered, options=options)
    assert isinstance(plan, SinglePlan) and plan.runtime == "gpu1"
    assert plan.fallback_totals == {"edge": 100.0, "gpu2": 80.0}  # cpu was not offered
    assert plan.fallback_deadlines == {"gpu2": 20.0}
    without = decide(
        Mode.ORACLE, JOB, offered, options=replace(options, oracle_fallback_totals=None)
    )
    assert isinstance(without, SinglePlan) and without.fallback_totals == {}


# The requester on the fake backend (virtual time) ------------------------------------------

pytestmark = pytest.mark.looptime


def _plan(runtime: str, **actions: Any) -> SinglePlan:
    return SinglePlan(runtime, mode=Mode.SELECTOR, reason="test", estimates=dict(TABLE), **actions)


@pytest.fixture
def world() -> World:
    return make_world()


async def test_a_deadline_abandons_the_deployment_and_falls_back(
    world: World, looptime: Any
) -> None:
    # gpu1 takes 30 s to deploy; its deadline is 12 s: abandoned then, the batch falls back
    # to gpu2 (75 s predicted, before the edge's 100 s) and runs there from 12 s.
    out = await world.requester.run(JOB, _plan("gpu1", deadlines={"gpu1": 12.0}))
    assert (out.runtime, out.fell_back) == ("gpu2", True)
    assert DeployAbandoned.__name__ in out.reason
    assert out.total_s == 12 + 45 + 5 + 2 + 25 and looptime == out.total_s
    assert world.fake.times("deploy", "gpu1") == [0.0]
    assert world.fake.live == {}  # nothing left deployed
    assert world.availability.is_available("gpu1")  # a deadline is not a timeout
    # No gpu1 sample: a deadline censors, only fast deployments would be learnt.
    assert [s.runtime for s in world.recorder.deployments] == ["gpu2"]


async def test_the_fallback_leg_waits_for_its_pod_as_its_price_assumed(world: World) -> None:
    # The deadline of gpu1 priced its fallback at gpu2's total with no deadline of its own.
    # gpu2's own deadline (20 s) was priced as a first choice, whose fallback could be
    # gpu1: on the fallback leg gpu1 is gone, and abandoning gpu2 too sent the batch on
    # to a third runtime (on random-000 such chains ended on a slow edge).
    plan = _plan("gpu1", deadlines={"gpu1": 12.0, "gpu2": 20.0})
    out = await world.requester.run(JOB, plan)
    assert (out.runtime, out.fell_back) == ("gpu2", True)
    assert out.total_s == 12 + 45 + 5 + 2 + 25
    assert out.reason.count(DeployAbandoned.__name__) == 1


async def test_a_fallback_leg_abandoned_at_its_own_deadline_falls_back_again(
    world: World, looptime: Any
) -> None:
    # gpu1 (30 s to deploy) is abandoned at 12 s; its fallback gpu2 (45 s) has the
    # deadline priced for it as a fallback, 20 s, and is abandoned too; the batch ends on
    # the next runtime predicted soonest and not yet tried, cpu (85 s, before the edge's
    # 100 s), which has no fallback deadline: 10 s to deploy, 5 s upload, 1 s warm-up,
    # 70 s.
    plan = _plan("gpu1", deadlines={"gpu1": 12.0, "gpu2": 5.0}, fallback_deadlines={"gpu2": 20.0})
    out = await world.requester.run(JOB, plan)
    assert (out.runtime, out.fell_back) == ("cpu", True)
    assert out.reason.count(DeployAbandoned.__name__) == 2
    assert out.abandoned == ("gpu1", "gpu2")  # the planned leg's, then the fallback leg's
    assert out.total_s == 12 + 20 + 10 + 5 + 1 + 70 and looptime == out.total_s
    assert world.fake.times("deploy", "gpu2") == [12.0]
    assert world.fake.live == {}


async def test_a_plan_with_fallback_totals_falls_back_by_them(world: World) -> None:
    # The informed oracle's plan ranks its fallbacks by the spec's totals: cpu (60 s)
    # before gpu2 (80 s), where the estimates would pick gpu2 (75 s, cpu 85 s).
    ranks = {"edge": 100.0, "cpu": 60.0, "gpu2": 80.0}
    plan = _plan("gpu1", deadlines={"gpu1": 12.0}, fallback_totals=ranks)
    out = await world.requester.run(JOB, plan)
    assert (out.runtime, out.fell_back, out.abandoned) == ("cpu", True, ("gpu1",))
    assert out.total_s == 12 + 10 + 5 + 1 + 70


async def test_a_deployment_ready_by_its_deadline_runs_there(world: World) -> None:
    out = await world.requester.run(JOB, _plan("gpu1", deadlines={"gpu1": 40.0}))
    assert (out.runtime, out.fell_back, out.total_s) == ("gpu1", False, 67)
    assert world.recorder.deployments == []  # censored all the same


async def test_a_pipelined_leg_uploads_while_its_pod_deploys(world: World, looptime: Any) -> None:
    out = await world.requester.run(JOB, _plan("gpu1", pipelined=True))
    # max(deploy 30, upload 5) + warm 2 + invoke 30 (sequential: 67)
    assert (out.deployment_s, out.transfer_s, out.total_s) == (30, 5, 62) and looptime == 62
    assert world.recorder.transfers == [TransferSample(JOB.n_bytes, 5.0, EPOCH, "gpu1")]
    assert world.recorder.deployments == [DeploymentSample("gpu1", EPOCH, 30.0, DeployOutcome.OK)]
    assert world.fake.live == {}


async def test_the_duplicator_abandons_a_pod_that_can_no_longer_win(world: World) -> None:
    # gpu2 deploys in 45 s; past its 20 s deadline the edge (100 s) keeps the batch alone.
    race = RacePlan(
        "gpu2",
        "edge",
        mode=Mode.DUPLICATOR,
        reason="t",
        estimates=dict(TABLE),
        deadlines={"gpu2": 20.0},
    )
    out = await world.requester.run(JOB, race)
    assert out.runtime == "edge" and "abandoned at its deadline of 20 s" in out.reason
    assert out.total_s == 100 and out.cloud_used_s == 0 and world.fake.live == {}
    assert world.fake.times("teardown", "gpu2") == []  # never ready: the backend cleaned up
