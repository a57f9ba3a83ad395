"""The requester on fake backends and virtual time: every measured duration is exact."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from stoic.backends.fake import DeployStep, FakeBackend, InvokeStep
from stoic.errors import DeployTimeout, InvocationError, RetriesExhausted
from stoic.schedule.execute.recorder import MultiRecorder, PredictorRecorder
from stoic.values import (
    DeploymentSample,
    DeployOutcome,
    Job,
    Mode,
    Plan,
    ProcessingSample,
    RacePlan,
    SinglePlan,
    TransferSample,
)
from tests.support.core import (
    EPOCH,
    JOB,
    TABLE,
    ListRecorder,
    TablePredictor,
    World,
    est,
    make_world,
)

pytestmark = pytest.mark.looptime


@pytest.fixture
def world() -> World:
    return make_world()


def plan(runtime: str, *, speculative: bool = False) -> Plan:
    mode = Mode.DUPLICATOR if speculative else Mode.SELECTOR
    if speculative:
        return RacePlan(runtime, "edge", mode=mode, reason="test", estimates=dict(TABLE))
    return SinglePlan(runtime, mode=mode, reason="test", estimates=dict(TABLE))


# Single runtime -----------------------------------------------------------------------


async def test_cloud_run_measures_every_component_exactly(world: World, looptime: Any) -> None:
    out = await world.requester.run(JOB, plan("gpu1"))
    # deploy 30, upload 5, warm 2, invoke 0.75 * 40 = 30
    assert (out.runtime, out.winner, out.fell_back) == ("gpu1", "gpu1", False)
    assert (out.deployment_s, out.transfer_s, out.warmup_s, out.processing_s) == (30, 5, 2, 30)
    assert out.total_s == 67 and looptime == 67
    assert out.cloud_used_s == 37 and out.cloud_wasted_s == 0  # ready at 30, down at 67
    assert out.started_at == EPOCH and out.finished_at == EPOCH + 67
    assert len(out.results) == 40
    r = world.recorder
    assert r.deployments == [DeploymentSample("gpu1", EPOCH, 30.0, DeployOutcome.OK)]
    assert r.transfers == [TransferSample(JOB.n_bytes, 5.0, EPOCH + 30, "gpu1")]
    assert [(p.runtime, p.images, p.duration_s, p.at) for p in r.processings] == [
        ("gpu1", 40, 30.0, EPOCH + 67)
    ]
    assert world.fake.times("warmup", "gpu1") == [35.0]
    assert world.fake.times("teardown", "gpu1") == [67.0]
    assert world.fake.live == {}


async def test_edge_run_needs_no_deployment_sample_nor_warmup(world: World) -> None:
    out = await world.requester.run(JOB, plan("edge"))
    assert (out.runtime, out.processing_s, out.total_s, out.cloud_used_s) == ("edge", 100, 100, 0)
    assert world.recorder.deployments == [] and world.recorder.transfers == []
    assert [p.runtime for p in world.recorder.processings] == ["edge"]
    assert world.fake.ops("warmup") == [] and world.fake.live == {}


async def test_backoff_is_exactly_100ms_doubling(world: World) -> None:
    world.fake.script_deploys("gpu1", *[DeployStep(0, fail=True)] * 4, DeployStep(30))
    out = await world.requester.run(JOB, plan("gpu1"))
    attempts = world.fake.times("deploy", "gpu1")
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8], abs=1e-9)
    assert out.deployment_s == pytest.approx(1.5 + 30, abs=1e-9)  # back-off counts
    outcomes = [s.outcome for s in world.recorder.deployments]
    assert outcomes == [DeployOutcome.FAILURE] * 4 + [DeployOutcome.OK]
    assert world.recorder.deployments[-1].duration_s == 30  # the attempt itself


async def test_ten_failures_exhaust_retries_and_fall_back(world: World) -> None:
    world.fake.script_deploys("gpu1", *[DeployStep(0, fail=True)] * 10)
    out = await world.requester.run(JOB, plan("gpu1"))
    attempts = world.fake.times("deploy", "gpu1")
    assert len(attempts) == 10
    assert [b - a for a, b in itertools.pairwise(attempts)] == pytest.approx(
        [0.1 * 2**i for i in range(9)], abs=1e-9
    )
    # The fallback is the runtime predicted next soonest: gpu2 (75 s) before the edge (100 s).
    assert out.fell_back and out.runtime == "gpu2" and "RetriesExhausted" in out.reason
    assert out.total_s == pytest.approx(51.1 + 45 + 5 + 2 + 25, abs=1e-9)
    assert world.availability.is_available("gpu1")  # failures do not mark it down


async def test_retries_exhausted_is_raised_without_fallback() -> None:
    w = make_world(requester={"fallback_to_edge": False, "retry_attempts": 3})
    w.fake.script_deploys("gpu1", *[DeployStep(1, fail=True)] * 3)
    with pytest.raises(RetriesExhausted) as info:
        await w.requester.run(JOB, plan("gpu1"))
    assert info.value.attempts == 3
    assert w.fake.ops("invoke") == []


async def test_deploy_timeout_is_not_retried_and_marks_unavailable(world: World) -> None:
    world.fake.script_deploys("gpu2", DeployStep(float("inf")))
    out = await world.requester.run(JOB, plan("gpu2"))
    assert len(world.fake.ops("deploy", "gpu2")) == 1
    assert world.recorder.deployments[0] == DeploymentSample(
        "gpu2", EPOCH, 600.0, DeployOutcome.TIMEOUT
    )
    assert not world.availability.is_available("gpu2")
    # Falls back to gpu1, predicted soonest among the others (65 s against the edge's 100).
    assert out.fell_back and out.runtime == "gpu1" and out.total_s == 600 + 30 + 5 + 2 + 30
    # The next plan for gpu2 falls back at once, without deploying.
    again = await world.requester.run(Job("b2", 40, 1), plan("gpu2"))
    assert again.fell_back and "unavailable" in again.reason
    assert len(world.fake.ops("deploy", "gpu2")) == 1


async def test_a_backend_that_ignores_its_timeout_is_cut_off() -> None:
    class Hanging(FakeBackend):
        async def deploy(self, runtime, *, timeout_s):
            await asyncio.sleep(10_000)
            raise AssertionError("unreachable")

    w = make_world()
    hanging = Hanging()
    w.requester.legs.backends = {"local": w.fake, "gpu1": hanging}
    with pytest.raises(DeployTimeout):
        await w.requester.run(JOB, plan("gpu1"), fallback=False)
    assert asyncio.get_running_loop().time() == 605  # timeout + grace


async def test_failed_cloud_invocation_falls_back_and_counts_waste(world: World) -> None:
    world.fake.script_invokes("gpu1", InvokeStep(10, fail=True))
    edge_first = dict(TABLE, cpu=est("cpu", 5, 10, 170), gpu2=est("gpu2", 5, 45, 125))
    out = await world.requester.run(
        JOB, SinglePlan("gpu1", mode=Mode.SELECTOR, reason="test", estimates=edge_first)
    )
    assert out.fell_back and out.runtime == "edge"  # the edge is predicted next soonest
    assert "InvocationError" in out.reason and out.error
    assert out.cloud_used_s == out.cloud_wasted_s == 17  # ready at 30, failed at 47
    assert out.total_s == 147
    assert world.fake.live == {}


async def test_a_failed_fallback_falls_back_again_down_to_the_edge(world: World) -> None:
    world.fake.script_invokes("gpu1", InvokeStep(10, fail=True))
    world.fake.script_invokes("gpu2", InvokeStep(1, fail=True))
    out = await world.requester.run(JOB, plan("gpu1"))
    # gpu1 fails, then gpu2 (75 s) and cpu (85 s) are tried before the edge (100 s).
    assert out.fell_back and out.runtime == "cpu"
    assert "gpu1 failed" in out.reason and "gpu2 failed" in out.reason
    assert out.cloud_wasted_s == 17 + (5 + 2 + 1) and world.fake.live == {}


async def test_failing_edge_raises(world: World) -> None:
    world.fake.script_invokes("edge", InvokeStep(3, fail=True))
    with pytest.raises(InvocationError):
        await world.requester.run(JOB, plan("edge"))
    assert world.recorder.processings == []


# Duplicator ---------------------------------------------------------------------------


async def test_duplicator_keeps_the_edge_when_the_pod_is_late(world: World) -> None:
    world.fake.script_deploys("gpu1", 80)  # edge has 20 s left at 80; gpu1 needs 30
    out = await world.requester.run(JOB, plan("gpu1", speculative=True))
    assert (out.winner, out.runtime, out.kept_cloud, out.choice_correct) == (
        "edge",
        "edge",
        False,
        None,
    )
    assert world.fake.times("teardown", "gpu1") == [82.0]  # at once, after the 2 s warm-up
    assert world.fake.ops("invoke", "gpu1") == []
    assert out.cloud_used_s == out.cloud_wasted_s == 2  # only the warm-up
    assert out.total_s == 100 and out.cancelled == ()
    assert "kept the edge" in out.reason
    assert world.fake.live == {}


async def test_duplicator_switches_to_the_cloud_when_the_pod_is_early(world: World) -> None:
    world.fake.script_deploys("gpu1", 20)  # ready + warm at 22: edge needs 78 s, gpu1 30 s
    out = await world.requester.run(JOB, plan("gpu1", speculative=True))
    assert (out.winner, out.kept_cloud, out.choice_correct) == ("gpu1", True, True)
    assert out.total_s == 52 and out.processing_s == 30 and out.cancelled == ("edge",)
    assert world.fake.times("invoke-cancelled", "edge") == [52.0]
    assert world.fake.ops("invoke-done", "edge") == []
    assert out.cloud_used_s == 32 and out.cloud_wasted_s == 0  # ready 20 → down 52
    assert [p.runtime for p in world.recorder.processings] == ["gpu1"]  # no censored edge
    assert world.fake.live == {} and world.fake.running == {}


async def test_duplicator_cloud_predicted_to_win_but_edge_finishes_first(world: World) -> None:
    world.fake.script_deploys("gpu1", 20)
    world.fake.script_invokes("gpu1", 500)  # the prediction (30 s) is badly wrong
    out = await world.requester.run(JOB, plan("gpu1", speculative=True))
    assert (out.winner, out.kept_cloud, out.choice_correct) == ("edge", True, False)
    assert out.cancelled == ("gpu1",) and out.total_s == 100
    assert world.fake.times("invoke-cancelled", "gpu1") == [100.0]
    assert out.cloud_wasted_s == out.cloud_used_s == 80  # ready at 20, cancelled at 100
    assert [p.runtime for p in world.recorder.processings] == ["edge"]
    assert world.fake.live == {} and world.fake.running == {}


async def test_duplicator_edge_done_before_pod_ready_cancels_the_deploy(world: World) -> None:
    world.fake.script_deploys("gpu1", 300)
    out = await world.requester.run(JOB, plan("gpu1", speculative=True))
    assert (out.winner, out.kept_cloud, out.cloud_used_s) == ("edge", None, 0)
    assert world.fake.times("deploy-cancelled", "gpu1") == [100.0]
    assert out.cancelled == ("gpu1",)
    assert world.recorder.transfers[0].seconds == 5  # the upload had finished
    assert world.recorder.deployments == []  # a cancelled deployment is no sample
    assert world.fake.live == {}


async def test_duplicator_runs_on_the_cloud_when_the_edge_fails(world: World) -> None:
    world.fake.script_invokes("edge", InvokeStep(5, fail=True))
    out = await world.requester.run(JOB, plan("gpu1", speculative=True))
    assert out.winner == "gpu1" and out.total_s == 62 and "edge failed" in out.reason
    assert world.fake.live == {}


async def test_duplicator_keeps_the_edge_when_the_cloud_fails(world: World) -> None:
    world.fake.script_deploys("gpu1", DeployStep(float("inf")))
    out = await world.requester.run(JOB, plan("gpu1", speculative=True))
    assert out.winner == "edge" and out.total_s == 100  # edge done before the timeout
    world.fake.script_deploys("gpu1", DeployStep(float("inf")))
    out = await world.requester.run(Job("b2", 400, 1), plan("gpu1", speculative=True))
    assert out.winner == "edge" and "failed" in out.reason  # timeout at 600 < 1000
    assert not world.availability.is_available("gpu1")
    # Planned before the timeout, run after it: the edge runs alone, nothing is deployed.
    out = await world.requester.run(Job("b3", 40, 1), plan("gpu1", speculative=True))
    assert out.winner == "edge" and "unavailable" in out.reason
    assert len(world.fake.ops("deploy", "gpu1")) == 2


# Cancellation -------------------------------------------------------------------------


async def test_cancelling_a_race_stops_both_legs(world: World) -> None:
    world.fake.script_deploys("gpu1", 20)
    task = asyncio.create_task(world.requester.run(JOB, plan("gpu1", speculative=True)))
    await asyncio.sleep(40)  # both the edge and gpu1 are processing now
    assert sorted(name for name, _ in world.fake.running.values()) == ["edge", "gpu1"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert world.fake.running == {} and world.fake.live == {}
    assert world.fake.times("invoke-cancelled") == [40.0, 40.0]


async def test_cancelling_run_itself_tears_down_then_reraises(world: World) -> None:
    task = asyncio.create_task(world.requester.run(JOB, plan("gpu1")))
    await asyncio.sleep(50)  # gpu1 is processing (started at 37)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert world.fake.times("invoke-cancelled", "gpu1") == [50.0]
    assert world.fake.times("teardown", "gpu1") == [50.0]
    assert world.fake.live == {}


# Recorders ----------------------------------------------------------------------------


async def test_multi_recorder_survives_a_failing_recorder(world: World) -> None:
    class Broken(ListRecorder):
        async def processing(self, sample: ProcessingSample) -> None:
            raise RuntimeError("database down")

    good, pred = ListRecorder(), TablePredictor()
    world.requester.legs.recorder = MultiRecorder(Broken(), good, PredictorRecorder(pred))
    out = await world.requester.run(JOB, plan("gpu1"))
    assert out.runtime == "gpu1"
    assert len(good.processings) == 1 and len(good.deployments) == 1
    assert [type(s).__name__ for s in pred.observed] == [
        "DeploymentSample",
        "TransferSample",
        "ProcessingSample",
    ]
