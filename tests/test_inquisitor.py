"""The inquisitor: probes, availability, and a periodic loop on virtual time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stoic.backends.fake import DeployStep, FakeBackend
from stoic.clock import LoopClock
from stoic.errors import ConfigError
from stoic.schedule.availability import Availability, AvailabilityChange
from stoic.schedule.inquisitor import Inquisitor
from stoic.schedule.legs import LegRunner
from stoic.schedule.requester import Requester
from stoic.schedule.scheduler import Scheduler
from stoic.settings import Settings
from stoic.values import DeploymentSample, DeployOutcome, Job, Mode
from tests.test_requester import EPOCH, SPECS, ListRecorder, TablePredictor, est

pytestmark = pytest.mark.looptime


class Rig:
    def __init__(self, **overrides: Any) -> None:
        self.settings = Settings(**overrides)
        self.runtimes = {r.name: r for r in self.settings.runtime_list()}
        self.fake = FakeBackend(dict(SPECS))
        self.recorder = ListRecorder()
        self.changes: list[AvailabilityChange] = []
        self.availability = Availability(self.runtimes.values(), listener=self.changes.append)
        self.clock = LoopClock(EPOCH)
        self.backends: dict[str, Any] = {"local": self.fake}
        legs = LegRunner(self.backends, self.runtimes, self.recorder, self.clock, self.settings)
        self.inquisitor = Inquisitor(legs, self.availability)


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
    legs = LegRunner(
        rig.backends,
        rig.runtimes,
        ListRecorder(),
        rig.clock,
        rig.settings,
        availability=rig.availability,
    )
    requester = Requester(legs, predictor)
    scheduler = Scheduler(predictor, requester, rig.availability, rig.settings)
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
    assert plan.runtime == "gpu1" and "gpu2" not in plan.estimates
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


async def test_run_skips_a_runtime_whose_probe_is_still_running() -> None:
    rig = Rig(predictor={"inquisitor_period_s": 60.0, "deploy_timeout_s": 100.0})
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
