"""``stoic replay`` (and ``replay sweep``), ``stoic workload sample``, ``stoic env``.

``stoic replay`` is a command group whose callback is the single replay (so
``stoic replay --env ... --report DIR`` works as it always did) and whose sub-command
``sweep`` runs many (:mod:`stoic.replay.sweep`).

Heavy modules (numpy through the predictor and the workload, matplotlib, looptime) are
imported inside the commands so ``stoic --help`` stays fast. Bad input raises a
:class:`~stoic.errors.StoicError` subclass that ``stoic.cli.main`` prints as one line.
"""

from __future__ import annotations

import csv
import io
import logging
import shlex
import sys
from pathlib import Path

import typer

from stoic.errors import InputError

workload_app = typer.Typer(help="The camera-trap workload generator (paper §3.5).")
replay_app = typer.Typer(
    help="Replay a workload against a simulated environment and score it (paper §4).",
    no_args_is_help=False,
)
env_app = typer.Typer(
    help="Simulated environment specs: draw random ones, check files, fit one to measurements."
)

ENV_DEFAULT = Path(__file__).resolve().parent / "profiles" / "nautilus-2020.yaml"
"""The default environment spec, shipped inside the package (``workload/`` links to it)."""


@workload_app.command("sample")
def sample(
    counts: Path | None = typer.Option(None, "--counts", help="hourly counts, one per line"),
    profile: Path | None = typer.Option(None, "--profile", help="profile YAML"),
    hours: int | None = typer.Option(None, "--hours", help="simulate this many hours"),
    batches: int | None = typer.Option(None, "--batches", help="this many batches per day"),
    days: int = typer.Option(1, "--days", help="days (with --batches)"),
    seed: int = typer.Option(0, "--seed"),
    out: Path | None = typer.Option(None, "--out", help="write CSV here instead of stdout"),
) -> None:
    """Print (or write) batches as CSV: index, time_s, hour, images, bytes."""
    from stoic.replay.workload import DEFAULT_PROFILE, WorkloadProfile, generate

    prof = WorkloadProfile.load(profile or DEFAULT_PROFILE)
    if counts is not None:
        prof = prof.with_counts(counts)
    if hours is None and batches is None:
        hours = 24
    rows = generate(prof, hours=hours, batches=batches, days=days, seed=seed)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "time_s", "hour", "images", "bytes"])
    for b in rows:
        w.writerow([b.index, f"{b.at_s:.1f}", b.hour, b.images, b.n_bytes])
    if out is None:
        sys.stdout.write(buf.getvalue())
    else:
        out.write_text(buf.getvalue())
        typer.echo(f"wrote {len(rows)} batches to {out}", err=True)


@replay_app.callback(invoke_without_command=True)
def replay(
    ctx: typer.Context,
    env: Path = typer.Option(ENV_DEFAULT, "--env", help="environment spec YAML"),
    mode: str = typer.Option(
        "selector",
        "--mode",
        help="selector, duplicator (with --gpu), duplicator-gpu1, duplicator-gpu2, "
        "share, share:GAIN, selector-mean, edge-only, gpu1-only, threshold, oracle, informed",
    ),
    gpu: str | None = typer.Option(None, "--gpu", help="cloud runtime of --mode duplicator"),
    hours: int | None = typer.Option(None, "--hours", help="hourly arrivals for H hours"),
    batches: int | None = typer.Option(None, "--batches", help="N batches per day (162)"),
    days: int = typer.Option(1, "--days", help="days (with --batches)"),
    counts: Path | None = typer.Option(None, "--counts", help="hourly count file"),
    seed: int = typer.Option(0, "--seed"),
    probes: str = typer.Option("auto", "--probes", help="auto, full or window"),
    threshold: int = typer.Option(35, "--threshold-images", help="threshold mode cut-over"),
    report: Path | None = typer.Option(None, "--report", help="directory for the report"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Replay a workload against a simulated environment and score it (paper §4).

    `stoic replay sweep --help`: many environments, modes and seeds at once.
    """
    if ctx.invoked_subcommand is not None:
        return
    if report is None:
        ctx.fail("Missing option '--report'.")
    from rich.progress import Progress

    from stoic.replay.report import write_report
    from stoic.replay.runner import ReplayConfig, parse_mode, run_replay

    parse_mode(mode, gpu)  # fail before any work
    logging.getLogger("stoic").setLevel(logging.ERROR)
    cfg = ReplayConfig(
        env_path=env,
        mode=mode,
        gpu=gpu,
        hours=hours,
        batches=batches,
        days=days,
        counts=counts,
        seed=seed,
        probes=probes,
        threshold_images=threshold,
    )
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"replay {mode}", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = run_replay(cfg, tick)
    command = "stoic replay " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    doc = write_report(result, report, command=command)
    s = doc["summary"]
    typer.echo(
        f"{s['batches']} batches: success {100 * (s['success_rate'] or 0):.1f}%, "
        f"{100 * (s['vs_min_lat'] or 0):.1f}% of MIN-LAT, "
        f"{100 * (s['vs_worst'] or 0):.1f}% of worst; report in {report}"
    )
    if isinstance(doc["meta"].get("plots"), str):
        typer.echo(f"note: {doc['meta']['plots']}", err=True)


@replay_app.command("sweep")
def sweep(
    envs: list[Path] = typer.Option(
        [],
        "--envs",
        help="spec files or directories of *.yaml (repeat the option; default: "
        "workload/envs, the real calibration nautilus-2020-real first)",
    ),
    modes: list[str] = typer.Option(
        [], "--modes", help="modes, comma-separated or repeated (default: the six of the docs)"
    ),
    seeds: int = typer.Option(5, "--seeds", min=1, help="seeds per cell: first-seed .. +N-1"),
    first_seed: int = typer.Option(0, "--first-seed", min=0),
    days: int = typer.Option(3, "--days", min=1, help="simulated days per replay"),
    batches: int | None = typer.Option(
        None, "--batches", min=1, help="batches per day (default 162, the paper's run)"
    ),
    random_envs: int = typer.Option(
        0, "--random", min=0, help="also N random environments (written to REPORT/envs/)"
    ),
    random_first: int = typer.Option(0, "--random-first", min=0, help="first random seed"),
    jobs: int | None = typer.Option(
        None, "--jobs", min=1, help="worker processes (default: every core)"
    ),
    warmup_periods: int | None = typer.Option(
        None, "--warmup-periods", min=0, help="inquisitor periods before the first batch"
    ),
    probes: str = typer.Option("auto", "--probes", help="auto, full or window"),
    budgets: list[str] = typer.Option(
        [],
        "--budgets",
        help="cloud budgets, pod-seconds x GPUs a day (none: unlimited), comma-separated: "
        "each mode at each, as MODE@BUDGET",
    ),
    probe_pricing: bool = typer.Option(
        False, "--probe-pricing", help="every cell with inquisitor.probe_pricing on"
    ),
    probe_share: float | None = typer.Option(
        None,
        "--probe-share",
        min=0,
        help="every cell with inquisitor.probe_share set (the probe ledger)",
    ),
    report: Path = typer.Option(..., "--report", help="directory for the report"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Replay every environment × mode × seed in parallel; one table and a plot.

    Exit code 1 (after writing the report) if any cell failed; 2 on bad arguments.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from stoic.replay.randenv import random_yaml
    from stoic.replay.sweep import (
        DEFAULT_ENVS,
        DEFAULT_MODES,
        CellResult,
        EnvEntry,
        SweepConfig,
        check_modes,
        discover_envs,
        run_sweep,
        with_budgets,
    )
    from stoic.replay.sweep_report import write_sweep_report

    mode_list = [m.strip() for chunk in modes for m in chunk.split(",") if m.strip()]
    mode_list = list(dict.fromkeys(mode_list)) or list(DEFAULT_MODES)
    budget_list = [b for chunk in budgets for b in chunk.split(",") if b.strip()]
    if budget_list:
        mode_list = with_budgets(mode_list, budget_list)
    check_modes(mode_list)
    if probes not in ("auto", "full", "window"):
        raise InputError(f"--probes: expected auto, full or window, got {probes!r}")
    entries = discover_envs(envs or DEFAULT_ENVS)
    if random_envs:
        env_dir = report / "envs"
        env_dir.mkdir(parents=True, exist_ok=True)
        for k in range(random_first, random_first + random_envs):
            f = env_dir / f"random-{k:03d}.yaml"
            f.write_text(random_yaml(k))
            entries.append(EnvEntry(f.stem, f))
    cfg = SweepConfig(
        envs=entries,
        modes=mode_list,
        seeds=tuple(range(first_seed, first_seed + seeds)),
        days=days,
        batches=batches,
        warmup_periods=warmup_periods,
        probes=probes,
        jobs=jobs,
        probe_pricing=probe_pricing,
        probe_share=probe_share,
    )
    logging.getLogger("stoic").setLevel(logging.ERROR)
    n = len(entries) * len(mode_list) * seeds
    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), disable=not progress) as bar:
        task = bar.add_task("sweep", total=n)

        def tick(r: CellResult, done: int, total: int) -> None:
            state = "ok" if r.ok else "FAILED"
            c = r.cell
            bar.update(task, completed=done, description=f"{c.env} {c.mode} s{c.seed} {state}")

        result = run_sweep(cfg, tick)
    command = "stoic replay " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    doc = write_sweep_report(result, report, command=command)
    if isinstance(doc["meta"].get("plots"), str):
        typer.echo(f"note: {doc['meta']['plots']}", err=True)
    failed = result.failed
    typer.echo(
        f"{len(result.cells)} replays ({len(entries)} environments × {len(mode_list)} modes × "
        f"{seeds} seeds) in {result.wall_s:.0f} s on {result.jobs} workers; "
        f"{len(failed)} failed; report in {report}"
    )
    if failed:
        first = failed[0]
        typer.echo(
            f"stoic: error: {len(failed)} replay(s) failed, e.g. {first.cell.env} "
            f"{first.cell.mode} seed {first.cell.seed}: {first.error}",
            err=True,
        )
        raise typer.Exit(1)


@env_app.command("random")
def env_random(
    seed: int = typer.Option(..., "--seed", min=0, help="the environment's seed"),
    out: Path | None = typer.Option(None, "--out", help="write the YAML here, not stdout"),
) -> None:
    """Draw a valid environment spec from the documented ranges (docs/replay.md)."""
    from stoic.replay.randenv import random_yaml

    text = random_yaml(seed)
    if out is None:
        sys.stdout.write(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        typer.echo(f"wrote random environment {seed} to {out}", err=True)


@env_app.command("check")
def env_check(
    files: list[Path] = typer.Argument(..., help="spec files or directories of *.yaml"),
) -> None:
    """Validate environment specs against the configured runtimes; exit 2 if one is bad."""
    from stoic.replay.sweep import check_env, discover_envs

    bad = 0
    for e in discover_envs(files):
        err = check_env(e.path)
        if err is None:
            typer.echo(f"ok {e.path}")
        else:
            bad += 1
            typer.echo(f"stoic: error: {err}", err=True)
    if bad:
        raise typer.Exit(2)
