"""Regime changes in T_p: Bayesian online change-point detection (Adams & MacKay 2007).

The T_p line is fitted on the last ``processing_history`` samples, and RANSAC takes the
first runs of a new regime (an edge that degrades for good, a daily spell of shared
CPU) for congestion outliers until they are half the window: the line follows the
regime five or six batches late, then unlearns it as late when the spell ends. Worse,
each of those runs leaves a large ratio in the long view the congestion tail is priced
from (``ProcessingModel.excess``), so a spell is paid for again as "congestion" for a
hundred batches.

:class:`ChangeDetector` watches the log of each sample's out-of-sample ratio (measured
over the line predicted before it, capped at ×5 either way). Those are about 0 while
the line is right, scattered by noise and by congestion outliers. It keeps the posterior
of the *run length*: how many of the latest log-ratios belong to the current segment,
each segment having its own unknown mean and variance (a Normal–Gamma prior, so a
segment's predictive is a Student-t), a new segment starting before any sample with
probability ``hazard``. It raises an alarm when the posterior puts more than
``threshold`` on a segment of at least ``min_run`` and at most :data:`RECENT` ratios
with at least ``min_run`` before it: the last ``min_run`` or more ratios agree with each
other and not with those before them. Then
:class:`~stoic.predict.processing.ProcessingModel` fits its line on that segment's
samples only, drops their ratios from the congestion tail, and the detector starts
afresh (its ratios are now taken over the new line).

Why this does not fire on congestion: every ratio may, with probability
:data:`OUTLIER_SHARE`, be an outlier from a flat density over ±log 5 instead of its
segment's (a robust likelihood: each segment learns from a ratio only as far as its
body explains it). Plain BOCPD takes one slow run for the start of a segment and the
normal runs after it for yet another, and fired in every congestion-only sequence we
tried; with the outlier share, one slow run is an outlier and a new regime needs
``min_run`` ratios that agree with each other and not with those before them. The
outlier share is two-sided: a line pulled up by a congested run that RANSAC kept
under-shoots the next runs as much. The prior on a segment's noise is firm (six
pseudo-observations at 10 %): a run of slightly low ratios as the line settles is no
regime. ``tests/test_predict_regime.py`` holds it to rates over fixed seeds: an alarm in at
most 2 % of congestion-only sequences of 200 batches (1-1.7 % measured at one congested
run in 20; a statistical test cannot promise none), and adapting within a few batches
of a step and of each end of a daily spell in at least 99 %.
"""

from __future__ import annotations

import math

import numpy as np

from stoic.predict.deployment import FloatArray

PRIOR_KAPPA = 0.01
"""Pseudo-observations behind a new segment's prior mean (0: the line is right): with
:data:`PRIOR_SIGMA` a standard deviation of 1 in log-ratio, so a new regime may be
anywhere from a third to three times the line. (With 1, the prior sat within 10 % of
the line, and a ×2.5 regime needed five or six runs, as many as RANSAC's own flip.)"""
PRIOR_ALPHA = 3.0
"""Shape of the Gamma prior on a segment's precision (six pseudo-observations of its
noise): a new segment's predictive is a Student-t with 6 degrees of freedom."""
PRIOR_SIGMA = 0.1
"""A segment's prior noise, in log-ratio (about 10 % of T_p; the noise of the
environments is 2–25 %)."""
RATIO_CAP = math.log(5.0)
"""Log-ratios are clipped to ±log 5, as the congestion tail caps its ratios."""
OUTLIER_SHARE = 0.1
"""Each ratio is, with this probability, an outlier drawn uniformly over ±log 5 rather
than from its segment: congestion is explained as congestion, not as a segment that
starts and ends with one slow run (plain BOCPD's weakness: the runs after an outlier
then look like a new segment)."""
RECENT = 10
"""Only a segment of at most this many ratios raises an alarm: an old change the
posterior cannot place says nothing that needs acting on now."""
MAX_RUN = 200
"""Run lengths kept; longer ones are merged into the last (the posterior's tail)."""


class ChangeDetector:
    """Run-length posterior over log out-of-sample ratios (module docstring)."""

    def __init__(self, *, hazard: float, min_run: int, threshold: float) -> None:
        if not 0.0 < hazard < 1.0:
            raise ValueError(f"hazard must be in (0, 1), got {hazard}")
        if min_run < 2:
            raise ValueError(f"min_run must be >= 2, got {min_run}")
        self.hazard = hazard
        self.min_run = min_run
        self.threshold = threshold
        self.alarms = 0
        self.restart()

    def restart(self) -> None:
        """Forget every ratio: the next one starts the only segment."""
        self.n = 0
        # Index i: the current segment holds the last i + 1 ratios; its log posterior
        # mass and its Normal-Gamma posterior (mu, kappa, alpha, beta).
        self._logp: FloatArray = np.empty(0)
        self._params: FloatArray = np.empty((4, 0))

    def update(self, ratio: float) -> int:
        """Add one out-of-sample ratio (measured / predicted); return the length of the
        new segment when this ratio raises an alarm (then the detector restarts), else 0."""
        z = min(max(math.log(max(ratio, 1e-12)), -RATIO_CAP), RATIO_CAP)
        params = np.concatenate((PRIOR, self._params), axis=1)
        body = _student_t_logpdf(z, params) + math.log1p(-OUTLIER_SHARE)
        tail = math.log(OUTLIER_SHARE / (2.0 * RATIO_CAP))
        loglik = np.logaddexp(body, tail)
        if self.n == 0:
            logp = np.zeros(1)
        else:
            change = math.log(self.hazard) + float(loglik[0])
            grow = self._logp + loglik[1:] + math.log1p(-self.hazard)
            logp = np.concatenate(([change], grow))
        # Each segment learns from z as far as its body, not the tail, explains it.
        params = _posterior(z, params, np.exp(body - loglik))
        logp -= _logsumexp(logp)
        if logp.size > MAX_RUN:
            logp[MAX_RUN - 1] = _logsumexp(logp[MAX_RUN - 1 :])
            logp, params = logp[:MAX_RUN], params[:, :MAX_RUN]
        self._logp, self._params = logp, params
        self.n += 1
        return self._alarm()

    def _alarm(self) -> int:
        # Segments of min_run .. RECENT ratios, with min_run or more before them: one
        # early outlier is no old regime to have changed from.
        lo, hi = self.min_run - 1, min(self.n - self.min_run, RECENT) - 1
        if hi < lo:
            return 0
        recent = np.exp(self._logp[lo : hi + 1])
        if float(recent.sum()) <= self.threshold:
            return 0
        run = self.min_run + int(np.argmax(recent))
        self.alarms += 1
        self.restart()
        return run

    def run_length_posterior(self) -> FloatArray:
        """P(the current segment holds the last s ratios), for s = 1, 2, ... (index s - 1)."""
        out: FloatArray = np.exp(self._logp)
        return out


PRIOR: FloatArray = np.array([[0.0], [PRIOR_KAPPA], [PRIOR_ALPHA], [PRIOR_ALPHA * PRIOR_SIGMA**2]])
"""A new segment's Normal-Gamma prior: (mu, kappa, alpha, beta) as a column."""


def _posterior(z: float, params: FloatArray, weight: FloatArray) -> FloatArray:
    """Each column's Normal-Gamma posterior after ``z`` counted ``weight`` times (the
    probability that it is no outlier: an assumed-density update)."""
    mu, kappa, alpha, beta = params
    return np.stack(
        (
            (kappa * mu + weight * z) / (kappa + weight),
            kappa + weight,
            alpha + 0.5 * weight,
            beta + kappa * weight * (z - mu) ** 2 / (2.0 * (kappa + weight)),
        )
    )


def _gammaln(x: FloatArray) -> FloatArray:
    """``log Γ`` of each element, by :func:`math.lgamma` (SciPy stays out of the base
    install; the arrays are one value per run length, a few hundred at most)."""
    return np.array([math.lgamma(v) for v in x.tolist()], dtype=np.float64)


def _student_t_logpdf(z: float, params: FloatArray) -> FloatArray:
    """Log predictive density of ``z`` under each column's Normal-Gamma posterior."""
    mu, kappa, alpha, beta = params
    df = 2.0 * alpha
    scale2 = beta * (kappa + 1.0) / (alpha * kappa)
    out: FloatArray = (
        _gammaln((df + 1.0) / 2.0)
        - _gammaln(df / 2.0)
        - 0.5 * np.log(df * math.pi * scale2)
        - (df + 1.0) / 2.0 * np.log1p((z - mu) ** 2 / (df * scale2))
    )
    return out


def _logsumexp(a: FloatArray) -> float:
    m = float(np.max(a))
    if not math.isfinite(m):
        return m
    return m + math.log(float(np.sum(np.exp(a - m))))
