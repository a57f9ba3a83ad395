"""What each fitted number rests on: its value, whether the data set it, and why not.

A spec fitted from a few dozen batches cannot support every parameter of the model:
the Lomax tail of deployments needs outliers, a timeout rate needs many attempts, a
diurnal swing needs the data to cover the day. Rather than fit noise, a parameter with
too few samples keeps its prior (the spec the fit starts from) and the output header
says so, parameter by parameter. The thresholds are one table (:data:`MIN_SAMPLES`),
rendered into docs/envfit.md and every fitted spec's header, so a reader sees the rule
beside its outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The least evidence each group of parameters needs to be fitted rather than kept from
#: the prior: (count, what is counted).
MIN_SAMPLES: dict[str, tuple[int, str]] = {
    "deployment.body": (8, "completed deployments (floor_s, median_s, sigma)"),
    "deployment.outlier_rate": (10, "completed deployments"),
    "deployment.outlier_tail": (
        100,
        "deployments the fit attributes to the outlier component (outlier_scale_s, outlier_alpha)",
    ),
    "deployment.timeout_rate": (50, "deployment attempts, timeouts included"),
    "processing.line": (
        4,
        "processing runs over at least 3 distinct batch sizes (per_image_s, fixed_s, sigma)",
    ),
    "processing.congestion": (200, "processing runs (congestion_rate, congestion_factor)"),
    "uplink.bandwidth": (5, "uploads (bandwidth_mbps, sigma)"),
    "uplink.contamination": (50, "uploads (a robust share of stalled or shared uploads)"),
    "uplink.bytes_per_image": (5, "batches with both their size in bytes and in images"),
    "time.diurnal": (
        200,
        "samples spanning at least 48 h and 16 hours of the day (diurnal_amplitude, peak_hour)",
    ),
    "time.drift": (
        200,
        "samples spanning at least 24 h, in at least 12 hours with 3 samples or more (drift_sigma)",
    ),
}


def needs(key: str) -> int:
    """The count :data:`MIN_SAMPLES` asks for ``key``."""
    return MIN_SAMPLES[key][0]


@dataclass(frozen=True, slots=True)
class Value:
    """One parameter of the output spec: its value and where it came from."""

    value: float
    fitted: bool
    why: str

    @classmethod
    def fit(cls, value: float, why: str) -> Value:
        return cls(float(value), True, why)

    @classmethod
    def prior(cls, value: float, why: str) -> Value:
        return cls(float(value), False, why)


def min_samples_lines() -> list[str]:
    """The table as plain lines (the header of every fitted spec)."""
    width = max(map(len, MIN_SAMPLES))
    return [f"{k.ljust(width)}  >= {n} {what}" for k, (n, what) in MIN_SAMPLES.items()]


def min_samples_markdown() -> str:
    """The table as Markdown (docs/envfit.md; a test keeps the two in step)."""
    rows = ["| parameters | fitted from at least |", "|---|---|"]
    rows += [f"| `{k}` | {n} {what} |" for k, (n, what) in MIN_SAMPLES.items()]
    return "\n".join(rows)
