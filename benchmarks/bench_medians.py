"""The deployment window's calibration rows (stoic/predict/medians.py): numba's kernel
against bottleneck's, on the call a replay makes before nearly every batch (the last
100 samples scored, 89 of them new, 100 window sizes) and on longer histories.

    .venv/bin/python benchmarks/bench_medians.py

Prints the microseconds per call of each (the best of five repeats, after a warm-up
call that compiles the kernel or loads it from numba's cache) and checks that the rows
are the same. Figures: docs/evaluation/README.md, "Full-length benchmark".
"""

from __future__ import annotations

import timeit
from functools import partial

import numpy as np

from stoic.predict.medians import median_rows_bottleneck, numba_kernel


def main() -> None:
    kernel = numba_kernel()
    if kernel is None:
        raise SystemExit("numba is not installed (pip install 'stoic[fast]')")
    rng = np.random.default_rng(0)
    print(f"{'rows x windows':>15} {'bottleneck µs':>14} {'numba µs':>9} {'ratio':>6}")
    for n_rows, max_window in ((89, 100), (100, 100), (10, 100), (100, 1000)):
        x = np.minimum(rng.lognormal(3.4, 0.6, n_rows + max_window + 11), 600.0)
        t = np.arange(x.size - n_rows, x.size)
        assert np.array_equal(kernel(x, max_window, t), median_rows_bottleneck(x, max_window, t))
        number = max(1, 20_000 // (n_rows * max_window) * 20)
        times = {}
        for name, f in (("bottleneck", median_rows_bottleneck), ("numba", kernel)):
            call = partial(f, x, max_window, t)
            runs = timeit.repeat(call, number=number, repeat=5)
            times[name] = 1e6 * min(runs) / number
        label = f"{n_rows} x {max_window}"
        ratio = times["bottleneck"] / times["numba"]
        print(f"{label:>15} {times['bottleneck']:>14.1f} {times['numba']:>9.1f} {ratio:>6.1f}")


if __name__ == "__main__":
    main()
