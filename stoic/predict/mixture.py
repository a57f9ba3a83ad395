"""Two-mode deployment times: does a runtime's T_d have two modes (cache hit or miss)?

A shared cluster without pre-pulled images deploys a pod in two ways: on a node that
holds the function's image (a cache hit, tens of seconds) or on one that must pull it
first (a miss, minutes). From the site each deployment is a draw from a two-mode
mixture. A median window then sits in the larger mode, or flips between the two when
their weights are close (a median of 100 draws of a 55/45 mixture lands in the wrong
mode about one time in eight), and its estimate jumps by the pull time. A mean lies
between the modes where no deployment falls, a poor guess of the next one, but it is
E[T_d], what the expected objective prices: where this module finds two modes, the
deployment model reports the samples' mean (``stoic/predict/deployment.py``).

The fit is in log seconds (each mode log-normal, as the simulator and the real Nautilus
fits have it: ``stoic/envfit/deployment.py``), by expectation-maximisation from a split
at the median, and it is *kept* only where the samples show two modes:

* the Bayesian information criterion prefers two components to one;
* the smaller weight is at least :data:`MIN_WEIGHT` (one outlier is the tail's
  business, :class:`~stoic.values.Risk`, not a mode);
* the modes are apart by more than :data:`MIN_SEPARATION` times their pooled log
  standard deviation (Ashman's D > 2: the density has two peaks, not one skewed one);
* each mode is a peak, not a tail: its log standard deviation is at most
  :data:`MAX_MODE_SIGMA`. An image pull varies like the rest of a deployment (the same
  network, the same nodes); a floor with a heavy tail above it (the real Nautilus CPU
  and GPU2 deployments: 20-30 % of them spread from 30 to 120 s) fits a second
  "mode" over a decade of seconds, which the risk's tail prices already;
* the modes *alternate*: the slower mode's share of the older half of the samples and
  of the newer half differ by at most :data:`MAX_SHARE_SHIFT`. Two modes that follow
  each other are a regime (a cluster that became busy), which the window follows
  within half its length; mixing them would price the old regime for as long as it
  stays in the samples.

Otherwise :func:`fit_two_modes` returns None and the deployment model keeps its window.
scikit-learn's ``GaussianMixture`` does the same EM, but it is a test dependency only,
and on 60 values it took 66 ms a fit against 1.5 ms here (its k-means start; 50 fits
each at load 13), while a replay refits at every calibration of every cloud runtime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MIN_WEIGHT = 0.15
"""The smaller mode's least weight: a tenth of the deployments, not a few outliers."""
MIN_SEPARATION = 2.0
"""Ashman's D: |μ₁ − μ₂| over √((σ₁² + σ₂²)/2) above 2 makes the density bimodal."""
MAX_MODE_SIGMA = 0.5
"""The widest a mode may be in log seconds (a factor of 1.65 per standard deviation)."""
MAX_SHARE_SHIFT = 0.35
"""The most the slower mode's share may move between the older and the newer half:
for a 40 % mode in 60 samples the shift has a standard deviation of 0.13, a step
regime in the middle shifts it by 1."""
MIN_SAMPLES = 20
"""Fewer samples than this say too little about two modes (and a weight of 0.15)."""
_MIN_SIGMA = 0.02
_ITERATIONS = 60
_TOLERANCE = 1e-8


@dataclass(frozen=True, slots=True)
class TwoModes:
    """A two-component log-normal mixture: ``weights`` sum to 1; ``mu`` and ``sigma`` are
    each mode's log-seconds mean and standard deviation, the faster mode first."""

    weights: tuple[float, float]
    mu: tuple[float, float]
    sigma: tuple[float, float]

    @property
    def modes_s(self) -> tuple[float, float]:
        """Each mode's median in seconds (``exp(μ)``)."""
        return (math.exp(self.mu[0]), math.exp(self.mu[1]))


def _log_normal_pdf(z: npt.NDArray[np.float64], mu: float, sigma: float) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = np.exp(-0.5 * ((z - mu) / sigma) ** 2) / (
        sigma * math.sqrt(2 * math.pi)
    )
    return out


def fit_two_modes(values_s: npt.ArrayLike) -> TwoModes | None:
    """The two-mode mixture of positive ``values_s`` (seconds, oldest first), or None
    where the samples show one mode or a regime (module docstring). Deterministic: EM
    starts from the split at the median, so the same samples give the same fit."""
    x = np.asarray(values_s, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x) & (x > 0)]
    n = x.size
    if n < MIN_SAMPLES:
        return None
    z = np.log(x)
    one_sigma = max(float(z.std()), _MIN_SIGMA)
    one_ll = float(np.sum(np.log(_log_normal_pdf(z, float(z.mean()), one_sigma))))
    ordered = np.sort(z)
    low, high = ordered[: n // 2], ordered[n // 2 :]
    w = np.array([0.5, 0.5])
    mu = np.array([low.mean(), high.mean()])
    sd = np.array([max(float(low.std()), _MIN_SIGMA), max(float(high.std()), _MIN_SIGMA)])
    ll = -math.inf
    for _ in range(_ITERATIONS):
        dens = np.stack([w[k] * _log_normal_pdf(z, mu[k], sd[k]) for k in range(2)])
        total = np.maximum(dens.sum(axis=0), 1e-300)
        new_ll = float(np.sum(np.log(total)))
        resp = dens / total
        nk = resp.sum(axis=1)
        if np.any(nk < 1.0):
            return None
        w = nk / n
        mu = (resp @ z) / nk
        sd = np.sqrt(np.maximum((resp * (z[None, :] - mu[:, None]) ** 2).sum(axis=1) / nk, 0))
        sd = np.maximum(sd, _MIN_SIGMA)
        if new_ll - ll < _TOLERANCE * max(abs(new_ll), 1.0):
            ll = new_ll
            break
        ll = new_ll
    # BIC: one log-normal has 2 parameters, the mixture 5.
    if -2 * ll + 5 * math.log(n) >= -2 * one_ll + 2 * math.log(n):
        return None
    if float(w.min()) < MIN_WEIGHT:
        return None
    if abs(mu[1] - mu[0]) <= MIN_SEPARATION * math.sqrt((sd[0] ** 2 + sd[1] ** 2) / 2):
        return None
    if float(sd.max()) > MAX_MODE_SIGMA:
        return None
    slow = resp[int(np.argmax(mu))] > 0.5
    half = n // 2
    if abs(float(slow[:half].mean()) - float(slow[half:].mean())) > MAX_SHARE_SHIFT:
        return None
    order = np.argsort(mu)
    return TwoModes(
        weights=(float(w[order[0]]), float(w[order[1]])),
        mu=(float(mu[order[0]]), float(mu[order[1]])),
        sigma=(float(sd[order[0]]), float(sd[order[1]])),
    )
