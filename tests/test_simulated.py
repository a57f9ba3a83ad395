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
