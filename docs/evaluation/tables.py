"""Print the evidence tables of docs/evaluation/README.md and docs/evaluation/share/ from a
sweep's JSON (``stoic replay sweep``), so that the figures quoted there can be checked
and regenerated:

    .venv/bin/python docs/evaluation/tables.py docs/evaluation/sweep/sweep.json
    .venv/bin/python docs/evaluation/tables.py docs/evaluation/share/sweep.json --pareto

Means over seeds, in % of MIN-LAT unless said otherwise. The sweep's tables are two:
every mode per environment, then the headline modes against the reference of their own
action space with the gap to it (``learning_gaps`` of the JSON: mean ± standard error
over seeds, and in brackets the seeds that put the standard error under 1 point).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SINGLE = ("selector", "selector-mean", "duplicator", "duplicator-cpu", "duplicator-gpu1",
          "duplicator-gpu2", "edge-only")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--pareto", action="store_true", help="the share:GAIN trade-off table")
    args = ap.parse_args()
    doc = json.loads(args.sweep.read_text())
    rows = {(r["env"], r["mode"]): r["metrics"] for r in doc["table"]}
    envs = list(dict.fromkeys(r["env"] for r in doc["table"]))
    modes = doc["meta"]["modes"]

    def g(env: str, mode: str, key: str) -> float | None:
        m = rows.get((env, mode))
        return None if m is None or not m[key]["n"] else float(m[key]["mean"])

    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.1f}"

    if args.pareto:
        gains = [m for m in modes if m.startswith("share:")]
        print("| environment | " + " | ".join(f"{m}: % MIN-LAT / cloud h" for m in gains) + " |")
        print("|---" * (len(gains) + 1) + "|")
        for e in envs:
            cells = [f"{pct(g(e, m, 'vs_min_lat'))} / {(g(e, m, 'cloud_used_s') or 0) / 3600:.1f}"
                     for m in gains]  # fmt: skip
            print(f"| {e} | " + " | ".join(cells) + " |")
        return

    print(
        "| environment | selector (expected) | selector-mean | Δ | informed "
        "| duplicator (adaptive) | duplicator-gpu1 | cloud h: adaptive / gpu1 | share "
        "| share / fluid | best other |"
    )
    print("|---" * 11 + "|")
    for e in envs:
        present = [m for m in SINGLE if m in modes and g(e, m, "vs_min_lat") is not None]
        best = min(present, key=lambda m: g(e, m, "vs_min_lat") or 0.0)
        sel, mean = g(e, "selector", "vs_min_lat"), g(e, "selector-mean", "vs_min_lat")
        delta = "—" if sel is None or mean is None else f"{100 * (sel - mean):+.1f}"
        used: Any = [g(e, m, "cloud_used_s") for m in ("duplicator", "duplicator-gpu1")]
        hours = " / ".join("—" if u is None else f"{u / 3600:.1f}" for u in used)
        print(
            f"| {e} | {pct(sel)} | {pct(mean)} | {delta} | {pct(g(e, 'informed', 'vs_min_lat'))}"
            f" | {pct(g(e, 'duplicator', 'vs_min_lat'))}"
            f" | {pct(g(e, 'duplicator-gpu1', 'vs_min_lat'))} | {hours}"
            f" | {pct(g(e, 'share', 'vs_min_lat'))} | {pct(g(e, 'share', 'vs_fluid'))}"
            f" | {best} {pct(g(e, best, 'vs_min_lat'))} |"
        )

    print()
    gaps = {(g["env"], g["mode"]): g for g in doc.get("learning_gaps", [])}

    def gap(env: str, mode: str) -> str:
        x = gaps.get((env, mode))
        if x is None:
            return "—"
        se = "" if x["se"] is None else f" ± {100 * x['se']:.1f}"
        k = x["seeds_for_se_below_target"]
        return f"{100 * x['mean']:+.1f}{se}" + ("" if k is None else f" ({k})")

    heads = ("selector", "duplicator", "share")
    print(
        "| environment | "
        + " | ".join(f"{m}: % MIN-LAT / % of ref." for m in heads)
        + " | learning gap: selector | learning gap: duplicator | share − fluid bound |"
    )
    print("|---" * (len(heads) + 4) + "|")
    for e in envs:
        cells = [f"{pct(g(e, m, 'vs_min_lat'))} / {pct(g(e, m, 'vs_class'))}" for m in heads]
        print(f"| {e} | " + " | ".join(cells) + " | " + " | ".join(gap(e, m) for m in heads) + " |")


if __name__ == "__main__":
    main()
