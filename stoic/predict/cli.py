"""``stoic evaluate deployment``: the paper's deployment-time analysis (Table 2, Fig. 2).

For each runtime column of a CSV and each method (AutoReg, mean sliding window, median
sliding window), the MAE of one-step-ahead predictions for every window size, the
optimal window and its MAE. The scoring protocol is the live calibrator's
(:mod:`stoic.predict.deployment`), applied to the whole series.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from stoic.errors import InputError
from stoic.extras import installed, require

if TYPE_CHECKING:
    from stoic.predict.deployment import FloatArray, Method

evaluate_app = typer.Typer(
    help="Offline analyses of the predictor (paper section 3.4).", no_args_is_help=True
)

LABELS = {"autoreg": "AutoReg", "mean": "Avg. SW", "median": "Med. SW"}
SHOWN_WINDOWS = (1, 2, 3, 5, 10, 15, 20, 30, 50, 75, 100, 200, 500)


def _num(v: float) -> float | None:
    return None if math.isnan(v) else round(float(v), 6)


@evaluate_app.command("deployment")
def deployment(
    file: Path = typer.Argument(..., help="CSV: header 'epoch,cpu,gpu1,...', seconds per cell."),
    max_window: int = typer.Option(100, "--max-window", min=1, max=10_000, help="Largest window."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Write MAE vs window size (PNG; needs the analysis extra)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
    method: list[str] | None = typer.Option(
        None,
        "--method",
        help="autoreg, mean or median (repeat for several). Default: all three, or the two "
        "sliding windows where the analysis extra (statsmodels) is not installed.",
    ),
) -> None:
    """Optimal sliding-window size and MAE per runtime and method."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from stoic.predict.csvseries import read_deployment_csv
    from stoic.predict.deployment import best_window, evaluate_series

    if plot is not None:
        require("analysis", "stoic evaluate deployment --plot", "matplotlib")
    methods = _methods(method)
    series = read_deployment_csv(file)
    results = {rt: evaluate_series(x, max_window, methods) for rt, x in series.items()}

    summary: dict[str, dict[str, dict[str, object]]] = {}
    for rt, per_method in results.items():
        summary[rt] = {}
        for m in methods:
            mae = per_method[m]
            w = best_window(mae)
            summary[rt][m] = {
                "optimal_window": w,
                "min_mae_s": _num(float(mae[w - 1])) if w else None,
                "mae_s": [_num(float(v)) for v in mae],
            }

    if plot is not None:
        _plot(results, plot, methods)

    if as_json:
        doc = {
            "file": str(file),
            "max_window": max_window,
            "samples": {rt: int(x.size) for rt, x in series.items()},
            "runtimes": summary,
        }
        typer.echo(json.dumps(doc, indent=2))
        return

    console = Console()
    table = Table(title=f"Deployment-time prediction: {file.name}")
    for col in ("Modeling", "Runtime", "Samples", "Optimal window", "Minimum MAE (s)"):
        table.add_column(col, justify="left" if col in ("Modeling", "Runtime") else "right")
    for m in methods:
        for rt in results:
            s = summary[rt][m]
            mae_v = s["min_mae_s"]
            table.add_row(
                LABELS[m],
                rt,
                str(series[rt].size),
                str(s["optimal_window"] or "-"),
                f"{mae_v:.3f}" if isinstance(mae_v, float) else "-",
            )
    console.print(table)

    for rt in results:
        best = {best_window(results[rt][m]) for m in methods}
        shown = sorted({w for w in SHOWN_WINDOWS if w <= max_window} | (best - {0}))
        detail = Table(title=f"{rt}: MAE (s) by window", caption="* optimal; every size: --json")
        detail.add_column("Window", justify="right")
        for m in methods:
            detail.add_column(LABELS[m], justify="right")
        for w in shown:
            cells = []
            for m in methods:
                v = results[rt][m][w - 1]
                mark = "*" if w == best_window(results[rt][m]) else " "
                cells.append("-" if np.isnan(v) else f"{v:.3f}{mark}")
            detail.add_row(str(w), *cells)
        console.print(detail)
    if plot is not None:
        console.print(f"plot written to {plot}")


def _methods(chosen: list[str] | None) -> tuple[Method, ...]:
    """The methods to score, in the paper's order. Explicit AutoReg without statsmodels
    is a one-line error; by default it is left out with a note on stderr."""
    from stoic.predict.deployment import METHODS

    if chosen:
        unknown = sorted(set(chosen) - set(METHODS))
        if unknown:
            raise InputError(f"--method: unknown {unknown}; choose from {list(METHODS)}")
        if "autoreg" in chosen:
            require("analysis", "stoic evaluate deployment --method autoreg", "statsmodels")
        return tuple(m for m in METHODS if m in chosen)
    if installed("analysis", "statsmodels"):
        return METHODS
    typer.echo(
        "note: AutoReg left out (it needs statsmodels: pip install 'stoic[analysis]')",
        err=True,
    )
    return tuple(m for m in METHODS if m != "autoreg")


def _plot(
    results: Mapping[str, Mapping[Method, FloatArray]], path: Path, methods: tuple[Method, ...]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runtimes = list(results)
    fig, axes = plt.subplots(
        len(runtimes), len(methods), figsize=(4 * len(methods), 2.6 * len(runtimes)), squeeze=False
    )
    for i, rt in enumerate(runtimes):
        for j, m in enumerate(methods):
            ax = axes[i][j]
            mae = np.asarray(results[rt][m], dtype=float)
            w = np.arange(1, mae.size + 1)
            ax.plot(w, mae, lw=1.2)
            if not np.all(np.isnan(mae)):
                best = int(np.nanargmin(mae))
                ax.plot(w[best], mae[best], "o", color="C3")
                ax.annotate(
                    f"w={best + 1}",
                    (w[best], mae[best]),
                    textcoords="offset points",
                    xytext=(4, 6),
                    fontsize=8,
                )
            ax.set_title(f"{rt}: {LABELS[m]}", fontsize=10)
            ax.set_xlabel("window size")
            ax.set_ylabel("MAE (s)")
            ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
