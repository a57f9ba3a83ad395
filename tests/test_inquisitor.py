"""The inquisitor: probes, availability, and a periodic loop on virtual time."""

from __future__ import annotations

import asyncio

import pytest

from stoic.backends.fake import DeployStep, FakeBackend, InvokeStep
from stoic.errors import ConfigError
from stoic.schedule.probe.availability import AvailabilityChange
from stoic.schedule.scheduler import Scheduler
from stoic.values import (
    DeploymentSample,
    DeployOutcome,
    Job,
    Mode,
    ProcessingSample,
    SinglePlan,
)
from tests.support.core import (
    EPOCH,
    ListRecorder,
    TablePredictor,
    est,
    leg_runner,
    requester_of,
)
from tests.support.inquisitor import ListWork, Rig

pytestmark = pytest.mark.looptime


@pytest.fixture
def rig() -> Rig:
    return Rig()


async def test_probe_records_the_deployment_time_and_tears_down(rig: Rig) -> None:
    sample = await rig.inquisitor.probe("gpu1")
    assert sample == DeploymentSample("gpu1", EPOCH, 30.0, DeployOutcome.OK)
    assert rig.recorder.deployments == [sample]
    assert rig.fake.times("teardown", "gpu1") == [30.0] and rig.fake.live == {}
    assert rig.fake.ops("invoke") == []  # nothing runs: deploy, measure, take down


async def test_timeout_marks_unavailable_and_a_success_brings_it_back(rig: Rig) -> None:
    predictor = TablePredictor()
    predictor.table["gpu2"] = est("gpu2", 5, 20, 25)  # the fastest, when available
    legs = leg_runner(
        rig.settings, rig.backends, rig.runtimes, ListRecorder(), rig.availability, rig.clock
    )
    requester = requester_of(rig.settings, legs, predictor)
    scheduler = Scheduler(predictor, requester, rig.availability)
    job = Job("b", n_images=400, n_bytes=1)

    rig.fake.script_deploys("gpu2", DeployStep(float("inf")))
    sample = await rig.inquisitor.probe("gpu2")
    assert sample == DeploymentSample("gpu2", EPOCH, 600.0, DeployOutcome.TIMEOUT)
    assert asyncio.get_running_loop().time() == 600
    assert rig.availability.available() == {"edge", "cpu", "gpu1"}
    assert rig.changes == [AvailabilityChange("gpu2", False, EPOCH + 600, rig.changes[0].reason)]
    assert rig.fake.live == {}

    plan = scheduler.plan(job, mode=Mode.SELECTOR)
    assert predictor.asked[-1] == ["edge", "cpu", "gpu1"]  # excluded from estimates
    assert plan.chosen == "gpu1" and "gpu2" not in plan.estimates
    pinned = scheduler.plan(job, mode=Mode.PINNED, pinned="gpu2")
    assert pinned.runtime == "edge" and "unavailable" in pinned.reason

    sample = await rig.inquisitor.probe("gpu2")
    assert sample.outcome is DeployOutcome.OK and sample.duration_s == 45
    assert rig.availability.is_available("gpu2")
    assert [c.available for c in rig.changes] == [False, True]
    assert rig.changes[1].at == EPOCH + 645
    assert scheduler.plan(job, mode=Mode.SELECTOR).runtime == "gpu2"


async def test_failure_is_recorded_and_leaves_availability_alone(rig: Rig) -> None:
    rig.fake.script_deploys("cpu", DeployStep(3, fail=True))
    sample = await rig.inquisitor.probe("cpu")
    assert (sample.outcome, sample.duration_s) == (DeployOutcome.FAILURE, 3.0)
    assert rig.availability.is_available("cpu") and rig.changes == []


async def test_probe_all_is_concurrent(rig: Rig) -> None:
    samples = await rig.inquisitor.probe_all()
    assert [(s.runtime, s.duration_s) for s in samples] == [
        ("cpu", 10),
        ("gpu1", 30),
        ("gpu2", 45),
    ]
    assert rig.fake.times("deploy") == [0.0, 0.0, 0.0]
    assert asyncio.get_running_loop().time() == 45


async def test_the_edge_and_unknown_runtimes_are_not_probed(rig: Rig) -> None:
    with pytest.raises(ConfigError, match="edge"):
        await rig.inquisitor.probe("edge")
    with pytest.raises(ConfigError, match="unknown runtime 'tpu'"):
        await rig.inquisitor.probe("tpu")


async def test_run_probes_on_the_period_grid(rig: Rig) -> None:
    task = asyncio.create_task(rig.inquisitor.run())
    await asyncio.sleep(200)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for name in ("cpu", "gpu1", "gpu2"):
        assert rig.fake.times("deploy", name) == [0.0, 60.0, 120.0, 180.0]
    assert rig.fake.ops("deploy", "edge") == []
    # The probe started at 180 was still deploying gpu1/gpu2 at 200: cancelled, not leaked.
    assert rig.fake.times("deploy-cancelled") == [200.0, 200.0]
    assert rig.fake.live == {}
    assert len(rig.recorder.deployments) == 3 * 3 + 1  # cpu's 4th (10 s) finished at 190


async def test_a_runtime_with_a_period_of_its_own_is_probed_on_it_from_one_period_in() -> None:
    # The daemon's local stand-ins: every local.probe_period_s (rounded to whole ticks),
    # the first a period after the start, not at once.
    rig = Rig(deploy_periods=(("cpu", 170.0),))
    task = asyncio.create_task(rig.inquisitor.run())
    await asyncio.sleep(400)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.fake.times("deploy", "cpu") == [180.0, 360.0]
    assert rig.fake.times("deploy", "gpu1") == [0.0, 60.0, 120.0, 180.0, 240.0, 300.0, 360.0]


async def test_run_skips_a_runtime_whose_probe_is_still_running() -> None:
    rig = Rig(inquisitor={"period_s": 60.0}, predictor={"deploy_timeout_s": 100.0})
    rig.fake.script_deploys("gpu2", DeployStep(float("inf")), 5)
    task = asyncio.create_task(rig.inquisitor.run())
    await asyncio.sleep(130)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.fake.times("deploy", "gpu2") == [0.0, 120.0]  # 60 skipped: still deploying
    assert rig.fake.times("deploy", "gpu1") == [0.0, 60.0, 120.0]
    assert rig.inquisitor.skipped == 1
    assert [c.available for c in rig.changes] == [False, True]  # down at 100, up at 125


async def test_run_survives_a_crashing_backend(caplog: pytest.LogCaptureFixture) -> None:
    class Crashing(FakeBackend):
        async def deploy(self, runtime, *, timeout_s):
            self._log("deploy", runtime.name)
            raise RuntimeError("client library bug")

    rig = Rig()
    crashing = Crashing()
    rig.backends["gpu1"] = crashing  # a key naming the runtime beats the backend kind
    task = asyncio.create_task(rig.inquisitor.run())
    await asyncio.sleep(150)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert crashing.times("deploy") == [0.0, 60.0, 120.0]  # kept going after each crash
    assert rig.fake.times("deploy", "gpu2") == [0.0, 60.0, 120.0]
    assert "probe crashed" in caplog.text
    assert rig.availability.is_available("gpu1")


async def test_the_edge_is_never_marked_unavailable() -> None:
    rig = Rig()
    assert not rig.availability.mark_unavailable("edge", 0.0)
    assert rig.availability.is_available("edge")
    with pytest.raises(ConfigError):
        rig.availability.mark_available("nope", 0.0)


async def test_a_failing_listener_does_not_stop_marking(rig: Rig) -> None:
    def broken(change: AvailabilityChange) -> None:
        raise RuntimeError("store down")

    rig.availability.add_listener(broken)
    assert rig.availability.mark_unavailable("cpu", 1.0, "test")
    assert not rig.availability.mark_unavailable("cpu", 2.0)  # no change, no event
    assert rig.availability.unavailable()["cpu"].at == 1.0
    assert len(rig.changes) == 1


# Processing probes ---------------------------------------------------------------------


async def test_a_due_runtime_is_also_timed_on_a_probe_batch_sizes_in_turn() -> None:
    work = ListWork()
    rig = Rig(work, inquisitor={"processing_probe_period_s": 600.0})
    await rig.inquisitor.probe("gpu1")  # deploy 30 s, warm-up 2 s, 10 images x 0.75 s
    assert [e.op for e in rig.fake.events if e.op in ("warmup", "invoke", "teardown")] == [
        "warmup",
        "invoke",
        "teardown",
    ]
    assert rig.recorder.processings == [
        ProcessingSample("classify", "1", "gpu1", 10, 10_000, 7.5, EPOCH + 39.5)
    ]
    assert rig.inquisitor.cloud_s == {"gpu1": 9.5}  # warm-up and call: pod time held
    assert rig.recorder.deployments[0].duration_s == 30.0  # T_d is still the deployment's

    await rig.inquisitor.probe("gpu1")  # 69.5 s later: not due (period 600 s)
    assert len(rig.recorder.processings) == 1 and rig.fake.ops("invoke", "gpu1")[1:] == []
    await asyncio.sleep(600)
    await rig.inquisitor.probe("gpu1")
    assert [s.images for s in rig.recorder.processings] == [10, 100]  # the next size
    assert work.asked == [("gpu1", 10), ("gpu1", 100)]
    assert rig.inquisitor.processing_probes == 2


async def test_a_runtime_that_batches_measure_is_not_probed() -> None:
    rig = Rig(ListWork(), inquisitor={"processing_probe_period_s": 600.0})
    await rig.legs.recorder.processing(
        ProcessingSample("classify", "1", "gpu1", 40, 1, 30.0, EPOCH)
    )
    await asyncio.sleep(500)
    await rig.inquisitor.probe("gpu1")  # measured 530 s before the pod was ready
    await rig.inquisitor.probe("cpu")  # never measured
    # The batch's sample (fed above), then the never-measured cpu's probe.
    assert [s.runtime for s in rig.recorder.processings] == ["gpu1", "cpu"]
    assert rig.fake.ops("invoke", "gpu1") == []


async def test_processing_probes_off_without_work_or_period() -> None:
    for rig in (Rig(None), Rig(ListWork(), inquisitor={"processing_probe_period_s": 0.0})):
        await rig.inquisitor.probe("gpu1")
        assert rig.recorder.processings == [] and rig.fake.ops("invoke") == []
    rig = Rig(ListWork(available=False))  # nothing to probe with yet: no call, no sample
    await rig.inquisitor.probe("gpu1")
    assert rig.recorder.processings == [] and rig.fake.ops("warmup") == []


async def test_a_failing_probe_call_is_logged_and_the_pod_torn_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(ListWork())
    rig.fake.script_invokes("gpu1", InvokeStep(3.0, fail=True))
    sample = await rig.inquisitor.probe("gpu1")
    assert sample.outcome is DeployOutcome.OK and rig.recorder.processings == []
    assert "processing probe failed" in caplog.text
    assert rig.fake.live == {} and rig.availability.is_available("gpu1")
    await asyncio.sleep(3600)  # the failed attempt counts: next one a period later
    await rig.inquisitor.probe("gpu1")
    assert [s.images for s in rig.recorder.processings] == [100]


async def test_run_probes_the_edge_when_due_and_nothing_deploys_it() -> None:
    rig = Rig(ListWork(), inquisitor={"processing_probe_period_s": 90.0})
    task = asyncio.create_task(rig.inquisitor.run())
    await asyncio.sleep(200)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    edge = [s for s in rig.recorder.processings if s.runtime == "edge"]
    # Ticks at 0, 60, 120, 180: due at 0 (10 images, 25 s); at 60 measured 35 s ago;
    # due again at 120 (95 s): 100 images, 250 s, still running when cancelled at 200.
    assert [(s.images, s.at - EPOCH) for s in edge] == [(10, 25.0)]
    assert rig.fake.times("invoke", "edge") == [0.0, 120.0]
    assert rig.fake.times("invoke-cancelled", "edge") == [200.0] and rig.fake.running == {}
    assert rig.fake.ops("warmup", "edge") == []  # the edge keeps a warm standby
    assert rig.inquisitor.cloud_s.get("edge") is None  # no pod time on the edge


async def test_no_images_to_probe_with_wakes_no_edge_standby() -> None:
    # A daemon that has accepted no batch yet: the edge's probe asks for images first
    # and takes no standby (on the local backend, a TensorFlow process) for nothing.
    work = ListWork(available=False)
    rig = Rig(work, inquisitor={"processing_probe_period_s": 90.0})
    task = asyncio.create_task(rig.inquisitor.run())
    await asyncio.sleep(130)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ("edge", 10) in work.asked
    assert rig.fake.ops("deploy", "edge") == []


async def test_pod_seconds_a_probe_holds_are_told() -> None:
    held: list[tuple[str, float]] = []
    rig = Rig(
        ListWork(),
        inquisitor={"processing_probe_period_s": 600.0},
        on_held=lambda r, s: held.append((r, s)),
    )
    await rig.inquisitor.probe("gpu1")  # warm-up 2 s, 10 images x 0.75 s: 9.5 s after ready
    await rig.inquisitor.probe("cpu")  # warm-up 1 s, 10 images x 1.75 s
    await rig.inquisitor.probe("gpu1")  # not due: ready and torn down at once
    assert held == [("gpu1", 9.5), ("cpu", 18.5), ("gpu1", 0.0)]
    assert rig.inquisitor.cloud_s == {"gpu1": 9.5, "cpu": 18.5}


async def test_the_edge_is_not_probed_while_a_batch_runs_there() -> None:
    rig = Rig(ListWork(), inquisitor={"processing_probe_period_s": 90.0})
    job = Job("b", n_images=40, n_bytes=1)
    requester = requester_of(rig.settings, rig.legs, TablePredictor())
    batch = asyncio.create_task(  # the edge is busy for 100 s (40 images x 2.5 s)
        requester.run(job, SinglePlan("edge", mode=Mode.PINNED, reason="test"))
    )
    for _ in range(100):  # a few loop turns, no time: the edge leg is deployed at 0
        if rig.legs.in_use["edge"]:
            break
        await asyncio.sleep(0)
    task = asyncio.create_task(rig.inquisitor.run())
    await asyncio.sleep(130)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await batch
    # Ticks at 0 and 60 found the edge busy; at 120 it had been measured 20 s before.
    assert rig.fake.times("invoke", "edge") == [0.0]
    assert rig.legs.in_use["edge"] == 0


async def test_no_processing_probe_of_a_runtime_that_could_not_win() -> None:
    rig = Rig(ListWork(), worth=lambda name: name != "gpu2")  # Scheduler.worth_probing's say
    await rig.inquisitor.probe_all()
    assert sorted(s.runtime for s in rig.recorder.processings) == ["cpu", "gpu1"]
    assert len(rig.recorder.deployments) == 3  # its deployment is still probed
