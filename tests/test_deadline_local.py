"""A deploy deadline firing on the local backend: a real function process made slow to
start on purpose, abandoned at its deadline (the process killed) and the batch run on
the edge, through the requester the daemon's dispatcher runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from stoic.backends.fake import FakeBackend, FakeSpec
from stoic.backends.local import LocalBackend
from stoic.schedule.probe.availability import Availability
from stoic.settings import LocalBackendSettings, Settings
from stoic.values import Mode, SinglePlan
from tests.support.core import JOB, TABLE, ListRecorder, TablePredictor, leg_runner, requester_of
from tests.support.paths import STAND_IN


async def test_a_deadline_abandons_a_slow_local_deployment(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    slow = LocalBackend(
        data_dir=tmp_path / "data",
        objects_path=tmp_path / "data" / "objects",
        options=LocalBackendSettings(ready_poll_s=0.02, terminate_grace_s=2.0),
        command=[sys.executable, str(STAND_IN), "--start-delay", "600"],
        env={"STANDIN_PIDFILE": str(pids)},
    )
    settings = Settings()
    runtimes = {r.name: r for r in settings.runtime_list()}
    recorder, availability = ListRecorder(), Availability(runtimes.values())
    edge = FakeBackend({"edge": FakeSpec(per_image_s=0.0)})
    legs = leg_runner(settings, {"cpu": slow, "local": edge}, runtimes, recorder, availability)
    requester = requester_of(settings, legs, TablePredictor())
    plan = SinglePlan(
        "cpu",
        mode=Mode.SELECTOR,
        reason="test",
        estimates={"edge": TABLE["edge"], "cpu": TABLE["cpu"]},
        deadlines={"cpu": 0.5},
    )
    try:
        out = await requester.run(JOB, plan)
        (pid,) = map(int, pids.read_text().split())
        assert slow.live_pids() == []
        with pytest.raises(ProcessLookupError):  # killed and reaped at the deadline
            os.kill(pid, 0)
    finally:
        await slow.aclose()
    assert (out.runtime, out.fell_back) == ("edge", True)
    assert "DeployAbandoned" in out.reason and "deadline of 0.5 s" in out.reason
    assert availability.is_available("cpu")  # not a timeout: the runtime stays up
    assert recorder.deployments == []
