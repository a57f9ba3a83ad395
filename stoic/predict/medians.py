"""The median predictions of every window size for every scored sample: the work of
the deployment window's calibration (:mod:`stoic.predict.deployment`).

Row ``i`` holds, for ``w`` in ``1..max_window``, the median of the ``min(w, t[i])``
values before ``x[t[i]]``. Calibration asks for a row per sample scored for the first
time: in a replay, about 90 rows of 100 windows per cloud runtime per batch, because
the probe shortcut feeds a probe a minute between batches an hour or more apart.
That was 30 % of a full replay's time.

Two implementations give the same rows, bit for bit (``tests/test_medians.py``):

* **bottleneck** (always there): a row is the running median of its history read
  newest first, and ``bottleneck.move_median`` (C, a double heap, O(W log W) a row)
  computes every row in one call.
* **numba** (the ``fast`` extra, in ``all``): a kernel that keeps the history sorted
  from one row to the next (one value in, one out: a shift each), then reads every
  window's median by deleting values from the oldest in a linked list over the sorted
  order, the lower median moving by at most one link a deletion (O(W) a row). 5–6×
  faster on calibration's typical call (``benchmarks/bench_medians.py``).

A median is a value of the history or the mean of two, ``(a + b) / 2`` in both, so the
rows are the same numbers whichever runs; the figures of every replay are too. The
controller's image leaves numba out (200 MB for a calibration every ten probes); the
replay and the sweeps, which calibrate before every batch, use it where it is installed.
A daemon that has it loads it in a thread as it starts (numba's import takes 0.4 s).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable

import bottleneck as bn
import numpy as np
import numpy.typing as npt

from stoic.logging import get_logger

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]
RowsFunction = Callable[[FloatArray, int, IndexArray], FloatArray]

log = get_logger(__name__)


def median_rows_bottleneck(x: FloatArray, max_window: int, t: IndexArray) -> FloatArray:
    """The rows by ``bottleneck.move_median`` over every history at once (newest first,
    NaN before ``x[0]``: the NaN-aware median of a short history is that of what exists)."""
    n = x.size
    newest_first = np.concatenate([x[::-1], np.full(max_window, np.nan)])
    history = newest_first[(n - t)[:, None] + np.arange(max_window)]
    rows: FloatArray = bn.move_median(history, window=max_window, min_count=1, axis=1)
    return rows


@functools.cache
def numba_kernel() -> RowsFunction | None:
    """The numba kernel, or None without numba (imported once, on first use: the CLI
    and a daemon that never calibrates do not pay numba's half-second import).

    Any failure to load it is a fallback, not an error: numba raises ``RuntimeError``
    at import where it can write its cache neither beside the module nor in a home
    directory (a read-only install run by a user without one, as systemd's
    ``DynamicUser``), it compiles on the first call, which could fail on a numba or
    LLVM it was never tried with, and a calibration must never fail for want of speed.
    So loading it includes that first call, on a series with ties, a short history and
    both parities of window, whose rows must be bottleneck's (:data:`_CHECK`)."""
    if importlib.util.find_spec("numba") is None:
        return None
    try:
        module = importlib.import_module("stoic.predict._medians_kernel")
        kernel: RowsFunction = module.median_rows_kernel
        x, w, t = _CHECK
        same = np.array_equal(kernel(x, w, t), median_rows_bottleneck(x, w, t), True)
    except Exception as exc:  # any: bottleneck's rows are the same
        log.warning("numba kernel unavailable; bottleneck's medians", error=repr(exc))
        return None
    if not same:
        log.warning("numba kernel disagrees with bottleneck; bottleneck's medians")
        return None
    return kernel


_CHECK = (np.array([5.0, 1.0, 4.0, 4.0, 2.0, 8.0, 3.0, 4.0]), 5, np.arange(0, 8))
"""The load's check: ties, histories shorter than the window, odd and even windows."""


def median_rows(x: FloatArray, max_window: int, t: IndexArray) -> FloatArray:
    """Row ``i``: the median predictions of ``x[t[i]]`` for ``w`` in ``1..max_window``
    (C order, ``(len(t), max_window)``): numba's kernel where it is installed and ``x``
    has no NaN, else bottleneck's."""
    kernel = numba_kernel()
    if kernel is None or t.size == 0 or np.isnan(x).any():
        return median_rows_bottleneck(x, max_window, t)
    return kernel(np.ascontiguousarray(x), max_window, t.astype(np.int64, copy=False))
