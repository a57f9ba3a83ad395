"""``stoic evaluate predictor``: the predictor one step ahead, on measured batches
(``--csv``, :mod:`stoic.predict.onestep`) or on replays of environments (``--env``,
:mod:`stoic.replay.onestep`).

The command lives here rather than beside ``stoic evaluate deployment`` because a replay
is a layer above the predictor; ``stoic.cli`` adds it to the ``evaluate`` group.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import typer

from stoic.errors import InputError
from stoic.extras import require

Figures = dict[str, dict[str, dict[str, float | int | None]]]
SHORT = {"transfer": "T_t", "deployment": "T_d", "processing": "T_p", "total": "T_s"}


def evaluate_predictor(
    csv_file: Path | None = typer.Option(
        None,
        "--csv",
        help="Measured batches in time order: epoch, image_num, runtime, act_transfer, "
        "act_deploy, act_proc, act_total, optional pred_* (the STOIC authors' format).",
    ),
    envs: list[Path] | None = typer.Option(
        None,
        "--env",
        help="Environment spec(s) or directories of *.yaml to replay in selector mode "
        "instead (repeat the option): one row per environment.",
    ),
    days: int = typer.Option(3, "--days", min=1, help="--env: days of 162 batches."),
    seed: int = typer.Option(0, "--seed", help="--env: the replay's seed."),
    skip: int = typer.Option(
        3, "--skip", min=0, help="Batches per runtime observed, not scored (prior samples)."
    ),
    cold_first: float | None = typer.Option(
        None,
        "--cold-first",
        min=0,
        help="--csv: each cloud runtime's first deployment took this many seconds instead "
        "(a what-if cold start, an image pull).",
    ),
    config: Path | None = typer.Option(
        None, "--config", help="Settings file (runtimes, predictor.*)."
    ),
    plot: Path | None = typer.Option(
        None,
        "--plot",
        help="Write predicted against actual over time (PNG; analysis extra; --csv or one env).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """One step ahead through the daemon's own predictor: ask, then observe, each batch;
    MAE and interval coverage per runtime and component (docs/predictor.md)."""
    from stoic.predict.onestep import plot_steps, read_components_csv, replay, score
    from stoic.predict.predictor import Predictor
    from stoic.settings import load_settings

    if (csv_file is None) == (not envs):
        raise InputError("stoic evaluate predictor: give one of --csv FILE and --env SPEC")
    if cold_first is not None and csv_file is None:
        raise InputError("--cold-first: only with --csv")
    if plot is not None:
        require("analysis", "stoic evaluate predictor --plot", "matplotlib")
    settings = load_settings(config)
    if csv_file is not None:
        batches = read_components_csv(csv_file)
        steps = replay(
            Predictor.from_settings(settings), batches, skip=skip, cold_first_s=cold_first
        )
        figures = score(steps)
        if plot is not None:
            plot_steps(steps, plot)
        if as_json:
            doc = {
                "file": str(csv_file),
                "skip": skip,
                "cold_first_s": cold_first,
                "runtimes": figures,
            }
            typer.echo(json.dumps(doc, indent=2))
        else:
            _runtime_table(figures, f"{csv_file.name} (first {skip} per runtime not scored)")
        _plotted(plot, as_json)
        return

    from stoic.replay.onestep import env_names, env_steps

    named = env_names(envs or [])
    if plot is not None and len(named) != 1:
        raise InputError(f"--plot: one environment at a time, got {len(named)}")
    _quiet()
    per_env: dict[str, Figures] = {}
    for name, path in named:
        steps = env_steps(path, days=days, seed=seed, skip=skip, settings=settings)
        per_env[name] = score(steps)
        if plot is not None:
            plot_steps(steps, plot)
    if as_json:
        doc = {"days": days, "seed": seed, "skip": skip, "envs": per_env}
        typer.echo(json.dumps(doc, indent=2))
    elif len(per_env) == 1:
        name = next(iter(per_env))
        _runtime_table(per_env[name], f"{name}, {days} days, seed {seed}, selector")
    else:
        _env_table(per_env, f"{days} days, seed {seed}, selector")
    _plotted(plot, as_json)


def _quiet() -> None:
    import logging

    logging.getLogger("stoic").setLevel(logging.ERROR)


def _plotted(plot: Path | None, as_json: bool) -> None:
    if plot is not None and not as_json:
        typer.echo(f"plot written to {plot}")


def _runtime_table(figures: Figures, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from stoic.predict.onestep import COMPONENTS

    table = Table(title=f"One step ahead: {title}")
    for col in ("Runtime", "Component", "n", "MAE (s)", "theirs (s)", "50 % cover", "90 % cover"):
        table.add_column(col, justify="left" if col in ("Runtime", "Component") else "right")
    for rt, per in figures.items():
        for c in COMPONENTS:
            f = per[c]
            if not f["n"]:
                continue
            table.add_row(
                rt,
                c,
                str(f["n"]),
                _fmt(f["mae_s"], "{:.2f}"),
                _fmt(f["reference_mae_s"], "{:.2f}"),
                _fmt(f["coverage_50"], "{:.0%}"),
                _fmt(f["coverage_90"], "{:.0%}"),
            )
    Console().print(table)


def _env_table(per_env: Mapping[str, Figures], title: str) -> None:
    """One row per environment, all runtimes together: how many batches were scored
    (cloud ones for T_t and T_d), and each component's 90 % and 50 % coverage."""
    from rich.console import Console
    from rich.table import Table

    from stoic.predict.onestep import COMPONENTS

    table = Table(title=f"One step ahead: {title}", caption="90 % / 50 % interval coverage")
    table.add_column("Environment")
    table.add_column("batches", justify="right")
    table.add_column("cloud", justify="right")
    for c in COMPONENTS:
        table.add_column(SHORT[c], justify="right")
    for name, figures in per_env.items():
        every = figures.get("all", {})
        counts = [str(every[c]["n"]) if c in every else "0" for c in ("total", "deployment")]
        cells = []
        for c in COMPONENTS:
            f = every.get(c)
            if not f or not f["n"]:
                cells.append("-")
                continue
            cells.append(f"{_fmt(f['coverage_90'], '{:.0%}')} / {_fmt(f['coverage_50'], '{:.0%}')}")
        table.add_row(name, *counts, *cells)
    Console().print(table)


def _fmt(v: float | int | None, pattern: str) -> str:
    return "-" if v is None else pattern.format(v)
