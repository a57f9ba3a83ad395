"""Random environment specs: sites nobody hand-tuned, for tests and sweeps.

The hand-written specs in ``workload/envs/`` each tell one story; a scheduler tuned on
them can still be tuned to *them*. :func:`random_spec` draws a whole site — uplink,
edge, three cloud runtimes, their tails, outages and regime shifts — from the ranges in
:data:`RANGES` (one table, rendered into ``docs/replay.md`` and into the header of
every file it writes, so what a file could have been is written beside what it is).

Ranges are scaled from the paper's figures where it has one (the processing fits of
each runtime, the 70.8 Mbit/s uplink, 0.212 MB per image, deployment medians in the tens
of seconds with a tail to the 600 s timeout) and widened to what other plausible sites
have: a rural or satellite uplink of a few Mbit/s to a fibre link of 200; an edge from a
GPU module (5x faster per image) to a single ARM board (5x slower); a cloud that deploys
in seconds (reserved nodes, cached images) or in minutes (queued behind other tenants).
Log-uniform draws for quantities that span orders of magnitude.

Every draw comes from one ``numpy`` Generator seeded with the seed, in a fixed order:
the same seed gives the same file on every machine. The result is validated by
:class:`~stoic.backends.simulated.EnvSpec` itself, so it is always a spec the replay
accepts (a property test replays many seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from stoic.backends.simulated import EnvSpec

#: The paper's processing fits (s/image, s), the reference the speed factors scale.
PAPER_FITS = {
    "edge": (2.3955, 13.60),
    "cpu": (1.3338, 14.91),
    "gpu1": (0.3272, 28.16),
    "gpu2": (0.1993, 21.27),
}
DEPLOY_TIMEOUT_S = 600.0
#: A repeating uplink outage covers at most this fraction of its cycle.
MAX_OUTAGE_FRACTION = 0.1
#: No drawn deployment median (base or regime) exceeds this fraction of the timeout:
#: a runtime that always times out is not a runtime.
MAX_MEDIAN_FRACTION = 0.8


@dataclass(frozen=True)
class Range:
    """A uniform (or log-uniform) range, with what it means."""

    lo: float
    hi: float
    log: bool = False
    doc: str = ""

    def draw(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.lo), math.log(self.hi))))
        return float(rng.uniform(self.lo, self.hi))

    def describe(self) -> str:
        scale = "log-uniform" if self.log else "uniform"
        return f"{_g(self.lo)}–{_g(self.hi)} ({scale})"


#: Every range the generator draws from. Keys ``cloud.*`` apply to cpu, gpu1 and gpu2
#: (drawn for each); ``processing.*`` to every runtime.
RANGES: dict[str, Range] = {
    "uplink.bandwidth_mbps": Range(2, 200, True, "nominal upload: satellite/LTE to fibre"),
    "uplink.sigma": Range(0.02, 0.5, doc="per-upload log-normal noise"),
    "uplink.diurnal_amplitude": Range(0, 0.4, doc="dip at the busiest hour"),
    "uplink.drift_sigma": Range(0, 0.3, doc="slow drift (log scale)"),
    "uplink.drift_timescale_h": Range(1, 24, True),
    "uplink.bytes_per_image": Range(100_000, 600_000, True, "compressed image size"),
    "uplink.outage.every_h": Range(0.5, 48, True),
    "uplink.outage.duration_h": Range(0.01, 0.5, True, "capped at every_h / 10"),
    "uplink.regime.factor": Range(0.15, 0.7, doc="bandwidth during the regime ÷ nominal"),
    "edge.slowdown": Range(0.2, 5, True, "edge s/image ÷ the paper's 2.3955"),
    "edge.fixed_factor": Range(0.5, 3, True, "edge fixed s ÷ the paper's 13.60"),
    "cpu.slowdown": Range(0.3, 2, True, "cpu s/image ÷ the paper's 1.3338"),
    "cpu.fixed_factor": Range(0.5, 2, True, "cpu fixed s ÷ the paper's 14.91"),
    "gpu1.slowdown": Range(0.3, 2.5, True, "gpu1 s/image ÷ the paper's 0.3272"),
    "gpu1.fixed_factor": Range(0.4, 1.5, True, "gpu1 fixed s ÷ the paper's 28.16"),
    "gpu2.per_image_vs_gpu1": Range(0.45, 0.9, doc="2 GPUs scale sub-linearly (paper: 0.61)"),
    "gpu2.fixed_vs_gpu1": Range(0.6, 1.2),
    "processing.sigma": Range(0.02, 0.25, doc="T_p log-normal noise"),
    "processing.congestion_rate": Range(0, 0.15),
    "processing.congestion_lo": Range(1.2, 2),
    "processing.congestion_hi_vs_lo": Range(1, 2.5),
    "processing.regime.factor": Range(1.3, 3),
    "processing.regime.duration_h": Range(1, 12),
    "cpu.floor_s": Range(1, 15, True),
    "cpu.median_minus_floor_s": Range(2, 120, True),
    "gpu1.floor_s": Range(2, 30, True),
    "gpu1.median_minus_floor_s": Range(5, 200, True),
    "gpu2.floor_vs_gpu1": Range(1, 3),
    "gpu2.median_minus_floor_vs_gpu1": Range(0.8, 4, doc="multi-GPU pods are scarcer"),
    "cloud.sigma": Range(0.05, 0.6, doc="T_d log-normal body"),
    "cloud.diurnal_amplitude": Range(0, 0.4),
    "cloud.drift_sigma": Range(0, 0.3),
    "cloud.drift_timescale_h": Range(1, 24, True),
    "cloud.outlier_rate": Range(0, 0.15),
    "cloud.outlier_scale_s": Range(10, 200, True),
    "cloud.outlier_alpha": Range(1.2, 3, doc="Lomax tail index (lower: heavier)"),
    "cloud.timeout_rate": Range(0, 0.05),
    "cloud.unavailable.duration_h": Range(0.5, 6),
    "cloud.regime.median_factor": Range(1.5, 5, doc="median during the regime ÷ base"),
    "cloud.regime.timeout_rate": Range(0, 0.15),
    "regime.start_h": Range(2, 60, doc="one-off regimes start here"),
    "regime.duration_h": Range(1, 24, True, "one-off regimes (30 % are permanent)"),
    "peak_hour": Range(0, 24, doc="every diurnal peak"),
}

#: The probability that a feature exists (drawn per uplink or per runtime).
PROBABILITIES: dict[str, tuple[float, str]] = {
    "uplink.outages": (0.3, "a repeating outage"),
    "uplink.regimes": (0.3, "a bandwidth regime"),
    "processing.regimes": (0.2, "a daily T_p regime (per runtime)"),
    "deployment.unavailable": (0.2, "a repeating unavailable window (per cloud runtime)"),
    "deployment.regimes": (0.3, "a T_d regime shift (per cloud runtime)"),
}

#: The draws that are not ranges (rendered into the docs and file headers too).
CHOICES = (
    "unavailable windows repeat every 24 h or every 168 h (even odds), starting at a "
    "uniform hour of the cycle",
    "a T_d regime is permanent from `regime.start_h` (30 %), daily from a uniform hour "
    "for 1–12 h (35 %) or one-off for `regime.duration_h` (35 %)",
    "a T_p regime is daily, from a uniform hour of the day",
    "the deployment timeout is the paper's 600 s; every drawn median (base or regime) "
    "is capped at 0.8 × the timeout (480 s)",
    "values are rounded to 4 significant digits",
)


def _g(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 10_000 else f"{x:.4g}"


def _r(x: float) -> float:
    """Four significant digits: readable files, no false precision."""
    return float(f"{x:.4g}")


class _Draw:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, key: str) -> float:
        return RANGES[key].draw(self.rng)

    def chance(self, key: str) -> bool:
        return bool(self.rng.random() < PROBABILITIES[key][0])

    def hour(self) -> float:
        return round(float(self.rng.uniform(0, 24)), 1) % 24


def random_spec(seed: int) -> dict[str, Any]:
    """The raw spec (a mapping ready for YAML) of random environment ``seed``."""
    if seed < 0:
        raise ValueError("seed must be >= 0")
    d = _Draw(seed)
    uplink: dict[str, Any] = {
        "bandwidth_mbps": _r(d("uplink.bandwidth_mbps")),
        **_noise(d, "uplink"),
        "bytes_per_image": round(d("uplink.bytes_per_image")),
    }
    if d.chance("uplink.outages"):
        every = d("uplink.outage.every_h")
        # Down at most a tenth of the time: an obstructed satellite dish loses 1-5 %.
        dur = min(d("uplink.outage.duration_h"), every * MAX_OUTAGE_FRACTION)
        uplink["outages"] = [
            {"start_h": _r(d.rng.uniform(0, every)), "duration_h": _r(dur), "every_h": _r(every)}
        ]
    if d.chance("uplink.regimes"):
        regime = _one_off_window(d)
        regime["bandwidth_mbps"] = _r(uplink["bandwidth_mbps"] * d("uplink.regime.factor"))
        uplink["regimes"] = [regime]

    runtimes: dict[str, Any] = {}
    e_slow, e_fixed = d("edge.slowdown"), d("edge.fixed_factor")
    runtimes["edge"] = {"processing": _processing(d, "edge", e_slow, e_fixed)}
    c_slow, c_fixed = d("cpu.slowdown"), d("cpu.fixed_factor")
    cpu_floor = d("cpu.floor_s")
    cpu_med = cpu_floor + d("cpu.median_minus_floor_s")
    runtimes["cpu"] = {
        "deployment": _deployment(d, cpu_floor, cpu_med),
        "processing": _processing(d, "cpu", c_slow, c_fixed),
    }
    g_slow, g_fixed = d("gpu1.slowdown"), d("gpu1.fixed_factor")
    g1_floor = d("gpu1.floor_s")
    g1_body = d("gpu1.median_minus_floor_s")
    runtimes["gpu1"] = {
        "deployment": _deployment(d, g1_floor, g1_floor + g1_body),
        "processing": _processing(d, "gpu1", g_slow, g_fixed),
    }
    g2_floor = g1_floor * d("gpu2.floor_vs_gpu1")
    g2_med = g2_floor + g1_body * d("gpu2.median_minus_floor_vs_gpu1")
    # The two GPUs' fits relative to gpu1's, not to the paper's gpu2 fit: a site's
    # 2-GPU pod is made of the same GPUs as its 1-GPU pod.
    g1_a, g1_b = PAPER_FITS["gpu1"]
    g2_a = g1_a * g_slow * d("gpu2.per_image_vs_gpu1")
    g2_b = g1_b * g_fixed * d("gpu2.fixed_vs_gpu1")
    runtimes["gpu2"] = {
        "deployment": _deployment(d, g2_floor, g2_med),
        "processing": _processing(
            d, "gpu2", g2_a / PAPER_FITS["gpu2"][0], g2_b / PAPER_FITS["gpu2"][1]
        ),
    }
    raw: dict[str, Any] = {
        "name": f"random-{seed:03d}",
        "description": _describe(uplink, runtimes),
        "deploy_timeout_s": DEPLOY_TIMEOUT_S,
        "uplink": uplink,
        "runtimes": runtimes,
    }
    EnvSpec.parse(raw, f"random environment {seed}")  # a bug here is ours: fail loudly
    return raw


def _noise(d: _Draw, part: str) -> dict[str, Any]:
    """The lognormal spread and the time terms (diurnal cycle, drift) that the uplink
    and every deployment share, drawn in the spec's key order."""
    return {
        "sigma": _r(d(f"{part}.sigma")),
        "diurnal_amplitude": _r(d(f"{part}.diurnal_amplitude")),
        "peak_hour": d.hour(),
        "drift_sigma": _r(d(f"{part}.drift_sigma")),
        "drift_timescale_h": _r(d(f"{part}.drift_timescale_h")),
    }


def _one_off_window(d: _Draw) -> dict[str, Any]:
    return {"start_h": _r(d("regime.start_h")), "duration_h": _r(d("regime.duration_h"))}


def _processing(d: _Draw, name: str, slowdown: float, fixed_factor: float) -> dict[str, Any]:
    a, b = PAPER_FITS[name]
    lo = d("processing.congestion_lo")
    hi = lo * d("processing.congestion_hi_vs_lo")
    out: dict[str, Any] = {
        "per_image_s": _r(a * slowdown),
        "fixed_s": _r(b * fixed_factor),
        "sigma": _r(d("processing.sigma")),
        "congestion_rate": _r(d("processing.congestion_rate")),
        "congestion_factor": [_r(lo), max(_r(lo), _r(hi))],
    }
    if d.chance("processing.regimes"):
        out["regimes"] = [
            {
                "start_h": d.hour(),
                "duration_h": _r(d("processing.regime.duration_h")),
                "every_h": 24.0,
                "factor": _r(d("processing.regime.factor")),
            }
        ]
    return out


def _deployment(d: _Draw, floor: float, median: float) -> dict[str, Any]:
    cap = MAX_MEDIAN_FRACTION * DEPLOY_TIMEOUT_S
    floor_r = _r(min(floor, cap))
    median_r = max(floor_r, _r(min(median, cap)))
    out: dict[str, Any] = {
        "floor_s": floor_r,
        "median_s": median_r,
        **_noise(d, "cloud"),
        "outlier_rate": _r(d("cloud.outlier_rate")),
        "outlier_scale_s": _r(d("cloud.outlier_scale_s")),
        "outlier_alpha": _r(d("cloud.outlier_alpha")),
        "timeout_rate": _r(d("cloud.timeout_rate")),
    }
    if d.chance("deployment.unavailable"):
        every = 24.0 if d.rng.random() < 0.5 else 168.0
        out["unavailable"] = [
            {
                "start_h": _r(d.rng.uniform(0, every)),
                "duration_h": _r(d("cloud.unavailable.duration_h")),
                "every_h": every,
            }
        ]
    if d.chance("deployment.regimes"):
        kind = d.rng.random()
        if kind < 0.3:
            regime: dict[str, Any] = {"start_h": _r(d("regime.start_h"))}
        elif kind < 0.65:
            regime = {"start_h": d.hour(), "duration_h": _r(d.rng.uniform(1, 12)), "every_h": 24.0}
        else:
            regime = _one_off_window(d)
        regime["median_s"] = max(floor_r, _r(min(median_r * d("cloud.regime.median_factor"), cap)))
        regime["timeout_rate"] = _r(d("cloud.regime.timeout_rate"))
        out["regimes"] = [regime]
    return out


def _describe(uplink: dict[str, Any], runtimes: dict[str, Any]) -> str:
    edge = runtimes["edge"]["processing"]["per_image_s"] / PAPER_FITS["edge"][0]
    meds = ", ".join(
        f"{n} {runtimes[n]['deployment']['median_s']:.0f} s" for n in ("cpu", "gpu1", "gpu2")
    )
    extra = [
        k
        for k, present in (
            ("uplink outages", "outages" in uplink),
            ("uplink regime", "regimes" in uplink),
            ("T_d regimes", any("regimes" in r.get("deployment", {}) for r in runtimes.values())),
            (
                "unavailability",
                any("unavailable" in r.get("deployment", {}) for r in runtimes.values()),
            ),
            ("T_p regimes", any("regimes" in r["processing"] for r in runtimes.values())),
        )
        if present
    ]
    return (
        f"uplink {uplink['bandwidth_mbps']:.3g} Mbit/s, edge {edge:.2g}x paper s/image, "
        f"T_d medians {meds}" + (f"; {', '.join(extra)}" if extra else "")
    )


def ranges_comment() -> list[str]:
    """The ranges as comment lines (the header of every generated file)."""
    width = max(map(len, RANGES))
    lines = [f"  {k.ljust(width)}  {r.describe()}" for k, r in RANGES.items()]
    probs = [f"  P({k}) = {p:g}: {doc}" for k, (p, doc) in PROBABILITIES.items()]
    return [*lines, *probs, *(f"  {c}" for c in CHOICES)]


def ranges_markdown() -> str:
    """The ranges as a Markdown table (docs/replay.md)."""
    rows = ["| key | range | meaning |", "|---|---|---|"]
    for k, r in RANGES.items():
        rows.append(f"| `{k}` | {r.describe()} | {r.doc} |")
    rows += ["", "| feature | probability | what |", "|---|---|---|"]
    rows += [f"| `{k}` | {p:g} | {doc} |" for k, (p, doc) in PROBABILITIES.items()]
    rows += ["", *(f"* {c}" for c in CHOICES)]
    return "\n".join(rows)


class _Dumper(yaml.SafeDumper):
    """Block style, except short lists and list items, which read best on one line."""


def _repr_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(x, (dict, list)) for x in data)
    node = dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)
    if not flow:
        for item in node.value:
            if isinstance(item, yaml.MappingNode):
                item.flow_style = True
    return node


_Dumper.add_representer(list, _repr_list)


def spec_yaml(raw: dict[str, Any]) -> str:
    """A spec mapping as YAML, in the layout of every generated spec file."""
    return yaml.dump(raw, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def random_yaml(seed: int) -> str:
    """The YAML text of random environment ``seed``, with a header naming the seed
    and every range it was drawn from."""
    raw = random_spec(seed)
    header = [
        f"# Random environment {seed}: drawn by `stoic env random --seed {seed}`",
        "# (stoic/replay/randenv.py). Not a hand-told story: every value below was drawn",
        '# from these ranges (docs/replay.md, "Random environments"); processing slopes',
        "# and intercepts scale the paper's fits (edge 2.3955/13.60, cpu 1.3338/14.91,",
        "# gpu1 0.3272/28.16; gpu2 from gpu1's own draw).",
        *(f"#{line}" for line in ranges_comment()),
    ]
    return "\n".join(header) + "\n" + spec_yaml(raw)
