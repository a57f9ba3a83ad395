"""Measurements from CSV files: measured components, and optionally measured totals.

The components file has one row per batch placed on one runtime, the measured
``act_transfer``, ``act_deploy`` (time to pod ready; 0 on the edge) and ``act_proc``
seconds, ``image_num`` and ``runtime`` (the layout of the STOIC authors' published runs,
``nautilus-2020-real/components.csv``); ``epoch`` (Unix seconds) is used when present,
any other column is ignored. A row's T_s, compared with the spec's in the report, is
the sum of its components, T_t + T_d + T_p, as the simulator counts a runtime's total:
not the file's ``act_total``, which in the authors' runs is exactly ``act_deploy +
act_proc`` (their requester logs a transfer of 0; the upload was measured on its own).
A runtime is a cloud runtime when the prior gives it a deployment section or any of its
rows deployed for longer than zero. A duration of 0 (a cloud row that reused a ready
pod) is not a sample of its component, and such a row has no T_s comparable with a
spec's.

Two readings of the layout, both stated in the fitted spec's header:

* one upload may be shared by several rows (the Nautilus runs upload a batch once and
  run it on each runtime): a transfer time repeated for the same image count is one
  upload, not several;
* the file has no sizes in bytes, so an upload's bytes are its images times the
  prior's ``bytes_per_image``: the fitted bandwidth is the one that, with that size,
  reproduces the measured times.

A totals file (``image_num``, ``runtime``, ``act_total``) holds end-to-end times, read
as the authors measured them: without the upload. On a runtime without deployment (the
edge) a total *is* its processing time, so those rows join the processing fit; the
others are compared with the fitted spec's T_d + warm-up + T_p in the report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from stoic.datafiles import csv_rows
from stoic.envfit.measurements import Deployments, Measurements, Runs, Totals, Uploads
from stoic.errors import CsvFormatError

COMPONENTS = ("image_num", "runtime", "act_transfer", "act_deploy", "act_proc")
TOTALS = ("image_num", "runtime", "act_total")
_DURATIONS = ("act_transfer", "act_deploy", "act_proc", "act_total")

Row = dict[str, str]


def _read(path: Path, required: Sequence[str]) -> list[tuple[int, Row]]:
    """(line number, row) of every non-blank row, after checking the header."""
    name = str(path)
    numbered = csv_rows(path)
    if not numbered:
        raise CsvFormatError(
            name, 1, None, f"empty file: expected a header with {', '.join(required)}"
        )
    header_line, header = numbered[0]
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise CsvFormatError(
            name,
            header_line,
            None,
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(needs {', '.join(required)})",
        )
    if len(numbered) == 1:
        raise CsvFormatError(name, header_line, None, "no rows after the header")
    rows: list[tuple[int, Row]] = []
    for line, cells in numbered[1:]:
        if len(cells) != len(header):
            raise CsvFormatError(
                name, line, None, f"expected {len(header)} cells, got {len(cells)}"
            )
        rows.append((line, {h: c.strip() for h, c in zip(header, cells, strict=True)}))
    return rows


def _number(path: Path, line: int, row: Row, col: str) -> float:
    cell = row[col]
    try:
        v = float(cell)
    except ValueError:
        raise CsvFormatError(str(path), line, col, f"not a number: {cell!r}") from None
    if not math.isfinite(v):
        raise CsvFormatError(str(path), line, col, f"not a finite number: {cell!r}")
    if col in _DURATIONS and v < 0:
        raise CsvFormatError(str(path), line, col, f"negative duration: {cell}")
    if col == "image_num" and (v < 1 or v != int(v)):
        raise CsvFormatError(str(path), line, col, f"not a positive whole number: {cell!r}")
    return v


def _runtime(path: Path, line: int, row: Row) -> str:
    name = row["runtime"]
    if not name:
        raise CsvFormatError(str(path), line, "runtime", "empty runtime name")
    return name


def read_csv(
    components: Path,
    totals: Iterable[Path],
    *,
    cloud_prior: set[str],
    bytes_per_image: float,
    utc_offset_h: float,
) -> Measurements:
    """Read ``components`` (and ``totals``) into :class:`Measurements` (module docstring).
    ``cloud_prior``: the runtimes the prior gives a deployment section."""
    rows = _read(components, COMPONENTS)
    has_epoch = "epoch" in rows[0][1]
    parsed = []
    for line, row in rows:
        parsed.append(
            (
                _runtime(components, line, row),
                _number(components, line, row, "epoch") if has_epoch else math.nan,
                _number(components, line, row, "image_num"),
                _number(components, line, row, "act_transfer"),
                _number(components, line, row, "act_deploy"),
                _number(components, line, row, "act_proc"),
            )
        )
    epochs = [p[1] for p in parsed if math.isfinite(p[1])]
    first = min(epochs) if epochs else None
    last = max(epochs) if epochs else None
    m0 = Measurements(str(components), first, last, utc_offset_h)
    origin = m0.origin_epoch
    cloud = set(cloud_prior) | {p[0] for p in parsed if p[4] > 0}

    dep: dict[str, list[tuple[float, float]]] = {}
    run: dict[str, list[tuple[float, float, float]]] = {}
    tot: dict[str, list[tuple[float, float, float]]] = {}
    uploads: dict[tuple[float, float], float] = {}
    zero = {"act_deploy": 0, "act_proc": 0}
    for rt, epoch, n, transfer, deploy, proc in parsed:
        at = epoch - origin if math.isfinite(epoch) else math.nan
        if proc > 0:
            run.setdefault(rt, []).append((at, n, proc))
        else:
            zero["act_proc"] += 1
        if rt in cloud:
            if deploy > 0:
                dep.setdefault(rt, []).append((at, deploy))
            else:
                zero["act_deploy"] += 1
            if transfer > 0:
                uploads.setdefault((n, transfer), at)
        if proc > 0 and (deploy > 0 or rt not in cloud):
            tot.setdefault(rt, []).append((at, n, transfer + deploy + proc))

    notes = [
        f"uploads: {len(uploads)} distinct (image count, transfer time) pairs of "
        f"{sum(1 for p in parsed if p[0] in cloud and p[3] > 0)} cloud rows; bytes = images "
        f"x the prior's bytes_per_image ({bytes_per_image:g}): the file has no sizes",
        "deployments: the file records no timeouts",
    ]
    notes += [
        f"{k}: {v} row(s) of 0 s left out of its fit (nothing to fit a duration to)"
        for k, v in zero.items()
        if v
    ]
    extra_runs: dict[str, list[tuple[float, float, float]]] = {}
    totals_out: dict[str, list[Totals]] = {
        rt: [_totals(f"{components.name} T_t + T_d + T_p", v)] for rt, v in tot.items()
    }
    for path in totals:
        by_rt: dict[str, list[tuple[float, float, float]]] = {}
        for line, row in _read(path, TOTALS):
            rt = _runtime(path, line, row)
            n = _number(path, line, row, "image_num")
            total = _number(path, line, row, "act_total")
            if total > 0:
                by_rt.setdefault(rt, []).append((math.nan, n, total))
        for rt, v in by_rt.items():
            if rt in cloud:
                totals_out.setdefault(rt, []).append(
                    _totals(f"{path.name} (no upload)", v, upload=False)
                )
            else:
                extra_runs.setdefault(rt, []).extend(v)
                totals_out.setdefault(rt, []).append(_totals(path.name, v))
        used = sorted(rt for rt in by_rt if rt not in cloud)
        notes.append(
            f"{path.name}: {sum(len(v) for v in by_rt.values())} totals; those of "
            f"{', '.join(used) or 'no runtime'} (no deployment: T_s = T_p) join the "
            "processing fit, the others only the report"
        )
    for rt, v in extra_runs.items():
        run.setdefault(rt, []).extend(v)

    up = None
    if uploads:
        keys = list(uploads)
        up = Uploads(
            np.array([uploads[k] for k in keys]),
            np.array([k[0] * bytes_per_image for k in keys]),
            np.array([k[1] for k in keys]),
        )
    return Measurements(
        source=", ".join([str(components), *(str(p) for p in totals)]),
        first_epoch=first,
        last_epoch=last,
        utc_offset_h=utc_offset_h,
        deployments={
            rt: Deployments(
                np.array([a for a, _ in v]),
                np.array([d for _, d in v]),
                np.zeros(len(v), dtype=bool),
            )
            for rt, v in dep.items()
        },
        runs={
            rt: Runs(
                np.array([a for a, _, _ in v]),
                np.array([n for _, n, _ in v]),
                np.array([p for _, _, p in v]),
            )
            for rt, v in run.items()
        },
        uploads=up,
        totals=totals_out,
        notes=tuple(notes),
    )


def _totals(label: str, v: list[tuple[float, float, float]], *, upload: bool = True) -> Totals:
    return Totals(
        label,
        np.array([a for a, _, _ in v]),
        np.array([n for _, n, _ in v]),
        np.array([t for _, _, t in v]),
        upload,
    )
