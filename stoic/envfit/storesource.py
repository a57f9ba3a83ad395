"""Measurements from a daemon's store: its deployment, processing and transfer samples.

Every sample the daemon recorded in the period is used: the inquisitor's probes and the
batches' own deployments, timeouts included (a timed-out attempt lasted its timeout:
a right-censored sample). Unavailability is what the store shows of it: the inquisitor
keeps probing a runtime it marked unavailable and records each probe's timeout, so an
unavailable stretch is a run of timeouts, and it enters the fit as those timeouts.
Failed deployments (refused or crashed, retried by the requester) have no counterpart
in the simulator, whose only failure is a timeout; they are counted and left out.

Processing samples are those of one application version (the most measured one unless
one is named): another model is another processing line. A batch's bytes per image
come from its processing samples, which carry both sizes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from stoic.envfit.measurements import Deployments, Measurements, Runs, Uploads, origin_epoch
from stoic.errors import FitDataError, InputError
from stoic.store import Store, current_revision
from stoic.values import DeployOutcome

#: A run of this many timeouts in a row is reported as an unavailable stretch.
STRETCH = 3


def _check(url: str) -> None:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InputError(
            f"--store {url!r}: not a database URL (e.g. sqlite:///data/stoic.db)"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if not db or db == ":memory:" or not Path(db).expanduser().is_file():
            raise FitDataError(f"--store {url}: no database file there")
    if current_revision(url) is None:
        raise FitDataError(f"--store {url}: not a stoic store (no schema)")


def read_store(
    url: str,
    *,
    since: float | None,
    until: float | None,
    app: str | None,
    utc_offset_h: float,
) -> Measurements:
    """Read the samples of ``url`` in ``[since, until)`` (module docstring)."""
    _check(url)
    with Store(url) as store:
        deps, procs, trans = store.samples_between(since, until)
    window = _window(since, until)
    if not (deps or procs or trans):
        raise FitDataError(f"--store {url}: no deployment, processing or transfer samples{window}")
    notes: list[str] = []
    versions = Counter((p.app, p.app_version) for p in procs)
    chosen: tuple[str, str] | None = None
    if versions:
        if app is not None:
            name, _, version = app.partition(":")
            matching = [k for k in versions if k[0] == name and (not version or k[1] == version)]
            if not matching:
                have = ", ".join(f"{a}:{v}" for a, v in sorted(versions))
                raise FitDataError(
                    f"--app {app}: no processing samples of it{window} (the store has {have})"
                )
            chosen = max(matching, key=lambda k: versions[k])
        else:
            chosen = versions.most_common(1)[0][0]
        if len(versions) > 1:
            notes.append(
                f"processing: application {chosen[0]}:{chosen[1]} ({versions[chosen]} runs) "
                f"of {len(versions)} versions (--app chooses)"
            )
        procs = [p for p in procs if (p.app, p.app_version) == chosen]

    instants = [d.at for d in deps] + [p.at for p in procs] + [t.at for t in trans]
    first, last = min(instants), max(instants)
    origin = origin_epoch(first, utc_offset_h)

    deployments: dict[str, Deployments] = {}
    failures: Counter[str] = Counter()
    timeouts: list[float] = []
    for name in sorted({d.runtime for d in deps}):
        mine = [d for d in deps if d.runtime == name]
        failures[name] = sum(d.outcome is DeployOutcome.FAILURE for d in mine)
        used = [d for d in mine if d.outcome is not DeployOutcome.FAILURE]
        timeouts += [d.duration_s for d in used if d.outcome is DeployOutcome.TIMEOUT]
        deployments[name] = Deployments(
            np.array([d.at - origin for d in used]),
            np.array([d.duration_s for d in used]),
            np.array([d.outcome is DeployOutcome.TIMEOUT for d in used], dtype=bool),
        )
        stretches = _stretches([d.outcome is DeployOutcome.TIMEOUT for d in used])
        if stretches:
            notes.append(
                f"{name}: {len(stretches)} unavailable stretch(es) ({STRETCH}+ timeouts in a "
                f"row, {sum(stretches)} attempts): in the timeout rate, not as windows"
            )
    failures = Counter({k: v for k, v in failures.items() if v})
    if failures:
        notes.append(
            "failed deployments left out (the simulator has none): "
            + ", ".join(f"{k} {v}" for k, v in sorted(failures.items()))
        )

    runs: dict[str, Runs] = {}
    for name in sorted({p.runtime for p in procs}):
        ran = [p for p in procs if p.runtime == name and p.images > 0]
        runs[name] = Runs(
            np.array([p.at - origin for p in ran]),
            np.array([float(p.images) for p in ran]),
            np.array([p.duration_s for p in ran]),
        )
    good = [t for t in trans if t.seconds > 0 and t.n_bytes > 0]
    if len(good) < len(trans):
        notes.append(
            f"uploads: {len(trans) - len(good)} of {len(trans)} with no bytes or time, left out"
        )
    uploads = (
        Uploads(
            np.array([t.at - origin for t in good]),
            np.array([float(t.n_bytes) for t in good]),
            np.array([t.seconds for t in good]),
        )
        if good
        else None
    )
    bpi = np.array([p.n_bytes / p.images for p in procs if p.images > 0 and p.n_bytes > 0])
    return Measurements(
        source=_safe(url),
        first_epoch=first,
        last_epoch=last,
        utc_offset_h=utc_offset_h,
        deployments=deployments,
        runs=runs,
        uploads=uploads,
        bytes_per_image=bpi,
        deploy_timeout_s=max(timeouts) if timeouts else None,
        failures=dict(failures),
        notes=tuple(notes),
    )


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _window(since: float | None, until: float | None) -> str:
    if since is None and until is None:
        return ""
    lo = "the start" if since is None else f"{since:.0f}"
    hi = "the end" if until is None else f"{until:.0f}"
    return f" between {lo} and {hi} (Unix seconds)"


def _stretches(timed_out: list[bool]) -> list[int]:
    """Lengths of the runs of at least :data:`STRETCH` consecutive timeouts."""
    out: list[int] = []
    run = 0
    for t in [*timed_out, False]:
        if t:
            run += 1
            continue
        if run >= STRETCH:
            out.append(run)
        run = 0
    return out
