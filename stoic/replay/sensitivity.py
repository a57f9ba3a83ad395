"""How much share's lead rests on what the simulator used to leave out (issue 22 §4).

Each environment is replayed as specified and once per *scenario*: the same spec with
one cost the simulator can now price switched on for every runtime. The scenarios:

* ``overhead 0.5 s`` / ``overhead 2 s`` — every later call on a warm instance pays 0.5 s
  or 2 s (``processing.call_overhead_s``; stoic's own function pays 4 ms);
* ``model load per call`` — every call pays the paper's fixed cost again
  (``processing.loads_model_per_call``: STOIC's function loads its model each time);
* ``correlation 0.5`` — one congestion factor shared by the pods of a batch
  (``cloud.correlation``);
* ``fill`` — the chunk-size throughput loss measured on stoic's function
  (``processing.chunk_fill_penalty`` 0.17 over the first 64 images of a call);
* ``stall`` — outages stop every upload and deployment that meets them
  (``uplink.outage_model: stall``; the same as specified where a spec has no outage).

The cells are an ordinary :mod:`stoic.replay.sweep` (one variant spec file per
environment and scenario, written beside the report), so every figure of the sweep is
there too; :func:`sensitivity_table` pivots the headline ones: mean latency and its
change against the spec as written, % of MIN-LAT and % of the in-class reference.
Only share chunks its calls, so the call-cost scenarios move share alone; the
selector and the duplicator are there for reference (correlation and stalls move them).

    .venv/bin/python docs/evaluation/sensitivity.py --seeds 5 --days 3 --out DIR
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from stoic.backends.simulated import FUNCTION_FILL_IMAGES, FUNCTION_FILL_PENALTY
from stoic.replay.sweep import EnvEntry, SweepConfig, SweepResult, run_sweep, table

Variant = Callable[[dict[str, Any]], None]
"""Changes a raw spec (the YAML's mapping) in place."""


def _every_runtime(**fields: Any) -> Variant:
    def change(raw: dict[str, Any]) -> None:
        for runtime in raw["runtimes"].values():
            runtime["processing"].update(fields)

    return change


def _correlation(rho: float) -> Variant:
    def change(raw: dict[str, Any]) -> None:
        raw["cloud"] = {**raw.get("cloud", {}), "correlation": rho}

    return change


def _stall(raw: dict[str, Any]) -> None:
    raw["uplink"]["outage_model"] = "stall"


def _as_specified(raw: dict[str, Any]) -> None:
    return None


BASE = "as specified"
SCENARIOS: dict[str, Variant] = {
    BASE: _as_specified,
    "overhead 0.5 s": _every_runtime(call_overhead_s=0.5),
    "overhead 2 s": _every_runtime(call_overhead_s=2.0),
    "model load per call": _every_runtime(loads_model_per_call=True),
    "correlation 0.5": _correlation(0.5),
    "fill": _every_runtime(
        chunk_fill_penalty=FUNCTION_FILL_PENALTY, chunk_fill_images=FUNCTION_FILL_IMAGES
    ),
    "stall": _stall,
}
DEFAULT_MODES = ("share", "selector", "duplicator")
SEP = "@"


def write_variants(
    envs: Sequence[Path], out_dir: Path, scenarios: Mapping[str, Variant] = SCENARIOS
) -> list[EnvEntry]:
    """One spec file per environment and scenario in ``out_dir`` (named
    ``ENV@SCENARIO``), in order: every scenario of the first environment, then the next."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for path in envs:
        text = path.read_text(encoding="utf-8")
        for name, change in scenarios.items():
            raw = yaml.safe_load(text)
            change(raw)
            slug = name.replace(" ", "-").replace(".", "_")
            f = out_dir / f"{path.stem}{SEP}{slug}.yaml"
            header = f"# {path} with the sensitivity scenario '{name}' (stoic.replay.sensitivity)\n"
            f.write_text(header + yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
            entries.append(EnvEntry(f"{path.stem}{SEP}{name}", f))
    return entries


def run_sensitivity(
    envs: Sequence[Path],
    out_dir: Path,
    *,
    modes: Sequence[str] = DEFAULT_MODES,
    seeds: Sequence[int] = (0,),
    days: int = 3,
    batches: int | None = None,
    warmup_periods: int | None = None,
    jobs: int | None = 1,
    scenarios: Mapping[str, Variant] = SCENARIOS,
) -> SweepResult:
    """Replay every environment × scenario × mode × seed (variant specs in
    ``out_dir/envs``; ``batches`` per day and ``warmup_periods`` as the sweep's)."""
    entries = write_variants(envs, out_dir / "envs", scenarios)
    cfg = SweepConfig(
        envs=entries,
        modes=tuple(modes),
        seeds=tuple(seeds),
        days=days,
        batches=batches,
        warmup_periods=warmup_periods,
        jobs=jobs,
    )
    return run_sweep(cfg)


def _pivot(result: SweepResult) -> dict[tuple[str, str, str], dict[str, float | None]]:
    """(environment, mode, scenario) → the mean over seeds of each metric."""
    out: dict[tuple[str, str, str], dict[str, float | None]] = {}
    for row in table(result):
        env, scenario = row["env"].split(SEP, 1)
        out[(env, row["mode"], scenario)] = {k: v["mean"] for k, v in row["metrics"].items()}
    return out


def _pct(v: float | None) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:.1f}"


def sensitivity_table(result: SweepResult) -> str:
    """The Markdown tables: per environment and mode, each scenario's mean latency (and
    its change against the spec as written), % of MIN-LAT and % of the in-class
    reference (share: the fluid bound, which charges no later call's overhead)."""
    cells = _pivot(result)
    envs = list(dict.fromkeys(k[0] for k in cells))
    modes = list(dict.fromkeys(k[1] for k in cells))
    scenarios = list(dict.fromkeys(k[2] for k in cells))
    seeds = len(result.config.seeds)
    head = "| environment | mode | " + " | ".join(scenarios) + " |"
    rule = "|---|---|" + "---|" * len(scenarios)
    L = [
        f"Means over {seeds} seed(s) × {result.config.days} day(s) × "
        f"{result.config.batches or 162} batches; "
        f"{len(result.cells)} replays, {len(result.failed)} failed.",
        "",
        "### Mean latency (s) and its change against the spec as written",
        "",
        head,
        rule,
    ]
    for env in envs:
        for mode in modes:
            base = cells.get((env, mode, BASE), {}).get("mean_latency_s")
            row = []
            for sc in scenarios:
                v = cells.get((env, mode, sc), {}).get("mean_latency_s")
                if v is None:
                    row.append("–")
                elif sc == BASE or not base:
                    row.append(f"{v:,.1f}")
                else:
                    row.append(f"{v:,.1f} ({100 * (v / base - 1):+.1f} %)")
            L.append(f"| {env} | {mode} | " + " | ".join(row) + " |")
    for key, title in (
        ("vs_min_lat", "% of MIN-LAT"),
        ("vs_class", "% of the in-class reference"),
    ):
        L += ["", f"### {title}", "", head, rule]
        for env in envs:
            for mode in modes:
                row = [_pct(cells.get((env, mode, sc), {}).get(key)) for sc in scenarios]
                L.append(f"| {env} | {mode} | " + " | ".join(row) + " |")
    errors = [c for c in result.cells if c.error]
    if errors:
        L += ["", "### Errors", ""]
        L += [f"* `{c.cell.env}` {c.cell.mode} seed {c.cell.seed}: {c.error}" for c in errors]
    L.append("")
    return "\n".join(L)


def write_sensitivity(result: SweepResult, out_dir: Path, *, command: str = "") -> str:
    """``sensitivity.md`` (the tables) and ``sensitivity.json`` (every mean) in
    ``out_dir``; returns the Markdown."""
    text = "# Share's sensitivity to the costs the simulator prices\n\n"
    if command:
        text += f"Made with:\n\n```\n{command}\n```\n\n"
    text += 'Scenarios: stoic.replay.sensitivity (docs/replay.md, "Sensitivity").\n\n'
    text += sensitivity_table(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sensitivity.md").write_text(text, encoding="utf-8")
    doc = {
        "command": command,
        "seeds": list(result.config.seeds),
        "days": result.config.days,
        "cells": [
            {"env": e, "mode": m, "scenario": s, "means": v}
            for (e, m, s), v in _pivot(result).items()
        ],
    }
    (out_dir / "sensitivity.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return text
