"""A deploy deadline firing for real: on the local backend (a function process made slow
to start on purpose, abandoned at its deadline, the process killed, the batch run on the
edge, through the requester the daemon's dispatcher runs), and in the daemon (the
selector choosing the deadline from the deployments it learnt, the fallback, the
deadline in the stored decision and on the operator page; with
``policy.deploy_deadline_fallback``, each fallback leg's own deadline as well)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from stoic.backends.fake import FakeBackend, FakeSpec
from stoic.backends.local import LocalBackend
from stoic.schedule.probe.availability import Availability
from stoic.settings import LocalBackendSettings, Settings
from stoic.values import DeploymentSample, Mode, SinglePlan
from tests.support.core import JOB, TABLE, ListRecorder, TablePredictor, leg_runner, requester_of
from tests.support.daemon import Daemon, files, start_daemon
from tests.support.html import dom
from tests.support.images import jpeg
from tests.support.paths import STAND_IN
from tests.support.settings import make_settings


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


async def _forty_images(d: Daemon) -> tuple[dict[str, Any], Any]:
    """Submit a batch of 40 images to daemon ``d``; its record once finished, and its page."""
    images = [(f"{i}.jpg", jpeg(i)) for i in range(40)]
    r = await d.client.post("/v1/batches", files=files(*images))
    batch_id = r.json()["id"]
    body = await d.wait_done(batch_id)
    page = dom((await d.client.get(f"/ui/batches/{batch_id}")).text)
    return body, page


async def test_a_deadline_fires_in_the_daemon_and_the_page_shows_it(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, policy={"deploy_deadline": True}, api={"max_batch_images": 40}
    )
    async with start_daemon(settings) as d:
        # gpu1 ready in 0.2 s or in 500 s, half and half: given up on after 0.2 s.
        for k, seconds in enumerate([0.2, 500.0] * 20):
            d.controller.predictor.observe_deployment(DeploymentSample("gpu1", k, seconds))
        d.fake.script_deploys("gpu1", 30.0)  # this one is slow
        body, page = await _forty_images(d)
    decision = body["decision"]
    assert decision["runtime"] == "gpu1"
    deadline = decision["estimates"]["gpu1"]["deadline_s"]
    assert deadline == pytest.approx(0.2, abs=0.1)
    # Abandoned at the deadline, the batch fell back to the runtime predicted soonest.
    assert body["state"] == "done" and body["winner"] == "gpu2"
    assert "DeployAbandoned" in decision["reason"] and "abandoned" in body["error"]
    rows = page.find("table", class_="estimates").find("tbody").find_all("tr")
    gpu1 = next(tr for tr in rows if tr.find("td").text() == "gpu1")
    assert f"deploy deadline {deadline:.3g} s" in gpu1.text()


async def test_a_fallback_leg_is_abandoned_at_its_own_deadline_in_the_daemon(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        tmp_path,
        policy={"deploy_deadline": True, "deploy_deadline_fallback": True},
        api={"max_batch_images": 40},
    )
    cloud = ("cpu", "gpu1", "gpu2")
    async with start_daemon(settings) as d:
        # Every pod ready in 0.2 s or in 60 s, half and half (each cloud runtime predicted
        # sooner than the edge, so a failed one falls back to another); this batch's are
        # all slow.
        for name in cloud:
            for k, seconds in enumerate([0.2, 60.0] * 20):
                d.controller.predictor.observe_deployment(DeploymentSample(name, k, seconds))
            d.fake.script_deploys(name, 30.0)
        quote = (await d.client.get("/v1/estimate", params={"images": 40})).json()
        body, page = await _forty_images(d)
    decision = body["decision"]
    planned = decision["runtime"]
    assert planned in cloud
    after = {
        k: v["fallback_deadline_s"]
        for k, v in decision["estimates"].items()
        if v.get("fallback_deadline_s") is not None
    }
    assert after and planned not in after
    assert all(v == pytest.approx(0.2, abs=0.1) for v in after.values())
    quoted = {k: v["fallback_deadline_s"] for k, v in quote["estimates"].items()}
    assert {k: v for k, v in quoted.items() if v is not None} == after
    # Each cloud leg given up on at its deadline (none waited the 30 s), the edge last.
    assert body["state"] == "done" and body["winner"] == "edge"
    assert decision["reason"].count("DeployAbandoned") == 1 + len(after)
    assert body["measured"]["end_to_end_s"] < 30
    rows = page.find("table", class_="estimates").find("tbody").find_all("tr")
    shown = [tr for tr in rows if "as a fallback" in tr.text()]
    assert len(shown) == len(after)
