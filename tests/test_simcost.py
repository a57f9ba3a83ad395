"""What the simulator now prices (issue 22 §4): chunked calls' costs, a cluster-wide
congestion factor, and outages that stall uploads and deployments. Each is off by
default (the draws of every shipped spec are unchanged: docs/evaluation/check_figures.py)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from stoic.backends.simlink import Link, SharedUplink
from stoic.backends.simulated import (
    CALL_OVERHEAD_SHARE,
    FUNCTION_FILL_IMAGES,
    FUNCTION_FILL_PENALTY,
    BatchTruth,
    EnvSpec,
    Outage,
    RuntimeTruth,
    SimEnvironment,
    SimulatedBackend,
    current_truth,
)
from stoic.errors import DeployTimeout
from stoic.replay.bound import fluid_lower_bound
from stoic.settings import Settings
from stoic.values import Job

RUNTIMES = Settings().runtime_list()
BY_NAME = {r.name: r for r in RUNTIMES}


def _spec(**extra: object) -> dict:
    """No drift, no diurnal swing, no outliers: only the log-normal bodies vary."""
    dep = dict(floor_s=10.0, median_s=40.0, sigma=0.3)
    proc = dict(per_image_s=1.0, fixed_s=10.0, sigma=0.1)
    raw: dict = {
        "uplink": {"bandwidth_mbps": 8.0},
        "runtimes": {
            "edge": {"processing": dict(proc)},
            "cpu": {"deployment": dict(dep), "processing": dict(proc)},
            "gpu1": {"deployment": dict(dep), "processing": dict(proc)},
            "gpu2": {"deployment": dict(dep), "processing": dict(proc)},
        },
    }
    raw.update(extra)
    return raw


def _env(raw: dict, seed: int = 0) -> SimEnvironment:
    return SimEnvironment(EnvSpec.parse(raw), RUNTIMES, seed=seed)


# Chunked calls ---------------------------------------------------------------------------


def test_the_fitted_fill_reproduces_the_function_s_chunked_throughput() -> None:
    """docs/function.md, over HTTP: calls of 1–50 images cost 0.50–0.52 ms per image
    above a 3.7–4.0 ms overhead, one 1,000-image call 0.444 ms per image, and 20 × 50
    images ran at 0.74–0.77 of one call of 1,000. The fit (b = 0.436 ms, penalty p over
    the first 64 images) gives all three back."""
    a, b, p, fill = 3.85e-3, 0.436e-3, FUNCTION_FILL_PENALTY, FUNCTION_FILL_IMAGES

    def call(k: int) -> float:
        return a + b * k + b * p * min(k, fill)

    assert 0.50e-3 <= (call(50) - call(1)) / 49 <= 0.52e-3
    assert call(1000) / 1000 == pytest.approx(1 / 2249, rel=0.01)
    assert 0.74 <= call(1000) / (20 * call(50)) <= 0.77


def _truth(**kw: object) -> RuntimeTruth:
    base: dict = dict(per_image_s=0.5, first_call_s=28.0, later_call_s=0.1, batch_images=200)
    base.update(kw)
    return RuntimeTruth("gpu1", 1.0, [30.0], 0.5 * 200 + 28.0, 0.0, 0.0, 0, **base)


def test_a_chunk_labels_slower_than_the_whole_batch_by_the_fill() -> None:
    """φ(k) = 1 + p·min(k, fill)/k: a 50-image chunk of a 200-image batch labels at
    φ(200)/φ(50) of the whole call's speed; the whole batch in one call is unchanged."""
    t = _truth(fill_penalty=0.2, fill_images=64)
    phi = {k: 1 + 0.2 * min(k, 64) / k for k in (50, 200)}
    assert t.chunk_s(50, first=False) == pytest.approx(0.5 * 50 * phi[50] / phi[200] + 0.1)
    assert t.chunk_s(200, first=True) == pytest.approx(t.processing_s)
    assert _truth().chunk_s(50, first=False) == pytest.approx(0.5 * 50 + 0.1)  # no fill


def test_a_function_that_loads_its_model_per_call_pays_the_fixed_cost_again() -> None:
    raw = _spec()
    raw["runtimes"]["gpu1"]["processing"].update(sigma=0.0, loads_model_per_call=True)
    raw["runtimes"]["gpu2"]["processing"].update(sigma=0.0, call_overhead_s=2.0)
    truth = _env(raw).audit(0, Job("b", 100, 100 * 212_000), 0.0)
    gpu1, gpu2, cpu = (truth.runtimes[n] for n in ("gpu1", "gpu2", "cpu"))
    assert gpu1.chunk_s(10, first=False) == pytest.approx(10 + 10.0)
    assert gpu2.chunk_s(10, first=False) == pytest.approx(10 + 2.0)
    assert cpu.later_call_s == pytest.approx(cpu.first_call_s * CALL_OVERHEAD_SHARE)


@pytest.mark.looptime
async def test_the_call_overhead_is_charged_on_every_later_call_of_a_deployment() -> None:
    """Three chunk calls on one pod: the first pays the fixed cost, each later one the
    per-call overhead; a new deployment pays the fixed cost again."""
    raw = _spec()
    for rt in raw["runtimes"].values():
        rt["processing"].update(sigma=0.0, call_overhead_s=2.0)
    env = _env(raw)
    loop = asyncio.get_running_loop()
    backend = SimulatedBackend(env, now_s=loop.time, probe_key=lambda: 0)
    job = Job("b", 30, 30 * 212_000)
    token = current_truth.set(env.audit(0, job, 0.0))
    try:
        dep = await backend.deploy(BY_NAME["gpu1"], timeout_s=600)
        up = await backend.upload(BY_NAME["gpu1"], job)
        t0 = loop.time()
        for i in range(3):
            await backend.invoke(dep, job.chunk(10 * i, 10 * i + 10), up)
        assert loop.time() - t0 == pytest.approx(30 * 1.0 + 10.0 + 2 * 2.0, abs=1e-5)
        again = await backend.deploy(BY_NAME["gpu2"], timeout_s=600)
        t1 = loop.time()
        await backend.invoke(again, job.chunk(0, 10), up)
        assert loop.time() - t1 == pytest.approx(10 * 1.0 + 10.0, abs=1e-5)
    finally:
        current_truth.reset(token)


# The cluster's congestion factor ----------------------------------------------------------


def _log_bodies(env: SimEnvironment, batches: int) -> dict[str, np.ndarray]:
    job = Job("b", 10, 10 * 212_000)
    rows = [env.audit(i, job, 0.0) for i in range(batches)]
    out = {}
    for name in ("cpu", "gpu1", "gpu2"):
        out[name] = np.log([r.runtimes[name].attempts[0] - 10.0 for r in rows])
    out["edge"] = np.log([r.runtimes["edge"].processing_s for r in rows])
    return out


def test_correlation_couples_the_pods_of_a_batch_and_not_their_laws() -> None:
    """At ρ = 0.5 two runtimes' log deployment bodies in one batch correlate at 0.5 (the
    edge stays out of it), and each runtime's law is unchanged; at ρ = 0 they are
    independent, and the draws are those of a spec without the key, bit for bit."""
    n = 2000
    coupled = _log_bodies(_env(_spec(cloud={"correlation": 0.5}), seed=1), n)
    r = np.corrcoef(coupled["gpu1"], coupled["gpu2"])[0, 1]
    assert 0.44 < r < 0.56
    assert abs(np.corrcoef(coupled["gpu1"], coupled["edge"])[0, 1]) < 0.07
    assert np.median(coupled["cpu"]) == pytest.approx(np.log(30.0), abs=0.03)
    assert np.std(coupled["cpu"]) == pytest.approx(0.3, rel=0.05)

    zero = _log_bodies(_env(_spec(cloud={"correlation": 0.0}), seed=1), n)
    assert abs(np.corrcoef(zero["gpu1"], zero["gpu2"])[0, 1]) < 0.07
    plain = _log_bodies(_env(_spec(), seed=1), n)
    assert all(np.array_equal(zero[k], plain[k]) for k in plain)


def test_correlation_couples_probes_on_the_same_tick() -> None:
    env = _env(_spec(cloud={"correlation": 0.5}), seed=2)
    at = np.zeros(3000)
    a = np.log(env.probe_deployments("gpu1", 0, at) - 10.0)
    b = np.log(env.probe_deployments("gpu2", 0, at) - 10.0)
    assert 0.44 < np.corrcoef(a, b)[0, 1] < 0.56
    one = env.probe_deployments("gpu1", 700, at[:1])[0]
    assert one == env.probe_deployments("gpu1", 0, at)[700]  # still keyed by number


# Outages that stall ------------------------------------------------------------------------


def _outage(start_s: float, length_s: float) -> Outage:
    return Outage(start_h=start_s / 3600, duration_h=length_s / 3600)


@pytest.mark.looptime
async def test_an_outage_delays_a_chunk_upload_by_its_length() -> None:
    """100 bytes at 10 B/s from 0 s, the link down from 4 s to 34 s: done at 40 s, the
    outage's 30 s late; two uploads sharing it stall together (20 s of link + 30 s)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    link = SharedUplink(10.0, Link([_outage(4.0, 30.0)]), offset_s=-t0)
    assert await link.transfer(100) == pytest.approx(40.0, abs=1e-3)
    shared = SharedUplink(10.0, Link([_outage(4.0, 30.0)]), offset_s=-loop.time())
    a, b = await asyncio.gather(shared.transfer(100), shared.transfer(100))
    assert (a, b) == pytest.approx((50.0, 50.0), abs=1e-3)
    averaged = SharedUplink(10.0)  # without the link's windows: never down
    assert await averaged.transfer(100) == pytest.approx(10.0, abs=1e-3)


def _stalling(outages: list[dict], model: str = "stall") -> SimEnvironment:
    raw = _spec()
    for rt in raw["runtimes"].values():
        rt["processing"]["sigma"] = 0.0
        if "deployment" in rt:
            rt["deployment"]["sigma"] = 0.0  # every T_d is the median, 40 s
    raw["uplink"].update(outages=outages, outage_model=model, bandwidth_mbps=8.0)
    return _env(raw)


def test_an_outage_stalls_deployments_and_uploads_from_when_they_run() -> None:
    """The link down from 100 s to 400 s. A batch arriving at 90 s: its pod is ready at
    130 s but seen at 400 s (T_d 310 s); one arriving at 450 s deploys in 40 s as ever.
    A 20 MB upload (20 s at 1 MB/s) after a deployment begun at 50 s starts at 90 s: it
    meets the outage at 100 s and ends at 410 s."""
    env = _stalling([{"start_h": 100 / 3600, "duration_h": 300 / 3600}])
    job = Job("b", 5, 20_000_000)
    early = env.audit(0, job, 90.0).runtimes["gpu1"]
    assert early.attempts == [pytest.approx(310.0)]
    assert early.deploy_work_s == pytest.approx(40.0)
    assert env.audit(1, job, 450.0).runtimes["gpu1"].attempts == [pytest.approx(40.0)]
    t = env.audit(2, job, 50.0).runtimes["gpu1"]
    assert t.attempts == [pytest.approx(40.0)]
    assert t.total_s == pytest.approx(410.0 - 50.0 + t.processing_s)
    assert t.transfer_s == pytest.approx(20.0)  # uploading from the start, before it
    # averaged (the default): the upload's stall is counted from the arrival
    plain = _stalling([{"start_h": 100 / 3600, "duration_h": 300 / 3600}], "averaged")
    p = plain.audit(2, job, 50.0).runtimes["gpu1"]
    assert p.attempts == [pytest.approx(40.0)]
    assert p.total_s == pytest.approx(20.0 + 40.0 + p.processing_s)


@pytest.mark.looptime
async def test_a_deployment_requested_in_an_outage_waits_for_the_link() -> None:
    """A batch starting at 50 s whose pod is requested at 110 s, in an outage from 100 s:
    the request crosses at 400 s (300 s outage) or at 800 s (700 s outage), the pod
    takes its 40 s: seen ready after 330 s, or past the 600 s timeout."""
    loop = asyncio.get_running_loop()
    job = Job("b", 5, 1_000_000)
    for length, expected in ((300, 330.0), (700, None)):
        env = _stalling([{"start_h": 100 / 3600, "duration_h": length / 3600}])
        t0 = loop.time()
        backend = SimulatedBackend(env, now_s=lambda t0=t0: loop.time() - t0 + 50, probe_key=int)
        token = current_truth.set(env.audit(0, job, 50.0, start_s=50.0))
        try:
            await asyncio.sleep(60)
            if expected is None:
                with pytest.raises(DeployTimeout):
                    await backend.deploy(BY_NAME["gpu1"], timeout_s=600)
                assert backend.pod_s["batch"]["gpu1"] == pytest.approx(600.0)
            else:
                dep = await backend.deploy(BY_NAME["gpu1"], timeout_s=600)
                assert dep.deploy_s == pytest.approx(expected)
                await asyncio.sleep(5)
                await backend.teardown(dep)
                assert backend.pod_s["batch"]["gpu1"] == pytest.approx(expected + 5)
        finally:
            current_truth.reset(token)


def test_probes_see_the_stall_too() -> None:
    env = _stalling([{"start_h": 100 / 3600, "duration_h": 300 / 3600}])
    d = env.probe_deployments("cpu", 0, np.array([0.0, 90.0, 200.0, 500.0]))
    assert d.tolist() == pytest.approx([40.0, 310.0, 240.0, 40.0])


def test_the_bound_uses_the_link_s_capacity_from_the_batch_s_start() -> None:
    """The edge at 2 s/image from 0, a pod ready at once at 0.1 s/image, 100 images
    crossing at one a second, the link down from 10 s to 40 s: the pods have at most
    T − 30 images by T, so T/2 + T − 30 = 100 at T = 86.7 s. Spreading the stall over
    the link's rate (130 s for 100 images) would say 78.8 s."""
    link = Link([_outage(10.0, 30.0)])
    edge = RuntimeTruth("edge", 0.0, [], 0.0, 0.0, 0.0, per_image_s=2.0, first_call_s=0.0)
    pod = RuntimeTruth("gpu", 130.0, [0.0], 0.0, 0.0, 0.0, per_image_s=0.1, first_call_s=0.0)
    truth = BatchTruth(0, 0.0, {"edge": edge, "gpu": pod}, n_images=100, n_bytes=100)
    assert fluid_lower_bound(truth) == pytest.approx(100 / (1 / 2 + 1 / 1.3))
    truth.start_s, truth.bps, truth.link = 0.0, 1.0, link
    assert fluid_lower_bound(truth) == pytest.approx(130 / 1.5, abs=1e-6)
