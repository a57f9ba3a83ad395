"""The local backend against real processes.

Most tests launch the stand-in function server ``tests/standin_function.py``
(standard library only, so it starts in a blink and needs no TensorFlow) whose
behaviour the test picks with flags: a start delay, a crash, a slow call. The stand-in
speaks the function's protocol (``/healthz``, POST ``/`` with ``package``/``model``
keys, 404 with ``error``/``key``) and reads the packages from the same directory store.
One slow test runs the real ``python -m stoic.function.server`` with a demo model.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
import signal
import sys
import tarfile
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from stoic.backends.base import Deployment, RuntimeBackend, Upload
from stoic.backends.local import LocalBackend
from stoic.clock import WallClock
from stoic.errors import DeployFailure, DeployTimeout, InvocationError
from stoic.schedule.execute.keepalive import KeepAliveOptions
from stoic.schedule.execute.legs import Leg, LegRunner, release_on
from stoic.schedule.execute.warm import WarmPool
from stoic.settings import LocalBackendSettings, load_settings
from stoic.storage.package import model_key, package_key
from stoic.values import Job, Runtime, RuntimeKind
from tests.support.controller import until
from tests.support.core import ListRecorder
from tests.support.function import TIMINGS
from tests.support.paths import STAND_IN

EDGE = Runtime("edge", RuntimeKind.EDGE)
CPU = Runtime("cpu", RuntimeKind.CPU)


def gone(pid: int) -> bool:
    """True once ``pid`` is neither running nor a zombie (it was reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def make_store(
    root: Path, batch_id: str = "b1", names: tuple[str, ...] = ("a.jpg", "b.jpg")
) -> Job:
    objects = root / "objects"
    pkg = objects / package_key(batch_id)
    pkg.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(pkg, "w") as tar:
        for n in names:
            data = b"\xff\xd8fake"
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    model = objects / model_key("classify", "1")
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(b"model")
    return Job(batch_id, len(names), pkg.stat().st_size, package_key=package_key(batch_id))


Factory = Callable[..., LocalBackend]


@pytest.fixture
async def backend_factory(tmp_path: Path) -> AsyncIterator[Factory]:
    made: list[LocalBackend] = []

    def make(*flags: str, env: dict[str, str] | None = None, **kw: Any) -> LocalBackend:
        opts = kw.pop("options", LocalBackendSettings(ready_poll_s=0.02, terminate_grace_s=2.0))
        b = LocalBackend(
            data_dir=tmp_path / "data",
            objects_path=tmp_path / "data" / "objects",
            options=opts,
            command=kw.pop("command", [sys.executable, str(STAND_IN), *flags]),
            env={"STANDIN_PIDFILE": str(tmp_path / "pids"), **(env or {})},
            **kw,
        )
        made.append(b)
        return b

    yield make
    for b in made:
        await b.aclose()


Deployed = tuple[LocalBackend, Job, Deployment]


@pytest.fixture
async def deployed(backend_factory: Factory, tmp_path: Path) -> Deployed:
    """The stand-in deployed for the cpu runtime, and a stored package to give it."""
    job = make_store(tmp_path / "data")
    backend = backend_factory()
    return backend, job, await backend.deploy(CPU, timeout_s=30)


async def test_is_a_runtime_backend(backend_factory: Factory) -> None:
    assert isinstance(backend_factory(), RuntimeBackend)


async def test_deploy_measures_real_time_to_ready(backend_factory: Factory) -> None:
    backend = backend_factory("--start-delay", "0.4")
    d = await backend.deploy(CPU, timeout_s=30)
    pid = d.info["pid"]
    assert d.deploy_s >= 0.4  # the stand-in answered 503 until then
    assert not gone(pid) and backend.live_pids() == [pid]
    async with httpx.AsyncClient(trust_env=False) as c:
        assert (await c.get(f"{d.endpoint}/healthz")).status_code == 200
    await backend.teardown(d)
    assert gone(pid) and backend.live_pids() == []
    assert not await asyncio.to_thread(Path(d.info["log"]).exists)  # a clean stop drops it
    await backend.teardown(d)  # idempotent


async def test_env_carries_store_port_and_hides_gpus(backend_factory: Factory, tmp_path: Path):
    backend = backend_factory()
    d = await backend.deploy(CPU, timeout_s=30)
    async with httpx.AsyncClient(trust_env=False) as c:
        env = (await c.get(f"{d.endpoint}/env")).json()
    assert env == {
        "CUDA_VISIBLE_DEVICES": "",
        "FUNC_HOST": "127.0.0.1",
        "FUNC_PORT": str(d.info["port"]),
        "STOIC_DATA_DIR": str((tmp_path / "data").resolve()),
        "STOIC_OBJECTSTORE__KIND": "dir",
        "STOIC_OBJECTSTORE__PATH": str((tmp_path / "data" / "objects").resolve()),
    }


async def test_deploy_timeout_kills_the_process(backend_factory: Factory, tmp_path: Path):
    backend = backend_factory("--start-delay", "600")
    with pytest.raises(DeployTimeout) as info:
        await backend.deploy(CPU, timeout_s=1.5)
    assert info.value.runtime == "cpu" and info.value.timeout_s == 1.5
    (pid,) = map(int, (tmp_path / "pids").read_text().split())
    assert gone(pid)
    assert backend.live_pids() == []


async def test_crash_before_ready_is_a_deploy_failure_with_stderr(backend_factory: Factory):
    backend = backend_factory("--crash", "ImportError: no module named tensorflow")
    with pytest.raises(DeployFailure) as info:
        await backend.deploy(CPU, timeout_s=30)
    message = str(info.value)
    assert message.startswith("cpu: ")
    assert "exited with code 3" in message
    assert "ImportError: no module named tensorflow" in message
    assert backend.live_pids() == []


async def test_reported_startup_failure_is_a_deploy_failure_at_once(backend_factory: Factory):
    backend = backend_factory("--fail-startup", "ImportError: tensorflow")
    with pytest.raises(DeployFailure, match="failed to start: ImportError: tensorflow"):
        await backend.deploy(CPU, timeout_s=600)  # well before the timeout
    assert backend.live_pids() == []


async def test_invoke_returns_the_function_results(deployed: Deployed) -> None:
    backend, job, d = deployed
    up = await backend.upload(CPU, job)
    assert up == Upload(ref="batches/b1/package.tar", n_bytes=job.n_bytes, seconds=0.0)
    inv = await backend.invoke(d, job, up)
    assert [r["name"] for r in inv.results] == ["a.jpg", "b.jpg"]
    assert set(inv.timings) == TIMINGS
    assert inv.processing_s >= inv.timings["total_s"] > 0
    warm = await backend.invoke(d, job, up, warmup=True)
    assert len(warm.results) == 1
    await backend.teardown(d)


async def test_upload_defaults_the_package_key(backend_factory: Factory) -> None:
    up = await backend_factory().upload(EDGE, Job("b7", 3, 100))
    assert (up.ref, up.n_bytes, up.seconds) == ("batches/b7/package.tar", 100, 0.0)


async def test_missing_package_and_model_are_invocation_errors(
    backend_factory: Factory, deployed: Deployed
) -> None:
    backend, job, d = deployed
    missing = Upload("batches/nope/package.tar", 0, 0.0)
    with pytest.raises(InvocationError, match=r"HTTP 404.*batches/nope/package\.tar"):
        await backend.invoke(d, job, missing)
    other = backend_factory(model_key="models/classify/9/model.keras")
    d2 = await other.deploy(CPU, timeout_s=30)
    with pytest.raises(InvocationError, match=r"HTTP 404: model not found.*classify/9"):
        await other.invoke(d2, job, await other.upload(CPU, job))


async def test_invoke_on_a_dead_process_is_an_invocation_error(deployed: Deployed) -> None:
    backend, job, d = deployed
    os.kill(d.info["pid"], signal.SIGKILL)
    with pytest.raises(InvocationError, match=r"killed by SIGKILL|call to function process"):
        await backend.invoke(d, job, await backend.upload(CPU, job))
    await backend.teardown(d)
    assert gone(d.info["pid"])


@contextlib.asynccontextmanager
async def notifier() -> AsyncIterator[tuple[int, asyncio.Queue[int]]]:
    """A loopback server the stand-in calls when a request reaches it."""
    arrived: asyncio.Queue[int] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await arrived.put(int(await reader.readline()))
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], arrived
    finally:
        server.close()
        await server.wait_closed()


async def cancel_a_call(
    backend: LocalBackend, d: Deployment, job: Job, arrived: asyncio.Queue[int]
) -> None:
    """Cancel an invocation once it reaches the function; its process is gone after."""
    task = asyncio.create_task(backend.invoke(d, job, await backend.upload(d.runtime, job)))
    assert await asyncio.wait_for(arrived.get(), 30) == d.info["pid"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gone(d.info["pid"])


async def test_cancelling_invoke_kills_the_process(backend_factory: Factory, tmp_path: Path):
    job = make_store(tmp_path / "data")
    async with notifier() as (port, arrived):
        backend = backend_factory("--invoke-delay", "600", env={"STANDIN_NOTIFY": str(port)})
        d = await backend.deploy(CPU, timeout_s=30)
        await cancel_a_call(backend, d, job, arrived)
        assert backend.live_pids() == []
        await backend.teardown(d)  # still fine after the kill


async def test_a_warm_pod_is_reused_then_stopped_when_its_keep_alive_ends(
    backend_factory: Factory, tmp_path: Path
) -> None:
    job = make_store(tmp_path / "data")
    backend = backend_factory()
    pool = WarmPool(
        KeepAliveOptions(enabled=True, fixed_s=3600.0),
        clock=WallClock(),
        cold_s=lambda _: 30.0,
        release=lambda rt, dep: release_on({rt.name: backend}, rt, dep),
    )
    recorder = ListRecorder()
    legs = LegRunner({"cpu": backend}, {"cpu": CPU}, recorder, WallClock(), warm_pods=pool)
    first, second = Leg(CPU), Leg(CPU)
    await legs.run_leg(job, first)
    assert first.deployment is not None and pool.warm() == {"cpu"}
    pid = first.deployment.info["pid"]
    assert backend.live_pids() == [pid]
    await legs.run_leg(job, second)
    assert second.warm and second.deployment is first.deployment  # the same process
    assert len(recorder.deployments) == 1 and len(recorder.processings) == 2
    pool.options = replace(pool.options, fixed_s=0.05)  # kept again, now briefly
    third = Leg(CPU)
    await legs.run_leg(job, third)
    assert third.deployment is first.deployment and pool.warm() == {"cpu"}
    await until(lambda: pool.expired == 1 and backend.live_pids() == [])
    await until(lambda: gone(pid))


async def test_edge_standby_is_reused_and_survives_teardown(backend_factory: Factory):
    backend = backend_factory("--start-delay", "0.3", edge=EDGE)
    await backend.start()
    first = await backend.deploy(EDGE, timeout_s=30)
    assert first.info["standby"] is True
    await backend.teardown(first)
    assert not gone(first.info["pid"])
    second = await backend.deploy(EDGE, timeout_s=30)
    assert second.info["pid"] == first.info["pid"]
    assert second.deploy_s < 0.3  # no new start: the standby was already up
    assert backend.standby_pid(EDGE) == first.info["pid"]
    await backend.aclose()
    assert gone(first.info["pid"])
    assert backend.standby_pid(EDGE) is None
    await backend.aclose()  # idempotent
    with pytest.raises(DeployFailure, match="closed"):
        await backend.deploy(EDGE, timeout_s=30)


async def test_an_idle_standby_is_stopped_and_started_again_when_needed(
    backend_factory: Factory,
) -> None:
    opts = LocalBackendSettings(ready_poll_s=0.02, terminate_grace_s=2.0, standby_idle_s=0.2)
    backend = backend_factory(edge=EDGE, options=opts)
    await backend.start()
    held = await backend.deploy(EDGE, timeout_s=30)
    pid = held.info["pid"]
    await asyncio.sleep(0.6)  # in use for longer than standby_idle_s: kept
    assert backend.standby_pid(EDGE) == pid and not gone(pid)
    await backend.teardown(held)
    # Unused for standby_idle_s: stopped, and reaped. The kernel reaps the process a loop
    # turn or more before asyncio hands its return code to the backend, so wait for both.
    async with asyncio.timeout(30):
        for _ in itertools.count():
            if gone(pid) and backend.live_pids() == []:
                break
            await asyncio.sleep(0.05)
    assert backend.standby_pid(EDGE) is None
    again = await backend.deploy(EDGE, timeout_s=30)  # the next edge run starts one
    assert again.info["standby"] and again.info["pid"] != pid and not gone(again.info["pid"])


async def test_dead_standby_is_restarted(backend_factory: Factory) -> None:
    backend = backend_factory(edge=EDGE)
    await backend.start()
    old = (await backend.deploy(EDGE, timeout_s=30)).info["pid"]
    os.kill(old, signal.SIGKILL)
    # At once, before the child watcher may have seen the death: deploy probes it.
    d = await backend.deploy(EDGE, timeout_s=30)
    assert d.info["pid"] != old and not gone(d.info["pid"])
    assert gone(old)


async def test_edge_standby_is_launched_by_first_deploy_without_start(backend_factory: Factory):
    backend = backend_factory("--start-delay", "0.3")
    d = await backend.deploy(EDGE, timeout_s=30)
    assert d.deploy_s >= 0.3 and d.info["standby"]
    assert (await backend.deploy(EDGE, timeout_s=30)).info["pid"] == d.info["pid"]


async def test_standby_launch_past_the_deploy_timeout(backend_factory: Factory, tmp_path: Path):
    backend = backend_factory("--start-delay", "600", edge=EDGE)
    await backend.start()
    with pytest.raises(DeployTimeout):
        await backend.deploy(EDGE, timeout_s=0.5)
    # The standby keeps coming up for the next batch; close() stops it.
    (pid,) = backend.live_pids()
    await backend.aclose()
    assert gone(pid)


async def test_cancelled_edge_invoke_kills_standby_and_starts_a_fresh_one(
    backend_factory: Factory, tmp_path: Path
) -> None:
    job = make_store(tmp_path / "data")
    async with notifier() as (port, arrived):
        backend = backend_factory(
            "--invoke-delay", "600", env={"STANDIN_NOTIFY": str(port)}, edge=EDGE
        )
        await backend.start()
        d = await backend.deploy(EDGE, timeout_s=30)
        await cancel_a_call(backend, d, job, arrived)
        fresh = await backend.deploy(EDGE, timeout_s=30)
        assert fresh.info["pid"] != d.info["pid"] and not gone(fresh.info["pid"])


async def test_close_stops_every_process(backend_factory: Factory) -> None:
    backend = backend_factory(edge=EDGE)
    await backend.start()
    pids = [
        (await backend.deploy(r, timeout_s=30)).info["pid"]
        for r in (EDGE, CPU, Runtime("gpu1", RuntimeKind.GPU, 1))
    ]
    assert sorted(backend.live_pids()) == sorted(pids) and len(set(pids)) == 3
    await backend.aclose()
    assert all(gone(p) for p in pids)


async def test_from_settings_takes_store_edge_and_options(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path / "d",
        local={"cuda_visible_devices": None, "model_key": "models/x/2/model.keras"},
    )
    backend = LocalBackend.from_settings(settings, command=["true"])
    try:
        assert backend._edge == EDGE
        assert backend._model_key == "models/x/2/model.keras"
        assert "CUDA_VISIBLE_DEVICES" not in backend._env
        assert backend._env["STOIC_OBJECTSTORE__PATH"] == str(
            (tmp_path / "d" / "objects").resolve()
        )
    finally:
        await backend.aclose()


# The real function server ----------------------------------------------------------


@pytest.mark.slow
async def test_real_function_server_classifies_jpegs(tmp_path: Path) -> None:
    """``python -m stoic.function.server`` with an (untrained) demo CNN in the store."""
    from stoic.function.classifier import CLASSES, build_model, demo_images, save_model
    from stoic.storage.objectstore import DirObjectStore
    from stoic.storage.package import write_package

    store = DirObjectStore(tmp_path / "data" / "objects")
    save_model(build_model(), store, model_key("classify", "1"), CLASSES)
    jpegs = [(f"img{i}.jpg", data) for i, (_, data) in enumerate(demo_images(1)[:3])]
    buf = io.BytesIO()
    write_package(buf, iter(jpegs))
    store.put_bytes(package_key("real"), buf.getvalue())
    job = Job("real", len(jpegs), len(buf.getvalue()), package_key=package_key("real"))

    backend = LocalBackend(
        data_dir=tmp_path / "data", options=LocalBackendSettings(terminate_grace_s=10.0)
    )
    try:
        d = await backend.deploy(CPU, timeout_s=240)
        assert d.deploy_s > 0
        up = await backend.upload(CPU, job)
        warm = await backend.invoke(d, job, up, warmup=True)
        assert len(warm.results) == 1
        inv = await backend.invoke(d, job, up)
        assert [r["name"] for r in inv.results] == ["img0.jpg", "img1.jpg", "img2.jpg"]
        assert all(r["error"] is None and r["label"] in CLASSES for r in inv.results)
        assert inv.timings["model_load_s"] == 0.0  # cached by the warm-up call
        assert inv.processing_s >= inv.timings["total_s"] > 0
        with pytest.raises(InvocationError, match=r"HTTP 404.*batches/nope/package\.tar"):
            await backend.invoke(d, job, Upload("batches/nope/package.tar", 0, 0.0))
        await backend.teardown(d)
        assert gone(d.info["pid"])
    finally:
        await backend.aclose()
