"""The goodness-of-fit report of ``stoic env fit --report DIR``.

Writes ``gof.json`` (every comparison's figures, the fitted values and their
provenance), ``gof.md`` (the same as tables, for a reader) and one QQ plot per
component (``qq_T_d.png``, ...: a panel per runtime, measured quantiles against the
fitted spec's and the prior's). Plots need the ``analysis`` extra (matplotlib, Agg
backend); without it the report says they were not drawn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from stoic.envfit.fit import SpecFit
from stoic.envfit.gof import Check, summary_row
from stoic.extras import installed

PLOTS_SKIPPED = "QQ plots not drawn: matplotlib is not installed (pip install 'stoic[analysis]')."


def write_report(
    out: Path,
    fit: SpecFit,
    fitted: list[Check],
    prior: list[Check],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Write the report into ``out`` (created); returns the JSON document."""
    out.mkdir(parents=True, exist_ok=True)
    by_key = {(c.component, c.runtime, c.label): c for c in prior}
    rows = [summary_row(c, by_key.get((c.component, c.runtime, c.label))) for c in fitted]
    plots: list[str] | str = PLOTS_SKIPPED
    if installed("analysis", "matplotlib"):
        plots = _plots(out, fitted, by_key)
    doc = {
        "meta": {**meta, "plots": plots},
        "checks": rows,
        "values": {
            k: {"value": v.value, "fitted": v.fitted, "why": v.why} for k, v in fit.values.items()
        },
        "kept": fit.kept,
        "evidence": fit.evidence,
    }
    (out / "gof.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "gof.md").write_text(_markdown(doc))
    return doc


def _markdown(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    L = [
        f"# Goodness of fit: {meta['name']}",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Source: {meta['source']}; period: {meta['period']}; prior: {meta['prior']}.",
        "",
        "Each measured component against draws of the fitted spec (and of the prior) "
        "made by the simulator at the measurements' own instants and sizes: two-sample "
        "Kolmogorov–Smirnov distance D and its p-value (a p-value under 0.05 rejects the "
        "spec at the 5 % level).",
        "",
        "| component | runtime | data | n | D (fit) | p (fit) | D (prior) | p (prior) "
        "| median data / fit / prior | p90÷median data / fit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["checks"]:
        L.append(
            f"| {r['component']} | {r['runtime']} | {r['data']} | {r['n']} | {r['ks']:.3f} "
            f"| {r['p_value']:.3f} | {r.get('ks_prior', float('nan')):.3f} "
            f"| {r.get('p_value_prior', float('nan')):.3f} "
            f"| {r['median_data']:g} / {r['median_fit']:g} / {r.get('median_prior', '–')} "
            f"| {r['p90_over_median_data']} / {r['p90_over_median_fit']} |"
        )
    L += ["", "## Parameters", "", "| parameter | value | source |", "|---|---|---|"]
    for k, v in doc["values"].items():
        L.append(f"| `{k}` | {v['value']:g} | {v['why']} |")
    if doc["kept"]:
        L += ["", "Kept from the prior:", "", *(f"* {k}" for k in doc["kept"])]
    if doc["evidence"]:
        L += ["", "Evidence:", "", *(f"* {k}: {v}" for k, v in doc["evidence"].items())]
    plots = meta["plots"]
    L += ["", "## QQ plots", ""]
    if isinstance(plots, str):
        L.append(plots)
    else:
        L += [f"![{p}]({p})" for p in plots]
    return "\n".join(L) + "\n"


def _plots(out: Path, fitted: list[Check], prior: dict[tuple[str, str, str], Check]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for component in dict.fromkeys(c.component for c in fitted):
        group = [c for c in fitted if c.component == component]
        cols = min(len(group), 3)
        rows = -(-len(group) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
        for ax, c in zip(axes.flat, group, strict=False):
            q = (np.arange(c.data.size) + 0.5) / c.data.size
            data = np.sort(c.data)
            ax.plot(np.quantile(c.draws, q), data, "o", ms=3, label="fitted spec")
            p = prior.get((c.component, c.runtime, c.label))
            if p is not None:
                ax.plot(np.quantile(p.draws, q), data, "x", ms=3, alpha=0.6, label="prior")
            drawn = [np.quantile(c.draws, q)] + ([] if p is None else [np.quantile(p.draws, q)])
            lo = min(float(data.min()), *(float(d.min()) for d in drawn))
            hi = max(float(data.max()), *(float(d.max()) for d in drawn))
            ax.plot([lo, hi], [lo, hi], "k-", lw=0.6)
            if lo > 0 and hi / lo > 20:
                ax.set_xscale("log")
                ax.set_yscale("log")
            ks, pv = c.ks
            title = f"{c.runtime} {component} ({c.label})"
            ax.set_title(f"{title}\nD = {ks:.3f}, p = {pv:.3f}, n = {c.data.size}", fontsize=9)
            ax.set_xlabel("spec quantile (s)")
            ax.set_ylabel("measured (s)")
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(group) :]:
            ax.axis("off")
        fig.tight_layout()
        name = f"qq_{component}.png"
        fig.savefig(out / name, dpi=80)
        plt.close(fig)
        names.append(name)
    return names
