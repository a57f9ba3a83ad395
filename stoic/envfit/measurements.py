"""Measurements, whatever their source, in the one shape the fits read.

A CSV of measured components and a daemon's store hold the same things in different
layouts; both readers (``stoic.envfit.csvsource``, ``stoic.envfit.storesource``) reduce
them to :class:`Measurements`, so the fits know nothing of files or tables.

Instants are put on the *spec's clock*: seconds from the midnight (local time, at the
given UTC offset) before the first measurement. That is the replay's clock too (hour 0
is midnight of day 1), so a fitted diurnal peak lands at the hour of day it was
measured at, and the goodness-of-fit draws are made at the measurements' own instants.
An instant that the source does not give is NaN (such samples inform no time term).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

DAY_S = 86_400.0


@dataclass(frozen=True, eq=False, slots=True)
class Deployments:
    """One cloud runtime's deployment attempts; ``timed_out`` ones last their timeout."""

    at_s: FloatArray
    duration_s: FloatArray
    timed_out: BoolArray


@dataclass(frozen=True, eq=False, slots=True)
class Runs:
    """One runtime's processing runs."""

    at_s: FloatArray
    n_images: FloatArray
    duration_s: FloatArray


@dataclass(frozen=True, eq=False, slots=True)
class Uploads:
    """Uploads over the site's uplink."""

    at_s: FloatArray
    n_bytes: FloatArray
    seconds: FloatArray


@dataclass(frozen=True, eq=False, slots=True)
class Totals:
    """Measured end-to-end T_s of batches run on one runtime (for the report only).
    ``upload``: whether the figures include the batch's upload (T_t); the STOIC
    authors' measured totals do not (their requester logs a transfer of 0), so those
    are compared with the spec's T_d + warm-up + T_p."""

    label: str
    at_s: FloatArray
    n_images: FloatArray
    total_s: FloatArray
    upload: bool = True


@dataclass(frozen=True, eq=False)
class Measurements:
    """Everything one source says about a site, on the spec's clock."""

    source: str
    first_epoch: float | None
    last_epoch: float | None
    utc_offset_h: float
    deployments: dict[str, Deployments] = field(default_factory=dict)
    runs: dict[str, Runs] = field(default_factory=dict)
    uploads: Uploads | None = None
    bytes_per_image: FloatArray = field(default_factory=lambda: np.zeros(0))
    totals: dict[str, list[Totals]] = field(default_factory=dict)
    deploy_timeout_s: float | None = None
    failures: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def origin_epoch(self) -> float:
        """The Unix instant of the spec clock's hour 0 (local midnight before the first)."""
        return origin_epoch(self.first_epoch, self.utc_offset_h)

    @property
    def runtimes_measured(self) -> set[str]:
        return set(self.deployments) | set(self.runs)

    @property
    def empty(self) -> bool:
        return not (
            any(d.duration_s.size for d in self.deployments.values())
            or any(r.duration_s.size for r in self.runs.values())
            or (self.uploads is not None and self.uploads.seconds.size)
        )

    def counts(self) -> dict[str, dict[str, int]]:
        """Samples per kind and runtime (the header's and the report's)."""
        out: dict[str, dict[str, int]] = {
            "deployments": {k: int(v.duration_s.size) for k, v in self.deployments.items()},
            "timeouts": {k: int(v.timed_out.sum()) for k, v in self.deployments.items()},
            "processing": {k: int(v.duration_s.size) for k, v in self.runs.items()},
            "uploads": {"uplink": 0 if self.uploads is None else int(self.uploads.seconds.size)},
        }
        if self.failures:
            out["failures"] = dict(self.failures)
        return out


def origin_epoch(first_epoch: float | None, utc_offset_h: float) -> float:
    """Local midnight (at ``utc_offset_h``) at or before ``first_epoch``, as Unix time."""
    if first_epoch is None:
        return 0.0
    shift = utc_offset_h * 3600.0
    return math.floor((first_epoch + shift) / DAY_S) * DAY_S - shift
