"""Generate ``benchmarks/data/deployment_sample.csv``: a synthetic deployment-time
series per cloud runtime, shaped like the paper's (section 3.4.2; docs/replay.md,
"Environment spec"): a floor, a daily cycle of contention, log-normal (heavy-tailed)
noise, sparse spikes of several minutes and rare 600 s timeouts. Seeded, so the
committed file is reproducible: ``.venv/bin/python benchmarks/gen_deployment_sample.py``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "data" / "deployment_sample.csv"
ROWS = 400
PERIOD_S = 300.0  # one probe round every 5 minutes
START = 1_578_000_000.0  # January 2020

# runtime: (floor s, median above floor s, log-sigma, spike prob, spike mean s, missing prob)
SHAPE = {
    "cpu": (6.4, 8.0, 0.45, 0.03, 90.0, 0.01),
    "gpu1": (12.0, 18.0, 0.55, 0.04, 200.0, 0.02),
    "gpu2": (15.0, 30.0, 0.65, 0.06, 260.0, 0.03),
}


def main() -> None:
    rng = np.random.default_rng(2020)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", *SHAPE])
        for i in range(ROWS):
            t = START + i * PERIOD_S
            hour = (t / 3600.0) % 24
            busy = 1.0 + 0.6 * math.sin(2 * math.pi * (hour - 8) / 24) ** 2
            row: list[str] = [f"{t:.0f}"]
            for floor, med, sigma, p_spike, spike, p_missing in SHAPE.values():
                if rng.random() < p_missing:
                    row.append("")
                    continue
                v = floor + busy * med * rng.lognormal(0.0, sigma)
                if rng.random() < p_spike:
                    v += rng.exponential(spike)
                row.append(f"{min(v, 600.0):.3f}")
            w.writerow(row)


if __name__ == "__main__":
    main()
