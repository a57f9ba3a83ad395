"""Goodness of fit: the measurements against draws of a spec, component by component.

A fit that maximises a likelihood can still describe the data badly (the wrong model,
a prior kept where it should not be). So every measured component is compared with
draws of the spec *made by the simulator itself* (``SimEnvironment``), at the
measurements' own instants, batch sizes and byte counts, over several seeds (each seed
draws its own drift phases):

* T_d per cloud runtime (a timeout counts as its timeout, in the data and the draws);
* T_p per runtime; T_t of the uploads;
* T_s per runtime where the source measured totals, drawn by the replay's own audit
  (``SimEnvironment.audit``: transfer, deployment, warm-up, processing, and a timeout's
  fallback to the edge); against totals measured without their upload (``Totals.upload``:
  the STOIC authors' ``act_total``), the audit's T_d + warm-up + T_p.

Each comparison gives the two-sample Kolmogorov–Smirnov distance and p-value
(``scipy.stats.ks_2samp``) and a QQ plot. The same draws of the prior spec give the
distance the fit started from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray
from scipy.stats import ks_2samp

from stoic.backends.simulated import EnvSpec, RuntimeTruth, SimEnvironment
from stoic.envfit.measurements import Measurements
from stoic.values import Job, Runtime, RuntimeKind

FloatArray = NDArray[np.float64]

#: Draws per comparison (spread over the measurements and the seeds), and seeds.
DRAWS = 20_000
SEEDS = 8
#: T_s draws are whole audits (every runtime of a batch): fewer of them.
TOTAL_DRAWS = 4_000
#: Measurements a comparison draws for at most (a random subset beyond).
MAX_POINTS = 2_000


@dataclass(frozen=True, eq=False)
class Check:
    """One measured component of one runtime against a spec's draws."""

    component: str
    runtime: str
    label: str
    data: FloatArray
    draws: FloatArray

    @cached_property
    def ks(self) -> tuple[float, float]:
        res = ks_2samp(self.data, self.draws)
        return float(res.statistic), float(res.pvalue)


def runtimes_of(spec: EnvSpec) -> list[Runtime]:
    """Runtime values for a spec's sections (a section without deployment is an edge)."""
    out = []
    for name, rt in spec.runtimes.items():
        if rt.deployment is None:
            kind = RuntimeKind.EDGE
        else:
            kind = RuntimeKind.CPU if name.startswith("cpu") else RuntimeKind.GPU
        out.append(Runtime(name, kind))
    return out


class _Draws:
    def __init__(self, spec: EnvSpec) -> None:
        rts = runtimes_of(spec)
        self.spec = spec
        self.envs = [SimEnvironment(spec, rts, seed=s) for s in range(SEEDS)]
        self.rng = np.random.default_rng(0)

    def _points(self, n: int) -> NDArray[np.int64]:
        if n <= MAX_POINTS:
            return np.arange(n)
        return np.sort(self.rng.choice(n, MAX_POINTS, replace=False))

    def _at(self, at_s: FloatArray) -> FloatArray:
        """Instants to draw at: the measured ones, or a uniform hour where unknown."""
        fill = self.rng.uniform(0, 86_400.0, at_s.size)
        return np.where(np.isfinite(at_s), at_s, fill)

    def deployments(self, rt: str, at_s: FloatArray) -> FloatArray:
        idx = self._points(at_s.size)
        reps = max(1, DRAWS // (idx.size * SEEDS))
        at = np.repeat(self._at(at_s[idx]), reps)
        out = []
        for env in self.envs:
            v = env.deployment_from_uniforms(rt, at, self.rng.random((at.size, 4)))
            out.append(np.where(np.isnan(v), self.spec.deploy_timeout_s, v))
        return np.concatenate(out)

    def processing(self, rt: str, at_s: FloatArray, n_images: FloatArray) -> FloatArray:
        idx = self._points(at_s.size)
        reps = max(1, DRAWS // (idx.size * SEEDS))
        p = self.spec.runtimes[rt].processing
        at = self._at(at_s[idx])
        out = []
        for env in self.envs:
            for t, n in zip(at, n_images[idx], strict=True):
                f = env.processing_factors(rt, self.rng.random((reps, 3)), float(t))
                out.append((p.per_image_s * n + p.fixed_s) * f)
        return np.concatenate(out)

    def transfers(self, at_s: FloatArray, n_bytes: FloatArray) -> FloatArray:
        idx = self._points(at_s.size)
        reps = max(1, DRAWS // (idx.size * SEEDS))
        at = self._at(at_s[idx])
        out = [
            env.transfer_s(float(b), float(t), float(u))
            for env in self.envs
            for t, b in zip(at, n_bytes[idx], strict=True)
            for u in self.rng.random(reps)
        ]
        return np.array(out)

    def totals(
        self, rt: str, at_s: FloatArray, n_images: FloatArray, *, upload: bool = True
    ) -> FloatArray:
        idx = self._points(at_s.size)
        reps = max(1, TOTAL_DRAWS // (idx.size * SEEDS))
        at = self._at(at_s[idx])
        bpi = self.spec.uplink.bytes_per_image
        out = []
        for env in self.envs:
            for i, (t, n) in enumerate(zip(at, n_images[idx], strict=True)):
                job = Job(f"gof-{i}", int(n), round(n * bpi))
                out += [
                    total(env.audit(i, job, float(t)).runtimes[rt], upload=upload)
                    for _ in range(reps)
                ]
        return np.array(out)


def total(t: RuntimeTruth, *, upload: bool) -> float:
    """A runtime's T_s, or without its upload T_d + warm-up + T_p (a timed-out
    deployment's fallback has no upload either way)."""
    if upload or not t.attempts or t.attempts[-1] is None:
        return t.total_s
    return t.attempts[-1] + t.warmup_s + t.processing_s


def checks(spec: EnvSpec, m: Measurements) -> list[Check]:
    """Every comparison the measurements allow (module docstring)."""
    d = _Draws(spec)
    out: list[Check] = []
    for rt, dep in sorted(m.deployments.items()):
        if rt in spec.runtimes and dep.duration_s.size:
            out.append(Check("T_d", rt, "deployments", dep.duration_s, d.deployments(rt, dep.at_s)))
    for rt, runs in sorted(m.runs.items()):
        if rt in spec.runtimes and runs.duration_s.size:
            out.append(
                Check(
                    "T_p", rt, "runs", runs.duration_s, d.processing(rt, runs.at_s, runs.n_images)
                )
            )
    if m.uploads is not None and m.uploads.seconds.size:
        u = m.uploads
        out.append(Check("T_t", "uplink", "uploads", u.seconds, d.transfers(u.at_s, u.n_bytes)))
    for rt, sets in sorted(m.totals.items()):
        if rt not in spec.runtimes:
            continue
        for t in sets:
            drawn = d.totals(rt, t.at_s, t.n_images, upload=t.upload)
            out.append(Check("T_s", rt, t.label, t.total_s, drawn))
    return out


def summary_row(c: Check, prior: Check | None) -> dict[str, object]:
    """The figures of one comparison (the report's table and JSON)."""
    ks, p = c.ks
    row: dict[str, object] = {
        "component": c.component,
        "runtime": c.runtime,
        "data": c.label,
        "n": int(c.data.size),
        "draws": int(c.draws.size),
        "ks": round(ks, 4),
        "p_value": round(p, 4),
        "median_data": _r(float(np.median(c.data))),
        "median_fit": _r(float(np.median(c.draws))),
        "p90_over_median_data": _ratio(c.data),
        "p90_over_median_fit": _ratio(c.draws),
    }
    if prior is not None:
        pks, pp = prior.ks
        row["ks_prior"] = round(pks, 4)
        row["p_value_prior"] = round(pp, 4)
        row["median_prior"] = _r(float(np.median(prior.draws)))
    return row


def _r(x: float) -> float:
    return float(f"{x:.4g}")


def _ratio(x: FloatArray) -> float | None:
    med = float(np.median(x))
    return _r(float(np.quantile(x, 0.9)) / med) if med > 0 and math.isfinite(med) else None
