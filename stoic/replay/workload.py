"""Workload generator (paper §3.5): batch sizes from the conditional ECDF of hourly counts.

The camera traps deliver one batch per hour: the images taken in that hour. Most hours
are empty (66.53 % in the published trace), and the non-empty ones follow the
conditional distribution Pr(x ≤ K | x > 0). We keep the three parts separate because
the paper does:

* :class:`SizeDistribution` — a discrete distribution over positive integers, sampled by
  inverting its CDF with uniforms from a seeded :class:`numpy.random.Generator`. Built
  either from a count file (the empirical CDF itself) or from the parametric default
  profile under ``workload/`` (a truncated, discretised log-normal solved to the
  published mean).
* ``p_zero`` — the probability that an hour has no images.
* ``activity`` — 24 relative activity levels, one per hour of day; they scale the
  probability that an hour is non-empty (peaks at 13:00 and 20:00), and place batches
  over the day when a fixed number per day is asked for (the paper's 162-batch run).

Everything is reproducible from the seed; the generator never reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stoic.datafiles import read_yaml
from stoic.errors import WorkloadError
from stoic.normal import ndtr

HOUR_S = 3600.0
DAY_S = 86_400.0
#: Where the profiles that ship with stoic live: inside the package, so that an installed
#: wheel has them (``workload/`` at the repository root links to them for short paths).
WORKLOAD_DIR = Path(__file__).resolve().parent / "profiles"
DEFAULT_PROFILE = WORKLOAD_DIR / "wtb-default.yaml"


# Distributions ------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeDistribution:
    """A discrete distribution on sorted positive ``values`` with cumulative ``cdf``.

    Sampling inverts the CDF: ``values[searchsorted(cdf, u, 'right')]`` for ``u`` in
    [0, 1); for an empirical distribution this is exactly drawing a line of the count
    file uniformly at random, for the parametric one it is inverse-transform sampling.
    """

    values: np.ndarray
    cdf: np.ndarray

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> SizeDistribution:
        """The empirical CDF of ``counts`` (zeros are dropped: the ECDF is conditional)."""
        arr = np.asarray(counts, dtype=np.int64)
        arr = arr[arr > 0]
        if arr.size == 0:
            raise WorkloadError("the count data holds no positive count")
        values, freq = np.unique(arr, return_counts=True)
        cdf = np.cumsum(freq) / arr.size
        cdf[-1] = 1.0
        return cls(values, cdf)

    @classmethod
    def lognormal(cls, median: float, mean: float, lo: int, hi: int) -> SizeDistribution:
        """A log-normal with this median, discretised to the integers of [lo, hi] and
        truncated there, whose shape is solved so that the discrete mean is ``mean``."""
        if not 1 <= lo <= median <= hi or not median < mean < hi:
            raise WorkloadError(
                f"sizes: need 1 <= min <= median < mean < max, got min={lo}, "
                f"median={median}, mean={mean}, max={hi}"
            )
        k = np.arange(lo, hi + 1, dtype=np.float64)
        edges = np.log(np.r_[k - 0.5, hi + 0.5].clip(min=1e-9))
        mu = math.log(median)

        def build(sigma: float) -> tuple[np.ndarray, float]:
            c = ndtr((edges - mu) / sigma)
            p = np.diff(c)
            p /= p.sum()
            return p, float((k * p).sum())

        a, b = 1e-3, 10.0
        if not build(a)[1] <= mean <= build(b)[1]:
            raise WorkloadError(f"sizes: no log-normal on [{lo}, {hi}] has mean {mean}")
        for _ in range(80):  # bisection: the truncated mean grows with sigma
            m = (a + b) / 2
            if build(m)[1] < mean:
                a = m
            else:
                b = m
        p, _ = build((a + b) / 2)
        cdf = np.cumsum(p)
        cdf[-1] = 1.0
        return cls(k.astype(np.int64), cdf)

    @property
    def min(self) -> int:
        return int(self.values[0])

    @property
    def max(self) -> int:
        return int(self.values[-1])

    @property
    def mean(self) -> float:
        p = np.diff(np.r_[0.0, self.cdf])
        return float((self.values * p).sum())

    def quantile(self, q: float) -> int:
        i = int(np.searchsorted(self.cdf, q, "left"))
        return int(self.values[min(i, self.values.size - 1)])

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.random(n)
        idx = np.searchsorted(self.cdf, u, side="right")
        return self.values[np.minimum(idx, self.values.size - 1)]


def read_counts(path: Path) -> np.ndarray:
    """Read a count file: one non-negative integer per line (blank lines and ``#``
    comments allowed). A bad line raises :class:`WorkloadError` naming its number."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot read count file: {exc.strerror or exc}") from None
    out: list[int] = []
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            value = int(line)
        except ValueError:
            raise WorkloadError(f"{path}:{no}: not an integer count: {raw.strip()!r}") from None
        if value < 0:
            raise WorkloadError(f"{path}:{no}: negative count: {value}")
        out.append(value)
    if not any(out):
        raise WorkloadError(f"{path}: no positive count in the file")
    return np.asarray(out, dtype=np.int64)


# Profile file ---------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LognormalSizes(_Strict):
    kind: Literal["lognormal"]
    median: float = Field(gt=0)
    mean: float = Field(gt=0)
    min: int = Field(1, ge=1)
    max: int = Field(ge=1)


class QuantileSizes(_Strict):
    """Explicit knots ``[[probability, value], ...]``, linearly interpolated in
    probability; the first knot's probability is 0 (the minimum), the last 1."""

    kind: Literal["quantiles"]
    knots: list[tuple[float, int]] = Field(min_length=2)

    @model_validator(mode="after")
    def _check(self) -> QuantileSizes:
        ps = [p for p, _ in self.knots]
        vs = [v for _, v in self.knots]
        if ps[0] != 0.0 or ps[-1] != 1.0 or ps != sorted(ps):
            raise ValueError("knot probabilities must rise from 0 to 1")
        if vs != sorted(vs) or vs[0] < 1:
            raise ValueError("knot values must be positive and non-decreasing")
        return self


class ProfileFile(_Strict):
    name: str = "workload"
    p_zero: float = Field(ge=0, lt=1)
    bytes_per_image: float = Field(212_000, gt=0)
    sizes: Annotated[LognormalSizes | QuantileSizes, Field(discriminator="kind")]
    activity: list[float] = Field(min_length=24, max_length=24)

    @model_validator(mode="after")
    def _check_activity(self) -> ProfileFile:
        if any(a < 0 for a in self.activity) or sum(self.activity) <= 0:
            raise ValueError("activity levels must be >= 0 and not all zero")
        w = np.asarray(self.activity) / np.mean(self.activity)
        if (1 - self.p_zero) * w.max() > 1:
            raise ValueError(
                "activity peak too high for p_zero: (1 - p_zero) * peak/mean must be <= 1"
            )
        return self


def _quantile_distribution(knots: list[tuple[float, int]]) -> SizeDistribution:
    ps = np.array([p for p, _ in knots])
    vs = np.array([v for _, v in knots], dtype=np.float64)
    values = np.arange(int(vs[0]), int(vs[-1]) + 1)
    cdf = np.interp(values + 0.5, vs, ps).clip(0, 1)
    cdf[-1] = 1.0
    keep = np.r_[True, np.diff(cdf) > 0]
    return SizeDistribution(values[keep], np.maximum.accumulate(cdf[keep]))


@dataclass(frozen=True)
class WorkloadProfile:
    """Sizes, empty-hour probability, hour-of-day activity and bytes per image."""

    name: str
    sizes: SizeDistribution
    p_zero: float
    activity: np.ndarray  # 24 levels, mean 1
    bytes_per_image: float

    @classmethod
    def load(cls, path: Path = DEFAULT_PROFILE) -> WorkloadProfile:
        raw = read_yaml(path, WorkloadError, " profile")
        try:
            spec = ProfileFile.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or "(root)"
            raise WorkloadError(f"{path}: {key}: {err['msg']}") from None
        if isinstance(spec.sizes, LognormalSizes):
            s = spec.sizes
            sizes = SizeDistribution.lognormal(s.median, s.mean, s.min, s.max)
        else:
            sizes = _quantile_distribution(spec.sizes.knots)
        act = np.asarray(spec.activity, dtype=np.float64)
        return cls(spec.name, sizes, spec.p_zero, act / act.mean(), spec.bytes_per_image)

    def with_counts(self, path: Path) -> WorkloadProfile:
        """The same profile with its sizes replaced by the ECDF of a count file."""
        dist = SizeDistribution.from_counts(read_counts(path))
        return WorkloadProfile(
            f"{self.name}+{path.name}", dist, self.p_zero, self.activity, self.bytes_per_image
        )


# Arrivals -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch of the workload: it arrives ``at_s`` seconds after the replay starts."""

    index: int
    at_s: float
    hour: int  # hour of day, 0..23
    images: int
    n_bytes: int


def hourly(profile: WorkloadProfile, hours: int, *, seed: int = 0) -> list[Batch]:
    """One candidate batch per simulated hour, empty hours skipped.

    Hour ``i`` is non-empty with probability ``(1 - p_zero) * activity[hour of day]``
    (whose daily mean is ``1 - p_zero``) and its batch arrives at the end of the hour,
    when the edge controller packages what came in.
    """
    if hours < 0:
        raise WorkloadError(f"hours must be >= 0, got {hours}")
    rng = np.random.default_rng(seed)
    hod = np.arange(hours) % 24
    nonempty = rng.random(hours) < (1 - profile.p_zero) * profile.activity[hod]
    idx = np.flatnonzero(nonempty)
    sizes = profile.sizes.sample(rng, idx.size)
    return [
        Batch(j, float((i + 1) * HOUR_S), int(hod[i]), int(n), round(n * profile.bytes_per_image))
        for j, (i, n) in enumerate(zip(idx, sizes, strict=True))
    ]


def per_day(profile: WorkloadProfile, batches: int, *, days: int = 1, seed: int = 0) -> list[Batch]:
    """``batches`` batches per simulated day, spread over the day by the activity profile
    (the paper's 24-hour run had 162): each batch picks an hour of day with probability
    proportional to its activity and a uniform instant within it."""
    if batches < 0 or days < 1:
        raise WorkloadError(f"need batches >= 0 and days >= 1, got {batches} and {days}")
    rng = np.random.default_rng(seed)
    out: list[Batch] = []
    w = profile.activity / profile.activity.sum()
    for d in range(days):
        hours = rng.choice(24, size=batches, p=w)
        at = np.sort(d * DAY_S + hours * HOUR_S + rng.random(batches) * HOUR_S)
        sizes = profile.sizes.sample(rng, batches)
        for t, n in zip(at, sizes, strict=True):
            hod = int((t % DAY_S) // HOUR_S)
            out.append(Batch(len(out), float(t), hod, int(n), round(n * profile.bytes_per_image)))
    return out


def generate(
    profile: WorkloadProfile,
    *,
    hours: int | None = None,
    batches: int | None = None,
    days: int = 1,
    seed: int = 0,
) -> list[Batch]:
    """``hours`` → :func:`hourly`; ``batches`` (per day) → :func:`per_day`."""
    if (hours is None) == (batches is None):
        raise WorkloadError("give exactly one of --hours and --batches")
    if hours is not None:
        return hourly(profile, hours, seed=seed)
    assert batches is not None
    return per_day(profile, batches, days=days, seed=seed)
