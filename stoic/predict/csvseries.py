"""Reading deployment-time series from CSV (``stoic evaluate deployment``).

Format: a header row, then one row per probe round. A column named ``epoch`` (any
case) is optional and ignored for modelling; every other column is a runtime and holds
deployment times in seconds. Empty cells are missing values: each runtime's series is
its non-empty cells in file order. Anything else malformed raises
:class:`~stoic.errors.CsvFormatError` naming the file, the line and the column.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from stoic.datafiles import csv_rows
from stoic.errors import CsvFormatError
from stoic.predict.deployment import FloatArray


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_deployment_csv(path: Path) -> dict[str, FloatArray]:
    """Series per runtime column, in header order."""
    name = str(path)
    numbered = csv_rows(path)
    if not numbered:
        raise CsvFormatError(
            name, 1, None, "empty file: expected a header such as 'epoch,cpu,gpu1'"
        )
    header_line, header = numbered[0]
    header = [h.strip() for h in header]
    if all(_is_number(h) for h in header if h):
        raise CsvFormatError(
            name, header_line, None, "missing header row (expected e.g. 'epoch,cpu,gpu1,gpu2')"
        )
    for h in header:
        if not h:
            raise CsvFormatError(name, header_line, None, "empty column name in header")
    seen: set[str] = set()
    for h in header:
        if h in seen:
            raise CsvFormatError(name, header_line, h, "duplicate column name")
        seen.add(h)
    runtime_cols = [(j, h) for j, h in enumerate(header) if h.lower() != "epoch"]
    if not runtime_cols:
        raise CsvFormatError(name, header_line, None, "no runtime columns (only 'epoch')")
    values: dict[str, list[float]] = {h: [] for _, h in runtime_cols}
    for line, row in numbered[1:]:
        if len(row) != len(header):
            missing = header[len(row)] if len(row) < len(header) else None
            raise CsvFormatError(
                name,
                line,
                missing,
                f"expected {len(header)} cells, got {len(row)}",
            )
        for j, h in enumerate(header):
            cell = row[j].strip()
            if not cell:
                continue
            try:
                v = float(cell)
            except ValueError:
                raise CsvFormatError(name, line, h, f"not a number: {cell!r}") from None
            if not math.isfinite(v):
                raise CsvFormatError(name, line, h, f"not a finite number: {cell!r}")
            if h.lower() == "epoch":
                continue
            if v < 0:
                raise CsvFormatError(name, line, h, f"negative deployment time: {cell!r}")
            values[h].append(v)
    for h, series in values.items():
        if len(series) < 2:
            raise CsvFormatError(
                name, header_line, h, f"needs at least 2 values to score, has {len(series)}"
            )
    return {h: np.asarray(v, dtype=np.float64) for h, v in values.items()}
