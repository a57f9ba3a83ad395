"""The combined Predictor: components, caching, introspection, errors, bandwidth."""

from __future__ import annotations

import pytest

from stoic.errors import PredictorError
from stoic.predict.predictor import Predictor
from stoic.predict.transfer import BandwidthMonitor
from stoic.settings import Settings
from stoic.values import DeploymentSample, DeployOutcome, ProcessingSample, TransferSample

APP = {"app": "classify", "app_version": "1"}


@pytest.fixture
def predictor() -> Predictor:
    return Predictor.from_settings(Settings())


def _proc(runtime: str, n: int, s: float) -> ProcessingSample:
    return ProcessingSample("classify", "1", runtime, n, n * 1000, s, 0.0)


def test_priors_before_any_sample(predictor: Predictor):
    est = predictor.estimate_all(100, 8_850_000, **APP)
    assert set(est) == {"edge", "cpu", "gpu1", "gpu2"}
    edge, gpu1 = est["edge"], est["gpu1"]
    assert edge.transfer.mean == 0 and edge.deployment.mean == 0
    assert edge.processing.mean == pytest.approx(2.3955 * 100 + 13.60)
    assert gpu1.deployment.mean == 30.0
    assert gpu1.transfer.mean == pytest.approx(8_850_000 / (70.8e6 / 8))
    assert gpu1.processing.mean == pytest.approx(0.3272 * 100 + 28.16)
    assert gpu1.total.mean == pytest.approx(
        gpu1.transfer.mean + gpu1.deployment.mean + gpu1.processing.mean
    )


def test_unknown_runtime_is_named(predictor: Predictor):
    with pytest.raises(PredictorError, match="'tpu'"):
        predictor.estimate("tpu", 1, 1, **APP)
    with pytest.raises(PredictorError, match="'tpu'"):
        predictor.deployment_window("tpu")
    assert predictor.observe_deployment(DeploymentSample("tpu", 0.0, 1.0)) is False


def test_deployment_samples_and_timeouts_flow_through(predictor: Predictor):
    for v in (20.0, 22.0, 21.0):
        predictor.observe_deployment(DeploymentSample("gpu2", 0.0, v))
    assert predictor.estimate("gpu2", 1, 0, **APP).deployment.mean == 21.0
    for _ in range(4):
        predictor.observe_deployment(DeploymentSample("gpu2", 0.0, 50.0, DeployOutcome.TIMEOUT))
    assert predictor.estimate("gpu2", 1, 0, **APP).deployment.mean == 600.0
    predictor.observe_deployment(DeploymentSample("gpu2", 0.0, 1.0, DeployOutcome.FAILURE))
    assert predictor.estimate("gpu2", 1, 0, **APP).deployment.mean == 600.0
    recent = predictor.recent_deployments("gpu2", 2)
    assert [s.outcome for s in recent] == [DeployOutcome.TIMEOUT, DeployOutcome.FAILURE]
    assert predictor.deployment_window("gpu2") == 100  # not yet calibrated
    assert predictor.deployment_window("edge") == 0


def test_edge_deployment_is_always_zero(predictor: Predictor):
    predictor.observe_deployment(DeploymentSample("edge", 0.0, 99.0))
    assert predictor.estimate("edge", 10, 10, **APP).deployment.mean == 0.0


def test_processing_is_per_app_version_and_cached(predictor: Predictor):
    for n, s in ((10, 5.0), (100, 50.0), (50, 25.0), (200, 100.0)):
        predictor.observe_processing(_proc("gpu1", n, s))
    model = predictor.processing_model("gpu1", "classify", "1")
    a = predictor.estimate("gpu1", 400, 0, **APP).processing
    fits = model.fits
    assert a.mean == pytest.approx(200.0, rel=1e-3)
    for _ in range(50):
        predictor.estimate_all(400, 0, **APP)
    assert model.fits == fits
    coef = predictor.processing_model("gpu1", "classify", "1").fit
    assert coef.slope == pytest.approx(0.5, rel=1e-3) and coef.n_samples == 4
    assert coef.inliers == 4
    predictor.observe_processing(_proc("gpu1", 300, 150.0))
    predictor.estimate("gpu1", 400, 0, **APP)
    assert model.fits == fits + 1
    # Another version knows nothing yet: the prior.
    other = predictor.estimate("gpu1", 100, 0, app="classify", app_version="2").processing
    assert other.mean == pytest.approx(0.3272 * 100 + 28.16)


def test_remaining_processing_floors_at_zero(predictor: Predictor):
    full = predictor.estimate("gpu1", 100, 0, **APP).processing
    rem = predictor.remaining_processing("gpu1", 100, 10.0, **APP)
    assert rem.mean == pytest.approx(full.mean - 10.0) and rem.std == full.std
    assert predictor.remaining_processing("gpu1", 100, 1e6, **APP).mean == 0.0


def test_transfer_monitor_median_default_and_edge():
    mon = BandwidthMonitor(history=3, default_bps=1000.0)
    assert mon.estimate(5000).mean == 5.0 and mon.estimate(5000).std == 0.0
    assert mon.estimate(5000, edge=True).mean == 0.0
    for n, s in ((1000, 1.0), (4000, 1.0), (2000, 1.0), (1_000_000, 1.0)):
        mon.observe(TransferSample(n, s, 0.0))
    assert mon.bandwidth_bps == 4000.0  # median of the last 3: 4000, 2000, 1e6
    assert mon.estimate(8000).mean == 2.0
    assert mon.estimate(8000).std > 0
    assert mon.observe(TransferSample(100, 0.0, 0.0)) is False


def test_predictor_transfer_ignores_edge_uploads(predictor: Predictor):
    assert predictor.observe_transfer(TransferSample(1000, 1.0, 0.0, runtime="edge")) is False
    assert predictor.observe_transfer(TransferSample(1000, 1.0, 0.0, runtime="gpu1")) is True
    assert predictor.estimate("cpu", 1, 3000, **APP).transfer.mean == 3.0
    assert predictor.estimate("edge", 1, 3000, **APP).transfer.mean == 0.0


def test_estimates_are_deterministic():
    def run() -> list[float]:
        p = Predictor.from_settings(Settings())
        for i in range(30):
            p.observe_deployment(DeploymentSample("gpu1", float(i), 20.0 + (i * 7) % 13))
            p.observe_processing(
                _proc("gpu1", 10 + (i * 37) % 300, 28 + 0.33 * ((i * 37) % 300) + (i % 5))
            )
        return [v for e in p.estimate_all(150, 10**6, **APP).values() for v in e.as_dict().values()]

    assert run() == run()


def test_estimate_carries_the_processing_tail_for_edge_and_cloud(predictor: Predictor):
    for i in range(40):
        n = 20 + 5 * i
        slow = 3.0 if i % 4 == 3 else 1.0  # one run in four congested, x3
        predictor.observe_processing(_proc("edge", n, 1.2 * n * slow))
        predictor.observe_processing(_proc("gpu1", n, 0.1 * n))
    edge = predictor.estimate("edge", 100, 0, **APP)
    gpu1 = predictor.estimate("gpu1", 100, 0, **APP)
    assert edge.processing.mean == pytest.approx(120.0, rel=0.02)  # RANSAC: the clean line
    assert 0.3 < edge.risk.processing_excess < 0.5  # ~ (36 + 9*2 + 10) / 47 - 1
    assert edge.processing_tail_s == pytest.approx(edge.risk.processing_excess * 120.0, rel=0.02)
    assert gpu1.risk.processing_excess == pytest.approx(0.0, abs=1e-6)
    assert edge.as_dict()["processing_excess"] == edge.risk.processing_excess
