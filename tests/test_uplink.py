"""Uplink checks: the watch's expected wait, the daemon's HTTP check against a loopback
server, the inquisitor's tick, the predictor's T_t, the policies, and the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from stoic.backends.simulated import load_env
from stoic.clock import LoopClock
from stoic.daemon.uplink import HttpUplinkCheck
from stoic.predict.predictor import Predictor
from stoic.predict.uplink import UplinkWatch
from stoic.replay.runner import ReplayConfig, run_replay
from stoic.schedule.decide.policy import race_score, score
from stoic.schedule.probe.inquisitor import Inquisitor
from stoic.settings import Settings
from stoic.values import Component, Estimate, Risk
from tests.support.inquisitor import Rig
from tests.support.uplink import far_side


class ManualClock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def now(self) -> float:
        return self.t


def test_the_watch_predicts_no_wait_while_the_link_is_up() -> None:
    clock = ManualClock()
    watch = UplinkWatch(clock, period_s=60.0)
    assert watch.up and watch.wait_s() == 0.0
    assert watch.observe(True) is None and watch.wait_s() == 0.0


def test_a_first_outage_is_expected_to_last_as_long_again_as_it_has() -> None:
    clock = ManualClock()
    watch = UplinkWatch(clock, period_s=60.0)
    watch.observe(False)
    assert not watch.up and watch.outages == 1
    assert watch.wait_s() == 60.0  # at least until the next check
    clock.t += 300
    assert watch.wait_s() == 300.0  # Lindy: as long again
    watch.observe(False)
    assert watch.outages == 1  # the same outage


def test_the_wait_is_the_mean_residual_life_of_the_outages_seen() -> None:
    clock = ManualClock()
    watch = UplinkWatch(clock, period_s=60.0)
    for duration in (300.0, 300.0, 600.0):
        watch.observe(False)
        clock.t += duration
        assert watch.observe(True) == duration
    assert list(watch.durations) == [300.0, 300.0, 600.0] and watch.outages == 3
    watch.observe(False)
    assert watch.wait_s() == pytest.approx(400.0)  # mean of 300, 300, 600
    clock.t += 300
    assert watch.wait_s() == pytest.approx(100.0)  # (0 + 0 + 300) / 3: likely just back
    clock.t += 100
    assert watch.wait_s() == pytest.approx(200.0)  # only the 600 s one lasted this long
    clock.t += 400
    assert watch.wait_s() == pytest.approx(800.0)  # longer than any seen: Lindy again


# The daemon's HTTP check, against a loopback server ---------------------------------


@contextlib.asynccontextmanager
async def http_server(status: int = 200, answer: bool = True) -> AsyncIterator[str]:
    async with far_side(status, answer) as server:
        yield server.url


async def test_the_http_check_finds_the_link_up_when_the_far_side_answers() -> None:
    async with http_server() as url:
        assert await HttpUplinkCheck(url, timeout_s=2.0)()
    async with http_server(status=503) as url:  # an error status: the far side spoke
        assert await HttpUplinkCheck(url, timeout_s=2.0)()


async def test_the_http_check_finds_the_link_down_on_refusal_or_silence() -> None:
    async with http_server() as url:
        pass  # closed again: nothing listens on the port now
    assert not await HttpUplinkCheck(url, timeout_s=2.0)()
    async with http_server(answer=False) as url:
        assert not await HttpUplinkCheck(url, timeout_s=0.2)()


@pytest.fixture
def self_signed(tmp_path: Path) -> ssl.SSLContext:
    """A server TLS context with a self-signed certificate (openssl's command)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    return tls


async def test_an_https_url_with_a_certificate_this_host_does_not_trust_is_up(
    self_signed: ssl.SSLContext,
) -> None:
    """A cluster API signed by the cluster's own CA: the handshake reached the far side."""
    tls = self_signed

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await HttpUplinkCheck(f"https://127.0.0.1:{port}/readyz", timeout_s=2.0)()
    finally:
        server.close()
    assert not await HttpUplinkCheck(f"https://127.0.0.1:{port}/readyz", timeout_s=2.0)()


# The inquisitor's tick ---------------------------------------------------------------


class Link:
    """An uplink check whose answers a test sets, counting the checks."""

    def __init__(self) -> None:
        self.up = True
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        return self.up


@pytest.mark.looptime
async def test_the_inquisitor_checks_the_uplink_every_tick() -> None:
    link = Link()
    rig = Rig()
    watch = UplinkWatch(rig.clock, 60.0)
    rig.inquisitor = Inquisitor(rig.legs, rig.availability, uplink=(link, watch))
    task = asyncio.create_task(rig.inquisitor.run())
    await asyncio.sleep(1)
    assert link.calls == 1 and watch.up
    link.up = False
    await asyncio.sleep(60)  # the tick at 60 finds it down
    assert not watch.up and watch.outages == 1 and watch.wait_s() == 60.0
    link.up = True
    await asyncio.sleep(120)  # back at the tick at 120: 60 s, at the checks' resolution
    assert watch.up and list(watch.durations) == [60.0] and link.calls == 4
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.looptime
async def test_a_crashing_uplink_check_is_logged_and_not_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def crash() -> bool:
        raise RuntimeError("bug")

    rig = Rig()
    watch = UplinkWatch(LoopClock(0.0), 60.0)
    inquisitor = Inquisitor(rig.legs, rig.availability, uplink=(crash, watch))
    assert await inquisitor.check_uplink() is None
    assert watch.checks == 0 and "uplink check crashed" in caplog.text
    assert await Inquisitor(rig.legs, rig.availability).check_uplink() is None  # none set


# What the wait changes ---------------------------------------------------------------


def test_the_predictor_adds_the_wait_to_cloud_transfer_only() -> None:
    clock = ManualClock()
    before = Predictor.from_settings(Settings()).estimate(
        "gpu1", 100, 10_000_000, app="a", app_version="1"
    )
    watch = UplinkWatch(clock, 60.0)
    predictor = Predictor.from_settings(Settings(), uplink=watch)
    watch.observe(False)
    clock.t += 240
    gpu1 = predictor.estimate("gpu1", 100, 10_000_000, app="a", app_version="1")
    edge = predictor.estimate("edge", 100, 10_000_000, app="a", app_version="1")
    assert gpu1.uplink_wait_s == 240.0
    assert gpu1.transfer.mean == pytest.approx(before.transfer.mean + 240.0)
    assert edge.uplink_wait_s == 0.0 and edge.transfer.mean == 0.0
    assert gpu1.as_dict()["uplink_wait_s"] == 240.0


def test_the_selector_prices_the_wait_and_the_duplicator_race_does_not() -> None:
    def gpu(wait: float) -> Estimate:
        t, d, p = Component(5.0 + wait), Component(30.0), Component(20.0)
        return Estimate("gpu1", t, d, p, Risk(), uplink_wait_s=wait)

    edge = Estimate("edge", Component(0.0), Component(0.0), Component(100.0))
    up, down = {"edge": edge, "gpu1": gpu(0.0)}, {"edge": edge, "gpu1": gpu(200.0)}
    assert score(up, "gpu1") == 55.0 and score(down, "gpu1") == 255.0
    # The pod deploys while the link is down and the edge runs anyway: same race.
    assert race_score(up, "gpu1") == race_score(down, "gpu1") == 50.0


def test_the_simulated_uplink_is_down_inside_its_outages(tmp_path: Path) -> None:
    spec = tmp_path / "env.yaml"
    spec.write_text(
        Path("workload/nautilus-2020.yaml")
        .read_text()
        .replace(
            "uplink:\n",
            "uplink:\n  outages:\n    - {start_h: 1, duration_h: 0.25, every_h: 2}\n"
            "    - {start_h: 10, duration_h: 1}\n",
            1,
        )
    )
    env = load_env(spec, Settings().runtime_list())
    h = 3600.0
    assert env.uplink_up(0.5 * h) and not env.uplink_up(1.1 * h) and env.uplink_up(1.3 * h)
    assert not env.uplink_up(5.2 * h) and env.uplink_up(5.25 * h)  # the third window's end
    assert not env.uplink_up(10.5 * h) and not env.uplink_up(11.1 * h) and env.uplink_up(11.5 * h)


def test_a_check_url_must_be_http() -> None:
    with pytest.raises(ValidationError, match="uplink_check_url"):
        Settings(inquisitor={"uplink_check_url": "ftp://cluster/readyz"})


def test_the_replay_prices_batches_that_arrive_while_the_link_is_down(tmp_path: Path) -> None:
    """Same code path: the replay's inquisitor checks the simulated link on its tick, so
    a batch that arrives during an outage is estimated with the wait, one outside not."""
    spec = tmp_path / "env.yaml"
    # One outage from 11:30 on: the day's batches (hourly, from 10:00) fall on both sides.
    outage = "uplink:\n  outages:\n    - {start_h: 11.5, duration_h: 20}\n"
    spec.write_text(Path("workload/nautilus-2020.yaml").read_text().replace("uplink:\n", outage, 1))
    records = run_replay(ReplayConfig(env_path=spec, hours=24, seed=1, warmup_periods=10)).records
    waits = {r.batch.at_s: r.plan.estimates["gpu1"].uplink_wait_s for r in records}
    inside = [w for at, w in waits.items() if at > 11.5 * 3600 + 60]
    outside = [w for at, w in waits.items() if at < 11.5 * 3600]
    assert inside and all(w > 0.0 for w in inside)
    assert outside and all(w == 0.0 for w in outside)
    # Hours into an outage never seen to end, the wait grows with it (as long again).
    assert inside == sorted(inside) and inside[-1] > 3600
