"""Transfer time (T_t = F_b / B_c, paper 3.4.1) from a bandwidth monitor.

The edge site has one uplink, so one monitor serves every cloud runtime: it keeps the
bandwidths (bytes/s) of the last ``bandwidth_history`` uploads and uses their median,
which one stalled upload does not drag down. Before any measurement it assumes
``default_bandwidth_bps``. The edge runtime is on the site itself: its T_t is 0, and
uploads tagged with an edge runtime do not feed the uplink's monitor.

Spread: calibrated from the monitor's own one-step errors (:mod:`stoic.predict.spread`):
each upload's time relative to the time predicted before it, ``|median_before / b − 1|``,
over the last :data:`~stoic.predict.spread.ERROR_HISTORY` uploads, so the spread is the
predicted T_t × their conformal quantile / z. Before the first error, the scaled MAD of
``n_bytes / b_i`` over the retained bandwidths (0 before two measurements exist).
"""

from __future__ import annotations

import math
import statistics
from collections import deque

import numpy as np

from stoic.predict.deployment import MAD_TO_STD
from stoic.predict.order import median
from stoic.predict.spread import ErrorWindow
from stoic.values import ZERO, Component, TransferSample


class BandwidthMonitor:
    """Median of recent measured bandwidths, and the transfer time it implies."""

    def __init__(self, *, history: int = 10, default_bps: float = 70.8e6 / 8) -> None:
        self.default_bps = default_bps
        self._bps: deque[float] = deque(maxlen=history)
        self._cached: tuple[float, float] | None = None
        self._errors = ErrorWindow()

    def observe(self, sample: TransferSample) -> bool:
        """Record an upload; False (ignored) when it has no usable bandwidth."""
        bps = sample.bytes_per_s
        if sample.n_bytes <= 0 or not math.isfinite(bps) or bps <= 0:
            return False
        self._errors.add(self._median_before() / bps, 1.0, 1.0)
        self._bps.append(bps)
        self._cached = None
        return True

    def _median_before(self) -> float:
        """The bandwidth an estimate would use now, without filling the cache that the
        sample being observed empties (start-up replays observe thousands in a row)."""
        if self._cached is not None:
            return self._cached[0]
        return statistics.median(self._bps) if self._bps else self.default_bps

    @property
    def n_samples(self) -> int:
        return len(self._bps)

    def _stats(self) -> tuple[float, float]:
        """(median bandwidth in bytes/s, scaled MAD of seconds per byte)."""
        if self._cached is None:
            if not self._bps:
                self._cached = (self.default_bps, 0.0)
            else:
                b = np.fromiter(self._bps, dtype=np.float64, count=len(self._bps))
                inv = 1.0 / b
                spread = MAD_TO_STD * median(np.abs(inv - median(inv)))
                self._cached = (median(b), spread)
        return self._cached

    @property
    def bandwidth_bps(self) -> float:
        return self._stats()[0]

    def estimate(self, n_bytes: int, *, edge: bool = False) -> Component:
        """T_t of ``n_bytes`` (0 at the edge)."""
        if edge or n_bytes <= 0:
            return ZERO
        bps, spread = self._stats()
        mean = n_bytes / bps
        return Component(mean, self._errors.std(mean, n_bytes * spread))
