"""The per-batch path (estimates → policy → requester) and bootstrapping."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stoic.backends.fake import DeployStep, FakeBackend, FakeSpec
from stoic.clock import LoopClock
from stoic.errors import PredictorError
from stoic.schedule.assembly import Core, build_core, scheduler_options
from stoic.schedule.decide.policy import PolicyOptions
from stoic.schedule.execute.recorder import MultiRecorder, PredictorRecorder
from stoic.schedule.scheduler import (
    PROBE_LOOKBACK,
    BootstrapRun,
    ObservationCounter,
    Scheduler,
    contenders,
)
from stoic.settings import Settings
from stoic.values import Component as C
from stoic.values import DeployOutcome, Estimate, Job, Mode, RacePlan
from tests.support.core import EPOCH, JOB, World, est, leg_runner, make_world, requester_of

pytestmark = pytest.mark.looptime


def make_scheduler(
    w: World, observed: ObservationCounter | None = None, **options: Any
) -> Scheduler:
    """A scheduler on ``w``'s backends whose counter is in the recorder chain, as
    build_core wires it (``w.recorder`` still sees every sample first)."""
    observed = observed or ObservationCounter()
    legs = w.requester.legs
    chain = MultiRecorder(legs.recorder, observed)
    counted = leg_runner(
        w.settings, legs.backends, legs.runtimes, chain, w.availability, legs.clock
    )
    return Scheduler(
        w.predictor,
        requester_of(w.settings, counted, w.predictor),
        w.availability,
        scheduler_options(w.settings),
        PolicyOptions(**options),
        observed=observed,
    )


@pytest.fixture
def world() -> World:
    return make_world()


# The per-batch path -------------------------------------------------------------------


def test_contenders_could_win_with_no_processing_time() -> None:
    # Totals: edge 100, cpu 85, gpu1 65 (best), gpu2 75; T_t + T_d: 0, 15, 35, 50.
    assert contenders(world_table()) == {"edge", "cpu", "gpu1", "gpu2"}
    slow = dict(world_table(), gpu2=est("gpu2", 5, 70, 25))  # 75 >= the best, 65
    assert contenders(slow) == {"edge", "cpu", "gpu1"}
    assert contenders({}) == frozenset()


async def test_worth_probing_looks_back_on_the_last_plans(world: World) -> None:
    scheduler = make_scheduler(world)
    assert scheduler.worth_probing("gpu2")  # nothing planned yet: everything is
    world.predictor.table["gpu2"] = est("gpu2", 5, 70, 25)
    for _ in range(PROBE_LOOKBACK - 1):
        scheduler.plan(JOB, mode=Mode.SELECTOR)
    assert not scheduler.worth_probing("gpu2") and scheduler.worth_probing("cpu")
    world.predictor.table["gpu2"] = est("gpu2", 5, 40, 25)  # a contender again
    scheduler.plan(JOB, mode=Mode.SELECTOR)
    assert scheduler.worth_probing("gpu2")
    world.predictor.table["gpu2"] = est("gpu2", 5, 70, 25)
    for _ in range(PROBE_LOOKBACK - 1):
        scheduler.plan(JOB, mode=Mode.SELECTOR)
    assert scheduler.worth_probing("gpu2")  # still within the look-back
    scheduler.plan(JOB, mode=Mode.SELECTOR)
    assert not scheduler.worth_probing("gpu2")


async def test_probe_pricing_probes_what_could_change_a_decision() -> None:
    """With probe pricing: a deployment probe at most once per runtime between two
    decisions, and only where learning its T_d is worth the probe's pod time × GPUs at
    inquisitor.probe_price_s_per_pod_s (0.01); a processing probe likewise for T_p."""
    world = make_world(inquisitor={"probe_pricing": True})
    scheduler = make_scheduler(world)
    assert scheduler.worth_deploy_probe("gpu2") and scheduler.worth_deploy_probe("gpu2")
    # Totals: edge 100, cpu 85, gpu1 65 (best), gpu2 75 with an uncertain T_d: below
    # 35 s it wins, by 35 - T_d. E[max(0, 35 - T_d)] for T_d ~ N(45, 30) is 7.6 s,
    # above the probe's 0.01 x 45 s x 2 GPUs = 0.9 s.
    world.predictor.table["gpu2"] = Estimate("gpu2", C(5), C(45, 30), C(25, 5))
    scheduler.plan(JOB, mode=Mode.SELECTOR)
    assert scheduler.probe_value("gpu2", 1) == pytest.approx(7.63, abs=0.01)
    assert scheduler.worth_deploy_probe("gpu2")
    assert not scheduler.worth_deploy_probe("gpu2")  # once before the next decision
    assert not scheduler.worth_probing("gpu2")  # T_p: 0.04 s, against 0.5 s
    world.predictor.table["gpu2"] = est("gpu2", 5, 400, 300)  # hopeless
    for _ in range(PROBE_LOOKBACK):
        scheduler.plan(JOB, mode=Mode.SELECTOR)
    assert scheduler.probe_value("gpu2", 0) == scheduler.probe_value("gpu2", 1) == 0.0
    assert not scheduler.worth_deploy_probe("gpu2")
    assert scheduler.worth_deploy_probe("gpu1")  # the best: it wins by 10-20 s


def world_table() -> dict[str, Any]:
    return dict(make_world().predictor.table)


async def test_selector_picks_the_minimum_and_runs_it_end_to_end(world: World) -> None:
    scheduler = make_scheduler(world)
    plan, out = await scheduler.handle(JOB, mode=Mode.SELECTOR)
    # TABLE totals: edge 100, cpu 85, gpu1 65, gpu2 75 → gpu1.
    assert plan.chosen == "gpu1" and set(plan.estimates) == {"edge", "cpu", "gpu1", "gpu2"}
    assert (out.runtime, out.deployment_s, out.transfer_s, out.processing_s) == ("gpu1", 30, 5, 30)
    assert out.total_s == 67
    assert out.decision_s == plan.decision_s >= 0 and scheduler.decisions == 1
    r = world.recorder
    assert [(s.runtime, s.duration_s) for s in r.deployments] == [("gpu1", 30)]
    assert [(s.runtime, s.seconds) for s in r.transfers] == [("gpu1", 5)]
    assert [(s.runtime, s.duration_s) for s in r.processings] == [("gpu1", 30)]
    assert world.fake.live == {}


async def test_selector_runs_the_edge_when_it_is_fastest(world: World) -> None:
    world.predictor.table["edge"] = est("edge", 0, 0, 60)
    plan, out = await make_scheduler(world).handle(JOB, mode=Mode.SELECTOR)
    assert plan.chosen == out.runtime == "edge" and out.total_s == 100  # truth: 2.5 s × 40
    assert world.fake.ops("deploy", "gpu1") == []


async def test_duplicator_through_the_scheduler(world: World) -> None:
    world.fake.script_deploys("gpu2", 10)
    plan, out = await make_scheduler(world, duplicator_runtime="gpu2").handle(
        JOB, mode=Mode.DUPLICATOR
    )
    assert isinstance(plan, RacePlan) and plan.chosen == "gpu2"
    # gpu2 ready at 10, warm at 12: edge needs 88 s more, gpu2 25 s → switch; 25 s real.
    assert (out.winner, out.kept_cloud, out.choice_correct, out.total_s) == ("gpu2", True, True, 37)
    assert out.cancelled == ("edge",)


async def test_unavailable_runtime_is_neither_estimated_nor_chosen(world: World) -> None:
    world.availability.mark_unavailable("gpu1", EPOCH, "probe timed out")
    scheduler = make_scheduler(world, duplicator_runtime="gpu1")
    plan, out = await scheduler.handle(JOB, mode=Mode.SELECTOR)
    assert world.predictor.asked == [["edge", "cpu", "gpu2"]]
    assert plan.chosen == out.runtime == "gpu2"
    dup, _ = await scheduler.handle(Job("b2", 40, 1), mode=Mode.DUPLICATOR)
    assert dup.chosen == "edge" and not isinstance(dup, RacePlan)
    # The adaptive duplicator races the best pod among those still available.
    auto, _ = await make_scheduler(world).handle(Job("b3", 40, 1), mode=Mode.DUPLICATOR)
    assert auto.chosen in {"cpu", "gpu2"} and isinstance(auto, RacePlan)


async def test_pinned_and_oracle_modes_pass_through(world: World) -> None:
    scheduler = make_scheduler(world)
    plan, out = await scheduler.handle(JOB, mode=Mode.PINNED, pinned="cpu")
    assert plan.chosen == out.runtime == "cpu"
    truth = {"edge": 1.0, "cpu": 9.0, "gpu1": 9.0, "gpu2": 9.0}
    scheduler = make_scheduler(world, oracle=lambda job: truth)
    plan, _ = await scheduler.handle(Job("b2", 40, 1), mode=Mode.ORACLE)
    assert plan.chosen == "edge"


# Bootstrapping ------------------------------------------------------------------------

REPRESENTATIVE = [Job("rep-small", 10, 10 * 212_000), Job("rep-large", 50, 50 * 212_000)]


async def test_bootstrap_runs_two_tasks_per_runtime_once_per_version(world: World) -> None:
    scheduler = make_scheduler(world)
    assert scheduler.needs_bootstrap("classify", "1")
    report = await scheduler.bootstrap("classify", "1", REPRESENTATIVE)
    assert report.runs == 8 and report.failures == {}
    invokes = world.fake.ops("invoke")
    assert sorted((e.runtime, e.batch_id) for e in invokes) == sorted(
        (rt, f"rep-{size}:bootstrap:{rt}:{i}")
        for rt in ("edge", "cpu", "gpu1", "gpu2")
        for i, size in enumerate(("small", "large"))
    )
    assert sorted({p.images for p in world.recorder.processings}) == [10, 50]
    assert all(p.app_version == "1" for p in world.recorder.processings)
    assert not scheduler.needs_bootstrap("classify", "1")

    again = await scheduler.bootstrap("classify", "1", REPRESENTATIVE)
    assert again.runs == 0 and len(world.fake.ops("invoke")) == 8

    # A new version of the application is bootstrapped afresh.
    assert scheduler.needs_bootstrap("classify", "2")
    v2 = await scheduler.bootstrap("classify", "2", REPRESENTATIVE)
    assert v2.runs == 8 and {p.app_version for p in world.recorder.processings} == {"1", "2"}


async def test_concurrent_bootstraps_of_one_version_run_once(world: World) -> None:
    scheduler = make_scheduler(world)
    a, b = await asyncio.gather(
        scheduler.bootstrap("classify", "1", REPRESENTATIVE),
        scheduler.bootstrap("classify", "1", REPRESENTATIVE),
    )
    assert sorted([a.runs, b.runs]) == [0, 8]
    assert len(world.fake.ops("invoke")) == 8


async def test_failed_bootstrap_does_not_fall_back_and_is_retried_later(world: World) -> None:
    scheduler = make_scheduler(world)
    world.fake.script_deploys("gpu2", *[DeployStep(0, fail=True)] * 10)
    report = await scheduler.bootstrap("classify", "1", REPRESENTATIVE)
    assert report.runs == 6 and list(report.failures) == ["gpu2"]
    assert len(world.fake.ops("invoke", "edge")) == 2  # no fallback run on the edge
    assert scheduler.missing("classify", "1") == {"gpu2": 2}
    again = await scheduler.bootstrap("classify", "1", REPRESENTATIVE)
    assert again.runs == 2 and not scheduler.needs_bootstrap("classify", "1")


async def test_unavailable_runtime_is_bootstrapped_when_it_returns(world: World) -> None:
    scheduler = make_scheduler(world)
    world.availability.mark_unavailable("gpu1", EPOCH)
    report = await scheduler.bootstrap("classify", "1", REPRESENTATIVE[:1])
    assert report.runs == 6 and "gpu1" not in report.outcomes
    assert not scheduler.needs_bootstrap("classify", "1")
    world.availability.mark_available("gpu1", EPOCH)
    assert scheduler.missing("classify", "1") == {"gpu1": 2}


async def test_seeded_counts_mean_no_bootstrap(world: World) -> None:
    observed = ObservationCounter()
    for rt in ("edge", "cpu", "gpu1", "gpu2"):
        observed.seed("classify", "1", rt, 5)
    scheduler = make_scheduler(world, observed)
    assert not scheduler.needs_bootstrap("classify", "1")
    # Samples recorded by the requester are counted too.
    await scheduler.handle(Job("b", 3, 1, app_version="9"), mode=Mode.PINNED, pinned="cpu")
    assert observed.count("classify", "9", "cpu") == 1


async def test_bootstrap_needs_representative_jobs(world: World) -> None:
    with pytest.raises(PredictorError, match="representative"):
        await make_scheduler(world).bootstrap("classify", "1", [])


# With the real predictor --------------------------------------------------------------


def real_core() -> tuple[FakeBackend, Core]:
    """A core as the daemon builds it, with the real predictor, on the edge and three
    pods, each with its own line: T_p = per_image_s · n + fixed_s."""
    fake = FakeBackend(
        {
            "edge": FakeSpec(per_image_s=2.0, fixed_s=10.0),
            "cpu": FakeSpec(deploy_s=12, upload_s=1, per_image_s=1.5, fixed_s=15.0),
            "gpu1": FakeSpec(deploy_s=20, upload_s=1, per_image_s=0.3, fixed_s=25.0),
            "gpu2": FakeSpec(deploy_s=40, upload_s=1, per_image_s=0.2, fixed_s=20.0),
        }
    )
    core = build_core(
        Settings(), {"local": fake}, LoopClock(EPOCH), make_recorder=PredictorRecorder
    )
    return fake, core


async def test_real_predictor_learns_from_bootstrap_and_batches() -> None:
    fake, core = real_core()
    predictor, scheduler = core.predictor, core.scheduler
    report = await scheduler.bootstrap("classify", "1", REPRESENTATIVE)
    assert report.runs == 8 and not scheduler.needs_bootstrap("classify", "1")
    edge = predictor.estimate("edge", 100, 0, app="classify", app_version="1")
    assert edge.processing.mean == pytest.approx(2.0 * 100 + 10.0, rel=0.1)
    assert predictor.recent_deployments("gpu1", 5)[-1].outcome is DeployOutcome.OK

    # 400 images: gpu1 (20 + 1 + 0.3·400 + 25 ≈ 166 s) beats the edge (810 s).
    plan, out = await scheduler.handle(Job("big", 400, 400 * 212_000), mode=Mode.SELECTOR)
    assert plan.chosen in {"gpu1", "gpu2"} and out.runtime == plan.chosen
    # The duplicator with real re-prediction switches to the ready pod.
    plan, out = await scheduler.handle(Job("big2", 400, 400 * 212_000), mode=Mode.DUPLICATOR)
    # Auto: the pod that finishes first (gpu2: 40 + 0.2·400 + 20 = 140 s; gpu1 165 s).
    assert isinstance(plan, RacePlan) and plan.chosen == out.winner == "gpu2" and out.kept_cloud
    assert out.choice_correct is True and fake.live == {}


async def test_a_scope_of_contenders_bootstraps_the_edge_then_what_could_win() -> None:
    """``contenders_of`` (the daemon's default scope): the edge first, then only the
    runtimes whose predicted T_t + T_d beat the best predicted total of the batch at
    hand; the others wait for a batch they could win."""
    _, core = real_core()
    scheduler = core.scheduler
    runs: list[tuple[str, int, int, int, bool]] = []

    def on_run(run: BootstrapRun) -> None:
        runs.append((run.runtime, run.run, run.runs, run.n_images, run.outcome is not None))

    # One image: the edge's own line says 12 s; cpu's prior T_d (10 s) could beat it,
    # gpu1's (30 s) and gpu2's (45 s) could not.
    small = Job("small", 1, 212_000)
    assert scheduler.missing("classify", "1", contenders_of=small) == {
        "edge": 2,
        "cpu": 2,
    }
    report = await scheduler.bootstrap(
        "classify", "1", REPRESENTATIVE, contenders_of=small, on_run=on_run
    )
    assert sorted(report.outcomes) == ["cpu", "edge"]
    assert runs == [
        ("edge", 1, 4, 10, False),
        ("edge", 1, 4, 10, True),
        ("edge", 2, 4, 50, False),
        ("edge", 2, 4, 50, True),
        ("cpu", 3, 4, 10, False),
        ("cpu", 3, 4, 10, True),
        ("cpu", 4, 4, 50, False),
        ("cpu", 4, 4, 50, True),
    ]
    assert scheduler.missing("classify", "1") == {"gpu1": 2, "gpu2": 2}
    assert not scheduler.needs_bootstrap("classify", "1", contenders_of=small)
    # 40 images: the edge's 90 s is beaten by gpu1's and gpu2's T_t + T_d.
    big = Job("big", 40, 40 * 212_000)
    again = await scheduler.bootstrap("classify", "1", REPRESENTATIVE, contenders_of=big)
    assert sorted(again.outcomes) == ["gpu1", "gpu2"]
    assert not scheduler.needs_bootstrap("classify", "1")


async def test_a_runtime_that_stops_being_a_contender_is_skipped(world: World) -> None:
    # The table's cpu could win 40 images until the edge's own line came in.
    scheduler = make_scheduler(world)
    world.predictor.table["gpu1"] = est("gpu1", 5, 300, 30)
    world.predictor.table["gpu2"] = est("gpu2", 5, 300, 25)
    assert scheduler.missing("classify", "1", contenders_of=JOB) == {"edge": 2, "cpu": 2}
    seen: list[tuple[str, int, int]] = []

    def on_run(run: BootstrapRun) -> None:
        if run.outcome is None:
            seen.append((run.runtime, run.run, run.runs))
            if run.runtime == "edge":  # the edge's line: 10 s, below cpu's T_t + T_d
                world.predictor.table["edge"] = est("edge", 0, 0, 10)

    report = await scheduler.bootstrap(
        "classify", "1", REPRESENTATIVE, contenders_of=JOB, on_run=on_run
    )
    assert list(report.outcomes) == ["edge"]
    assert seen == [("edge", 1, 4), ("edge", 2, 4)]
