"""CPU time of stoic.normal's ndtr and ndtri against SciPy's, on the simulator's shapes.

    .venv/bin/python benchmarks/bench_normal.py [--repeat 200]

A block of 4,096 uniforms clipped to [1e-12, 1 - 1e-12] (the informed references'
draws), the normal variates of the cluster factor's coupling through ``ndtr``, four
uniforms (a batch's deployment draws of one runtime) and one float (its bandwidth and
processing draws). Prints the best of ``--repeat`` timings of each, so a loaded machine
inflates them less; SciPy's column only where SciPy is installed (``fit`` or ``dev``).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable

import numpy as np

from stoic.normal import ndtr, ndtri


def best_us(fn: Callable[[], object], repeat: int, inner: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t) / inner)
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    u = np.clip(rng.random(4096), 1e-12, 1 - 1e-12)
    z = rng.normal(size=4096)
    one = float(u[0])
    few = u[:4]
    cases: list[tuple[str, Callable[[], object], Callable[[], object] | None, int]] = [
        ("ndtri, 4,096 uniforms", lambda: ndtri(u), None, 10),
        ("ndtr, 4,096 normals", lambda: ndtr(z), None, 10),
        ("ndtri, 4 uniforms", lambda: ndtri(few), None, 200),
        ("ndtri, one float", lambda: ndtri(one), None, 500),
    ]
    if importlib.util.find_spec("scipy") is not None:
        import scipy.special as sc

        scipys = [lambda: sc.ndtri(u), lambda: sc.ndtr(z), lambda: sc.ndtri(few)]
        scipys.append(lambda: float(sc.ndtri(one)))
        cases = [(n, ours, t, k) for (n, ours, _, k), t in zip(cases, scipys, strict=True)]
    print(f"{'':24} {'stoic.normal':>14} {'scipy.special':>14}")
    for name, ours, theirs, inner in cases:
        a = best_us(ours, args.repeat, inner)
        b = f"{best_us(theirs, args.repeat, inner):11.1f} µs" if theirs else f"{'-':>14}"
        print(f"{name:24} {a:11.1f} µs {b}")


if __name__ == "__main__":
    main()
