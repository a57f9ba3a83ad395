"""``stoic env fit``: an environment spec fitted to a site's measurements.

Mounted on the ``stoic env`` group by ``stoic.cli`` (this package reads the daemon's
store, which the replay's own modules may not import). Heavy modules (scipy, the
store, matplotlib) are imported inside the command, so ``stoic --help`` stays fast and
the base install, which has no SciPy, runs every other command: without the ``fit``
extra this one stops with one line naming it. Bad input raises a
:class:`~stoic.errors.StoicError` that ``stoic.cli.main`` prints as one line (exit
code 2).
"""

from __future__ import annotations

import datetime as dt
import math
import shlex
from pathlib import Path

import typer

from stoic.errors import InputError
from stoic.extras import require
from stoic.replay.cli import ENV_DEFAULT

PRIOR_DEFAULT = ENV_DEFAULT
"""The default prior: the spec calibrated from the paper's figures (packaged)."""


def _instant(option: str, text: str | None) -> float | None:
    """Unix seconds from Unix seconds or an ISO 8601 instant (UTC unless it says)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"{option} {text!r}: expected Unix seconds or an ISO 8601 instant "
            "(2020-02-02T18:00:00Z)"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def _command(parts: list[tuple[str, object]]) -> str:
    words = ["stoic", "env", "fit"]
    for flag, value in parts:
        if value is None or value is False:
            continue
        words.append(flag)
        if value is not True:
            words.append(str(value))
    return shlex.join(words)


def fit(
    csv: Path | None = typer.Option(None, "--csv", help="measured components (act_* columns)"),
    totals: list[Path] = typer.Option(
        [], "--totals", help="measured totals (image_num, runtime, act_total); repeatable"
    ),
    store: str | None = typer.Option(None, "--store", help="a daemon's DATABASE_URL"),
    since: str | None = typer.Option(None, "--since", help="with --store: from (Unix s or ISO)"),
    until: str | None = typer.Option(None, "--until", help="with --store: until (Unix s or ISO)"),
    app: str | None = typer.Option(None, "--app", help="with --store: APP[:VERSION] whose T_p"),
    prior: Path = typer.Option(PRIOR_DEFAULT, "--prior", help="the spec the fit starts from"),
    out: Path = typer.Option(..., "--out", help="write the fitted spec here"),
    name: str | None = typer.Option(None, "--name", help="the spec's name (default: --out's stem)"),
    report: Path | None = typer.Option(None, "--report", help="goodness-of-fit report directory"),
    resolution: float = typer.Option(
        0.0,
        "--resolution",
        min=0.0,
        help="seconds to which deployments were measured (a readiness poll period); 0: exact",
    ),
    utc_offset: float = typer.Option(
        0.0, "--utc-offset", help="the site's hours from UTC (its hour of day for diurnal terms)"
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Fit an environment spec to measurements (a CSV or a daemon's store): docs/envfit.md."""
    require("fit", "stoic env fit")
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from stoic.backends.simulated import EnvSpec
    from stoic.envfit.csvsource import read_csv
    from stoic.envfit.fit import fit_spec
    from stoic.envfit.gof import checks
    from stoic.envfit.report import write_report
    from stoic.envfit.specfile import period, render
    from stoic.envfit.storesource import read_store

    if (csv is None) == (store is None):
        raise InputError("stoic env fit: give exactly one of --csv FILE and --store DATABASE_URL")
    if store is None and (since or until or app):
        raise InputError("--since, --until and --app go with --store")
    if csv is None and totals:
        raise InputError("--totals goes with --csv")
    if not -14 <= utc_offset <= 14 or not math.isfinite(utc_offset):
        raise InputError(f"--utc-offset {utc_offset:g}: expected hours between -14 and 14")
    t0, t1 = _instant("--since", since), _instant("--until", until)
    prior_spec = EnvSpec.load(prior)
    if csv is not None:
        m = read_csv(
            csv,
            totals,
            cloud_prior={k for k, v in prior_spec.runtimes.items() if v.deployment is not None},
            bytes_per_image=prior_spec.uplink.bytes_per_image,
            utc_offset_h=utc_offset,
        )
    else:
        assert store is not None
        m = read_store(store, since=t0, until=t1, app=app, utc_offset_h=utc_offset)
    spec_name = name or out.stem
    command = _command(
        [
            ("--csv", csv),
            *(("--totals", t) for t in totals),
            ("--store", store),
            ("--since", since),
            ("--until", until),
            ("--app", app),
            ("--prior", prior),
            ("--resolution", f"{resolution:g}" if resolution else None),
            ("--utc-offset", f"{utc_offset:g}" if utc_offset else None),
            ("--name", name),
            ("--out", out),
            ("--report", report),
        ]
    )
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("fitting", total=None)

        def step(what: str) -> None:
            bar.update(task, description=f"fitting {what}")

        result = fit_spec(
            m,
            prior_spec,
            name=spec_name,
            resolution_s=resolution,
            description=f"Fitted by stoic env fit to {csv.name if csv else 'a daemon store'}, "
            + period(m).split(" (")[0],
            step=step,
        )
        rows = None
        if report is not None:
            bar.update(task, description="drawing the fitted spec for the report")
            fitted = checks(result.spec, m)
            bar.update(task, description="drawing the prior for the report")
            before = checks(prior_spec, m)
            meta = {
                "name": spec_name,
                "command": command,
                "source": m.source,
                "period": period(m),
                "prior": str(prior),
                "counts": m.counts(),
            }
            rows = write_report(report, result, fitted, before, meta)["checks"]
    text = render(result, m, command=command, prior=str(prior), ks=rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    fitted_n = sum(v.fitted for v in result.values.values())
    typer.echo(
        f"wrote {out}: {fitted_n} of {len(result.values)} parameters fitted, the rest from "
        f"{prior}" + (f"; report in {report}" if report else "")
    )
