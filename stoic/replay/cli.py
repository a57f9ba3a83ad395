"""``stoic replay`` and ``stoic workload sample``: the replay from the command line.

Heavy modules (the predictor's scikit-learn, matplotlib, looptime) are imported inside
the commands so ``stoic --help`` stays fast. Bad input raises a
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

workload_app = typer.Typer(help="The camera-trap workload generator (paper §3.5).")

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


def replay(
    env: Path = typer.Option(ENV_DEFAULT, "--env", help="environment spec YAML"),
    mode: str = typer.Option(
        "selector",
        "--mode",
        help="selector, duplicator (with --gpu), duplicator-gpu1, duplicator-gpu2, "
        "edge-only, gpu1-only, threshold, oracle",
    ),
    gpu: str | None = typer.Option(None, "--gpu", help="cloud runtime of --mode duplicator"),
    hours: int | None = typer.Option(None, "--hours", help="hourly arrivals for H hours"),
    batches: int | None = typer.Option(None, "--batches", help="N batches per day (162)"),
    days: int = typer.Option(1, "--days", help="days (with --batches)"),
    counts: Path | None = typer.Option(None, "--counts", help="hourly count file"),
    seed: int = typer.Option(0, "--seed"),
    probes: str = typer.Option("auto", "--probes", help="auto, full or window"),
    threshold: int = typer.Option(35, "--threshold-images", help="threshold mode cut-over"),
    report: Path = typer.Option(..., "--report", help="directory for the report"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Replay a workload against a simulated environment and score it (paper §4)."""
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
