"""Parameter recovery of ``stoic env fit``: draw from known specs with the simulator's
own code, fit, and get the parameters back.

Tolerances, at the sample counts stated in each test (the reasons beside them):

* deployments, 1,500 draws, static (no time terms): the body median within 6 %; the
  body's spread (median − floor)·σ within 15 %; the floor within 0.25 × (median −
  floor) and σ within 30 % (floor and σ trade off: a shifted log-normal's skew is all
  that tells them apart); the outlier rate within 0.05 where outliers stand out of the
  body (their median excess at least the body's spread; otherwise they *are* body);
  the chance of a timeout (timeout draws and body or tail past the timeout, which the
  model cannot tell apart) within 0.005 of the sample's share and within four
  binomial standard errors of the truth's; and the fitted spec's draws within KS
  distance 0.05 of the truth's;
* the Lomax tail (10,000 draws, 15 % outliers): tail index within 25 %, the outliers'
  median excess within 20 % (at 3,000 draws the index is still loose: it rests on the
  few largest outliers, and one seed in four gives 80 % off with the median excess
  right);
* processing, 150 runs over sizes 1-300: the fitted line within 6 % of the true one at
  150 images and within 20 % at 1 and at 300 (the ends lean on the intercept or the
  slope alone: over 12 random specs, slope and intercept alone were up to 29 % and
  18 % off while the line stayed within 5 % at mid-range), σ within 20 %; congestion
  (1,500 runs) rate within 0.04, factor bounds within 0.5;
* uplink, 400 uploads: bandwidth within 3 %, σ within 10 %;
* time terms, a week of ten-minute probes: swing amplitude within 0.07, peak within
  1 h, drift σ within 0.06 (deployments) — the amplitude of the deployment swing
  shares the floor's uncertainty.

Random specs (``stoic.replay.randenv``) are among the truths, and the prior handed to
the fit is always wrong, so nothing is recovered by starting at the answer.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
from scipy.stats import ks_2samp

from stoic.backends.simulated import DeploymentSpec, EnvSpec, ProcessingSpec, SimEnvironment
from stoic.envfit.deployment import DeploymentData, fit_deployment
from stoic.envfit.fit import fit_spec
from stoic.envfit.gof import runtimes_of
from stoic.envfit.measurements import Deployments, Measurements, Uploads
from stoic.envfit.processing import ProcessingData, fit_processing
from stoic.envfit.uplink import UplinkData, fit_uplink
from stoic.replay.randenv import random_spec
from tests.support.paths import REPO

NAUTILUS = REPO / "workload" / "nautilus-2020.yaml"


def _static(raw: dict[str, Any]) -> EnvSpec:
    """``raw`` without time terms, regimes or windows (what a static fit recovers)."""
    raw = copy.deepcopy(raw)
    for rt in raw["runtimes"].values():
        rt["processing"].pop("regimes", None)
        d = rt.get("deployment")
        if d:
            d.update(diurnal_amplitude=0.0, drift_sigma=0.0)
            d.pop("regimes", None)
            d.pop("unavailable", None)
    raw["uplink"].update(diurnal_amplitude=0.0, drift_sigma=0.0)
    raw["uplink"].pop("regimes", None)
    raw["uplink"].pop("outages", None)
    return EnvSpec.parse(raw)


def _env(spec: EnvSpec, seed: int = 0) -> SimEnvironment:
    return SimEnvironment(spec, runtimes_of(spec), seed=seed)


def _deployments(spec: EnvSpec, rt: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    env = _env(spec, seed)
    v = env.deployment_from_uniforms(rt, np.zeros(n), np.random.default_rng(seed).random((n, 4)))
    timed_out = np.isnan(v)
    return np.where(timed_out, spec.deploy_timeout_s, v), timed_out


def _wrong(d: DeploymentSpec, **tail: float) -> DeploymentSpec:
    """A prior that is off in every fitted parameter (the tail as given)."""
    return d.model_copy(
        update={
            "floor_s": d.floor_s * 0.5,
            "median_s": d.median_s * 1.6,
            "sigma": 0.3,
            "outlier_rate": 0.05,
            "timeout_rate": 0.01,
            **tail,
        }
    )


CASES = [
    ("random-001", random_spec(1), "cpu"),
    ("random-001", random_spec(1), "gpu2"),
    ("random-002", random_spec(2), "gpu1"),
    ("random-004", random_spec(4), "cpu"),
    ("random-005", random_spec(5), "gpu1"),
    ("nautilus-2020", EnvSpec.load(NAUTILUS).model_dump(mode="json"), "gpu1"),
]


@pytest.mark.parametrize(("name", "raw", "rt"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_deployment_parameters_are_recovered(name: str, raw: dict[str, Any], rt: str) -> None:
    spec = _static(raw)
    truth = spec.runtimes[rt].deployment
    assert truth is not None
    x, timed_out = _deployments(spec, rt, 1_500, seed=7)
    fit = fit_deployment(DeploymentData(x, timed_out, np.zeros(x.size)), _wrong(truth))
    v = {k: val.value for k, val in fit.values.items()}
    body = truth.median_s - truth.floor_s
    assert v["median_s"] == pytest.approx(truth.median_s, rel=0.06)
    assert (v["median_s"] - v["floor_s"]) * v["sigma"] == pytest.approx(
        body * truth.sigma, rel=0.15
    )
    assert abs(v["floor_s"] - truth.floor_s) <= 0.25 * body
    assert v["sigma"] == pytest.approx(truth.sigma, rel=0.30)
    excess = truth.outlier_scale_s * (2 ** (1 / truth.outlier_alpha) - 1)
    if excess >= body * truth.sigma:
        assert v["outlier_rate"] == pytest.approx(truth.outlier_rate, abs=0.05)

    fitted = spec.model_copy(
        update={
            "runtimes": {
                **spec.runtimes,
                rt: spec.runtimes[rt].model_copy(update={"deployment": truth.model_copy(update=v)}),
            }
        }
    )
    a, a_to = _deployments(spec, rt, 20_000, seed=101)
    b, b_to = _deployments(fitted, rt, 20_000, seed=102)
    p = float(a_to.mean())
    assert abs(b_to.mean() - p) <= 4 * math.sqrt(p * (1 - p) / x.size) + 0.003
    assert b_to.mean() == pytest.approx(timed_out.mean(), abs=0.005)
    assert ks_2samp(a, b).statistic < 0.05


def test_the_lomax_tail_is_recovered_with_enough_outliers() -> None:
    raw = EnvSpec.load(NAUTILUS).model_dump(mode="json")
    raw["runtimes"]["gpu1"]["deployment"].update(
        outlier_rate=0.15, outlier_scale_s=60.0, outlier_alpha=1.8, timeout_rate=0.0
    )
    spec = _static(raw)
    truth = spec.runtimes["gpu1"].deployment
    assert truth is not None
    x, timed_out = _deployments(spec, "gpu1", 10_000, seed=3)
    prior = _wrong(truth, outlier_scale_s=15.0, outlier_alpha=4.0)
    fit = fit_deployment(DeploymentData(x, timed_out, np.zeros(x.size)), prior)
    v = fit.values
    assert v["outlier_alpha"].fitted and v["outlier_scale_s"].fitted
    assert v["outlier_alpha"].value == pytest.approx(1.8, rel=0.25)

    def median_excess(scale: float, alpha: float) -> float:
        return scale * (2 ** (1 / alpha) - 1)

    got = median_excess(v["outlier_scale_s"].value, v["outlier_alpha"].value)
    assert got == pytest.approx(median_excess(60.0, 1.8), rel=0.20)


def test_too_few_deployments_keep_the_prior_and_say_so() -> None:
    spec = _static(EnvSpec.load(NAUTILUS).model_dump(mode="json"))
    truth = spec.runtimes["cpu"].deployment
    assert truth is not None
    x, timed_out = _deployments(spec, "cpu", 12, seed=1)
    prior = _wrong(truth)
    fit = fit_deployment(DeploymentData(x, timed_out, np.zeros(x.size)), prior)
    v = fit.values
    assert v["median_s"].fitted and v["outlier_rate"].fitted
    for key in ("outlier_scale_s", "outlier_alpha", "timeout_rate"):
        assert not v[key].fitted
        assert v[key].value == pytest.approx(getattr(prior, key), rel=1e-12)
        assert v[key].why.startswith("prior: ")
    assert v["timeout_rate"].why == "prior: 12 attempts < 50"

    few = fit_deployment(DeploymentData(x[:5], timed_out[:5], np.zeros(5)), prior)
    assert not few.values["median_s"].fitted
    assert few.values["median_s"].value == prior.median_s
    assert few.values["median_s"].why == "prior: 5 completed deployments < 8"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_processing_line_is_recovered(seed: int) -> None:
    spec = _static(random_spec(seed))
    env = _env(spec, seed)
    rng = np.random.default_rng(seed)
    for rt, section in spec.runtimes.items():
        truth = section.processing
        sizes = rng.integers(1, 301, 150).astype(float)
        y = np.array([env.processing_from_uniforms(rt, int(n), rng.random(3), 0.0) for n in sizes])
        prior = ProcessingSpec(per_image_s=truth.per_image_s * 2, fixed_s=truth.fixed_s / 2)
        prior = prior.model_copy(
            update={
                "congestion_rate": truth.congestion_rate,
                "congestion_factor": truth.congestion_factor,
            }
        )
        fit = fit_processing(ProcessingData(sizes, y), prior)
        v = fit.values
        a, b = v["per_image_s"].value, v["fixed_s"].value
        for n, tol in ((1, 0.20), (150, 0.06), (300, 0.20)):
            want = truth.per_image_s * n + truth.fixed_s
            assert a * n + b == pytest.approx(want, rel=tol), (rt, n)
        assert v["sigma"].value == pytest.approx(truth.sigma, rel=0.20), rt
        assert not v["congestion_rate"].fitted


def test_processing_congestion_is_recovered_from_many_runs() -> None:
    raw = EnvSpec.load(NAUTILUS).model_dump(mode="json")
    raw["runtimes"]["gpu1"]["processing"].update(
        sigma=0.05, congestion_rate=0.12, congestion_factor=[1.8, 3.0]
    )
    spec = _static(raw)
    env = _env(spec, 4)
    rng = np.random.default_rng(4)
    sizes = rng.integers(1, 301, 1_500).astype(float)
    y = np.array([env.processing_from_uniforms("gpu1", int(n), rng.random(3), 0.0) for n in sizes])
    fit = fit_processing(ProcessingData(sizes, y), ProcessingSpec(per_image_s=1.0, fixed_s=1.0))
    assert fit.values["congestion_rate"].fitted
    assert fit.values["congestion_rate"].value == pytest.approx(0.12, abs=0.04)
    lo, hi = fit.congestion_factor
    assert lo.value == pytest.approx(1.8, abs=0.5)
    assert hi.value == pytest.approx(3.0, abs=0.5)


@pytest.mark.parametrize("seed", [1, 6])
def test_uplink_is_recovered(seed: int) -> None:
    spec = _static(random_spec(seed))
    env = _env(spec, seed)
    rng = np.random.default_rng(seed)
    n_bytes = rng.integers(100_000, 50_000_000, 400).astype(float)
    secs = np.array(
        [env.transfer_s(b, 0.0, float(u)) for b, u in zip(n_bytes, rng.random(400), strict=True)]
    )
    fit = fit_uplink(UplinkData(n_bytes, secs, np.zeros(400)))
    assert fit.bandwidth_mbps == pytest.approx(spec.uplink.bandwidth_mbps, rel=0.03)
    assert fit.sigma == pytest.approx(spec.uplink.sigma, rel=0.10)


def test_time_terms_are_recovered_from_a_week() -> None:
    raw = EnvSpec.load(NAUTILUS).model_dump(mode="json")
    raw["runtimes"]["gpu1"]["deployment"].update(
        floor_s=10.0,
        median_s=60.0,
        sigma=0.2,
        diurnal_amplitude=0.3,
        peak_hour=15.0,
        drift_sigma=0.15,
        drift_timescale_h=6.0,
        outlier_rate=0.0,
        timeout_rate=0.0,
    )
    raw["uplink"].update(diurnal_amplitude=0.25, peak_hour=20.0, drift_sigma=0.1, sigma=0.15)
    spec = EnvSpec.parse(raw)
    env = _env(spec, 2)
    rng = np.random.default_rng(2)
    at = np.arange(0.0, 7 * 86_400.0, 600.0)
    v = env.deployment_from_uniforms("gpu1", at, rng.random((at.size, 4)))
    secs = np.array(
        [
            env.transfer_s(1e6, float(a), float(u))
            for a, u in zip(at, rng.random(at.size), strict=True)
        ]
    )
    m = Measurements(
        "synthetic",
        0.0,
        float(at[-1]),
        0.0,
        deployments={"gpu1": Deployments(at, np.nan_to_num(v, nan=600.0), np.isnan(v))},
        uploads=Uploads(at, np.full(at.size, 1e6), secs),
    )
    fit = fit_spec(m, EnvSpec.load(NAUTILUS), name="week", description="synthetic")
    got = {k: val for k, val in fit.values.items()}
    dep = "runtimes.gpu1.deployment"
    assert got[f"{dep}.diurnal_amplitude"].fitted
    assert got[f"{dep}.diurnal_amplitude"].value == pytest.approx(0.3, abs=0.07)
    assert got[f"{dep}.peak_hour"].value == pytest.approx(15.0, abs=1.0)
    assert got[f"{dep}.drift_sigma"].value == pytest.approx(0.15, abs=0.06)
    assert got[f"{dep}.median_s"].value == pytest.approx(60.0, rel=0.06)
    assert got["uplink.diurnal_amplitude"].value == pytest.approx(0.25, abs=0.05)
    assert got["uplink.peak_hour"].value == pytest.approx(20.0, abs=1.0)
    assert got["uplink.drift_sigma"].value == pytest.approx(0.1, abs=0.04)
    assert got["uplink.bandwidth_mbps"].value == pytest.approx(70.8, rel=0.03)
    assert not got[f"{dep}.drift_timescale_h"].fitted
    # A runtime the measurements never mention is the prior's, whole, and said so.
    assert "runtimes.gpu2: prior, whole (no measurements of it)" in fit.kept
    assert math.isclose(fit.spec.runtimes["gpu2"].deployment.median_s, 185.0)  # type: ignore[union-attr]
