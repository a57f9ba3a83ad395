"""Medians and quantiles with numpy's arithmetic, without numpy's cost per call.

``np.median`` and ``np.quantile`` spend tens of microseconds in argument handling
around one partition; the predictor takes them on 10-200 values tens of thousands of
times per replay. These take a *sorted* array and do numpy's float operations: the
middle value or the mean of the two middle values (``(a + b) / 2``), and numpy's
``_lerp`` for the ``linear`` quantile. The k-th smallest value is the same however it
is found, so the results are numpy's bit for bit (``tests/test_predict_order.py``
checks it on random data). A NaN sorts last and gives NaN, as numpy does.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def sorted_median(s: FloatArray) -> float:
    """``float(np.median(s))`` of an ascending ``s``."""
    n = s.size
    if n == 0 or math.isnan(s[-1]):
        return math.nan
    h = n // 2
    if n % 2:
        return float(s[h])
    return float((s[h - 1] + s[h]) / 2)


def median(values: FloatArray) -> float:
    """``float(np.median(values))`` of a 1-D array."""
    return sorted_median(np.sort(values))


def sorted_quantile(s: FloatArray, q: float) -> float:
    """``float(np.quantile(s, q))`` (method ``linear``, ``0 <= q <= 1``) of an ascending,
    non-empty ``s``."""
    n = s.size
    if math.isnan(s[-1]):
        return math.nan
    v = (n - 1) * q
    # numpy's indexes: floor(v) and the next, or both -1 (the last) from n - 1 on.
    lo = -1 if v >= n - 1 else math.floor(v)
    gamma = v - lo
    a, b = float(s[lo]), float(s[lo + 1 if lo >= 0 else -1])
    diff = b - a
    if gamma >= 0.5:
        return b - diff * (1 - gamma)
    return a + diff * gamma
