"""The combined predictor: T_s = T_t + T_d + T_p for each runtime (paper 3.4).

One :class:`Predictor` holds, in bounded in-memory deques, the recent samples of each
component: deployment samples per runtime, processing samples per (app, app_version,
runtime), and upload bandwidths. The daemon replays recent samples from its database
into the ``observe_*`` methods at start-up; from then on an estimate never touches the
database, and its cost does not depend on how much history exists.

Every fitted model is cached and refitted only when its samples changed, so the many
estimates between two measurements are a few arithmetic operations each (the replay
asks for tens of thousands of them).

Samples for runtimes that are not configured are ignored (``observe_*`` returns
False): a database may hold samples of a runtime that has since been removed from the
settings, and that must not stop the daemon. Asking for an estimate of an unknown
runtime is an error (:class:`~stoic.errors.PredictorError`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from stoic.errors import PredictorError
from stoic.predict.deployment import DeploymentModel
from stoic.predict.processing import ProcessingModel, RansacOptions
from stoic.predict.regime import ChangeDetector
from stoic.predict.timeofday import DailyOptions, DailyProfile
from stoic.predict.transfer import BandwidthMonitor
from stoic.predict.uplink import UplinkWatch
from stoic.settings import PredictorSettings, RuntimeSettings, Settings
from stoic.values import (
    NO_RISK,
    ZERO,
    Component,
    DeploymentSample,
    Estimate,
    ProcessingSample,
    Risk,
    RuntimeKind,
    TransferSample,
    runtime_named,
)


@dataclass(frozen=True, slots=True)
class PredictorOptions:
    """What the predictor reads of the settings: its own section, the runtimes (their
    kinds and priors) and the objective's quantile (the risk it prices)."""

    model: PredictorSettings
    runtimes: tuple[RuntimeSettings, ...]
    objective_quantile: float

    @classmethod
    def from_settings(cls, settings: Settings) -> PredictorOptions:
        return cls(settings.predictor, tuple(settings.runtimes), settings.policy.objective_quantile)


class Predictor:
    """Estimates of every configured runtime, learnt from observed samples."""

    def __init__(
        self,
        options: PredictorOptions,
        *,
        uplink: UplinkWatch | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.options = options
        p = options.model
        self._runtimes: dict[str, RuntimeSettings] = {r.name: r for r in options.runtimes}
        self._quantile = options.objective_quantile
        self._deployment: dict[str, DeploymentModel] = {
            r.name: DeploymentModel(
                method=p.deployment_method,
                max_window=p.max_window,
                calibration_period=p.calibration_period,
                calibration_history=p.calibration_history,
                deploy_timeout_s=p.deploy_timeout_s,
                prior_s=0.0 if r.kind is RuntimeKind.EDGE else r.prior_deploy_s,
                mixture_history=p.deployment_mixture_history,
                cold_ratio=p.deployment_cold_ratio,
                cold_idle_s=p.deployment_cold_idle_s,
                tail_history=p.deployment_tail_history,
            )
            for r in options.runtimes
        }
        self._processing: dict[tuple[str, str, str], ProcessingModel] = {}
        self.bandwidth = BandwidthMonitor(
            history=p.bandwidth_history, default_bps=p.default_bandwidth_bps
        )
        # The uplink's state as the inquisitor's checks saw it (None: not checked, no
        # wait predicted): stoic.predict.uplink.
        self.uplink = uplink
        # The instant a T_p estimate is for (epoch seconds), read only with
        # predictor.processing_time_of_day: stoic.predict.timeofday. Without a clock
        # there is no hour to price, so no term either.
        self._now = clock if p.processing_time_of_day else None

    @classmethod
    def from_settings(cls, settings: Settings, *, uplink: UplinkWatch | None = None) -> Predictor:
        return cls(PredictorOptions.from_settings(settings), uplink=uplink)

    # Lookup ---------------------------------------------------------------------

    @property
    def runtimes(self) -> list[str]:
        return list(self._runtimes)

    def _runtime(self, name: str) -> RuntimeSettings:
        return runtime_named(self._runtimes, name, PredictorError)

    def _processing_model(self, runtime: str, app: str, app_version: str) -> ProcessingModel:
        key = (app, app_version, runtime)
        model = self._processing.get(key)
        if model is None:
            r = self._runtime(runtime)
            p = self.options.model
            model = ProcessingModel(
                history=p.processing_history,
                prior_slope=r.prior_per_image_s,
                prior_intercept=r.prior_fixed_s,
                ransac=RansacOptions(
                    min_samples=p.ransac_min_samples,
                    residual_threshold_s=p.ransac_residual_threshold_s,
                    max_trials=p.ransac_max_trials,
                    seed=p.seed,
                ),
                tail_history=p.processing_tail_history,
                shape_history=p.processing_shape_history,
                max_age_s=p.processing_max_age_s,
                detector=(
                    ChangeDetector(
                        hazard=p.processing_change_hazard,
                        min_run=p.processing_change_min_run,
                        threshold=p.processing_change_threshold,
                    )
                    if p.processing_change_detection
                    else None
                ),
                daily=(
                    DailyProfile(
                        DailyOptions(
                            min_days=p.processing_time_of_day_min_days,
                            min_effect=p.processing_time_of_day_min_effect,
                        )
                    )
                    if self._now is not None
                    else None
                ),
            )
            self._processing[key] = model
        return model

    # Feeding --------------------------------------------------------------------

    def observe_deployment(self, sample: DeploymentSample) -> bool:
        """Record a deployment; a timeout counts as at least the timeout, a failure is
        kept for :meth:`recent_deployments` but is no T_d sample."""
        model = self._deployment.get(sample.runtime)
        if model is None:
            return False
        return model.observe(sample)

    def observe_probes(
        self, runtime: str, at: Sequence[float], duration_s: Sequence[float]
    ) -> None:
        """Record deployment probes of ``runtime`` in bulk (the replay's probe shortcut):
        see :meth:`DeploymentModel.observe_probes`."""
        model = self._deployment.get(runtime)
        if model is not None:
            model.observe_probes(runtime, at, duration_s)

    def observe_processing(self, sample: ProcessingSample) -> bool:
        if sample.runtime not in self._runtimes or sample.images < 0 or sample.duration_s < 0:
            return False
        self._processing_model(sample.runtime, sample.app, sample.app_version).observe(sample)
        return True

    def observe_transfer(self, sample: TransferSample) -> bool:
        """Record an upload over the site's uplink (uploads to the edge are ignored)."""
        r = self._runtimes.get(sample.runtime)
        if r is not None and r.kind is RuntimeKind.EDGE:
            return False
        return self.bandwidth.observe(sample)

    # Estimating -----------------------------------------------------------------

    def estimate(
        self, runtime: str, n_images: int, n_bytes: int, *, app: str, app_version: str
    ) -> Estimate:
        """T_t, T_d and T_p (mean and spread) of a batch on ``runtime``, and for a cloud
        runtime the :class:`~stoic.values.Risk` its deployment samples show. A cloud
        runtime's T_t includes the wait for an uplink that is down (``uplink``)."""
        r = self._runtime(runtime)
        edge = r.kind is RuntimeKind.EDGE
        processing = self._processing_model(runtime, app, app_version)
        now = None if self._now is None else self._now()
        f = processing.factor(now)
        fit = processing.fit
        transfer = self.bandwidth.estimate(n_bytes, edge=edge)
        wait = 0.0 if edge or self.uplink is None else self.uplink.wait_s()
        if wait > 0.0:
            transfer = Component(transfer.mean + wait, transfer.std)
        return Estimate(
            runtime=runtime,
            transfer=transfer,
            deployment=ZERO if edge else self._deployment[runtime].estimate(),
            processing=processing.estimate(n_images, now),
            risk=self._risk(runtime, edge, processing.excess),
            processing_line=(max(fit.slope, 0.0) * f, max(fit.intercept, 0.0) * f),
            processing_seen=processing.largest,
            uplink_wait_s=wait,
        )

    def _risk(self, runtime: str, edge: bool, processing_excess: float) -> Risk:
        risk = NO_RISK if edge else self._deployment[runtime].risk(self._quantile)
        if processing_excess == 0.0:
            return risk
        return replace(risk, processing_excess=processing_excess)

    def estimate_all(
        self,
        n_images: int,
        n_bytes: int,
        *,
        app: str,
        app_version: str,
        runtimes: Iterable[str] | None = None,
    ) -> dict[str, Estimate]:
        names = self._runtimes if runtimes is None else runtimes
        return {
            name: self.estimate(name, n_images, n_bytes, app=app, app_version=app_version)
            for name in names
        }

    def remaining_processing(
        self, runtime: str, n_images: int, elapsed_s: float, *, app: str, app_version: str
    ) -> Component:
        """Predicted T_p still to run after ``elapsed_s`` seconds of processing (the
        duplicator's comparison): the mean minus the elapsed time, floored at 0; the
        spread is that of the whole T_p (running longer tells us little about it)."""
        now = None if self._now is None else self._now()
        tp = self._processing_model(runtime, app, app_version).estimate(n_images, now)
        return Component(max(tp.mean - max(elapsed_s, 0.0), 0.0), tp.std)

    # Introspection (REST API) ---------------------------------------------------

    def deployment_window(self, runtime: str) -> int:
        """The calibrated sliding-window size of ``runtime`` (0 for the edge)."""
        r = self._runtime(runtime)
        return 0 if r.kind is RuntimeKind.EDGE else self._deployment[runtime].window

    def recent_deployments(self, runtime: str, n: int) -> list[DeploymentSample]:
        """The last ``n`` deployment samples of ``runtime``, oldest first."""
        self._runtime(runtime)
        return self._deployment[runtime].recent(n)

    def deployment_model(self, runtime: str) -> DeploymentModel:
        self._runtime(runtime)
        return self._deployment[runtime]

    def processing_model(self, runtime: str, app: str, app_version: str) -> ProcessingModel:
        return self._processing_model(runtime, app, app_version)
