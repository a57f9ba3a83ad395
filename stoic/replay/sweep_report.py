"""The sweep's report: ``sweep.json``, ``sweep.md`` and two plots.

``sweep.json`` holds the configuration, the metric definitions, every cell (its
figures, a few details such as choice counts and wrong choices by batch size, or its
error) and the table of aggregates. ``sweep.md`` shows the table (mean ± sample standard
deviation over seeds), a pivot of % of MIN-LAT per environment and mode with the best
non-reference mode of each environment in bold, each environment's Pareto front of mean
latency against cloud pod seconds, and every error. ``vs_min_lat.png``: grouped bars per
environment, one per mode, error bars ± one standard deviation; ``pareto.png``: mean
latency against pod hours, a point per mode, the front joined. Columns come from
:data:`stoic.replay.sweep.METRICS`, so a new metric needs no change here. matplotlib is
imported in the plot functions only, with the Agg backend; without the ``analysis``
extra the tables are written and ``meta.plots`` says in one line why there is no plot.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from stoic.extras import installed
from stoic.replay.report import PLOTS_SKIPPED
from stoic.replay.sweep import (
    METRICS,
    REFERENCE_MODES,
    TARGET_SE,
    Cell,
    CellResult,
    EnvEntry,
    Gap,
    Metric,
    SweepConfig,
    SweepResult,
    is_reference,
    learning_gaps,
    table,
)

PLOT = "vs_min_lat.png"
#: The plot's y axis stops here (% of MIN-LAT); taller bars are labelled with their value.
PLOT_CAP_PCT = 250.0


def _fmt(m: Metric, v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if m.unit == "ratio":
        return f"{100 * v:.1f}"
    return f"{v:,.0f}"


def _cell(m: Metric, agg: dict[str, Any]) -> str:
    if not agg["n"]:
        return "–"
    unit = " %" if m.unit == "ratio" else (" s" if m.unit == "s" else "")
    return f"{_fmt(m, agg['mean'])} ± {_fmt(m, agg['std'])}{unit}"


def write_sweep_report(result: SweepResult, out_dir: Path, *, command: str = "") -> dict[str, Any]:
    """Write the three files into ``out_dir``; return the JSON document."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = result.config
    rows = table(result)
    gaps = learning_gaps(result)
    doc: dict[str, Any] = {
        "meta": {
            "command": command,
            "envs": {e.name: str(e.path) for e in cfg.envs},
            "modes": list(cfg.modes),
            "seeds": list(cfg.seeds),
            "days": cfg.days,
            "batches_per_day": cfg.batches,
            "hours": cfg.hours,
            "probes": cfg.probes,
            "jobs": result.jobs,
            "wall_s": result.wall_s,
            "cells": len(result.cells),
            "failed": len(result.failed),
            "aggregate": "mean, sample standard deviation (n-1), min and max over seeds",
        },
        "metrics": [
            {"key": m.key, "label": m.label, "unit": m.unit, "lower_is_better": m.lower_is_better}
            for m in METRICS
        ],
        "env_errors": result.env_errors,
        "table": rows,
        "learning_gaps": [_gap_json(g) for g in gaps],
        "cells": [
            {
                "env": c.cell.env,
                "mode": c.cell.mode,
                "seed": c.cell.seed,
                "metrics": c.metrics,
                "details": c.details,
                "error": c.error,
                "wall_s": c.wall_s,
            }
            for c in result.cells
        ],
    }
    if cfg.probe_pricing:
        doc["meta"]["probe_pricing"] = True
    if cfg.probe_share is not None:
        doc["meta"]["probe_share"] = cfg.probe_share
    can_plot = installed("analysis", "matplotlib")
    if not can_plot:
        doc["meta"]["plots"] = PLOTS_SKIPPED
    plotted = can_plot and _plot(result, rows, out_dir / PLOT)
    text = _markdown(result, rows, command, plotted) + _gap_section(result, gaps)
    pareto = can_plot and _pareto(result, rows, out_dir / PARETO_PLOT)
    if pareto:
        doc["meta"]["pareto_plot"] = PARETO_PLOT
    text += _pareto_section(result, rows, pareto)
    (out_dir / "sweep.json").write_text(json.dumps(doc, indent=1, default=_jsonable) + "\n")
    (out_dir / "sweep.md").write_text(text)
    return doc


def _gap_json(g: Gap) -> dict[str, Any]:
    return {
        "env": g.env,
        "mode": g.mode,
        "reference": g.reference,
        "bound": g.bound,
        "per_seed": list(g.per_seed),
        "n": g.n,
        "mean": g.mean,
        "sd": g.sd,
        "se": g.se,
        "seeds_for_se_below_target": g.seeds_for_target,
    }


def gap_cell(g: Gap) -> str:
    """``mean ± SE (seeds for SE < 1 point)``, in points of MIN-LAT; † marks a gap to a
    proven bound rather than to an informed reference."""
    se = "" if g.se is None else f" ± {100 * g.se:.1f}"
    k = "" if g.seeds_for_target is None else f" ({g.seeds_for_target})"
    return f"{100 * g.mean:+.1f}{se}{k}{'' if not g.bound else ' †'}"


def _gap_section(result: SweepResult, gaps: list[Gap]) -> str:
    """The gap of each mode to the reference of its own action space, mean ± SE."""
    if not gaps:
        return ""
    modes = list(dict.fromkeys(g.mode for g in gaps))
    by = {(g.env, g.mode): g for g in gaps}
    refs: dict[str, set[str]] = {}
    for gap in gaps:
        refs.setdefault(gap.mode, set()).update(gap.reference.split(" / "))
    L = [
        "## Gap to the reference of each action space",
        "",
        "Ours − the reference of the mode's own action space, per seed (the same worlds), "
        "in points of MIN-LAT: the mean ± its standard error over seeds (sample sd ÷ √n), "
        f"and in brackets the seeds at which that spread puts the standard error under "
        f"{100 * TARGET_SE:.0f} point. For the single-runtime modes against the `informed` "
        "mode (the paper's selector knowing the environment, through the same requester): "
        "the *learning gap*. † a gap to a proven lower bound instead (the hindsight race "
        "of a fixed duplicator, the fluid bound for share), part of which no scheduler "
        "can close.",
        "",
        "| environment | " + " | ".join(modes) + " |",
        "|---|" + "---|" * len(modes),
    ]
    for e in result.config.envs:
        cells = [gap_cell(g) if (g := by.get((e.name, m))) else "–" for m in modes]
        L.append(f"| {e.name} | " + " | ".join(cells) + " |")
    L += ["", "References: " + "; ".join(f"{m}: {', '.join(sorted(refs[m]))}" for m in modes)]
    L.append("")
    return "\n".join(L) + "\n"


def load_sweep(path: Path) -> SweepResult:
    """A sweep's result from its ``sweep.json``, to write the report again (after a
    change to the report's code) without replaying a cell."""
    doc = json.loads(path.read_text())
    meta = doc["meta"]
    envs = [EnvEntry(name, Path(p)) for name, p in meta["envs"].items()]
    cfg = SweepConfig(
        envs=envs,
        modes=tuple(meta["modes"]),
        seeds=tuple(meta["seeds"]),
        days=meta["days"],
        batches=meta["batches_per_day"],
        hours=meta["hours"],
        probes=meta["probes"],
        jobs=meta["jobs"],
        probe_pricing=meta.get("probe_pricing", False),
        probe_share=meta.get("probe_share"),
    )
    paths = {e.name: e.path for e in envs}
    cells = [
        CellResult(
            Cell(c["env"], paths[c["env"]], c["mode"], c["seed"], cfg.days, cfg.batches, cfg.hours),
            dict(c["metrics"]),
            dict(c["details"]),
            c["error"],
            float(c["wall_s"]),
        )
        for c in doc["cells"]
    ]
    return SweepResult(cfg, cells, dict(doc["env_errors"]), meta["jobs"], float(meta["wall_s"]))


def _pareto_section(result: SweepResult, rows: list[dict[str, Any]], plotted: bool) -> str:
    """The modes on each environment's latency–cost Pareto front, and the plot."""
    modes = [m for m in result.config.modes if not is_reference(m)]
    L = [
        "## Latency against cloud pod time",
        "",
        "The modes no other mode (references aside) beats on both mean latency and cloud "
        "pod seconds × GPUs, probes included, in order of cost:",
        "",
    ]
    for e in result.config.envs:
        pts = _points(rows, e.name, modes)
        front = pareto_front(pts)
        L.append(
            f"* {e.name}: "
            + (", ".join(f"{m} ({pts[m][1]:,.0f} s, {pts[m][0]:,.1f} h)" for m in front) or "–")
        )
    if plotted:
        L += ["", f"![mean latency against cloud pod hours]({PARETO_PLOT})"]
    L.append("")
    return "\n".join(L)


def _jsonable(x: Any) -> Any:
    return str(x)


def _markdown(result: SweepResult, rows: list[dict[str, Any]], command: str, plot: bool) -> str:
    cfg = result.config
    n_envs, n_modes, n_seeds = len(cfg.envs), len(cfg.modes), len(cfg.seeds)
    per_day = cfg.batches if cfg.batches is not None else 162
    span = f"{cfg.hours} hours" if cfg.hours else f"{cfg.days} day(s) × {per_day} batches"
    L = ["# Sweep report", ""]
    if command:
        L += ["Made with:", "", "```", command, "```", ""]
    L += [
        f"{n_envs} environments × {n_modes} modes × {n_seeds} seeds "
        f"({', '.join(map(str, cfg.seeds))}), {span} each: {len(result.cells)} replays, "
        f"{len(result.failed)} failed; {result.wall_s:.0f} s of wall time on {result.jobs} "
        "worker process(es).",
        "",
        "Each figure is the mean ± the sample standard deviation over seeds (min and max "
        "are in `sweep.json`). Success: the scorer's right-placement rate (duplicators: "
        "the paper's conditional choice). Cloud seconds: pod seconds × GPUs (a CPU pod "
        "counts 1) from pod-ready to teardown, *used* by every cloud leg, *wasted* by "
        "legs that lost the race or whose call failed (a deployment that timed out never "
        "had a ready pod: it counts nothing here, but its wait is in the latency).",
        "",
        "## % of MIN-LAT per environment and mode",
        "",
        "Mean over seeds; bold: the best mode of the environment that needs no "
        "ground truth (not " + ", ".join(sorted(REFERENCE_MODES)) + ").",
        "",
        "| environment | " + " | ".join(cfg.modes) + " |",
        "|---|" + "---|" * n_modes,
    ]
    by = {(r["env"], r["mode"]): r for r in rows}
    for e in cfg.envs:
        means = {mode: by[(e.name, mode)]["metrics"]["vs_min_lat"]["mean"] for mode in cfg.modes}
        cands = [m for m, v in means.items() if v is not None and not is_reference(m)]
        best = min(cands, key=lambda m: means[m]) if cands else None
        cells = []
        for mode in cfg.modes:
            v = means[mode]
            txt = (
                "error"
                if by[(e.name, mode)]["failed"] and v is None
                else ("–" if v is None else f"{100 * v:.1f}")
            )
            cells.append(f"**{txt}**" if mode == best else txt)
        L.append(f"| {e.name} | " + " | ".join(cells) + " |")
    if plot:
        L += ["", f"![% of MIN-LAT per environment and mode]({PLOT})"]
    L += [
        "",
        "## Every (environment, mode)",
        "",
        "| environment | mode | " + " | ".join(m.label for m in METRICS) + " | seeds ok |",
        "|---|---|" + "---|" * len(METRICS) + "---|",
    ]
    for r in rows:
        ok = r["seeds"] - r["failed"]
        figs = " | ".join(_cell(m, r["metrics"][m.key]) for m in METRICS)
        L.append(f"| {r['env']} | {r['mode']} | {figs} | {ok}/{r['seeds']} |")
    errors = [c for c in result.cells if c.error]
    if errors:
        L += ["", "## Errors", ""]
        for name, err in result.env_errors.items():
            L.append(f"* `{name}` (every cell): {err}")
        for c in errors:
            if c.cell.env not in result.env_errors:
                L.append(f"* `{c.cell.env}` {c.cell.mode} seed {c.cell.seed}: {c.error}")
    L.append("")
    return "\n".join(L)


def _plot(result: SweepResult, rows: list[dict[str, Any]], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result.config
    by = {(r["env"], r["mode"]): r["metrics"]["vs_min_lat"] for r in rows}
    envs, modes = [e.name for e in cfg.envs], list(cfg.modes)
    if not any(by[(e, m)]["n"] for e in envs for m in modes):
        return False
    # About 60 bars a row: environments wrap onto more rows rather than one wide strip.
    per_row = max(1, min(len(envs), 60 // max(len(modes), 1)))
    n_rows = math.ceil(len(envs) / per_row)
    width = min(16.0, max(8.0, 0.2 * per_row * len(modes) + 2))
    fig, axes = plt.subplots(n_rows, 1, figsize=(width, 3.4 * n_rows + 0.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    bar = 0.8 / max(len(modes), 1)
    for row_i in range(n_rows):
        ax = axes[row_i][0]
        chunk = envs[row_i * per_row : (row_i + 1) * per_row]
        top, bottom = 0.0, 100.0
        for j, mode in enumerate(modes):
            xs, ys, errs = [], [], []
            for i, env in enumerate(chunk):
                agg = by[(env, mode)]
                if agg["n"]:
                    xs.append(i - 0.4 + bar * (j + 0.5))
                    ys.append(100 * agg["mean"])
                    errs.append(100 * agg["std"])
            top = max([top, *(y + e for y, e in zip(ys, errs, strict=True))])
            bottom = min([bottom, *(y - e for y, e in zip(ys, errs, strict=True))])
            label = mode if row_i == 0 else None
            ax.bar(xs, ys, bar, yerr=errs, capsize=2, label=label, color=cmap(j % 10))
            for x, y in zip(xs, ys, strict=True):
                if y > PLOT_CAP_PCT:
                    ax.text(
                        x,
                        PLOT_CAP_PCT * 0.98,
                        f"{y:.0f}",
                        ha="center",
                        va="top",
                        fontsize=6,
                        rotation=90,
                    )
        ax.axhline(100, color="black", lw=0.8, ls="--")
        ax.set_ylim(min(80.0, bottom - 5), min(max(top * 1.05, 110), PLOT_CAP_PCT))
        ax.set_xlim(-0.5, per_row - 0.5)
        ax.set_xticks(range(len(chunk)), chunk, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("% of MIN-LAT")
    axes[0][0].legend(
        fontsize=7,
        ncol=min(len(modes), 8),
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        frameon=False,
    )
    fig.suptitle("Aggregate latency as % of MIN-LAT (mean ± sd over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


PARETO_PLOT = "pareto.png"


def _gain(mode: str) -> float | None:
    """The ``policy.share_min_gain_s`` of a ``share:GAIN`` mode (``share`` alone: None)."""
    if mode.startswith("share:"):
        try:
            return float(mode.split(":", 1)[1])
        except ValueError:
            return None
    return None


def budget_lines(modes: list[str]) -> dict[str, list[str]]:
    """Each mode swept at budgets (``MODE@B``), its labels in order of budget, the
    mode without a budget last where it was swept: the trade-off the budget sets."""
    out: dict[str, list[tuple[float, str]]] = {}
    for m in modes:
        base, at, amount = m.rpartition("@")
        if at:
            out.setdefault(base, []).append((float(amount), m))
    return {
        base: [m for _, m in sorted(line)] + ([base] if base in modes else [])
        for base, line in out.items()
    }


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """The modes no other mode beats on both cost and latency (lower is better on
    both), in order of cost: the front a site chooses along."""
    front = [
        m
        for m, (x, y) in points.items()
        if not any(
            (x2 <= x and y2 <= y) and (x2 < x or y2 < y)
            for m2, (x2, y2) in points.items()
            if m2 != m
        )
    ]
    return sorted(front, key=lambda m: points[m])


def _points(
    rows: list[dict[str, Any]], env: str, modes: list[str]
) -> dict[str, tuple[float, float]]:
    """Each mode's (pod hours, mean latency) in ``env``, means over seeds."""
    by = {(r["env"], r["mode"]): r["metrics"] for r in rows}
    out = {}
    for mode in modes:
        m = by[(env, mode)]
        if m["pod_s"]["n"] and m["mean_latency_s"]["n"]:
            out[mode] = (m["pod_s"]["mean"] / 3600, m["mean_latency_s"]["mean"])
    return out


def _pareto(result: SweepResult, rows: list[dict[str, Any]], path: Path) -> bool:
    """Mean latency against cloud pod hours (probes included), per environment: every
    mode a point, the Pareto front of the modes that need no ground truth joined by a
    line, the references (oracle, informed) hollow, and share at each ``share:GAIN``
    swept joined in order of gain (the trade-off ``policy.share_min_gain_s`` sets), and
    each mode swept at cloud budgets joined in order of budget (:func:`budget_lines`)."""
    modes = list(result.config.modes)
    envs = [e.name for e in result.config.envs]
    points = {env: _points(rows, env, modes) for env in envs}
    if not any(points.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gains = sorted((g, m) for m in modes if (g := _gain(m)) is not None)
    cols = min(3, len(envs))
    n_rows = math.ceil(len(envs) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.6 * cols, 3.6 * n_rows + 0.9), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for i, env in enumerate(envs):
        ax = axes[i // cols][i % cols]
        pts = points[env]
        candidates = {m: p for m, p in pts.items() if not is_reference(m)}
        front = pareto_front(candidates)
        if len(front) > 1:
            ax.plot(*zip(*(pts[m] for m in front), strict=True), "-", color="grey", lw=0.8)
        if len(gains) > 1:
            line = [pts[m] for _, m in gains if m in pts]
            if line:
                ax.plot(*zip(*line, strict=True), ":", color="black", lw=0.8)
        for labels in budget_lines(modes).values():
            path_pts = [pts[m] for m in labels if m in pts]
            if len(path_pts) > 1:
                ax.plot(*zip(*path_pts, strict=True), "--", color="tab:blue", lw=0.7)
        for j, mode in enumerate(modes):
            if mode not in pts:
                continue
            ref = is_reference(mode)
            ax.plot(
                *pts[mode],
                "o",
                ms=5,
                mfc="none" if ref else cmap(j % 10),
                mec=cmap(j % 10),
                label=mode if i == 0 else None,
            )
            if mode in front:
                ax.annotate(mode, pts[mode], fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.set_title(env, fontsize=9)
        ax.set_xlabel("cloud pod hours (× GPUs, probes included)", fontsize=8)
        ax.set_ylabel("mean latency (s)", fontsize=8)
        ax.tick_params(labelsize=7)
    for k in range(len(envs), n_rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.legend(fontsize=7, loc="lower center", ncol=min(len(modes), 8), frameon=False)
    fig.suptitle(
        "Mean latency against cloud pod hours (mean over seeds; line: the Pareto front)",
        fontsize=10,
    )
    height = 3.6 * n_rows + 0.9  # inches: half an inch for the legend, 0.4 for the title
    fig.tight_layout(rect=(0, 0.5 / height, 1, 1 - 0.4 / height))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
