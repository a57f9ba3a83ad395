"""Operator actions through the REST API, in-process on the fake backend: cancel a queued
or running batch (its legs stop), retry a failed one (410 once its package is gone),
drain and undrain, take a runtime out of service and back (kept across a restart, not
probed); each logged with who did it. The page's buttons are in tests/test_ui_actions.py
and tests/test_ui_browser.py, the commands in tests/test_actions_cli.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from stoic.backends.base import Deployment
from stoic.backends.fake import FakeBackend, FakeSpec, InvokeStep
from stoic.schedule.execute.legs import Leg
from stoic.schedule.probe.availability import Availability
from stoic.settings import Settings
from stoic.values import BatchState
from tests.support.controller import until
from tests.support.core import JOB, ListRecorder, leg_runner
from tests.support.daemon import Daemon, files, instant, operator_actions, start_daemon
from tests.support.images import jpeg
from tests.support.inquisitor import Rig
from tests.support.settings import make_settings

TOKEN = "ops-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def hang(fake: FakeBackend, runtime: str) -> Callable[[], bool]:
    """The next call on ``runtime`` lasts until it is cancelled; returns a condition:
    that call has started."""
    fake.script_invokes(runtime, InvokeStep(3600.0))
    return lambda: bool(fake.ops("invoke", runtime))


async def submit(d: Daemon, **data: str) -> str:
    r = await d.client.post("/v1/batches", files=files(("a.jpg", jpeg(1))), data=data)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def state_of(d: Daemon, batch_id: str) -> str:
    return str((await d.client.get(f"/v1/batches/{batch_id}")).json()["state"])


@pytest.fixture
def operated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Settings:
    """A daemon's settings with the operator's token; the operator's log captured."""
    caplog.set_level(logging.INFO, "stoic.operator")
    return make_settings(tmp_path, api={"token": TOKEN})


# Cancel -------------------------------------------------------------------------------


async def test_cancelling_a_running_batch_stops_its_legs_and_it_is_never_rerun(
    operated: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    fake = instant()
    calling = hang(fake, "gpu1")
    async with start_daemon(operated, fake, token=TOKEN) as d:
        batch_id = await submit(d, runtime="gpu1")  # deploys a pod, then hangs in the call
        await until(calling, "the call on gpu1")
        assert fake.live  # the pod is up
        r = await d.client.post(f"/v1/batches/{batch_id}/cancel")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["state"] == "cancelled" and body["finished_at"] is not None
        assert body["error"] == "cancelled by token from 127.0.0.1"
        # Its legs stopped before the answer: the call was cancelled, the pod deleted.
        assert fake.ops("invoke-cancelled", "gpu1") and fake.live == {} and not fake.running
        assert not d.controller.running
        again = await d.client.post(f"/v1/batches/{batch_id}/cancel")
        assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
        assert "is 'cancelled'; cannot cancel" in again.json()["error"]["message"]
        metrics = (await d.client.get("/metrics")).text
        assert 'stoic_batches{state="cancelled"} 1.0' in metrics
        assert 'stoic_operator_actions_total{action="cancel"} 1.0' in metrics
    assert operator_actions(caplog) == [
        {"action": "cancel", "by": "token", "client": "127.0.0.1", "batch_id": batch_id,
         "runtime": None}
    ]  # fmt: skip
    # A restart finds it cancelled: crash recovery does not re-queue it.
    async with start_daemon(operated, instant(), token=TOKEN) as d:
        assert await state_of(d, batch_id) == "cancelled"
        assert d.controller.store.count_batches(BatchState.QUEUED) == 0


async def test_cancelling_a_queued_batch_takes_it_out_of_the_queue(tmp_path: Path) -> None:
    fake = instant()
    calling = hang(fake, "edge")
    settings = make_settings(tmp_path, controller={"max_concurrent_batches": 1})
    async with start_daemon(settings, fake) as d:
        first = await submit(d)
        await until(calling, "the first batch's call")
        second = await submit(d)
        assert await state_of(d, second) == "queued"
        r = await d.client.post(f"/v1/batches/{second}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "cancelled"
        assert r.json()["error"] == "cancelled by anonymous from 127.0.0.1"
        await d.client.post(f"/v1/batches/{first}/cancel")
        # The slot is free and the queue empty: nothing of the second batch ever ran.
        await asyncio.sleep(0.05)
        assert [e.batch_id for e in fake.ops("invoke")] == [first]
        assert await state_of(d, second) == "cancelled"


async def test_only_queued_or_running_batches_can_be_cancelled(daemon: Daemon) -> None:
    done = await submit(daemon)
    await daemon.wait_done(done)
    r = await daemon.client.post(f"/v1/batches/{done}/cancel")
    assert r.status_code == 409 and "is 'done'" in r.json()["error"]["message"]
    r = await daemon.client.post("/v1/batches/nope/cancel")
    assert r.status_code == 404 and r.json()["error"]["code"] == "batch_not_found"


# Retry --------------------------------------------------------------------------------


async def test_a_failed_batch_retried_runs_again_from_its_package(tmp_path: Path) -> None:
    fake = instant()
    fake.script_invokes("edge", InvokeStep(0.0, fail=True))
    async with start_daemon(make_settings(tmp_path), fake) as d:
        batch_id = await submit(d)
        failed = await d.wait_done(batch_id)
        assert failed["state"] == "failed" and failed["error"]
        r = await d.client.post(f"/v1/batches/{batch_id}/retry")
        assert r.status_code == 202, r.text
        assert r.headers["location"] == f"/v1/batches/{batch_id}"
        assert r.json()["state"] == "queued" and r.json()["error"] is None
        done = await d.wait_state(batch_id, "done", "failed")
        assert done["state"] == "done" and done["attempts"] == 1 and len(done["results"]) == 1
        again = await d.client.post(f"/v1/batches/{batch_id}/retry")
        assert again.status_code == 409 and "cannot retry" in again.json()["error"]["message"]


async def test_a_cancelled_batch_can_be_retried(tmp_path: Path) -> None:
    fake = instant()
    calling = hang(fake, "edge")
    async with start_daemon(make_settings(tmp_path), fake) as d:
        batch_id = await submit(d)
        await until(calling, "the call")
        await d.client.post(f"/v1/batches/{batch_id}/cancel")
        assert (await d.client.post(f"/v1/batches/{batch_id}/retry")).status_code == 202
        assert (await d.wait_state(batch_id, "done", "failed"))["state"] == "done"


async def test_a_batch_whose_package_is_gone_cannot_be_retried(tmp_path: Path) -> None:
    fake = instant()
    fake.script_invokes("edge", InvokeStep(0.0, fail=True))
    async with start_daemon(make_settings(tmp_path), fake) as d:
        batch_id = await submit(d)
        await d.wait_done(batch_id)
        record = d.controller.store.get_batch(batch_id)
        d.controller.objects.delete(record.package_key)  # as retention would
        r = await d.client.post(f"/v1/batches/{batch_id}/retry")
        assert r.status_code == 410, r.text
        error = r.json()["error"]
        assert error["code"] == "package_gone" and "submit its images again" in error["message"]
        assert await state_of(d, batch_id) == "failed"


# Drain --------------------------------------------------------------------------------


async def test_drain_lets_running_batches_finish_and_claims_nothing_until_undrained(
    tmp_path: Path,
) -> None:
    fake = FakeBackend(default=FakeSpec(per_image_s=0.0))
    fake.script_invokes("edge", 0.3)
    async with start_daemon(make_settings(tmp_path), fake) as d:
        assert (await d.client.get("/v1/drain")).json() == {
            "drained": False, "since": None, "by": None, "running": 0
        }  # fmt: skip
        running = await submit(d)
        await until(lambda: fake.ops("invoke", "edge"), "the first call")
        r = await d.client.put("/v1/drain")
        assert r.status_code == 200
        assert r.json()["drained"] and r.json()["running"] == 1
        assert r.json()["by"] == "anonymous from 127.0.0.1"
        waiting = await submit(d)  # still accepted
        assert (await d.wait_state(running, "done", "failed"))["state"] == "done"
        # Its end woke the dispatcher, which claims nothing while drained.
        await asyncio.sleep(0.1)
        assert await state_of(d, waiting) == "queued"
        assert (await d.client.get("/readyz")).status_code == 200  # still takes batches
        assert "stoic_dispatch_drained 1.0" in (await d.client.get("/metrics")).text
        r = await d.client.delete("/v1/drain")
        assert r.status_code == 200 and r.json()["drained"] is False
        assert (await d.wait_state(waiting, "done", "failed"))["state"] == "done"


# Runtimes out of service -----------------------------------------------------------------


async def test_a_runtime_out_of_service_gets_no_batch_and_stays_out_after_a_restart(
    operated: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    fake = instant()
    async with start_daemon(operated, fake, token=TOKEN) as d:
        r = await d.client.put("/v1/runtimes/gpu1/out-of-service", json={"reason": "new driver"})
        assert r.status_code == 200, r.text
        out = r.json()
        assert (out["name"], out["available"], out["in_service"]) == ("gpu1", False, False)
        assert out["out_of_service"]["reason"] == "new driver"
        assert out["out_of_service"]["by"] == "token from 127.0.0.1"
        estimate = (await d.client.get("/v1/estimate", params={"images": 5})).json()
        assert "gpu1" not in estimate["estimates"]
        # A batch pinned to it runs elsewhere, and says why.
        pinned = await submit(d, runtime="gpu1")
        done = await d.wait_done(pinned)
        assert done["state"] == "done" and done["winner"] != "gpu1"
        assert "gpu1 unavailable" in done["decision"]["reason"]
        assert fake.ops("deploy", "gpu1") == []
        metrics = (await d.client.get("/metrics")).text
        assert 'stoic_runtime_in_service{runtime="gpu1"} 0.0' in metrics
    async with start_daemon(operated, instant(), token=TOKEN) as d:
        rts = {r["name"]: r for r in (await d.client.get("/v1/runtimes")).json()["runtimes"]}
        assert rts["gpu1"]["in_service"] is False
        assert rts["gpu1"]["out_of_service"]["reason"] == "new driver"
        assert rts["cpu"]["in_service"] is True and rts["cpu"]["out_of_service"] is None
        r = await d.client.delete("/v1/runtimes/gpu1/out-of-service")
        assert r.status_code == 200 and r.json()["in_service"] and r.json()["available"]
        estimate = (await d.client.get("/v1/estimate", params={"images": 5})).json()
        assert "gpu1" in estimate["estimates"]
    assert [(a["action"], a["runtime"]) for a in operator_actions(caplog)] == [
        ("out_of_service", "gpu1"),
        ("in_service", "gpu1"),
    ]


async def test_the_edge_and_unknown_runtimes_cannot_be_taken_out(daemon: Daemon) -> None:
    r = await daemon.client.put("/v1/runtimes/edge/out-of-service")
    assert r.status_code == 409 and r.json()["error"]["code"] == "refused"
    assert "falls back to it" in r.json()["error"]["message"]
    r = await daemon.client.put("/v1/runtimes/tpu/out-of-service")
    assert r.status_code == 404 and r.json()["error"]["code"] == "runtime_not_found"
    assert daemon.controller.availability.in_service("edge")


@pytest.mark.looptime
async def test_the_inquisitor_leaves_a_runtime_out_of_service_alone() -> None:
    rig = Rig(inquisitor={"period_s": 60.0})
    availability: Availability = rig.availability
    task = asyncio.create_task(rig.inquisitor.run())
    await asyncio.sleep(70)
    availability.take_out_of_service("gpu1", 70.0, "maintenance", "token")
    await asyncio.sleep(60)  # the tick at 120 probes the others only
    availability.return_to_service("gpu1", 130.0, "token")
    await asyncio.sleep(60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.fake.times("deploy", "gpu1") == [0.0, 60.0, 180.0]
    assert rig.fake.times("deploy", "gpu2") == [0.0, 60.0, 120.0, 180.0]
    # While out, a successful probe of it would not have brought it back: the hold is apart.
    availability.take_out_of_service("gpu1", 200.0)
    assert availability.mark_available("gpu1", 201.0) is False
    assert not availability.is_available("gpu1") and "gpu1" not in availability.available()


# Auth ---------------------------------------------------------------------------------


async def test_actions_need_the_token(tmp_path: Path) -> None:
    async with start_daemon(make_settings(tmp_path, api={"token": TOKEN})) as d:
        for method, path in (
            ("post", "/v1/batches/x/cancel"),
            ("post", "/v1/batches/x/retry"),
            ("get", "/v1/drain"),
            ("put", "/v1/drain"),
            ("delete", "/v1/drain"),
            ("put", "/v1/runtimes/cpu/out-of-service"),
            ("delete", "/v1/runtimes/cpu/out-of-service"),
        ):
            r = await d.client.request(method, path)
            assert r.status_code == 401, (method, path)
            r = await d.client.request(method, path, headers={"Authorization": "Bearer no"})
            assert r.status_code == 401, (method, path)
        assert (await d.client.get("/v1/drain", headers=AUTH)).status_code == 200
        assert d.controller.availability.in_service("cpu")


@pytest.mark.looptime
async def test_a_second_cancel_does_not_stop_a_leg_half_torn_down() -> None:
    """An operator's cancel, then a stop's drain cancelling the same batch while its
    pod is being deleted: the deletion goes to its end (the pod is not left behind),
    then the task ends cancelled."""

    class SlowTeardown(FakeBackend):
        async def teardown(self, deployment: Deployment) -> None:
            await asyncio.sleep(5.0)
            await super().teardown(deployment)

    settings = Settings()
    runtimes = {r.name: r for r in settings.runtime_list()}
    fake = SlowTeardown(default=FakeSpec(deploy_s=1.0, per_image_s=100.0))
    legs = leg_runner(settings, {"local": fake}, runtimes, ListRecorder())
    leg = Leg(runtimes["gpu1"])
    task = asyncio.create_task(legs.run_leg(JOB, leg))
    await asyncio.sleep(10.0)  # deployed, uploaded, in the call
    task.cancel()
    await asyncio.sleep(1.0)  # tearing down
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.live == {} and fake.times("teardown", "gpu1") == [15.0]
