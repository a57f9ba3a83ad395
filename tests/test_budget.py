"""The cloud budget: the price's pacing, the edge taking the work once it is spent, the
decisions of every mode at a price, probe pricing, the gauges, and the sweep's axis."""

from __future__ import annotations

import asyncio
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stoic.clock import local_midnight
from stoic.daemon.metrics import Metrics
from stoic.errors import InputError
from stoic.replay.runner import ReplayConfig, parse_mode, run_replay, with_budget
from stoic.replay.sweep import SweepConfig, discover_envs, run_sweep, with_budgets
from stoic.replay.sweep_report import budget_lines, write_sweep_report
from stoic.schedule.decide.budget import (
    DAY_S,
    FREE,
    BudgetOptions,
    CloudBudget,
    Price,
    probe_value,
)
from stoic.schedule.decide.policy import PolicyOptions, decide, keep_cloud
from stoic.settings import Settings
from stoic.values import Component, Estimate, Job, Mode, RacePlan, SharePlan
from tests.support.core import JOB as CORE_JOB
from tests.support.core import TABLE, make_world
from tests.support.daemon import start_daemon
from tests.support.paths import REPO
from tests.support.settings import make_settings

B = 10_000.0


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


def _market(seed: int, demand: float, days: int = 2) -> list[tuple[float, float]]:
    """A synthetic day of demand ``demand`` × the budget, run against the price: each
    decision offers cloud time c (U(20, 200) pod-seconds) that would save g = c·U(0, 3)
    seconds, taken where g > λ·c and it fits what is left. (noon, day) spending per day."""
    rng = random.Random(seed)
    clock = FakeClock()
    budget = CloudBudget(BudgetOptions(B), {"gpu1": 1}, clock.now)
    n = int(demand * B / 110)
    out = []
    for d in range(days):
        noon = None
        for x in sorted(rng.uniform(0, DAY_S) for _ in range(n)):
            clock.t = d * DAY_S + x
            if noon is None and x > DAY_S / 2:
                noon = budget.spent_today
            price = budget.price()
            c = rng.uniform(20, 200)
            if c * rng.uniform(0, 3) > price.per_pod_s * c and price.affordable("gpu1", c):
                budget.charge("gpu1", c)
        clock.t = d * DAY_S + DAY_S - 1
        out.append((noon or 0.0, budget.spent_today))
    return out


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), demand=st.floats(1.5, 6.0))
def test_a_day_never_spends_more_than_the_budget(seed: int, demand: float) -> None:
    """Demand of 1.5–6 times the budget: no day spends more than the budget (a property:
    ``affordable`` refuses what would not fit)."""
    for _, day in _market(seed, demand):
        assert day <= B


def test_price_paces_spending_to_the_budget_over_a_day() -> None:
    """Demand of 1.5–6 times the budget, 100 fixed seeds of two days: at least 98 % of
    days spend within 10 % of the budget and about half of it by noon, not all of it in
    the morning. A rate, not a property: with demand 1.5, hypothesis can draw a day whose
    late offers happen to be too few to spend the last 10 % (1 day of these 200 fails: seed
    70: 89.4 %)."""
    days = [
        (noon, day)
        for seed in range(100)
        for noon, day in _market(seed, 1.5 + 4.5 * (seed % 10) / 9)
    ]
    paced = [0.9 * B <= day <= B and 0.35 * B <= noon <= 0.65 * B for noon, day in days]
    assert np.mean(paced) >= 0.98


def test_price_falls_to_zero_when_the_budget_does_not_bind() -> None:
    assert all(day < 0.7 * B for _, day in _market(0, 0.5))  # demand below the budget
    clock = FakeClock(10.0)
    budget = CloudBudget(BudgetOptions(B), {}, clock.now)
    budget.charge("gpu1", 0.5 * B)
    clock.t = 600.0
    assert budget.price().per_pod_s > 0
    clock.t = DAY_S - 1.0  # the rest of the day spent nothing of what accrued
    assert budget.price().per_pod_s == 0.0


def test_a_new_day_starts_with_nothing_spent_and_the_price_kept() -> None:
    clock = FakeClock(3600.0)
    budget = CloudBudget(BudgetOptions(100.0), {"gpu2": 2}, clock.now)
    budget.charge("gpu2", 30.0)
    assert budget.spent_today == 60.0 and budget.remaining == 40.0
    clock.t = 3700.0
    lam = budget.price().per_pod_s
    assert lam > 0
    clock.t = DAY_S + 1.0
    assert budget.remaining == 100.0 and budget.spent_total == 60.0
    assert budget.quote().per_pod_s == lam


def test_no_budget_is_free() -> None:
    budget = CloudBudget(BudgetOptions(None), {}, FakeClock().now)
    budget.charge("gpu1", 1e9)
    assert budget.price() is FREE and budget.quote() is FREE and not FREE.binds
    assert math.isinf(budget.remaining)


# Decisions at a price ------------------------------------------------------------------


def _est(name: str, t: float, d: float, p: float) -> Estimate:
    return Estimate(name, Component(t), Component(d), Component(p))


ESTIMATES = {
    "edge": _est("edge", 0.0, 0.0, 200.0),
    "gpu1": _est("gpu1", 10.0, 30.0, 40.0),  # 80 s, holds 80 pod-s
    "gpu2": _est("gpu2", 10.0, 30.0, 30.0),  # 70 s, holds 70 pod-s x 2 GPUs
}
JOB = Job("b1", 100, 21_200_000, "app", "v1")
GPUS = {"edge": 0, "gpu1": 1, "gpu2": 2}


@pytest.mark.parametrize("mode", [Mode.SELECTOR, Mode.DUPLICATOR, Mode.SHARE])
def test_a_price_of_nothing_decides_as_no_budget(mode: Mode) -> None:
    free = decide(mode, JOB, ESTIMATES)
    unpriced = decide(mode, JOB, ESTIMATES, price=Price(0.0, 1e12, GPUS))
    assert (unpriced.chosen, type(unpriced)) == (free.chosen, type(free))


def test_the_selector_buys_the_latency_a_pod_second_is_worth() -> None:
    assert decide(Mode.SELECTOR, JOB, ESTIMATES).chosen == "gpu2"
    # λ = 0.3: gpu2 costs 70 + 42 (two GPUs), gpu1 80 + 24: gpu1 is the better buy.
    assert decide(Mode.SELECTOR, JOB, ESTIMATES, price=Price(0.3, 1e6, GPUS)).chosen == "gpu1"
    # λ = 2: 80 + 160 > 200 on the edge.
    assert decide(Mode.SELECTOR, JOB, ESTIMATES, price=Price(2.0, 1e6, GPUS)).chosen == "edge"


@pytest.mark.parametrize("mode", [Mode.SELECTOR, Mode.DUPLICATOR, Mode.SHARE, Mode.GPU1_ONLY])
def test_a_spent_budget_leaves_the_work_to_the_edge(mode: Mode) -> None:
    spent = Price(0.0, 50.0, GPUS)  # less than any cloud run holds
    plan = decide(mode, JOB, ESTIMATES, price=spent)
    assert plan.chosen == "edge"
    assert not isinstance(plan, RacePlan)
    if isinstance(plan, SharePlan):
        assert plan.clouds == ()


def test_the_duplicator_deploys_only_where_the_gain_beats_the_price() -> None:
    options = PolicyOptions(duplicator_runtime="gpu1")
    assert isinstance(decide(Mode.DUPLICATOR, JOB, ESTIMATES, options=options), RacePlan)
    dear = decide(Mode.DUPLICATOR, JOB, ESTIMATES, options=options, price=Price(5.0, 1e6, GPUS))
    assert dear.chosen == "edge" and not isinstance(dear, RacePlan)
    auto = decide(Mode.DUPLICATOR, JOB, ESTIMATES, price=Price(5.0, 1e6, GPUS))
    assert auto.chosen == "edge" and not isinstance(auto, RacePlan)


def test_share_adds_no_leg_whose_gain_the_price_eats() -> None:
    cheap = decide(Mode.SHARE, JOB, ESTIMATES)
    assert isinstance(cheap, SharePlan) and cheap.clouds
    dear = decide(Mode.SHARE, JOB, ESTIMATES, price=Price(5.0, 1e6, GPUS))
    assert isinstance(dear, SharePlan) and dear.clouds == ()


def test_the_race_plan_carries_the_price_of_its_pod() -> None:
    gpu2 = PolicyOptions(duplicator_runtime="gpu2")
    assert decide(Mode.DUPLICATOR, JOB, ESTIMATES, options=gpu2).pod_price == 0.0
    plan = decide(Mode.DUPLICATOR, JOB, ESTIMATES, options=gpu2, price=Price(0.01, 1e6, GPUS))
    assert isinstance(plan, RacePlan) and plan.pod_price == 0.02  # × gpu2's two GPUs


def test_keep_cloud_weighs_the_pod_seconds_it_would_hold() -> None:
    assert keep_cloud(Component(50.0), Component(40.0))
    assert keep_cloud(Component(50.0), Component(40.0), pod_price=0.2)  # 40 + 8 < 50
    assert not keep_cloud(Component(50.0), Component(40.0), pod_price=0.5)  # 40 + 20


@pytest.mark.looptime
@pytest.mark.parametrize(("pod_price", "winner"), [(0.0, "gpu1"), (1.5, "edge")])
async def test_at_pod_ready_the_race_pays_the_plans_price(pod_price: float, winner: str) -> None:
    # The fake world: gpu1's pod is ready at 32 s, the edge then 68 s from done, gpu1's
    # T_p 30 s. Free, the pod is kept (done at 62 s); at 1.5 s per pod-second its 30 s
    # more cost 45 s of latency: the edge keeps the batch and the pod goes at once.
    world = make_world()
    plan = RacePlan(
        "gpu1", "edge", pod_price=pod_price, mode=Mode.DUPLICATOR, reason="test", estimates=TABLE
    )
    out = await world.requester.run(CORE_JOB, plan)
    assert (out.runtime, out.kept_cloud) == (winner, pod_price == 0.0)
    assert world.fake.times("teardown", "gpu1") == ([62.0] if pod_price == 0.0 else [32.0])


@pytest.mark.looptime
async def test_at_pod_ready_the_race_pays_the_price_of_that_moment() -> None:
    # The plan was made free; by pod ready (32 s) the day's spending raised the price to
    # 1.5 s per pod-second: gpu1's 30 s more cost 45 s, so the edge keeps the batch.
    world = make_world()
    now = Price(1.5, 1e6, {"gpu1": 1})
    world.requester.duplicator.price = lambda: now
    plan = RacePlan("gpu1", "edge", mode=Mode.DUPLICATOR, reason="test", estimates=TABLE)
    out = await world.requester.run(CORE_JOB, plan)
    assert (out.runtime, out.kept_cloud) == ("edge", False)
    assert world.fake.times("teardown", "gpu1") == [32.0]


def test_probe_value_is_the_chance_to_win_times_the_gain() -> None:
    assert probe_value(10.0, 4.0, 0.0) == 6.0  # certain to win, by 6 s
    assert probe_value(4.0, 10.0, 0.0) == 0.0  # certain to lose
    # At the threshold: σ·φ(0) = σ / √(2π).
    assert probe_value(5.0, 5.0, 2.0) == pytest.approx(2.0 / math.sqrt(2 * math.pi))
    assert probe_value(0.0, 10.0, 2.0) < 1e-5 < probe_value(0.0, 10.0, 5.0)
    assert 10.0 < probe_value(10.0, 0.0, 5.0) < 10.05  # about its margin, plus a little


# The budget running out, in a replay ------------------------------------------------------


def test_the_budget_running_out_mid_day_leaves_the_rest_to_the_edge() -> None:
    """A budget of a few cloud batches (the bootstrap's pods spend part of the first
    day's) and a price that barely moves, so it runs out: the first day's cloud
    batches stop once it is spent and the edge takes the rest of the day; the next
    day's budget buys cloud batches again. The budget counts what the pods held."""
    s = Settings(controller={"inquisitor": False})
    s = s.model_copy(
        update={"requester": s.requester.model_copy(update={"cloud_price_step": 1e-6})}
    )
    budget = 3000.0  # the bootstrap holds about 1,400 of it
    r = run_replay(ReplayConfig(mode=f"selector@{budget:g}", days=2, batches=40, settings=s))
    days: dict[int, list[str]] = {0: [], 1: []}
    spent = {0: 0.0, 1: 0.0}
    gpus = {n: max(rt.gpus, 1) for n, rt in r.env.runtimes.items()}
    for rec in r.records:
        day = int(rec.started_s // DAY_S)
        days[day].append(rec.outcome.runtime)
        spent[day] += rec.outcome.cloud_used_s * gpus[rec.outcome.runtime]
    free = run_replay(ReplayConfig(mode="selector", days=2, batches=40, settings=s))
    late = [rec.outcome.runtime for rec in free.records if rec.started_s > 0.8 * DAY_S]
    assert any(n != "edge" for n in late)  # unbudgeted, the cloud wins late batches
    ran = days[0]
    last_cloud = max(i for i, n in enumerate(ran) if n != "edge")
    assert 5 < last_cloud < len(ran) // 2, ran  # spent before noon: the edge has the rest
    assert spent[0] <= budget and spent[1] <= budget
    assert sum(n != "edge" for n in days[1]) > 10  # a new day, a new budget
    assert r.core.budget.spent_total == pytest.approx(r.probe_stats["cloud_spent_pod_s"])
    pods = sum(s * gpus[n] for by in r.pod_s.values() for n, s in by.items())
    assert r.core.budget.spent_total == pytest.approx(pods)


def test_mode_at_budget_parses() -> None:
    spec = parse_mode("duplicator-gpu1@1.5e5")
    assert (spec.mode, spec.cloud, spec.budget) == (Mode.DUPLICATOR, "gpu1", 150_000.0)
    assert parse_mode("share").budget is None
    for bad in ("share@", "share@-1", "share@inf", "teleport@5"):
        with pytest.raises(InputError):
            parse_mode(bad)
    s = with_budget(Settings(), 10.0)
    assert s.requester.cloud_budget_pod_s_per_day == 10.0
    assert Settings().requester.cloud_budget_pod_s_per_day is None


# The gauges --------------------------------------------------------------------------------


def _gauge(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.split()[1])


def test_the_budget_gauges() -> None:
    clock = FakeClock(100.0)
    budget = CloudBudget(BudgetOptions(1000.0), {"gpu2": 2}, clock.now)
    metrics = Metrics()
    metrics.watch_budget(budget)
    budget.charge("gpu2", 300.0)
    clock.t = 200.0
    budget.price()
    text = metrics.render()[0].decode()
    assert _gauge(text, "stoic_cloud_budget_pod_seconds") == 1000.0
    assert _gauge(text, "stoic_cloud_spent_today_pod_seconds") == 600.0
    assert _gauge(text, "stoic_cloud_budget_remaining_pod_seconds") == 400.0
    assert _gauge(text, "stoic_cloud_price_seconds_per_pod_second") > 0
    budget.charge("gpu2", 300.0)
    text = metrics.render()[0].decode()
    assert _gauge(text, "stoic_cloud_budget_remaining_pod_seconds") == -200.0
    unlimited = Metrics()
    unlimited.watch_budget(CloudBudget(BudgetOptions(None), {}, clock.now))
    text = unlimited.render()[0].decode()
    assert math.isinf(_gauge(text, "stoic_cloud_budget_remaining_pod_seconds"))


async def test_a_restart_keeps_what_the_store_recorded_today(tmp_path: Path) -> None:
    """The daemon's budget starts a restart with the day's cloud seconds the store holds
    (a probe's 300 s on GPU2, × 2 GPUs), not with nothing spent."""
    settings = make_settings(tmp_path, requester={"cloud_budget_pod_s_per_day": 1000.0})
    async with start_daemon(settings) as first:
        ctl = first.controller
        assert ctl.core.budget.spent_today == 0.0
        day = local_midnight(ctl.clock.now())
        await asyncio.to_thread(ctl.store.add_cloud_usage, day, "gpu2", "probe", 300.0)
    async with start_daemon(settings) as second:
        budget = second.controller.core.budget
        assert budget.spent_today == 600.0 and budget.remaining == 400.0
        text = (await second.client.get("/metrics")).text
        assert _gauge(text, "stoic_cloud_budget_remaining_pod_seconds") == 400.0


# The sweep's budget axis -----------------------------------------------------------------


def test_sweep_budgets_name_the_budget_exactly() -> None:
    modes = with_budgets(["share"], ["1234567", "183428.4"])
    assert modes == ["share@1234567", "share@183428.4"]
    assert [parse_mode(m).budget for m in modes] == [1234567.0, 183428.4]


def test_sweep_budgets_write_the_front(tmp_path: Path) -> None:
    modes = with_budgets(["selector", "share"], ["none", "2000", "1e4"])
    assert modes == [
        "selector",
        "selector@2000",
        "selector@10000",
        "share",
        "share@2000",
        "share@10000",
    ]
    with pytest.raises(InputError):
        with_budgets(["selector"], ["lots"])
    assert budget_lines(modes)["share"] == ["share@2000", "share@10000", "share"]
    env = discover_envs([REPO / "workload" / "envs" / "nautilus-2020.yaml"])
    cfg = SweepConfig(envs=env, modes=modes, seeds=(0,), days=1, batches=4, warmup_periods=3)
    result = run_sweep(cfg)
    assert not result.failed
    write_sweep_report(result, tmp_path, command="stoic replay sweep --budgets none,2000,1e4")
    doc = json.loads((tmp_path / "sweep.json").read_text())
    assert {c["mode"] for c in doc["cells"]} == set(modes)
    md = (tmp_path / "sweep.md").read_text()
    front = next(x for x in md.splitlines() if x.startswith("* nautilus-2020:"))
    assert "@" in md and front.count("(") >= 1
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
