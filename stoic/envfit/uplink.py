"""Fitting the uplink (``UplinkSpec``): bandwidth, its noise, and its time terms.

The simulator's upload of b bytes takes b / (B·exp(σZ + σ_d·drift)·(1 − A·cos(...)))
seconds: the log of each measured rate is log B + σZ plus the time terms. The fit is
the maximum-likelihood normal of the log rates, made robust by a contamination
component (uniform over the observed range): an upload that stalled in an outage, or
shared the link with another, is explained as contamination instead of widening σ.
The share so explained is reported, never written to the spec (which has no such
term). With few uploads the contamination share is not estimated (it would take the
tails for contamination and shrink σ): the fit is then the plain log-normal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.stats import norm

from stoic.envfit.params import needs

FloatArray = NDArray[np.float64]

_CONTAMINATION = (0.0, 0.3)


@dataclass(frozen=True, slots=True)
class UplinkData:
    """Uploads: ``n_bytes`` moved in ``seconds`` each, ``offset`` the log-scale time terms."""

    n_bytes: FloatArray
    seconds: FloatArray
    offset: FloatArray

    @property
    def log_mbps(self) -> FloatArray:
        return np.asarray(np.log(self.n_bytes * 8 / 1e6 / self.seconds))

    @property
    def n(self) -> int:
        return int(self.seconds.size)


@dataclass(frozen=True, slots=True)
class UplinkFit:
    bandwidth_mbps: float
    sigma: float
    contamination: float
    log_likelihood: float


def fit_uplink(data: UplinkData) -> UplinkFit:
    """The robust maximum-likelihood bandwidth and σ of ``data`` (module docstring)."""
    lr = data.log_mbps - data.offset
    lo, hi = float(lr.min()), float(lr.max())
    width = max(hi - lo, 1e-6)
    med = float(np.median(lr))
    mad = 1.4826 * float(np.median(np.abs(lr - med)))
    s0 = max(mad, 1e-3)

    def nll(v: NDArray[np.float64]) -> float:
        mu, log_s, eps = float(v[0]), float(v[1]), float(v[2])
        dens = (1 - eps) * norm.pdf(lr, mu, math.exp(log_s)) + eps / width
        return -float(np.log(np.maximum(dens, 1e-300)).sum()) / lr.size

    robust = lr.size >= needs("uplink.contamination")
    bounds = [
        (lo - 1.0, hi + 1.0),
        (math.log(1e-4), math.log(5.0)),
        _CONTAMINATION if robust else (0.0, 0.0),
    ]
    starts = ((s0, 0.01), (max(float(np.std(lr)), 1e-3), 0.0)) if robust else ((s0, 0.0),)
    fits = [
        minimize(nll, np.array([med, math.log(s), eps]), method="L-BFGS-B", bounds=bounds)
        for s, eps in starts
    ]
    best = min(fits, key=lambda r: float(r.fun))
    mu, log_s, eps = (float(x) for x in best.x)
    return UplinkFit(math.exp(mu), math.exp(log_s), eps, -float(best.fun) * lr.size)
