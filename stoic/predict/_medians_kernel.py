"""The numba kernel of :mod:`stoic.predict.medians` (the ``fast`` extra).

Imported only by :func:`stoic.predict.medians.median_rows`, and only where numba is
installed: this module imports numba at its top. The algorithm is in that module's
docstring; the test that it gives bottleneck's rows bit for bit is
``tests/test_medians.py``.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def median_rows_kernel(x: np.ndarray, max_window: int, t: np.ndarray) -> np.ndarray:
    """Row ``i``: the medians of the last ``w`` values before ``x[t[i]]`` (of the
    ``min(w, t[i])`` there are), ``w`` in ``1..max_window``; NaN where ``t[i] == 0``.

    ``x`` must hold no NaN (the caller checks)."""
    m = t.size
    out = np.empty((m, max_window))
    # The current history (the last ``a`` values before x[t]), sorted: values, indices.
    sv = np.empty(max_window)
    si = np.empty(max_window, np.int64)
    # Per age (0: the newest), its place in the sorted order; the linked list over it.
    place = np.empty(max_window, np.int64)
    prev = np.empty(max_window, np.int64)
    nxt = np.empty(max_window, np.int64)
    at = -1  # the t whose history ``sv`` holds (-1: none)
    a = 0
    for i in range(m):
        ti = t[i]
        if ti <= 0:
            out[i, :] = np.nan
            at = -1
            continue
        if at >= 0 and ti == at + 1:
            # One step on: x[ti - 1] comes in, and x[ti - 1 - max_window] leaves when
            # the history is full. Both are a shift of a sorted array.
            if a == max_window:
                k = 0
                while si[k] != ti - 1 - max_window:
                    k += 1
                for j in range(k, a - 1):
                    sv[j] = sv[j + 1]
                    si[j] = si[j + 1]
                a -= 1
            v = x[ti - 1]
            k = a
            while k > 0 and sv[k - 1] > v:
                sv[k] = sv[k - 1]
                si[k] = si[k - 1]
                k -= 1
            sv[k] = v
            si[k] = ti - 1
            a += 1
        else:
            a = min(ti, max_window)
            history = x[ti - a : ti]
            order = np.argsort(history)
            for j in range(a):
                sv[j] = history[order[j]]
                si[j] = ti - a + order[j]
        at = ti
        # The window of every size from the longest down: drop the oldest value from a
        # doubly linked list over the sorted order, and move the lower median's place
        # ``p`` by at most one link.
        for j in range(a):
            place[ti - 1 - si[j]] = j
            prev[j] = j - 1
            nxt[j] = j + 1
        size = a
        p = (size - 1) // 2
        median = sv[p] if size % 2 == 1 else (sv[p] + sv[nxt[p]]) / 2
        for w in range(a, max_window + 1):  # fewer than w values: the median of all
            out[i, w - 1] = median
        for age in range(a - 1, 0, -1):
            e = place[age]
            before, after = prev[e], nxt[e]
            if before >= 0:
                nxt[before] = after
            if after < a:
                prev[after] = before
            if size % 2 == 1:  # the lower median's rank falls by one
                if e == p:
                    p = before
                elif e > p:
                    p = prev[p]
            elif e == p:  # its rank stays
                p = after
            elif e < p:
                p = nxt[p]
            size -= 1
            median = sv[p] if size % 2 == 1 else (sv[p] + sv[nxt[p]]) / 2
            out[i, size - 1] = median
    return out
