"""The time terms of a log-scale process: a diurnal swing and a slow drift.

Both the deployment body and the uplink's bandwidth carry them in the simulator:
a factor 1 + A·cos(2π(h − peak)/24) of the hour of day h, and exp(σ_d·drift(t)), where
drift is a unit-variance sum of slow sinusoids whose phases each replay draws afresh.
A swing needs the data to cover the day (and more than one day, or a one-off event
passes for a daily one); a drift needs hours that can be compared with each other.
Where the data does not span enough time, the prior's terms stay (``stoic.envfit.params``).

Given log residuals (the sample's log minus the static fit's), this module fits:

* the swing by least squares on the residuals (amplitude and peak);
* the drift from hourly bins: the variance of the bins' means, less what their own
  sampling noise explains, is σ_d² (a method-of-moments estimate: the drift's phases
  are not a parameter of the spec, only its size is).

Its result gives each instant's log-scale offset (swing, plus its hour's shrunken drift
estimate) so that the static fit can be redone *given* the time terms: its σ is then
the spread within an hour, as the simulator's σ is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from stoic.envfit.params import needs

FloatArray = NDArray[np.float64]

HOUR_S = 3600.0
DAY_S = 86_400.0
#: The least span, distinct hours of the day, and per-hour samples the terms need.
DIURNAL_SPAN_H = 48.0
DIURNAL_HOURS = 16
DRIFT_SPAN_H = 24.0
DRIFT_BINS = 12
DRIFT_BIN_SAMPLES = 3


@dataclass(frozen=True, slots=True)
class Support:
    """Whether the data can carry each term, and why not."""

    diurnal: bool
    drift: bool
    why_not_diurnal: str
    why_not_drift: str


def support(at_s: FloatArray) -> Support:
    """What the sample instants ``at_s`` (seconds on the spec's clock) support."""
    t = at_s[np.isfinite(at_s)]
    n = int(t.size)
    span_h = float(t.max() - t.min()) / HOUR_S if n else 0.0
    hours = int(np.unique(np.floor((t % DAY_S) / HOUR_S)).size) if n else 0
    _, counts = np.unique(np.floor(t / HOUR_S), return_counts=True)
    bins = int((counts >= DRIFT_BIN_SAMPLES).sum())
    d_n, r_n = needs("time.diurnal"), needs("time.drift")
    diurnal = n >= d_n and span_h >= DIURNAL_SPAN_H and hours >= DIURNAL_HOURS
    drift = n >= r_n and span_h >= DRIFT_SPAN_H and bins >= DRIFT_BINS
    return Support(
        diurnal,
        drift,
        f"{n} samples over {span_h:.1f} h in {hours} hours of the day "
        f"(needs {d_n} over {DIURNAL_SPAN_H:g} h in {DIURNAL_HOURS})",
        f"{n} samples over {span_h:.1f} h, {bins} hours with {DRIFT_BIN_SAMPLES}+ samples "
        f"(needs {r_n} over {DRIFT_SPAN_H:g} h, {DRIFT_BINS} such hours)",
    )


def swing(at_s: FloatArray, amplitude: float, peak_hour: float) -> FloatArray:
    """The simulator's diurnal factor 1 + A·cos(2π(h − peak)/24)."""
    hour = (at_s % DAY_S) / HOUR_S
    return np.asarray(1 + amplitude * np.cos(2 * np.pi * (hour - peak_hour) / 24))


@dataclass(frozen=True, slots=True)
class TimeFit:
    """The fitted terms; :meth:`offset_at` is their log-scale value at any instant."""

    amplitude: float
    peak_hour: float
    drift_sigma: float
    dip: bool
    hour_effects: dict[float, float]

    def offset_at(self, at_s: FloatArray) -> FloatArray:
        """Swing plus the (shrunken) drift of the instant's hour; 0 where unknown."""
        t = np.nan_to_num(at_s, nan=0.0)
        shape = swing(t, self.amplitude, self.peak_hour)
        out = np.log(2 - shape if self.dip else shape)
        if self.hour_effects:
            hours = np.floor(t / HOUR_S)
            out = out + np.array([self.hour_effects.get(float(h), 0.0) for h in hours])
        return np.asarray(np.where(np.isfinite(at_s), out, 0.0))


def kept(amplitude: float, peak_hour: float, *, dip: bool) -> TimeFit:
    """The prior's swing, held fixed (no drift estimate: its phases are unknown)."""
    return TimeFit(amplitude, peak_hour, 0.0, dip, {})


def fit_time_terms(at_s: FloatArray, resid: FloatArray, sup: Support, prior: TimeFit) -> TimeFit:
    """Fit the terms ``sup`` allows to the log residuals ``resid`` at ``at_s``; the swing
    stays ``prior``'s where the data cannot carry one. With ``prior.dip`` the swing is
    the uplink's, 1 − A·cos(...): it dips at the peak hour."""
    dip = prior.dip
    amplitude, peak = prior.amplitude, prior.peak_hour
    if sup.diurnal:
        amplitude, peak = _fit_swing(at_s, resid, dip=dip)
    shape = swing(at_s, amplitude, peak)
    offset = np.log(2 - shape if dip else shape)
    drift, effects = 0.0, dict[float, float]()
    if sup.drift:
        drift, effects = _fit_drift(at_s, resid - offset)
    return TimeFit(amplitude, peak, drift, dip, effects)


def _fit_swing(at_s: FloatArray, resid: FloatArray, *, dip: bool) -> tuple[float, float]:
    """Least squares of c + log(1 ± A·cos(2π(h − p)/24)), started from the linear fit."""
    w = 2 * np.pi * ((at_s % DAY_S) / HOUR_S) / 24
    design = np.column_stack([np.ones_like(w), np.cos(w), np.sin(w)])
    coef, *_ = np.linalg.lstsq(design, resid, rcond=None)
    a0 = min(float(math.hypot(coef[1], coef[2])), 0.9)
    p0 = (math.degrees(math.atan2(coef[2], coef[1])) / 15.0) % 24
    sign = -1.0 if dip else 1.0
    if dip:
        p0 = (p0 + 12) % 24

    def res(v: NDArray[np.float64]) -> NDArray[np.float64]:
        c, a, p = v
        return np.asarray(resid - c - np.log(1 + sign * a * np.cos(w - 2 * np.pi * p / 24)))

    fit = least_squares(
        res,
        np.array([float(coef[0]), max(a0, 1e-3), p0]),
        bounds=([-np.inf, 0.0, -24.0], [np.inf, 0.95, 48.0]),
        loss="soft_l1",
        f_scale=max(float(np.std(resid)), 1e-6),
    )
    return float(fit.x[1]), float(fit.x[2] % 24)


def _fit_drift(at_s: FloatArray, resid: FloatArray) -> tuple[float, dict[float, float]]:
    """σ_d from the hourly means (between-hour variance less sampling variance) and
    each sample's share of its hour's effect, shrunken toward zero by its noise."""
    hour = np.floor(at_s / HOUR_S)
    keys, inverse, counts = np.unique(hour, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=resid)
    means = sums / counts
    centred = resid - means[inverse]
    within = float((centred**2).sum() / max(resid.size - keys.size, 1))
    grand = float(np.average(means, weights=counts))
    use = counts >= DRIFT_BIN_SAMPLES
    between = float(np.var(means[use] - grand, ddof=1)) if use.sum() > 1 else 0.0
    var_d = max(between - within * float(np.mean(1.0 / counts[use])), 0.0)
    shrink = var_d / (var_d + within / counts) if var_d > 0 else np.zeros_like(means)
    effects = (means - grand) * shrink
    return math.sqrt(var_d), {float(k): float(e) for k, e in zip(keys, effects, strict=True)}
