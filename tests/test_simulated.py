"""Simulated environment: spec validation names the key; truths are served exactly;
probe draws do not depend on which other probes were drawn."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from stoic.backends.simulated import (
    BatchTruth,
    EnvSpec,
    SimEnvironment,
    SimulatedBackend,
    current_truth,
    load_env,
)
from stoic.errors import DeployTimeout, EnvSpecError
from stoic.replay.runner import DEFAULT_ENV
from stoic.settings import Settings
from stoic.values import Job
from tests.support.paths import REPO

RUNTIMES = Settings().runtime_list()


def _raw() -> dict:
    return yaml.safe_load(DEFAULT_ENV.read_text())


def test_default_spec_loads() -> None:
    env = load_env(DEFAULT_ENV, RUNTIMES)
    assert set(env.runtimes) == {"edge", "cpu", "gpu1", "gpu2"}


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (
            lambda r: r["runtimes"]["gpu1"]["deployment"].update(bogus=1),
            "runtimes.gpu1.deployment.bogus",
        ),
        (
            lambda r: r["runtimes"]["cpu"]["deployment"].update(outlier_rate=-0.1),
            "runtimes.cpu.deployment.outlier_rate",
        ),
        (lambda r: r["uplink"].update(bandwidth_mbps=-5), "uplink.bandwidth_mbps"),
        (lambda r: r["runtimes"].pop("gpu2"), "runtimes.gpu2"),
        (lambda r: r["runtimes"]["cpu"].pop("deployment"), "runtimes.cpu.deployment"),
    ],
)
def test_bad_spec_names_key(tmp_path: Path, mutate, key: str) -> None:
    raw = _raw()
    mutate(raw)
    f = tmp_path / "env.yaml"
    f.write_text(yaml.safe_dump(raw))
    with pytest.raises(EnvSpecError, match=key.replace(".", r"\.")):
        load_env(f, RUNTIMES)


def test_cli_bad_spec_one_line_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    raw = _raw()
    raw["surprise"] = True
    f = tmp_path / "env.yaml"
    f.write_text(yaml.safe_dump(raw))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "stoic.cli",
            "replay",
            "--env",
            str(f),
            "--report",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    assert "surprise: unknown key" in r.stderr and r.stderr.strip().count("\n") == 0


def test_probe_draws_are_keyed_by_number() -> None:
    env = SimEnvironment(EnvSpec.load(DEFAULT_ENV), RUNTIMES, seed=5)
    at = np.arange(100) * 60.0
    block = env.probe_deployments("gpu1", 0, at)
    single = env.probe_deployments("gpu1", 37, at[37:38])
    assert np.array_equal(block[37:38], single, equal_nan=True)


def test_probe_uniforms_asked_in_any_order_are_the_keyed_stream() -> None:
    env = SimEnvironment(EnvSpec.load(DEFAULT_ENV), RUNTIMES, seed=5)
    rng = np.random.default_rng(0)
    for first, count in [(0, 3), (3, 10), (40, 1), (41, 200), (7, 5), (500, 64), (564, 1)]:
        for name in ("gpu1", "gpu2"):
            got = env.probe_uniforms(name, first, count)
            bitgen = np.random.Philox(key=np.array([5, env._index[name]], np.uint64))
            bitgen.advance(first)
            fresh = np.random.Generator(bitgen).random((count, env.PROBE_UNIFORMS))
            np.testing.assert_array_equal(got, fresh)
        env.audit(int(rng.integers(100)), Job("b", 10, 1000, "a", "1"), 60.0)


def test_processing_probes_are_keyed_by_number_and_draw_from_no_other_stream() -> None:
    env = SimEnvironment(EnvSpec.load(DEFAULT_ENV), RUNTIMES, seed=5)
    first = env.probe_processing("gpu1", 7, 100, 3600.0)
    env.fresh_processing("gpu1", 100, 0.0)  # other streams move on...
    env.probe_deployments("gpu1", 0, np.arange(10) * 60.0)
    assert env.probe_processing("gpu1", 7, 100, 3600.0) == first  # ...probe 7 does not
    assert env.probe_processing("gpu1", 8, 100, 3600.0) != first
    # Around the spec's line (the paper's GPU1 fit, 4 % noise, rare congestion).
    values = [env.probe_processing("gpu1", k, 100, 3600.0) for k in range(200)]
    assert float(np.median(values)) == pytest.approx(0.3272 * 100 + 28.16, rel=0.03)


def test_deployment_tail_and_floor() -> None:
    env = SimEnvironment(EnvSpec.load(DEFAULT_ENV), RUNTIMES, seed=1)
    d = env.probe_deployments("cpu", 0, np.arange(20_000) * 60.0)
    ok = d[~np.isnan(d)]
    assert ok.min() >= 6.4
    assert 0 < np.isnan(d).mean() < 0.02
    g = env.probe_deployments("gpu1", 0, np.arange(1244) * 60.0)
    assert 150 < np.nanmax(g) < 600  # heavy tail (published GPU1 max 425.8 s)


@pytest.mark.looptime
async def test_backend_serves_the_truth_exactly() -> None:
    env = SimEnvironment(EnvSpec.load(DEFAULT_ENV), RUNTIMES, seed=2)
    loop = __import__("asyncio").get_running_loop()
    backend = SimulatedBackend(env, now_s=loop.time, probe_key=lambda: 0)
    job = Job("b1", 80, 80 * 212_000)
    truth: BatchTruth = env.audit(0, job, 0.0)
    rt = {r.name: r for r in RUNTIMES}["gpu1"]
    token = current_truth.set(truth)
    try:
        t0 = loop.time()
        t = truth.runtimes["gpu1"]
        if t.attempts[0] is None:
            with pytest.raises(DeployTimeout):
                await backend.deploy(rt, timeout_s=600)
            return
        dep = await backend.deploy(rt, timeout_s=600)
        up = await backend.upload(rt, job)
        await backend.invoke(dep, job, up)
        assert loop.time() - t0 == pytest.approx(
            t.attempts[0] + t.transfer_s + t.processing_s, abs=1e-5
        )
    finally:
        current_truth.reset(token)
    assert math.isclose(t.total_s, t.transfer_s + t.attempts[0] + t.processing_s + t.warmup_s)


# Regimes, outages (EnvSpec extensions) -----------------------------------------------


def _flat(**uplink) -> dict:
    """A spec without noise: every draw is its median, so regimes show exactly."""
    dep = dict(floor_s=10.0, median_s=40.0, sigma=0.0)
    proc = dict(per_image_s=1.0, fixed_s=10.0)
    return {
        "uplink": {"bandwidth_mbps": 8.0, **uplink},
        "runtimes": {
            "edge": {"processing": dict(proc)},
            "cpu": {"deployment": dict(dep), "processing": dict(proc)},
            "gpu1": {"deployment": dict(dep), "processing": dict(proc)},
            "gpu2": {"deployment": dict(dep), "processing": dict(proc)},
        },
    }


def test_deployment_regime_sets_median_and_timeouts() -> None:
    raw = _flat()
    raw["runtimes"]["gpu1"]["deployment"]["regimes"] = [
        {"start_h": 10, "median_s": 100.0},  # a permanent step at hour 10
        {"start_h": 2, "duration_h": 1, "every_h": 24, "median_s": 70.0, "timeout_rate": 1.0},
    ]
    env = SimEnvironment(EnvSpec.parse(raw), RUNTIMES, seed=0)
    hours = np.array([0.5, 2.5, 5.0, 11.0, 26.5, 30.0])
    d = env.probe_deployments("gpu1", 0, hours * 3600)
    # before the step: 40; daily window at 02:00-03:00: timeouts (rate 1); after: 100
    assert d[0] == pytest.approx(40.0) and d[2] == pytest.approx(40.0)
    assert math.isnan(d[1]) and math.isnan(d[4])  # the daily regime wins where both hold
    assert d[3] == pytest.approx(100.0) and d[5] == pytest.approx(100.0)
    assert env.probe_deployments("cpu", 0, hours * 3600) == pytest.approx([40.0] * 6)


def test_uplink_regime_and_processing_regime() -> None:
    raw = _flat(regimes=[{"start_h": 5, "duration_h": 2, "bandwidth_mbps": 2.0}])
    raw["runtimes"]["edge"]["processing"]["regimes"] = [
        {"start_h": 1, "duration_h": 1, "every_h": 24, "factor": 3.0}
    ]
    env = SimEnvironment(EnvSpec.parse(raw), RUNTIMES, seed=0)
    assert env.bandwidth_bps(4 * 3600, 0.5) == pytest.approx(1e6)
    assert env.bandwidth_bps(6 * 3600, 0.5) == pytest.approx(0.25e6)
    u = np.array([0.5, 0.9, 0.5])  # median noise, no congestion
    assert env.processing_from_uniforms("edge", 10, u, 0.5 * 3600) == pytest.approx(20.0)
    assert env.processing_from_uniforms("edge", 10, u, 25.5 * 3600) == pytest.approx(60.0)
    assert env.processing_from_uniforms("cpu", 10, u, 25.5 * 3600) == pytest.approx(20.0)


def test_outage_stalls_an_upload_until_the_link_is_back() -> None:
    raw = _flat(
        outages=[{"start_h": 1, "duration_h": 0.5}, {"start_h": 3, "duration_h": 0.1, "every_h": 1}]
    )
    env = SimEnvironment(EnvSpec.parse(raw), RUNTIMES, seed=0)
    # 1e6 bytes/s; 10 MB started 5 s before the outage: 5 s, 1,800 s stalled, 5 s.
    assert env.transfer_s(10e6, 3600 - 5, 0.5) == pytest.approx(1810.0)
    # started inside it: waits for the end, then 10 s
    assert env.transfer_s(10e6, 3600 + 600, 0.5) == pytest.approx(1200 + 10.0)
    # no outage in the way: bytes / bandwidth
    assert env.transfer_s(10e6, 2 * 3600, 0.5) == pytest.approx(10.0)
    # a 2-hour upload from hour 3.5 meets the repeating 6-minute outages at 4 and 5
    assert env.transfer_s(7200e6, 3.5 * 3600, 0.5) == pytest.approx(7200 + 2 * 360.0)
    # the audit and the backend use it
    truth = env.audit(0, Job("b", 10, 10_000_000), 3600 - 5)
    assert truth.runtimes["gpu1"].transfer_s == pytest.approx(1810.0)


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (
            lambda r: r["uplink"].update(outages=[{"start_h": 0, "duration_h": 2, "every_h": 1}]),
            "uplink.outages.0",
        ),
        (
            lambda r: r["uplink"].update(
                regimes=[{"start_h": 1, "every_h": 24, "bandwidth_mbps": 1}]
            ),
            "uplink.regimes.0",
        ),
        (
            lambda r: r["runtimes"]["gpu1"]["deployment"].update(
                regimes=[{"start_h": 1, "median_s": 5.0}]
            ),
            "runtimes.gpu1.deployment",
        ),
        (
            lambda r: r["runtimes"]["cpu"]["processing"].update(
                regimes=[{"start_h": 1, "duration_h": 1, "factor": 0}]
            ),
            "runtimes.cpu.processing.regimes.0.factor",
        ),
    ],
)
def test_bad_regime_or_outage_names_key(mutate, key: str) -> None:
    raw = _flat()
    mutate(raw)
    with pytest.raises(EnvSpecError, match=key.replace(".", r"\.")):
        EnvSpec.parse(raw)


def test_a_regime_that_never_holds_changes_no_draw() -> None:
    """The regime path computes the same floats as the scalar path it replaces."""
    raw = _raw()
    env0 = SimEnvironment(EnvSpec.parse(raw), RUNTIMES, seed=7)
    raw["runtimes"]["gpu1"]["deployment"]["regimes"] = [{"start_h": 10_000, "median_s": 500}]
    raw["uplink"]["regimes"] = [{"start_h": 10_000, "bandwidth_mbps": 1}]
    raw["runtimes"]["edge"]["processing"]["regimes"] = [{"start_h": 10_000, "factor": 9}]
    env1 = SimEnvironment(EnvSpec.parse(raw), RUNTIMES, seed=7)
    at = np.arange(500) * 60.0
    a, b = env0.probe_deployments("gpu1", 0, at), env1.probe_deployments("gpu1", 0, at)
    assert np.array_equal(a, b, equal_nan=True)
    for i in range(30):
        job = Job(f"b{i}", 5 + 40 * i, (5 + 40 * i) * 212_000)
        assert env0.audit(i, job, i * 900.0).totals() == env1.audit(i, job, i * 900.0).totals()


@pytest.mark.parametrize("name", ["nautilus-2020", "contended-cloud", "heavy-tail"])
def test_probes_drawn_ahead_equal_probes_drawn_alone(name: str) -> None:
    """The backend's vectorised draw-ahead gives each probe the bits it gets alone."""
    path = REPO / "workload" / "envs" / f"{name}.yaml"
    env = SimEnvironment(EnvSpec.load(path), RUNTIMES, seed=3)
    at = np.arange(3000) * 60.0 - 12_000.0
    for rt in ("cpu", "gpu1", "gpu2"):
        ahead = env.probe_deployments(rt, 0, at)
        alone = [env.probe_deployments(rt, k, at[k : k + 1])[0] for k in range(0, 3000, 7)]
        assert np.array_equal(ahead[::7], np.array(alone), equal_nan=True)


def test_replay_is_the_same_with_and_without_drawing_ahead(monkeypatch) -> None:
    import stoic.replay.runner as runner
    from stoic.replay.runner import ReplayConfig, run_replay

    cfg = ReplayConfig(mode="selector", seed=5, batches=12, warmup_periods=40)
    ahead = run_replay(cfg)

    class Alone(SimulatedBackend):
        def __init__(self, env, now_s, probe_key, probe_time=None) -> None:
            super().__init__(env, now_s, probe_key)

    monkeypatch.setattr(runner, "SimulatedBackend", Alone)
    alone = run_replay(cfg)
    assert [r.outcome.total_s for r in ahead.records] == [r.outcome.total_s for r in alone.records]
    assert [r.plan.estimates["gpu1"].total.mean for r in ahead.records] == [
        r.plan.estimates["gpu1"].total.mean for r in alone.records
    ]


# The informed bound (SimEnvironment.expected_totals / expected_duplicates) -------------


def test_expected_totals_are_the_spec_s_means_and_leave_the_world_alone() -> None:
    raw = _flat()  # no noise: every draw is its median
    raw["runtimes"]["gpu2"]["deployment"]["timeout_rate"] = 1.0  # gpu2 always times out
    raw["runtimes"]["edge"]["processing"]["regimes"] = [
        {"start_h": 1, "duration_h": 1, "every_h": 24, "factor": 3.0}
    ]
    spec = EnvSpec.parse(raw)
    job = Job("b", 10, 1_000_000)  # 1 s at 1 MB/s
    env = SimEnvironment(spec, RUNTIMES, seed=3)
    alone = SimEnvironment(spec, RUNTIMES, seed=3)
    e = env.expected_totals(job, 0.0, draws=64)
    # edge: 10 x 1 + 10; cpu/gpu1: 1 s upload + 40 s deployment + 20 s processing
    assert e["edge"] == pytest.approx(20.0)
    assert e["cpu"] == pytest.approx(61.0) and e["gpu1"] == pytest.approx(61.0)
    # a timeout: the timeout, then the best other runtime (the requester's fallback)
    assert e["gpu2"] == pytest.approx(600.0 + 20.0)
    # the state is the spec's: inside the edge's regime, its T_p triples
    assert env.expected_totals(job, 1.5 * 3600, draws=8)["edge"] == pytest.approx(60.0)
    # the duplicator's bound: min(edge, overlapped cloud), a timeout leaves the edge
    d = env.expected_duplicates(job, 0.0, draws=8)
    assert d == pytest.approx({"cpu": 20.0, "gpu1": 20.0, "gpu2": 20.0})
    assert env.expected_duplicates(job, 1.5 * 3600, draws=8)["gpu1"] == pytest.approx(60.0)
    # its draws come from a stream of their own: the audit is the same as without them
    a, b = env.audit(0, job, 0.0), alone.audit(0, job, 0.0)
    assert a.totals() == b.totals()


def test_an_abandoned_deployment_is_priced_at_a_fallback_the_requester_may_take() -> None:
    # cpu is ready in 40 s half the time, else 440 s; gpu1 always takes 61 s in all; the
    # edge 510 s. Abandoned at 40 s, cpu falls back to gpu1: 0.5·61 + 0.5·(40 + 61) = 81 s.
    # With gpu1 marked unavailable the requester would run the edge instead: abandoning
    # costs 0.5·61 + 0.5·(40 + 510) and waiting for the pod (0.5·61 + 0.5·461) is better.
    raw = _flat()
    raw["runtimes"]["cpu"]["deployment"]["cache_miss"] = {"rate": 0.5, "pull_s": 400.0}
    raw["runtimes"]["edge"]["processing"]["per_image_s"] = 50.0
    raw["runtimes"]["gpu2"]["deployment"]["timeout_rate"] = 1.0
    spec, job = EnvSpec.parse(raw), Job("b", 10, 1_000_000)

    def expect(available: set[str] | None) -> tuple[dict[str, float], dict[str, float]]:
        env = SimEnvironment(spec, RUNTIMES, seed=3)
        return env.expected_with_actions(
            job, 0.0, deadline=True, pipelined=False, available=available, draws=512
        )

    totals, deadlines = expect(None)
    assert deadlines == {"cpu": pytest.approx(40.0)}
    assert totals["cpu"] == pytest.approx(81.0, abs=6.0)
    totals, deadlines = expect({"edge", "cpu"})
    assert deadlines == {}
    assert totals["cpu"] == pytest.approx(261.0, abs=30.0)


def test_expected_totals_converge_on_a_noisy_spec() -> None:
    env = SimEnvironment(EnvSpec.load(DEFAULT_ENV), RUNTIMES, seed=5)
    job = Job("b", 120, 120 * 212_000)
    e = env.expected_totals(job, 13 * 3600, draws=4000)
    reps = [env.audit(i, job, 13 * 3600).runtimes["edge"].total_s for i in range(2000)]
    assert e["edge"] == pytest.approx(np.mean(reps), rel=0.02)


@pytest.mark.parametrize("env_name", ["congested-processing", "heavy-tail"])
def test_vectorised_processing_factors_equal_the_scalar_ones(env_name: str) -> None:
    spec = EnvSpec.load(REPO / "workload" / "envs" / f"{env_name}.yaml")
    env = SimEnvironment(spec, RUNTIMES, seed=0)
    u = np.random.default_rng(7).random((500, 3))
    for name in env.runtimes:
        for at in (3 * 3600.0, 23 * 3600.0):
            one = [env.processing_factor(name, row, at) for row in u]
            assert env.processing_factors(name, u, at) == pytest.approx(one, rel=1e-12)


def test_cache_misses_add_the_pull_at_their_rate_and_change_no_other_draw() -> None:
    raw = _flat()
    raw["runtimes"]["gpu1"]["deployment"]["cache_miss"] = {"rate": 0.4, "pull_s": 150.0}
    env = SimEnvironment(EnvSpec.parse(raw), RUNTIMES, seed=3)
    at = np.arange(5_000) * 60.0
    d = env.probe_deployments("gpu1", 0, at)
    assert set(np.round(d, 6)) == {40.0, 190.0}  # no noise: a hit, or a hit and a pull
    assert (d > 100).mean() == pytest.approx(0.4, abs=0.03)
    plain = SimEnvironment(EnvSpec.parse(_flat()), RUNTIMES, seed=3)
    assert np.array_equal(
        plain.probe_deployments("cpu", 0, at), env.probe_deployments("cpu", 0, at)
    )


def test_cache_miss_and_outlier_rates_share_one_draw() -> None:
    raw = _flat()
    dep = raw["runtimes"]["gpu1"]["deployment"]
    dep.update(outlier_rate=0.7, outlier_scale_s=10.0, cache_miss={"rate": 0.4, "pull_s": 1.0})
    with pytest.raises(EnvSpecError, match=r"cache_miss\.rate"):
        EnvSpec.parse(raw)
