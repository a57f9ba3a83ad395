"""One daemon per database and object store (issue 26, item 8).

Two daemons with different data directories but one ``database.url`` and
``objectstore.path``: before, the second re-queued the first one's running batch and
ran it again. Now the first holds a lease in the database and a marker in the object
store, and the second is refused in one line naming the holder, having touched no
batch. A stale lease (expired, or its holder gone from this host) is taken over.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from stoic.backends.fake import FakeBackend, FakeSpec
from stoic.clock import ManualClock
from stoic.daemon.controller import Controller
from stoic.daemon.lease import LEASE_NAME, MARKER_KEY, DaemonLease, pid_alive
from stoic.errors import LeaseHeld
from stoic.settings import Settings
from stoic.storage.objectstore import DirObjectStore
from stoic.store import Store, migrate
from stoic.store.lease import Lease, Leases
from stoic.values import BatchState
from tests.support.client import submit, wait_state
from tests.support.controller import started, until
from tests.support.images import jpeg
from tests.support.net import free_port
from tests.support.paths import REPO
from tests.support.processes import STOIC, Serving, stop
from tests.support.settings import make_settings, standin_config

HOST = socket.gethostname()


def shared(tmp_path: Path, name: str, *, db: str = "shared") -> Settings:
    """A daemon of its own data directory on the shared database and object store."""
    return make_settings(
        tmp_path / name,
        database={"url": f"sqlite:///{tmp_path / db / 'stoic.db'}"},
        objectstore={"path": tmp_path / "shared" / "objects"},
        controller={"drain_grace_s": 0},
    )


def slow() -> FakeBackend:
    return FakeBackend(default=FakeSpec(per_image_s=3600))


async def test_a_second_daemon_on_the_same_database_is_refused_before_touching_a_batch(
    tmp_path: Path,
) -> None:
    async with started(shared(tmp_path, "a"), slow()) as first:
        store = first.store
        bid = store.create_batch(created_at=1.0, n_images=1, n_bytes=1, package_key="k").id
        first.notify()
        await until(lambda: store.get_batch(bid).state is BatchState.RUNNING, timeout_s=30)
        second = Controller(shared(tmp_path, "b"), backends={"local": slow()})
        with pytest.raises(LeaseHeld) as info:
            await second.start()
        assert str(info.value).startswith(
            f"database sqlite:///{tmp_path / 'shared' / 'stoic.db'} is in use by another "
            f"stoic daemon (pid {os.getpid()} host {HOST}, data dir "
            f"{(tmp_path / 'a' / 'data').resolve()}, renewed "
        )
        assert not second.lock.held
        batch = store.get_batch(bid)
        assert batch.state is BatchState.RUNNING and batch.attempts == 1  # not re-queued
    # Stopped, the first gave the lease and the marker back: the second starts.
    with Store(shared(tmp_path, "b").database_url) as store:
        assert Leases(store).get(LEASE_NAME) is None
    second = Controller(shared(tmp_path, "b"), backends={"local": slow()})
    await second.start()
    await second.stop()


async def test_a_second_daemon_on_another_database_but_the_same_objects_is_refused(
    tmp_path: Path,
) -> None:
    async with started(shared(tmp_path, "a"), slow()) as first:
        assert first.objects.exists(MARKER_KEY)
        other = shared(tmp_path, "b", db="other")
        second = Controller(other, backends={"local": slow()})
        with pytest.raises(LeaseHeld, match=r"^object store .*/shared/objects is in use .*pid"):
            await second.start()
        with Store(other.database_url) as store:
            assert Leases(store).get(LEASE_NAME) is None  # its own lease given back
    assert not first.objects.exists(MARKER_KEY)


def _lease(holder: str, *, host: str, pid: int, data_dir: str, expires_at: float) -> Lease:
    return Lease(LEASE_NAME, holder, host, pid, data_dir, 0.0, expires_at - 30, expires_at)


def daemon_lease(
    store: Store,
    tmp_path: Path,
    clock: ManualClock,
    *,
    on_lost: Callable[[Lease | None], None] = lambda _holder: None,
    alive: Callable[[int], bool] = pid_alive,
) -> DaemonLease:
    """The lease of a daemon on ``store`` (its database at ``tmp_path / "stoic.db"``) with
    its data in ``tmp_path / "data"`` and its marker in ``tmp_path / "objects"``; 30 s TTL."""
    return DaemonLease(
        store,
        DirObjectStore(tmp_path / "objects"),
        data_dir=tmp_path / "data",
        database=f"sqlite:///{tmp_path / 'stoic.db'}",
        where="objects",
        ttl_s=30,
        clock=clock,
        on_lost=on_lost,
        alive=alive,
    )


@pytest.mark.parametrize(
    ("host", "pid_alive", "data_dir", "expires_in_s", "taken"),
    [
        ("edge2", True, "/elsewhere", 20.0, False),  # another host, renewed: live
        ("edge2", True, "/elsewhere", -1.0, True),  # another host, expired
        (HOST, True, "/elsewhere", 20.0, False),  # this host, its pid alive
        (HOST, False, "/elsewhere", 20.0, True),  # this host, its pid gone
        (HOST, True, "DATA", 20.0, True),  # this data dir, whose lock we now hold
    ],
    ids=["live", "expired", "alive here", "dead here", "this data dir"],
)
def test_a_stale_lease_is_taken_over_and_a_live_one_is_not(
    tmp_path: Path, host: str, pid_alive: bool, data_dir: str, expires_in_s: float, taken: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'stoic.db'}"
    migrate(url)
    clock = ManualClock(1_000.0)
    data = str((tmp_path / "data").resolve())
    with Store(url) as store:
        held = _lease(
            "other",
            host=host,
            pid=4242,
            data_dir=data if data_dir == "DATA" else data_dir,
            expires_at=clock.now() + expires_in_s,
        )
        assert Leases(store).take(held, stale=lambda _: False).won
        lease = daemon_lease(store, tmp_path, clock, alive=lambda pid: pid_alive)
        if taken:
            lease.acquire()
            now = Leases(store).get(LEASE_NAME)
            assert now is not None and now.holder == lease.mine.holder
        else:
            with pytest.raises(LeaseHeld, match=f"pid 4242 host {host}, data dir /elsewhere"):
                lease.acquire()
            assert Leases(store).get(LEASE_NAME) == held


@pytest.mark.looptime
async def test_the_heartbeat_renews_the_lease_and_stops_when_it_was_taken_over(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'stoic.db'}"
    migrate(url)
    clock, lost = ManualClock(1_000.0), asyncio.Event()
    with Store(url) as store:
        lease = daemon_lease(store, tmp_path, clock, on_lost=lambda _holder: lost.set())
        lease.acquire()
        beats = asyncio.create_task(lease.run())
        clock.advance(25)
        await asyncio.sleep(lease.period_s + 1)
        row = Leases(store).get(LEASE_NAME)
        assert row is not None and row.expires_at == 1_025 + 30  # renewed at 1,025
        # The daemon stalls past its TTL; another daemon takes the lease over.
        clock.advance(60)
        other = _lease("other", host="edge2", pid=1, data_dir="/x", expires_at=clock.now() + 30)
        assert Leases(store).take(other, stale=lambda held: held.expires_at <= clock.now()).won
        await asyncio.wait_for(lost.wait(), timeout=lease.period_s * 2)
        await beats  # returned by itself
        assert not lease.held


async def test_a_daemon_whose_lease_was_taken_over_stops_claiming(tmp_path: Path) -> None:
    async with started(make_settings(tmp_path, database={"lease_ttl_s": 3}), slow()) as ctl:
        other = _lease("other", host="edge2", pid=1, data_dir="/x", expires_at=time.time() + 60)
        assert Leases(ctl.store).take(other, stale=lambda _: True).won
        await until(lambda: ctl.draining, timeout_s=30)  # the next beat, a second away
    with Store(ctl.settings.database_url) as store:
        assert Leases(store).get(LEASE_NAME) == other  # not ours: left alone


@pytest.mark.slow
def test_two_stoic_serve_on_one_database_and_object_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared' / 'stoic.db'}"
    extra = f'[database]\nurl = "{url}"\n[objectstore]\npath = "{tmp_path / "shared" / "objs"}"\n'
    configs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        data = tmp_path / name / "data"
        configs.append(standin_config(tmp_path / name, data, '"--batch-delay", "30"', extra=extra))
    with Serving(tmp_path, configs[0]) as serving:
        first = serving.start()
        with httpx.Client(base_url=serving.url, trust_env=False, timeout=30) as client:
            bid = submit(client, [("a.jpg", jpeg(1))])
            wait_state(client, bid, "running", log=serving.log)

            result = subprocess.run(
                [*STOIC, "serve", "--config", str(configs[1]), "--port", str(free_port())],
                cwd=REPO, env=serving.env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert result.returncode == 2, result.stderr
            [line] = result.stderr.strip().splitlines()
            assert re.fullmatch(
                re.escape(
                    f"stoic: error: database {url} is in use by another stoic daemon "
                    f"(pid {first.pid} host {HOST}, data dir {tmp_path / 'a' / 'data'}, renewed "
                )
                + r"\d+"
                + re.escape(
                    " s ago); stop that daemon first, or give this one its own database.url "
                    "and objectstore.path"
                ),
                line,
            ), line
            batch = client.get(f"/v1/batches/{bid}").json()
            assert batch["state"] == "running"
            assert client.get("/readyz").status_code == 200
        assert stop(first) == 0
