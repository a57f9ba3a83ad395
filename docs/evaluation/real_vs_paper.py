"""Two calibrations of the paper's testbed, side by side, and against the real runs:
``workload/nautilus-2020.yaml`` reproduces the paper's published figures;
``workload/envs/nautilus-2020-real.yaml`` was fitted by ``stoic env fit`` to the STOIC
authors' own runs (docs/envfit.md). The runs are read from
``../shared/data/nautilus-2020-real/`` beside the repository, never copied into it.

    .venv/bin/python docs/evaluation/real_vs_paper.py --seeds 5 --days 3

writes ``docs/evaluation/real-vs-paper.md`` and ``real-vs-paper.json`` (``--out``).
Four comparisons, each for both specs:

1. **Table 4** (the paper's §4.3): per mode, success rate, % of MIN-LAT, % of the worst
   case, % of the fluid bound and mean latency. Each figure is a mean over seeds
   0 … N−1 × ``--days`` of the sweep's own cells (:func:`stoic.replay.sweep.run_cell`:
   the replays and metrics of ``stoic replay sweep``), beside the paper's published row
   where it has one.
2. **Hindsight best runtime per batch size** (the size buckets of
   :mod:`stoic.replay.scoring`). Real: the all-runtime batches of ``totals.csv`` (each
   run on the edge, the CPU pod and the 1-GPU pod; it has no GPU2, so the specs are
   compared on those three runtimes) and of ``components.csv`` (12 batches, each on all
   four). Simulated, from the audit (every runtime's truth of a batch): at the real
   batches' own sizes (``DRAWS`` audits per batch and seed, at instants uniform over the
   days), and over the replay's own workload (each seed's audit stream, as the replays
   and ``bounds.py`` draw it).
3. **Kolmogorov–Smirnov distance** of T_s per runtime (and T_d per cloud runtime) of
   each spec's draws against the real runs, at the measurements' own batch sizes:
   :func:`stoic.envfit.gof.checks`, the comparisons of
   ``docs/envfit/nautilus-2020-real/gof.md`` (its own eight seeds, whatever ``--seeds``
   says). Like against like: ``components.csv``'s T_t + T_d + T_p against the spec's
   T_s; ``totals.csv``'s ``act_total``, which has no upload in it (the authors'
   requester logs a transfer of 0, and ``components.csv``'s ``act_total`` is exactly
   ``act_deploy + act_proc``), against the spec's T_d + warm-up + T_p.
4. **Share's headroom**: the fluid lower bound (:mod:`stoic.replay.bound`) as % of
   MIN-LAT, as the docs give it (the *fluid* column of docs/evaluation/README.md);
   the headroom is how far it lies below MIN-LAT (100 − fluid) and below the selector
   (selector − fluid), in points of MIN-LAT; share's *capture* is the part of the
   selector's headroom share takes, (selector − share) / (selector − fluid). Also at the
   12 real batches of ``components.csv``: their bound from each runtime's measured T_t,
   T_d and T_p (T_p split into its per-image and fixed parts in the ratio of the fitted
   spec's line), against each spec's audits at the same sizes.

How the real files are read: a batch is a run of consecutive rows with the same
``image_num``; its first row of each runtime is that runtime's run (``components.csv``
runs one runtime again at the end of most batches; ``totals.csv`` has one batch of 48
images with two edge rows). A run's total is its measured ``act_total``, except in the
headroom, where it is T_t + T_d + T_p as the simulator counts a runtime's total (in
``components.csv`` ``act_total`` is exactly ``act_deploy + act_proc``: the upload is not
in it).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stoic.backends.simulated import BatchTruth, EnvSpec, RuntimeTruth, SimEnvironment, load_env
from stoic.envfit.csvsource import read_csv
from stoic.envfit.gof import checks, summary_row
from stoic.replay.bound import fluid_lower_bound
from stoic.replay.runner import ReplayConfig, build_workload
from stoic.replay.scoring import _bin
from stoic.replay.sweep import Cell, run_cell
from stoic.settings import Settings
from stoic.values import Job

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "nautilus-2020-real"
SPECS = {
    "nautilus-2020": REPO / "workload" / "nautilus-2020.yaml",
    "nautilus-2020-real": REPO / "workload" / "envs" / "nautilus-2020-real.yaml",
}
MODES = (
    "selector-mean",
    "selector",
    "informed",
    "duplicator-gpu1",
    "duplicator-gpu2",
    "duplicator",
    "share",
)
#: The paper's Table 4: success %, % of MIN-LAT, % of the worst case.
PAPER_TABLE4 = {
    "selector-mean": (92.0, 105.0, 30.0),
    "duplicator-gpu1": (97.0, 102.0, 30.0),
    "duplicator-gpu2": (95.0, 101.0, 30.0),
}
TOTALS_RUNTIMES = ("edge", "cpu", "gpu1")
ALL_RUNTIMES = ("edge", "cpu", "gpu1", "gpu2")
#: Audits per real batch and seed for the shares at the real sizes.
DRAWS = 100
#: The runs were in California in February (the fit's ``--utc-offset``).
UTC_OFFSET_H = -8.0
DAY_S = 86_400.0

Step = Callable[[str], None]


@dataclass(frozen=True)
class RealRun:
    """One runtime's run of a real batch (components: None where the file has none)."""

    total_s: float
    transfer_s: float | None = None
    deploy_s: float | None = None
    proc_s: float | None = None


@dataclass(frozen=True)
class RealBatch:
    images: int
    runs: Mapping[str, RealRun]


@dataclass(frozen=True)
class Hindsight:
    """What one batch could have taken: each runtime's total, and its fluid bound."""

    images: int
    totals: Mapping[str, float]
    fluid_s: float = math.nan

    def best(self, among: Sequence[str]) -> str:
        return min(among, key=lambda r: self.totals[r])


def read_batches(path: Path) -> list[RealBatch]:
    """The all-runtime batches of a file of the real runs (module docstring)."""
    groups: list[tuple[int, dict[str, RealRun]]] = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            n = int(row["image_num"])
            if not groups or groups[-1][0] != n:
                groups.append((n, {}))
            groups[-1][1].setdefault(row["runtime"], _run(row))
    return [RealBatch(n, runs) for n, runs in groups]


def _run(row: Mapping[str, str]) -> RealRun:
    def opt(col: str) -> float | None:
        return float(row[col]) if col in row else None

    return RealRun(float(row["act_total"]), opt("act_transfer"), opt("act_deploy"), opt("act_proc"))


def real_hindsight(b: RealBatch, spec: EnvSpec) -> Hindsight:
    """A real batch of components.csv as the simulator's truth, and its fluid bound: each
    runtime's measured T_t, T_d and T_p, T_p split in the ratio of ``spec``'s line."""
    truth = BatchTruth(0, 0.0, n_images=b.images)
    totals: dict[str, float] = {}
    for name, r in b.runs.items():
        if r.transfer_s is None or r.deploy_s is None or r.proc_s is None:
            raise ValueError(f"{name}: a run without its components")
        p = spec.runtimes[name].processing
        line = p.per_image_s * b.images + p.fixed_s
        a, f = r.proc_s * p.per_image_s / line, r.proc_s * p.fixed_s / line
        if spec.runtimes[name].deployment is None:
            t = RuntimeTruth(name, 0.0, [], r.proc_s, 0.0, r.proc_s, 0, a, f, f)
        else:
            total = r.transfer_s + r.deploy_s + r.proc_s
            t = RuntimeTruth(name, r.transfer_s, [r.deploy_s], r.proc_s, 0.0, total, 0, a, f, f)
        truth.runtimes[name] = t
        totals[name] = t.total_s
    return Hindsight(b.images, totals, fluid_lower_bound(truth))


def _of(truth: BatchTruth) -> Hindsight:
    return Hindsight(truth.n_images, truth.totals(), fluid_lower_bound(truth))


def _env(path: Path, seed: int) -> SimEnvironment:
    runtimes = Settings().runtime_list()
    edge = next((r.name for r in runtimes if r.is_edge), None)
    return load_env(path, runtimes, seed=seed, fallback=edge)


def _job(env: SimEnvironment, n: int) -> Job:
    return Job("b", n, round(n * env.spec.uplink.bytes_per_image))


def workload(path: Path, seed: int, days: int) -> list[Hindsight]:
    """The replay's batches of one seed and their truth (the audit stream every mode
    replays: the same draws as the replay and bounds.py)."""
    _, batches = build_workload(ReplayConfig(env_path=path, days=days, seed=seed))
    env = _env(path, seed)
    return [_of(env.audit(b.index, _job(env, b.images), b.at_s)) for b in batches]


def at_sizes(path: Path, sizes: Sequence[int], seed: int, days: int) -> list[Hindsight]:
    """``DRAWS`` audits of each size at instants uniform over ``days``."""
    env = _env(path, seed)
    rng = np.random.default_rng([seed, 22])
    return [
        _of(env.audit(i, _job(env, n), float(at)))
        for i, n in enumerate(sizes)
        for at in rng.uniform(0.0, days * DAY_S, DRAWS)
    ]


def shares(items: Iterable[Hindsight], among: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per size bucket (and ``all``): batches, and the share of each runtime of
    ``among`` that was best in hindsight among them."""
    counts: dict[str, dict[str, int]] = {}
    for h in items:
        best = h.best(among)
        for key in (_bin(h.images), "all"):
            c = counts.setdefault(key, dict.fromkeys(among, 0))
            c[best] += 1
    return {
        k: {"batches": sum(c.values()), "shares": {r: v / sum(c.values()) for r, v in c.items()}}
        for k, c in counts.items()
    }


def headroom(items: Sequence[Hindsight]) -> dict[str, float]:
    """MIN-LAT and the fluid bound of a set of batches (sums), the bound in % of it."""
    min_lat = math.fsum(min(h.totals.values()) for h in items)
    fluid = math.fsum(h.fluid_s for h in items)
    return {
        "batches": len(items),
        "min_lat_s": min_lat,
        "fluid_s": fluid,
        "fluid_pct": 100 * fluid / min_lat,
    }


def table4(
    name: str, path: Path, modes: Sequence[str], seeds: int, days: int, step: Step
) -> dict[str, dict[str, Any]]:
    """Per mode: the sweep's metrics of each seed, and their means (in %, s)."""
    out: dict[str, dict[str, Any]] = {}
    for mode in modes:
        cells = []
        for seed in range(seeds):
            step(f"{name}: {mode}, seed {seed}")
            r = run_cell(Cell(name, path, mode, seed, days))
            if not r.ok:
                raise SystemExit(f"real_vs_paper.py: {name} {mode} seed {seed}: {r.error}")
            m = r.metrics
            cells.append(
                {
                    "success_pct": 100 * (m["success_rate"] or 0.0),
                    "vs_min_lat_pct": 100 * (m["vs_min_lat"] or math.nan),
                    "vs_worst_pct": 100 * (m["vs_worst"] or math.nan),
                    "vs_fluid_pct": 100 * (m["vs_fluid"] or math.nan),
                    "mean_latency_s": r.details["latency_s"] / r.details["batches"],
                    "cloud_used_h": (m["cloud_used_s"] or 0.0) / 3600,
                }
            )
        out[mode] = {
            "seeds": cells,
            **{k: float(np.mean([c[k] for c in cells])) for k in cells[0]},
            "vs_min_lat_sd": float(np.std([c["vs_min_lat_pct"] for c in cells], ddof=1))
            if len(cells) > 1
            else 0.0,
        }
    return out


def ks(data: Path, step: Step) -> dict[str, list[dict[str, Any]]]:
    """T_s per runtime and T_d per cloud runtime: gof's comparisons, for each spec."""
    loaded = {n: EnvSpec.load(p) for n, p in SPECS.items()}
    clouds = {r for s in loaded.values() for r, v in s.runtimes.items() if v.deployment}
    m = read_csv(
        data / "components.csv",
        [data / "totals.csv"],
        cloud_prior=clouds,
        bytes_per_image=loaded["nautilus-2020-real"].uplink.bytes_per_image,
        utc_offset_h=UTC_OFFSET_H,
    )
    out = {}
    for name, spec in loaded.items():
        step(f"{name}: KS draws (stoic.envfit.gof)")
        out[name] = [summary_row(c, None) for c in checks(spec, m) if c.component in ("T_s", "T_d")]
    return out


def compare(
    seeds: int,
    days: int,
    *,
    modes: Sequence[str] = MODES,
    data: Path = DATA,
    step: Step = lambda _: None,
) -> dict[str, Any]:
    """Every figure of the report (the JSON)."""
    t0 = time.perf_counter()
    totals = read_batches(data / "totals.csv")
    components = read_batches(data / "components.csv")
    for label, batches, rts in (
        ("totals.csv", totals, TOTALS_RUNTIMES),
        ("components.csv", components, ALL_RUNTIMES),
    ):
        short = [b.images for b in batches if not set(rts) <= set(b.runs)]
        if short:
            raise SystemExit(f"real_vs_paper.py: {label}: batches of {short} images lack a runtime")
    real_spec = EnvSpec.load(SPECS["nautilus-2020-real"])
    real_comp = [real_hindsight(b, real_spec) for b in components]
    real_tot = [Hindsight(b.images, {r: v.total_s for r, v in b.runs.items()}) for b in totals]
    real_comp_measured = [
        Hindsight(b.images, {r: v.total_s for r, v in b.runs.items()}) for b in components
    ]
    doc: dict[str, Any] = {
        "meta": {
            "seeds": seeds,
            "days": days,
            "draws_per_real_batch_and_seed": DRAWS,
            "modes": list(modes),
            "data": os.path.relpath(data, REPO),
            "specs": {n: str(p.relative_to(REPO)) for n, p in SPECS.items()},
        },
        "real": {
            "totals.csv": {
                "batches": len(totals),
                "sizes": [b.images for b in totals],
                "best": shares(real_tot, TOTALS_RUNTIMES),
            },
            "components.csv": {
                "batches": len(components),
                "sizes": [b.images for b in components],
                "best": shares(real_comp_measured, ALL_RUNTIMES),
                "best_of_totals_runtimes": shares(real_comp_measured, TOTALS_RUNTIMES),
                "headroom": headroom(real_comp),
            },
        },
        "specs": {},
    }
    for name, path in SPECS.items():
        wl: list[Hindsight] = []
        tot_sized: list[Hindsight] = []
        comp_sized: list[Hindsight] = []
        per_seed = []
        for seed in range(seeds):
            step(f"{name}: audits, seed {seed}")
            w = workload(path, seed, days)
            wl += w
            per_seed.append(headroom(w)["fluid_pct"])
            tot_sized += at_sizes(path, [b.images for b in totals], seed, days)
            comp_sized += at_sizes(path, [b.images for b in components], seed, days)
        t4 = table4(name, path, modes, seeds, days, step)
        room: dict[str, Any] = {"fluid_pct": float(np.mean(per_seed)), "fluid_pct_seeds": per_seed}
        room["below_min_lat"] = 100 - room["fluid_pct"]
        for mode in ("selector", "share"):
            if mode in t4:
                room[mode] = t4[mode]["vs_min_lat_pct"]
        if "selector" in room:
            room["below_selector"] = room["selector"] - room["fluid_pct"]
        if "selector" in room and "share" in room:
            room["share_vs_fluid"] = t4["share"]["vs_fluid_pct"]
            room["share_capture"] = (room["selector"] - room["share"]) / room["below_selector"]
        doc["specs"][name] = {
            "table4": t4,
            "best": {
                "at_totals_sizes": shares(tot_sized, TOTALS_RUNTIMES),
                "at_components_sizes": shares(comp_sized, ALL_RUNTIMES),
                "workload": shares(wl, TOTALS_RUNTIMES),
                "workload_all_runtimes": shares(wl, ALL_RUNTIMES),
            },
            "headroom": room,
            "headroom_at_components_sizes": headroom(comp_sized),
        }
    for name, rows in ks(data, step).items():
        doc["specs"][name]["ks"] = rows
    doc["meta"]["wall_s"] = round(time.perf_counter() - t0, 1)
    return doc


# Markdown ------------------------------------------------------------------------------


def _f(v: float | None, nd: int = 1) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.{nd}f}"


def _cell(s: Mapping[str, Any] | None, rts: Sequence[str]) -> str:
    if s is None:
        return "—"
    return " / ".join(f"{100 * s['shares'][r]:.0f}" for r in rts) + f" ({s['batches']})"


def _buckets(*tables: Mapping[str, Any]) -> list[str]:
    keys = {k for t in tables for k in t if k != "all"}
    return [*sorted(keys, key=lambda k: int(k.split("-")[0].rstrip("+"))), "all"]


def markdown(doc: dict[str, Any]) -> str:
    names = list(doc["specs"])
    meta, real = doc["meta"], doc["real"]
    out = [
        "# Two calibrations of the testbed: the paper's figures and the real runs",
        "",
        "Made by `docs/evaluation/real_vs_paper.py` (its docstring says how each figure is "
        f"made): {meta['seeds']} seed(s) × {meta['days']} day(s) of 162 batches; "
        + ", ".join(f"`{n}` = `{p}`" for n, p in meta["specs"].items())
        + f". Real runs: `{meta['data']}/` (beside the repository, not copied in), "
        f"{real['totals.csv']['batches']} all-runtime batches in `totals.csv` (edge, cpu, "
        f"gpu1), {real['components.csv']['batches']} in `components.csv` (edge, cpu, gpu1, "
        f"gpu2). {meta['wall_s']:.0f} s.",
        "",
        f"    {meta.get('command', 'python docs/evaluation/real_vs_paper.py')}",
        "",
        "## Table 4: success and aggregate latency",
        "",
        "Means over the seeds; % of MIN-LAT ± its standard deviation over the seeds. "
        "Paper: its published Table 4.",
        "",
        "| mode | paper: success / % MIN-LAT / % worst | "
        + " | ".join(f"{n}: success / % MIN-LAT / % worst / % fluid / mean s" for n in names)
        + " |",
        "|---" * (2 + len(names)) + "|",
    ]
    for mode in meta["modes"]:
        paper = PAPER_TABLE4.get(mode)
        cells = [" / ".join(f"{v:.0f}" for v in paper) if paper else "—"]
        for n in names:
            t = doc["specs"][n]["table4"][mode]
            cells.append(
                f"{_f(t['success_pct'])} / **{_f(t['vs_min_lat_pct'])}** ± "
                f"{_f(t['vs_min_lat_sd'])} / {_f(t['vs_worst_pct'])} / "
                f"{_f(t['vs_fluid_pct'])} / {_f(t['mean_latency_s'])}"
            )
        out.append(f"| {mode} | " + " | ".join(cells) + " |")

    out += [
        "",
        "## Hindsight best runtime per batch size",
        "",
        "% of batches on which each runtime was the best in hindsight, **edge / cpu / gpu1**"
        " (the runtimes of `totals.csv`: it has no gpu2, so the specs' gpu2 is left out "
        "here too), number of batches in brackets. *At the real sizes*: each spec's "
        f"audits at the sizes of the `totals.csv` batches ({DRAWS} per batch and seed); "
        "*workload*: the batches of each spec's replays.",
        "",
    ]
    real_t = real["totals.csv"]["best"]
    cols = [("real `totals.csv`", real_t)]
    cols += [(f"{n} at the real sizes", doc["specs"][n]["best"]["at_totals_sizes"]) for n in names]
    cols += [(f"{n} workload", doc["specs"][n]["best"]["workload"]) for n in names]
    out += _share_table(cols, TOTALS_RUNTIMES)
    out += [
        "",
        "The same on all four runtimes, **edge / cpu / gpu1 / gpu2**, against the 12 batches"
        " of `components.csv` (each run on all four):",
        "",
    ]
    cols = [("real `components.csv`", real["components.csv"]["best"])]
    cols += [
        (f"{n} at the real sizes", doc["specs"][n]["best"]["at_components_sizes"]) for n in names
    ]
    cols += [(f"{n} workload", doc["specs"][n]["best"]["workload_all_runtimes"]) for n in names]
    out += _share_table(cols, ALL_RUNTIMES)

    out += [
        "",
        "## Kolmogorov–Smirnov distance against the real runs",
        "",
        "Two-sample KS distance D of each spec's draws (`stoic.envfit.gof`: the simulator's "
        "audit at the measurements' own batch sizes; T_s = T_t + T_d + warm-up + T_p, a "
        "timeout's fallback included) against the measurements, p-value in brackets (under "
        "0.05 rejects the spec at the 5 % level); medians in seconds. The authors' "
        "`act_total` leaves the upload out (in `components.csv` it is exactly `act_deploy + "
        "act_proc`), so like is set against like: `components.csv`'s T_t + T_d + T_p against "
        "the spec's T_s, `totals.csv` (no upload) against the spec's T_d + warm-up + T_p.",
        "",
        "| component | runtime | data | n | "
        + " | ".join(f"{n}: D (p)" for n in names)
        + " | median: real / "
        + " / ".join(names)
        + " |",
        "|---" * (5 + len(names)) + "|",
    ]
    keyed = {
        n: {(r["component"], r["runtime"], r["data"]): r for r in doc["specs"][n]["ks"]}
        for n in names
    }
    order = sorted(keyed[names[0]], key=lambda k: (k[0] != "T_s", k[1], k[2]))
    for k in order:
        rows = [keyed[n][k] for n in names]
        out.append(
            f"| {k[0]} | {k[1]} | {k[2]} | {rows[0]['n']} | "
            + " | ".join(f"{r['ks']:.2f} ({r['p_value']:.3f})" for r in rows)
            + f" | {rows[0]['median_data']:.4g} / "
            + " / ".join(f"{r['median_fit']:.4g}" for r in rows)
            + " |"
        )

    out += [
        "",
        "## Share's headroom",
        "",
        "The fluid lower bound (`stoic.replay.bound`) in % of MIN-LAT on each spec's "
        "workload (mean over seeds); the headroom below MIN-LAT (100 − fluid) and below the"
        " selector (selector − fluid), in points of MIN-LAT; share's % of MIN-LAT, of the "
        "bound, and the part of the selector's headroom it takes ((selector − share) / "
        "(selector − fluid)).",
        "",
        "| spec | fluid % MIN-LAT | headroom below MIN-LAT | selector % MIN-LAT "
        "| headroom below selector | share % MIN-LAT | share % fluid | share's capture |",
        "|---" * 8 + "|",
    ]
    for n in names:
        h = doc["specs"][n]["headroom"]
        capture = h.get("share_capture")
        out.append(
            f"| {n} | {_f(h['fluid_pct'])} | {_f(h['below_min_lat'])} | {_f(h.get('selector'))}"
            f" | {_f(h.get('below_selector'))} | {_f(h.get('share'))} | "
            f"{_f(h.get('share_vs_fluid'))} | "
            + ("—" if capture is None else f"{100 * capture:.0f} %")
            + " |"
        )
    rc = real["components.csv"]["headroom"]
    out += [
        "",
        f"At the {rc['batches']} real batches of `components.csv` (sizes "
        f"{min(_sizes(doc))}–{max(_sizes(doc))}): the bound from the measured "
        "components (T_p split by the fitted line), MIN-LAT as the simulator counts a "
        "runtime's total (T_t + T_d + T_p), against each spec's audits at those sizes:",
        "",
        "| | fluid % MIN-LAT | headroom below MIN-LAT | MIN-LAT per batch (s) |",
        "|---|---|---|---|",
        f"| real `components.csv` | {_f(rc['fluid_pct'])} | {_f(100 - rc['fluid_pct'])} | "
        f"{_f(rc['min_lat_s'] / rc['batches'])} |",
    ]
    for n in names:
        h = doc["specs"][n]["headroom_at_components_sizes"]
        out.append(
            f"| {n} at those sizes | {_f(h['fluid_pct'])} | {_f(100 - h['fluid_pct'])} | "
            f"{_f(h['min_lat_s'] / h['batches'])} |"
        )
    return "\n".join(out) + "\n"


def _sizes(doc: dict[str, Any]) -> list[int]:
    return list(doc["real"]["components.csv"]["sizes"])


def _share_table(cols: list[tuple[str, Mapping[str, Any]]], rts: Sequence[str]) -> list[str]:
    out = [
        "| batch size | " + " | ".join(c for c, _ in cols) + " |",
        "|---" * (1 + len(cols)) + "|",
    ]
    for b in _buckets(*(t for _, t in cols)):
        out.append(f"| {b} | " + " | ".join(_cell(t.get(b), rts) for _, t in cols) + " |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0 … N−1 (default 5)")
    ap.add_argument("--days", type=int, default=3, help="days of 162 batches per replay")
    ap.add_argument("--data", type=Path, default=DATA, help="the real runs' folder")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "evaluation" / "real-vs-paper.md")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    if args.seeds < 1 or args.days < 1:
        raise SystemExit("real_vs_paper.py: --seeds and --days must be at least 1")
    if not (args.data / "totals.csv").is_file() or not (args.data / "components.csv").is_file():
        raise SystemExit(f"real_vs_paper.py: no totals.csv and components.csv in {args.data}")
    logging.getLogger("stoic").setLevel(logging.ERROR)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    n_steps = len(SPECS) * (args.seeds * (len(MODES) + 1) + 1)
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(
        *columns, console=Console(stderr=True), disable=args.no_progress, transient=True
    ) as bar:
        task = bar.add_task("", total=n_steps)

        def step(what: str) -> None:
            bar.update(task, description=what, advance=1)

        doc = compare(args.seeds, args.days, data=args.data, step=step)
    doc["meta"]["command"] = shlex.join(["python", *sys.argv])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(doc))
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
