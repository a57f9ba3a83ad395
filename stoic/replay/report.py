"""The replay's report: Markdown with the paper's tables, a JSON file, and plots.

``report.json`` holds the configuration, every summary figure and every decision (one
row per batch: estimates, truth of every runtime, what ran, how long it took). The
plots are the paper's Figure 3 (predicted vs actual total latency over time, for one
cloud runtime), Figure 6 (histograms of its T_p, T_d, T_t) and the success rate by
batch size. matplotlib is imported here only, with the Agg backend; it is part of the
``analysis`` extra, and without it the report is written without plots (and says so).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from stoic.extras import installed
from stoic.replay.runner import ReplayResult
from stoic.replay.scoring import score

PLOTS_SKIPPED = "Plots not drawn: matplotlib is not installed (pip install 'stoic[analysis]')."

PAPER = {
    "selector": {"success_rate": 0.92, "vs_min_lat": 1.05, "vs_worst": 0.30},
    "duplicator-gpu1": {"success_rate": 0.97, "vs_min_lat": 1.02, "vs_worst": 0.30},
    "duplicator-gpu2": {"success_rate": 0.95, "vs_min_lat": 1.01, "vs_worst": 0.30},
}


def _processing_probes(p: dict[str, Any]) -> str:
    """The processing probes' line (docs/scheduling.md): how many, and their pod time."""
    held = p.get("processing_probe_cloud_s") or {}
    if not p.get("processing_probes"):
        return " No processing probe ran."
    per = ", ".join(f"{k} {v:,.0f} s" for k, v in sorted(held.items()) if v > 0)
    return (
        f" Processing probes: {p['processing_probes']} (pod time held after ready: "
        f"{per or 'none'}; not counted in Table 5)."
    )


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _headline(s: dict[str, Any]) -> list[str]:
    """The figures a reader can compare across modes (docs/replay.md, "Figures")."""
    ref = s["class_ref"]
    kind = "a bound: no batch of the mode beats it" if ref["bound"] else "a reference, not a bound"
    mean = s["mean_latency_s"]
    return [
        "## Headline figures",
        "",
        "| mean latency | p95 of latency ÷ best | % of MIN-LAT | % of in-class reference "
        "| cloud pod-s (×GPUs) |",
        "|---|---|---|---|---|",
        f"| {'–' if mean is None else f'{mean:,.1f} s'} | {_pct(s['p95_vs_best'])} | "
        f"{_pct(s['vs_min_lat'])} | {_pct(s['vs_class'])} ({ref['name']}) | "
        f"{s['pod_s']:,.0f} s |",
        "",
        f"p95: the 95th percentile over batches of each batch's latency ÷ its hindsight "
        f"best single runtime. In-class reference: the {ref['name']} ({kind}). Pod "
        f"seconds run from each deployment's request to its teardown: batches "
        f"{s['pod_s_batches']:,.0f} s, probes and bootstrap {s['pod_s_learning']:,.0f} s.",
        "",
        f"Lower bounds of these batches (stoic.replay.bound), as % of MIN-LAT: the fluid "
        f"bound (any schedule) {_pct(_over(s['fluid_s'], s['min_lat_s']))}, the race bound "
        f"(any race of whole-batch legs, two cloud legs included) "
        f"{_pct(_over(s['race_s'], s['min_lat_s']))}; this run is at "
        f"{_pct(s['vs_fluid'])} and {_pct(s['vs_race'])} of them.",
        "",
    ]


def actions_line(a: dict[str, Any] | None) -> list[str]:
    """The actions beyond the paper's, where the run took them (docs/scheduling.md)."""
    if a is None:
        return []
    mean = a["mean_deadline_s"]
    return [
        f"Deploy deadlines: {a['batches_with_deadline']} batches had one on their chosen "
        f"runtime (mean {'–' if mean is None else f'{mean:.0f} s'}). Deployments "
        f"abandoned at their deadline: {a['abandoned']} planned legs, "
        f"{a['abandoned_fallback']} fallback legs. {a['pipelined']} batches uploaded "
        "while their pod deployed.",
        "",
    ]


def _over(x: float, y: float) -> float | None:
    return x / y if y > 0 and math.isfinite(x) and math.isfinite(y) else None


def mode_name(result: ReplayResult) -> str:
    return f"duplicator-{result.cloud}" if result.cloud else str(result.mode)


def write_report(result: ReplayResult, out_dir: Path, *, command: str = "") -> dict[str, Any]:
    """Write ``report.md``, ``report.json`` and the PNG plots into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scored = score(result)
    s = scored["summary"]
    name = mode_name(result)
    cfg = result.config
    meta: dict[str, Any] = {
        "command": command,
        "mode": name,
        "env": str(cfg.env_path.name),
        "environment": result.env.spec.name,
        "workload": result.workload_name,
        "hours": cfg.hours,
        "batches_per_day": cfg.batches,
        "days": cfg.days,
        "seed": cfg.seed,
        "probes": result.probe_stats,
        "simulated_s": result.sim_span_s,
        "wall_s": result.wall_s,
        "timings": result.timings,
    }
    plots: list[str] = []
    if installed("analysis", "matplotlib"):
        plots = _plots(result, scored, out_dir)
        meta["plots"] = plots
    else:
        meta["plots"] = PLOTS_SKIPPED
    doc = {"meta": meta, "summary": s, "batches": scored["batches"]}
    (out_dir / "report.json").write_text(json.dumps(doc, indent=1, default=_jsonable) + "\n")
    (out_dir / "report.md").write_text(_markdown(meta, s, name, plots))
    return doc


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)


def _markdown(meta: dict[str, Any], s: dict[str, Any], name: str, plots: list[str]) -> str:
    L = [f"# Replay report: {name}", ""]
    if meta["command"]:
        L += ["Made with:", "", "```", meta["command"], "```", ""]
    p = meta["probes"]
    L += [
        f"Environment `{meta['env']}` ({meta['environment']}), workload `{meta['workload']}`, "
        f"seed {meta['seed']}; {s['batches']} batches over "
        f"{meta['simulated_s'] / 3600:.1f} simulated hours (warm-up "
        f"{p['warmup_s'] / 60:.0f} min of inquisitor probes and the bootstrap included), "
        f"{meta['wall_s']:.1f} s of wall time.",
        "",
        f"Probes: **{p['mode']}** — "
        + (
            f"the inquisitor's own loop ran throughout ({p['inquisitor_probes']} probes, "
            f"{p['inquisitor_skipped_ticks']} ticks skipped while a probe was still running)."
            if p["mode"] == "full"
            else f"inquisitor loop during warm-up ({p['inquisitor_probes']} probes), then the "
            f"exact shortcut: {p['shortcut_probes_walked']} probe ticks walked, only the last "
            f"{p['shortcut_window']} before each batch fed ({p['shortcut_probes_fed']} samples)."
        )
        + _processing_probes(p),
        "",
        *_headline(s),
        "## Table 4: success and aggregate latency",
        "",
        "| mode | success rate | versus MIN-LAT | versus worst case | paper |",
        "|---|---|---|---|---|",
    ]
    paper = PAPER.get(name)
    ptxt = (
        f"{_pct(paper['success_rate'])} / {_pct(paper['vs_min_lat'])} / {_pct(paper['vs_worst'])}"
        if paper
        else "–"
    )
    L.append(
        f"| {name} | {_pct(s['success_rate'])} ({s['success']}/{s['batches']}) | "
        f"{_pct(s['vs_min_lat'])} | {_pct(s['vs_worst'])} | {ptxt} |"
    )
    L += [
        "",
        f"Aggregate latency {s['latency_s']:.0f} s; MIN-LAT {s['min_lat_s']:.0f} s; "
        f"worst case {s['worst_s']:.0f} s (paper: 10770, 10022 and 35940 s for 162 batches). "
        f"Fell back to the edge: {s['fell_back']} batches.",
        "",
        *actions_line(s.get("actions")),
        "## Choices",
        "",
        "| runtime | chosen | ran on | fastest in truth |",
        "|---|---|---|---|",
    ]
    for rt in sorted(set(s["choices"]) | set(s["ran_on"]) | set(s["best"])):
        L.append(
            f"| {rt} | {s['choices'].get(rt, 0)} | {s['ran_on'].get(rt, 0)} | "
            f"{s['best'].get(rt, 0)} |"
        )
    L += ["", "Wrong choices by batch size:", "", "| images | batches | wrong |", "|---|---|---|"]
    for b, v in s["wrong_by_size"].items():
        L.append(f"| {b} | {v['batches']} | {v['wrong']} |")
    if "cloud" in s:
        c = s["cloud"]
        L += [
            "",
            "## Table 5: cloud time saved and wasted by the duplicator",
            "",
            f"Cloud runtime {c['runtime']} ({c['gpus']} GPU(s); times × GPUs). "
            f"Kept the cloud at pod-ready for {c['kept_cloud']} batches.",
            "",
            "| STOIC choice | cloud savings (+) or loss (−) |",
            "|---|---|",
            f"| edge | +{c['saved_s']:.0f} s |",
            f"| {c['runtime']} | −{c['wasted_s']:.0f} s |",
            "",
            "Paper: edge +1393 s; GPU1 −440 s; GPU2 −257 s.",
        ]
    L += [
        "",
        "## Table 3: percentage MAE of the predictions (first / second half)",
        "",
        "| runtime | T_d | T_p | T_s |",
        "|---|---|---|---|",
    ]
    for rt, v in s["pmae"].items():
        cells = [
            f"{_pct(v['first'][k])} / {_pct(v['second'][k])}"
            for k in ("deployment", "processing", "total")
        ]
        L.append(f"| {rt} | " + " | ".join(cells) + " |")
    L += ["", "Paper (GPU1, 50 runs): T_d 42.7% / 29.2%, T_p 11.2% / 5.3%, T_s 15.8% / 9.2%."]
    if plots:
        L += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    elif isinstance(meta.get("plots"), str):
        L += ["", "## Plots", "", meta["plots"]]
    t = meta["timings"]
    L += [
        "",
        "## Where the wall time went",
        "",
        f"estimate + decide (predictor and policy, CPU): {t['decide_s']:.2f} s; "
        f"running batches (requester, backend, event loop, including the former): "
        f"{t['run_s']:.2f} s; probe shortcut: {t['probes_s']:.2f} s.",
        "",
    ]
    return "\n".join(L)


def _plots(result: ReplayResult, scored: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = scored["batches"]
    if not rows:
        return []
    focus = result.cloud or "gpu1"
    if focus not in result.env.runtimes:
        focus = next(n for n, r in result.env.runtimes.items() if not r.is_edge)
    names = []
    pts = [
        (r["at_s"] / 3600, r["estimates"][focus]["total_s"], r["truth"][focus]["total_s"])
        for r in rows
        if focus in r["estimates"]
    ]
    if pts:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.plot([p[0] for p in pts], [p[2] for p in pts], ".-", lw=0.8, label="actual T_s")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ".-", lw=0.8, label="predicted T_s")
        ax.set_xlabel("simulated hour")
        ax.set_ylabel("seconds")
        ax.set_title(f"Predicted vs actual total latency on {focus} (cf. paper Fig. 3)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "predicted_vs_actual.png", dpi=80)
        plt.close(fig)
        names.append("predicted_vs_actual.png")
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    tr = [r["truth"][focus] for r in rows]
    for ax, key, label in zip(
        axes, ("processing_s", "deployment_s", "transfer_s"), ("T_p", "T_d", "T_t"), strict=True
    ):
        vals = [t[key] for t in tr if t[key] is not None]
        ax.hist(vals, bins=30, color={"T_d": "tab:red"}.get(label, "tab:blue"))
        ax.set_title(f"{focus} {label}")
        ax.set_xlabel("seconds")
    fig.suptitle("Components of T_s (cf. paper Fig. 6)")
    fig.tight_layout()
    fig.savefig(out_dir / "components.png", dpi=80)
    plt.close(fig)
    names.append("components.png")
    by = scored["summary"]["wrong_by_size"]
    fig, ax = plt.subplots(figsize=(6, 3))
    labels = list(by)
    rates = [1 - by[b]["wrong"] / by[b]["batches"] for b in labels]
    ax.bar(labels, rates)
    for i, b in enumerate(labels):
        ax.text(i, rates[i], f"n={by[b]['batches']}", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("images per batch")
    ax.set_ylabel("success rate")
    ax.set_title("Success by batch size")
    fig.tight_layout()
    fig.savefig(out_dir / "success_by_size.png", dpi=80)
    plt.close(fig)
    names.append("success_by_size.png")
    return names
