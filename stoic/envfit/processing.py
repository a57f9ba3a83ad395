"""Fitting one runtime's processing time (``ProcessingSpec``): the T_p line and its noise.

The simulator draws T_p = (a·n + b)·exp(σZ), multiplied with probability
``congestion_rate`` by a factor uniform on ``congestion_factor`` = [lo, hi]. This module
fits that model by maximum likelihood. In log space, with v = log T_p − log(a·n + b):

* uncongested:  φ(v/σ)/σ
* congested:    e^{v + σ²/2}/(hi − lo) · [Φ((v − log lo)/σ + σ) − Φ((v − log hi)/σ + σ)]

(the normal convolved with the log of a uniform factor, in closed form). The congestion
component is what makes the line robust: a run slowed by a co-tenant is explained as
congestion rather than bending the line. With too few runs for the congestion terms
they stay at the prior and are held fixed, so the line is fitted given them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.special import ndtr
from scipy.stats import theilslopes

from stoic.backends.simulated import ProcessingSpec
from stoic.envfit.params import Value, needs

FloatArray = NDArray[np.float64]

_SIGMA = (1e-3, 2.0)
_RATE = (0.0, 0.5)
_LO = (1.0, 5.0)
_SPAN = (0.0, 10.0)


@dataclass(frozen=True, slots=True)
class ProcessingData:
    """One runtime's runs: ``n_images`` and the measured ``duration_s`` of each."""

    n_images: FloatArray
    duration_s: FloatArray

    @property
    def n(self) -> int:
        return int(self.duration_s.size)

    @property
    def sizes(self) -> int:
        return int(np.unique(self.n_images).size)


@dataclass(frozen=True, slots=True)
class Params:
    per_image_s: float
    fixed_s: float
    sigma: float
    congestion_rate: float
    congestion_lo: float
    congestion_hi: float


def log_likelihood(data: ProcessingData, p: Params) -> float:
    """The log-likelihood of ``data`` under ``p`` (see the module docstring)."""
    line = p.per_image_s * data.n_images + p.fixed_s
    if np.any(line <= 0):
        return -math.inf
    ly = np.log(data.duration_s)
    v = ly - np.log(line)
    s = p.sigma
    body = np.exp(-0.5 * (v / s) ** 2) / (s * math.sqrt(2 * math.pi))
    c, lo, hi = p.congestion_rate, p.congestion_lo, p.congestion_hi
    dens = (1 - c) * body
    if c > 0:
        if hi - lo < 1e-9:
            cong = np.exp(-0.5 * ((v - math.log(lo)) / s) ** 2) / (s * math.sqrt(2 * math.pi))
        else:
            t_lo, t_hi = (v - math.log(lo)) / s + s, (v - math.log(hi)) / s + s
            cong = np.exp(v + s * s / 2) / (hi - lo) * (ndtr(t_lo) - ndtr(t_hi))
        dens = dens + c * cong
    return float((np.log(np.maximum(dens, 1e-300)) - ly).sum())


@dataclass(frozen=True, slots=True)
class ProcessingFit:
    values: dict[str, Value]
    congestion_factor: tuple[Value, Value]
    params: Params
    n: int
    log_likelihood: float


def fit_processing(data: ProcessingData, prior: ProcessingSpec | None) -> ProcessingFit:
    """Fit ``data``; parameters short of evidence keep ``prior``'s values (the schema's
    defaults without a prior; then the line must be fittable)."""
    base = prior or ProcessingSpec(per_image_s=0.0, fixed_s=0.0)
    lo0, hi0 = base.congestion_factor
    p0 = Params(base.per_image_s, base.fixed_s, base.sigma, base.congestion_rate, lo0, hi0)
    line = data.n >= needs("processing.line") and data.sizes >= 3
    cong = line and data.n >= needs("processing.congestion")
    best = p0
    if line:
        best = _fit(data, _start(data, p0), cong)
    ll = log_likelihood(data, best) if data.n else 0.0
    src = "schema default" if prior is None else "prior"
    line_why = f"fitted, {data.n} runs over {data.sizes} batch sizes"
    line_short = (
        f"{src}: {data.n} runs over {data.sizes} batch sizes < {needs('processing.line')} over 3"
    )
    cong_why = f"fitted, {data.n} runs"
    cong_short = f"{src}: {data.n} runs < {needs('processing.congestion')}"

    def pick(on: bool, v: float, why: str, short: str) -> Value:
        return Value.fit(v, why) if on else Value.prior(v, short)

    values = {
        "per_image_s": pick(line, best.per_image_s, line_why, line_short),
        "fixed_s": pick(line, best.fixed_s, line_why, line_short),
        "sigma": pick(line, best.sigma, line_why, line_short),
        "congestion_rate": pick(cong, best.congestion_rate, cong_why, cong_short),
    }
    factor = (
        pick(cong, best.congestion_lo, cong_why, cong_short),
        pick(cong, best.congestion_hi, cong_why, cong_short),
    )
    return ProcessingFit(values, factor, best, data.n, ll)


def _start(data: ProcessingData, p0: Params) -> Params:
    """A robust line (Theil-Sen on the runs, clipped to a non-negative slope and
    intercept) and the median absolute log residual as σ."""
    slope, intercept, _, _ = theilslopes(data.duration_s, data.n_images)
    a = max(float(slope), 0.0)
    b = max(float(intercept), 0.0)
    if a == 0.0 and b == 0.0:
        b = float(np.median(data.duration_s))
    v = np.log(data.duration_s) - np.log(a * data.n_images + b)
    sigma = 1.4826 * float(np.median(np.abs(v - np.median(v))))
    return Params(a, b, min(max(sigma, 0.01), 1.0), *_cong(p0))


def _cong(p: Params) -> tuple[float, float, float]:
    return p.congestion_rate, p.congestion_lo, p.congestion_hi


def _fit(data: ProcessingData, start: Params, cong: bool) -> Params:
    """Maximise over the line and σ, and the congestion terms if ``cong``. Slope and
    intercept are searched relative to the start's scale (L-BFGS-B's steps are absolute)."""
    scale_a = max(start.per_image_s, 1e-3 * float(np.median(data.duration_s / data.n_images)))
    scale_b = max(start.fixed_s, 1e-3 * float(np.median(data.duration_s)))

    def unpack(v: NDArray[np.float64]) -> Params:
        rate, lo, hi = _cong(start)
        if cong:
            rate, lo = float(v[3]), float(v[4])
            hi = lo + float(v[5])
        return Params(float(v[0]) * scale_a, float(v[1]) * scale_b, math.exp(v[2]), rate, lo, hi)

    def nll(v: NDArray[np.float64]) -> float:
        ll = log_likelihood(data, unpack(v))
        return -ll / data.n if math.isfinite(ll) else 1e12

    x0 = [start.per_image_s / scale_a, start.fixed_s / scale_b, math.log(start.sigma)]
    bounds = [(0.0, 1e4), (0.0, 1e4), (math.log(_SIGMA[0]), math.log(_SIGMA[1]))]
    starts = [x0]
    if cong:
        bounds += [_RATE, _LO, _SPAN]
        starts = [[*x0, 0.05, 1.5, 1.0], [*x0, 0.15, 1.3, 0.5]]
    fits = [
        minimize(nll, np.array(s), method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-10})
        for s in starts
    ]
    best = min(fits, key=lambda r: float(r.fun))
    return unpack(best.x)
