"""Warm pods: the keep-alive rule on known arrival processes, and the pool on virtual time.

The rule (:func:`keep_alive_s`) is checked against brute force and on processes whose
answer is known; the pool (:class:`WarmPool`) on the fake backend under looptime, where
a keep-alive's end is an exact instant: a pod kept after its batch is taken by the next
(no T_d, no deployment sample, T_d priced 0), and torn down when its keep-alive runs out.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stoic.backends.fake import FakeBackend
from stoic.clock import LoopClock
from stoic.schedule.assembly import build_core
from stoic.schedule.decide.budget import Price
from stoic.schedule.execute.keepalive import (
    DAY_S,
    HOUR_S,
    ArrivalModel,
    KeepAliveOptions,
    keep_alive_s,
)
from stoic.schedule.execute.legs import release_on
from stoic.schedule.execute.recorder import PredictorRecorder
from stoic.schedule.execute.warm import WarmPool
from stoic.schedule.scheduler import Scheduler
from stoic.settings import Settings
from stoic.values import Job, Mode, SinglePlan
from tests.support.core import EPOCH, JOB, SPECS, TABLE, World, make_world

waits = st.lists(st.floats(0.1, 5_000.0), min_size=1, max_size=30)


def value(residuals: list[float], k: float, saved: float, price: float) -> float:
    """B(K) of the module docstring, computed directly."""
    n = len(residuals)
    chance = sum(r <= k for r in residuals) / n
    idle = sum(min(r, k) for r in residuals) / n
    return saved * chance - price * idle


@given(waits, st.floats(0.0, 600.0), st.floats(0.0, 1.0), st.floats(0.0, 10_000.0))
def test_the_keep_alive_maximises_the_expected_net_saving(
    residuals: list[float], saved: float, price: float, max_s: float
) -> None:
    k = keep_alive_s(residuals, [1.0] * len(residuals), saved_s=saved, price=price, max_s=max_s)
    assert k == 0.0 or (k in residuals and k <= max_s)
    grid = [0.0, *(r for r in residuals if r <= max_s), max_s]
    best = max(value(residuals, g, saved, price) for g in grid)
    assert value(residuals, k, saved, price) == pytest.approx(best, abs=1e-6)


@given(waits, st.floats(1.0, 600.0), st.floats(0.0, 0.5), st.floats(0.0, 0.5))
def test_a_dearer_pod_second_never_keeps_a_pod_longer(
    residuals: list[float], saved: float, p1: float, p2: float
) -> None:
    lo, hi = sorted((p1, p2))
    w = [1.0] * len(residuals)
    cheap = keep_alive_s(residuals, w, saved_s=saved, price=lo, max_s=DAY_S)
    dear = keep_alive_s(residuals, w, saved_s=saved, price=hi, max_s=DAY_S)
    assert dear <= cheap


@given(st.floats(10.0, 5_000.0), st.floats(0.0, 600.0), st.floats(0.001, 1.0))
def test_a_clockwork_arrival_is_waited_for_exactly_when_it_pays(
    gap: float, saved: float, price: float
) -> None:
    k = keep_alive_s([gap] * 5, [1.0] * 5, saved_s=saved, price=price, max_s=DAY_S)
    assert k == (gap if saved > price * gap else 0.0)


def test_poisson_arrivals_keep_while_the_hazard_pays() -> None:
    # Exponential waits of mean 100 s: B(K) = (30 - 100 price)(1 - exp(-K/100)), so a
    # pod whose cold start costs 30 s is kept to the last wait seen while the hazard
    # (1/100 per s) times 30 s beats the price, and not kept at all when it does not.
    residuals = [-100.0 * math.log(1 - (i + 0.5) / 400) for i in range(400)]
    w = [1.0] * len(residuals)
    assert keep_alive_s(residuals, w, saved_s=30.0, price=0.01, max_s=DAY_S) > 300.0
    assert keep_alive_s(residuals, w, saved_s=30.0, price=1.0, max_s=DAY_S) == 0.0


def test_arrivals_condition_on_the_time_since_the_last_and_weigh_the_hour() -> None:
    model = ArrivalModel(history=10, hour_bandwidth_h=1.0)
    # Gaps of 60 s around noon, of 3 h at midnight.
    t = 12 * HOUR_S
    for _ in range(4):
        model.observe(t)
        t += 60.0
    model.observe(DAY_S)
    model.observe(DAY_S + 3 * HOUR_S)
    assert [g for g, _ in model.gaps] == [60.0, 60.0, 60.0, 12 * HOUR_S - 180.0, 3 * HOUR_S]
    residuals, weights = model.residuals(DAY_S + 3 * HOUR_S + 20.0)  # 20 s since 03:00
    assert residuals == [40.0, 40.0, 40.0, 12 * HOUR_S - 200.0, 3 * HOUR_S - 20.0]
    # 03:00 is 9 h from the noon gaps and 3 h from midnight's: the night weighs more.
    assert weights[4] > weights[0] > 0.0
    assert model.residuals(DAY_S + 4 * HOUR_S)[0] == [12 * HOUR_S - 3_780.0, 2 * HOUR_S]


# The pool on the fake backend ---------------------------------------------------------


def pooled_world(**keepalive: Any) -> tuple[World, WarmPool]:
    """The fake world with a warm pool on its leg runner (as build_core wires it)."""
    world = make_world()
    legs = world.requester.legs
    pool = WarmPool(
        KeepAliveOptions(enabled=True, **keepalive),
        clock=legs.clock,
        cold_s=lambda name: TABLE[name].deployment.mean,
        release=lambda rt, dep: release_on(legs.backends, rt, dep),
    )
    legs.warm_pods = pool
    return world, pool


def single(runtime: str) -> SinglePlan:
    return SinglePlan(runtime, mode=Mode.SELECTOR, reason="test", estimates=dict(TABLE))


@pytest.mark.looptime
async def test_a_kept_pod_is_taken_by_the_next_batch_then_torn_down_on_time(
    looptime: Any,
) -> None:
    world, pool = pooled_world(fixed_s=500.0)
    first = await world.requester.run(JOB, single("gpu1"))
    assert first.deployment_s == 30 and looptime == 67
    assert world.fake.ops("teardown") == [] and len(world.fake.live) == 1
    assert pool.warm() == {"gpu1"} and pool.pods()[0].until == EPOCH + 67 + 500

    await world.requester.run(Job("b2", 40, JOB.n_bytes), single("gpu1"))
    assert world.fake.times("deploy", "gpu1") == [0.0]  # one deployment for both batches
    assert len(world.recorder.deployments) == 1  # the warm one is no T_d sample
    assert looptime == 67 + 37 and pool.held_s == {"gpu1": 0.0}
    assert pool.reused == 1 and pool.warm() == {"gpu1"}  # kept again after batch 2

    await asyncio.sleep(501)
    assert world.fake.times("teardown", "gpu1") == [104.0 + 500]
    assert world.fake.live == {} and pool.warm() == frozenset()
    assert pool.held_s == {"gpu1": 500.0} and pool.expired == 1


@pytest.mark.looptime
async def test_the_scheduler_prices_a_warm_runtime_with_no_deployment() -> None:
    world, pool = pooled_world(fixed_s=500.0)
    scheduler = Scheduler(world.predictor, world.requester, world.availability)
    assert scheduler.estimate(JOB)["gpu1"].deployment.mean == 30
    await world.requester.run(JOB, single("gpu1"))
    warm = scheduler.estimate(JOB)
    assert warm["gpu1"].deployment.mean == 0 and warm["gpu1"].risk.p_timeout == 0
    assert warm["gpu2"].deployment.mean == 45
    plan, out = await scheduler.handle(Job("b2", 40, JOB.n_bytes), mode=Mode.SELECTOR)
    assert plan.chosen == "gpu1" and out.deployment_s == 0
    await pool.aclose()
    assert world.fake.live == {}


@pytest.mark.looptime
async def test_a_warm_keep_pays_the_budgets_price_within_what_is_left() -> None:
    # A batch every 100 s: keeping a gpu1 pod (cold start 30 s) to the next one saves
    # 30 s for 100 idle pod-seconds. Worth it at the setting's 0.02 s per pod-second, not
    # at a budget's 0.5; and no keep outlives what is left of the budget (× GPUs).
    world, pool = pooled_world()
    runtimes = world.requester.legs.runtimes
    now = world.requester.legs.clock.now()
    for i in range(6):
        pool.arrived(now - 500.0 + 100.0 * i)
    assert pool.choose(runtimes["gpu1"]) == 100.0
    pool.price = lambda: Price(0.5, math.inf)
    assert pool.choose(runtimes["gpu1"]) == 0.0
    pool.price = lambda: Price(0.0, 160.0)
    assert pool.choose(runtimes["gpu1"]) == 100.0
    assert pool.choose(runtimes["gpu2"]) == 0.0  # 100 s × 2 GPUs > 160 left
    pool.options = replace(pool.options, fixed_s=500.0)
    assert pool.choose(runtimes["gpu2"]) == 80.0


async def test_the_core_prices_its_warm_pods_at_the_budgets_quote() -> None:
    settings = Settings(
        keepalive={"enabled": True, "fixed_s": 1_000.0},
        requester={"cloud_budget_pod_s_per_day": 500.0},
    )
    core = build_core(
        settings,
        {"local": FakeBackend(dict(SPECS))},
        LoopClock(EPOCH),
        make_recorder=PredictorRecorder,
    )
    pool = core.legs.warm_pods
    assert pool is not None
    core.budget.charge("gpu1", 200.0)
    assert pool.choose(core.legs.runtimes["gpu2"]) == 150.0  # 300 left, two GPUs


@pytest.mark.looptime
async def test_with_no_arrival_seen_no_pod_is_kept() -> None:
    world, pool = pooled_world()
    await world.requester.run(JOB, single("gpu1"))
    assert pool.kept == 0 and world.fake.live == {}
