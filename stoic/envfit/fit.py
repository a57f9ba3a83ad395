"""From measurements and a prior spec to a fitted spec: every parameter, with its source.

The fitted spec is the prior with each parameter that the measurements can support
replaced by its fit (``stoic.envfit.deployment``, ``.processing``, ``.uplink``,
``.timeterms``); the rest stay as the prior has them, and :class:`SpecFit` records
which is which and why. What the fit never sets, it keeps and says so: the deployment
drift's timescale (weeks of data would be needed), unavailable windows, regimes and
outages (the prior's story, not a measurement), a warm-up call's cost and a later
call's overhead. Runtimes the measurements do not mention are the prior's, whole.

The result is validated by :class:`~stoic.backends.simulated.EnvSpec` itself, so it is
always a spec the replay accepts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stoic.backends.simulated import DeploymentSpec, EnvSpec, ProcessingSpec, UplinkSpec
from stoic.envfit.deployment import DeploymentData, DeploymentFit, fit_deployment, outlier_posterior
from stoic.envfit.measurements import Deployments, Measurements, Runs
from stoic.envfit.params import Value, needs
from stoic.envfit.processing import ProcessingData, fit_processing
from stoic.envfit.timeterms import Support, TimeFit, fit_time_terms, kept, support
from stoic.envfit.uplink import UplinkData, fit_uplink
from stoic.errors import FitDataError

Step = Callable[[str], None]


@dataclass(frozen=True)
class SpecFit:
    """The fitted spec, each parameter's provenance, and the evidence behind the fits."""

    spec: EnvSpec
    raw: dict[str, Any]
    values: dict[str, Value]
    kept: list[str]
    evidence: dict[str, str] = field(default_factory=dict)


def _clean(d: Any) -> Any:
    """The prior's dump without None values and empty lists (the schema's defaults)."""
    if isinstance(d, dict):
        return {k: _clean(v) for k, v in d.items() if v is not None and v != []}
    if isinstance(d, list):
        return [_clean(v) for v in d]
    return d


def _r(x: float) -> float:
    """Four significant digits: no false precision in the file."""
    return float(f"{x:.4g}")


class _Builder:
    def __init__(self, prior: EnvSpec) -> None:
        self.raw: dict[str, Any] = _clean(prior.model_dump(mode="json"))
        self.values: dict[str, Value] = {}
        self.kept: list[str] = []
        self.evidence: dict[str, str] = {}

    def set(self, path: str, v: Value) -> None:
        node = self.raw
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _r(v.value)
        self.values[path] = Value(_r(v.value), v.fitted, v.why)


def fit_spec(
    m: Measurements,
    prior: EnvSpec,
    *,
    name: str,
    description: str,
    resolution_s: float = 0.0,
    step: Step = lambda _: None,
) -> SpecFit:
    """Fit every parameter of ``prior`` that ``m`` supports (module docstring);
    completed deployments are known to ± ``resolution_s`` / 2."""
    if m.empty:
        raise FitDataError(f"{m.source}: no measurements to fit")
    b = _Builder(prior)
    b.raw["name"] = name
    b.raw["description"] = description
    if m.deploy_timeout_s is not None:
        b.set(
            "deploy_timeout_s",
            Value.fit(m.deploy_timeout_s, "the timeout the measured timeouts ran into"),
        )
    step("uplink")
    _uplink(b, m, prior)
    names = sorted(set(prior.runtimes) | set(m.runtimes_measured))
    timeout_s = float(b.raw["deploy_timeout_s"])
    for rt in names:
        spec = prior.runtimes.get(rt)
        runs, deps = m.runs.get(rt), m.deployments.get(rt)
        if runs is None and deps is None:
            b.kept.append(f"runtimes.{rt}: prior, whole (no measurements of it)")
            continue
        step(f"{rt} processing")
        _processing(b, rt, runs, spec.processing if spec else None)
        prior_dep = spec.deployment if spec else None
        if deps is not None and deps.duration_s.size:
            step(f"{rt} deployment")
            _deployment(b, rt, deps, prior_dep, timeout_s, resolution_s)
        elif prior_dep is not None:
            b.kept.append(f"runtimes.{rt}.deployment: prior, whole (no deployments measured)")
    spec_out = EnvSpec.parse(b.raw, f"the spec fitted to {m.source}")
    return SpecFit(spec_out, b.raw, b.values, b.kept, b.evidence)


def _uplink(b: _Builder, m: Measurements, prior: EnvSpec) -> None:
    up = prior.uplink
    bpi = m.bytes_per_image
    n_bpi = int(bpi.size)
    if n_bpi >= needs("uplink.bytes_per_image"):
        b.set(
            "uplink.bytes_per_image", Value.fit(float(np.median(bpi)), f"median of {n_bpi} batches")
        )
    else:
        b.set(
            "uplink.bytes_per_image",
            Value.prior(
                up.bytes_per_image,
                f"prior: {n_bpi} batches with sizes < {needs('uplink.bytes_per_image')}",
            ),
        )
    u = m.uploads
    n = 0 if u is None else int(u.seconds.size)
    short = f"prior: {n} uploads < {needs('uplink.bandwidth')}"
    if u is None or n < needs("uplink.bandwidth"):
        b.set("uplink.bandwidth_mbps", Value.prior(up.bandwidth_mbps, short))
        b.set("uplink.sigma", Value.prior(up.sigma, short))
        _time_values(b, "uplink", None, support(np.zeros(0)), up)
        return
    tf = kept(up.diurnal_amplitude, up.peak_hour, dip=True)
    data = UplinkData(u.n_bytes, u.seconds, tf.offset_at(u.at_s))
    fit = fit_uplink(data)
    sup = support(u.at_s)
    if sup.diurnal or sup.drift:
        finite = np.isfinite(u.at_s)
        resid = data.log_mbps - math.log(fit.bandwidth_mbps)
        tf = fit_time_terms(u.at_s[finite], resid[finite], sup, tf)
        fit = fit_uplink(UplinkData(u.n_bytes, u.seconds, tf.offset_at(u.at_s)))
    why = f"fitted, {n} uploads"
    b.set("uplink.bandwidth_mbps", Value.fit(fit.bandwidth_mbps, why))
    b.set("uplink.sigma", Value.fit(fit.sigma, why))
    b.evidence["uplink"] = (
        f"{n} uploads; {100 * fit.contamination:.1f} % explained as contamination "
        "(stalls, shared link), not in the spec"
    )
    _time_values(b, "uplink", tf, sup, up)
    for key in ("regimes", "outages"):
        if getattr(up, key):
            b.kept.append(f"uplink.{key}: prior (not fitted)")


def _time_values(
    b: _Builder,
    path: str,
    tf: TimeFit | None,
    sup: Support,
    prior: UplinkSpec | DeploymentSpec,
) -> None:
    """Write the swing and drift values: fitted where ``sup`` allows, else the prior's."""
    if tf is not None and sup.diurnal:
        b.set(
            f"{path}.diurnal_amplitude", Value.fit(tf.amplitude, "fitted: " + sup.why_not_diurnal)
        )
        b.set(f"{path}.peak_hour", Value.fit(tf.peak_hour, "fitted: " + sup.why_not_diurnal))
    else:
        short = "prior: " + sup.why_not_diurnal
        b.set(f"{path}.diurnal_amplitude", Value.prior(prior.diurnal_amplitude, short))
        b.set(f"{path}.peak_hour", Value.prior(prior.peak_hour, short))
    if tf is not None and sup.drift:
        b.set(f"{path}.drift_sigma", Value.fit(tf.drift_sigma, "fitted: " + sup.why_not_drift))
    else:
        b.set(f"{path}.drift_sigma", Value.prior(prior.drift_sigma, "prior: " + sup.why_not_drift))
    b.set(
        f"{path}.drift_timescale_h",
        Value.prior(prior.drift_timescale_h, "prior: a drift's timescale is not fitted"),
    )


def _processing(b: _Builder, rt: str, runs: Runs | None, prior: ProcessingSpec | None) -> None:
    base = f"runtimes.{rt}.processing"
    if runs is None or not runs.duration_s.size:
        if prior is None:
            raise FitDataError(f"runtime {rt}: no processing runs and no prior to keep")
        b.kept.append(f"{base}: prior, whole (no processing runs measured)")
        return
    fit = fit_processing(ProcessingData(runs.n_images, runs.duration_s), prior)
    if prior is None and not fit.values["per_image_s"].fitted:
        raise FitDataError(
            f"runtime {rt}: {fit.n} processing runs over too few batch sizes to fit its "
            "T_p line, and no prior to keep (--prior)"
        )
    for key, v in fit.values.items():
        b.set(f"{base}.{key}", v)
    lo, hi = fit.congestion_factor
    node = b.raw["runtimes"].setdefault(rt, {}).setdefault("processing", {})
    node["congestion_factor"] = [_r(lo.value), max(_r(lo.value), _r(hi.value))]
    b.values[f"{base}.congestion_factor"] = Value(
        _r(lo.value), lo.fitted, lo.why + f" (hi {_r(hi.value)})"
    )
    if prior is not None and prior.regimes:
        b.kept.append(f"{base}.regimes: prior (not fitted)")


def _deployment(
    b: _Builder,
    rt: str,
    deps: Deployments,
    prior: DeploymentSpec | None,
    timeout_s: float,
    resolution_s: float,
) -> None:
    base = f"runtimes.{rt}.deployment"
    ok = ~deps.timed_out
    dep_prior = prior or DeploymentSpec(floor_s=0.0, median_s=1.0, sigma=0.1)
    tf = kept(dep_prior.diurnal_amplitude, dep_prior.peak_hour, dip=False)
    data = DeploymentData(deps.duration_s, deps.timed_out, tf.offset_at(deps.at_s), resolution_s)
    fit = fit_deployment(data, prior)
    if prior is None and not fit.values["median_s"].fitted:
        raise FitDataError(
            f"runtime {rt}: {fit.n_ok} completed deployments < {needs('deployment.body')} "
            "and no prior to keep (--prior)"
        )
    sup = support(deps.at_s[ok])
    if (sup.diurnal or sup.drift) and fit.values["median_s"].fitted:
        tf = _deployment_terms(data, deps, fit, sup, tf)
        data = DeploymentData(
            deps.duration_s, deps.timed_out, tf.offset_at(deps.at_s), resolution_s
        )
        fit = fit_deployment(data, prior)
    for key, v in fit.values.items():
        b.set(f"{base}.{key}", v)
    known = f", each known to ± {resolution_s / 2:g} s" if resolution_s else ""
    b.evidence[rt] = (
        f"{fit.n_ok} completed deployments{known}, {fit.n_timeouts} timed out at "
        f"{timeout_s:g} s or less; {fit.outliers:.1f} attributed to the outlier component"
    )
    node = b.raw["runtimes"][rt]["deployment"]
    floor = node["floor_s"]
    for i, reg in enumerate(node.get("regimes", [])):
        if reg["median_s"] < floor:
            reg["median_s"] = floor
            b.kept.append(f"{base}.regimes.{i}.median_s: raised to the fitted floor {floor:g}")
    _time_values(b, base, tf, sup, dep_prior)
    for key in ("unavailable", "regimes"):
        if prior is not None and getattr(prior, key):
            b.kept.append(f"{base}.{key}: prior (not fitted; timeouts in the data are in the rate)")


def _deployment_terms(
    data: DeploymentData, deps: Deployments, fit: DeploymentFit, sup: Support, prior: TimeFit
) -> TimeFit:
    """Time terms from the log residuals of the completed deployments the static fit
    puts in the body (not the outliers), measured from the base (no prior swing)."""
    p = fit.params
    ok = ~deps.timed_out
    x, at = deps.duration_s[ok], deps.at_s[ok]
    body = (outlier_posterior(data, p) < 0.5) & (x > p.floor_s) & np.isfinite(at)
    resid = np.log(x[body] - p.floor_s) - math.log(p.median_s - p.floor_s)
    return fit_time_terms(at[body], resid, sup, prior)
