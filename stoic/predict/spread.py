"""Spreads that mean what they say: split conformal calibration from one-step errors.

A :class:`~stoic.values.Component` is ``(mean, std)``, read as the normal interval
``mean ± z·std``. The models' own spreads are those of their windows (the scaled MAD of
the deployment window, the ridge's residuals on RANSAC's inliers, the MAD of recent
bandwidths): how the *samples* scatter, not how far the *next* one falls from the
prediction. On the STOIC authors' 60 real batches their 90 % intervals held the outcome
44–68 % of the time (docs/predictor.md, "On the real runs").

Each model therefore keeps its own recent one-step errors, each divided by a *base*
scale known before the outcome (seconds for T_d, the predicted T_t, the model's T_p
spread plus a share of its mean), and reports

    std = base × q / z₀.₉₀

where ``q`` is the split conformal quantile of those errors at :data:`LEVEL`: the
``⌈(k + 1)·0.9⌉``-th smallest of ``k`` (the largest while ``k < 9``). The 90 % interval
then holds a new outcome with probability ≥ 90 % when the errors are exchangeable
(Vovk et al.; Angelopoulos & Bates, "A gentle introduction to conformal prediction",
2021), whatever the errors' distribution: heavy-tailed deployments and congested
processing included. Intervals at other levels keep the normal shape around it, so the
50 % interval is wider than half the outcomes need where the errors have heavy tails.

The means are not touched: only the spread, which nothing that decides reads (the
selector prices the deployment tail and the processing excess from the samples
themselves: docs/scheduling.md, "Risk").
"""

from __future__ import annotations

import math
from collections import deque
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

LEVEL = 0.9
"""The coverage the calibrated ``mean ± z·std`` interval is made to hold."""
Z_LEVEL = NormalDist().inv_cdf(0.5 + LEVEL / 2)
"""z of the central :data:`LEVEL` interval of the normal (1.645)."""
ERROR_HISTORY = 100
"""One-step errors kept per model: enough for a stable 90 % quantile (the tenth
largest), short enough to follow a site that changes."""


def conformal_quantile(errors: npt.ArrayLike, level: float = LEVEL) -> float:
    """The ``⌈(k + 1)·level⌉``-th smallest of ``k`` errors, capped at the largest; NaN
    without errors."""
    a = np.asarray(errors, dtype=np.float64).reshape(-1)
    k = a.size
    if k == 0:
        return math.nan
    rank = min(math.ceil((k + 1) * level), k) - 1
    return float(np.partition(a, rank)[rank])


class ErrorWindow:
    """The last :data:`ERROR_HISTORY` one-step errors of a model, in units of its base
    scale, and their conformal quantile (cached until the next error)."""

    def __init__(self, history: int = ERROR_HISTORY) -> None:
        self._errors: deque[float] = deque(maxlen=history)
        self._q: float | None = None

    def __len__(self) -> int:
        return len(self._errors)

    def add(self, actual: float, predicted: float, base: float) -> None:
        """Record how far ``actual`` fell from ``predicted``, in units of ``base``; a
        non-positive or non-finite base says nothing and is skipped."""
        if base > 0 and math.isfinite(base) and math.isfinite(actual):
            self._errors.append(abs(actual - predicted) / base)
            self._q = None

    def std(self, base: float, fallback: float) -> float:
        """``base × q / z``, or ``fallback`` (the model's own spread) before any error."""
        if not self._errors:
            return fallback
        if self._q is None:
            self._q = conformal_quantile(
                np.fromiter(self._errors, dtype=np.float64, count=len(self._errors))
            )
        return base * self._q / Z_LEVEL
