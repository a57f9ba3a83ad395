"""The simulated environment of the replay: ground truth from a spec, served in virtual time.

This module is the only place that knows how long things *really* take in a replay.
An environment spec (YAML, :class:`EnvSpec`, documented in ``docs/replay.md``) gives
each runtime a deployment-time process (floor + log-normal body, time-of-day variation,
a slow drift, Lomax-tailed outliers, timeouts, unavailable periods), a processing time
(``per_image_s * n + fixed_s`` with noise and congestion outliers, a model-load cost for
warm-up calls, what later and shorter calls cost: share mode's chunks), the site's uplink
(bandwidth process, bytes per image, outages: :mod:`stoic.backends.simlink`) and the
cloud as a whole (a congestion factor its pods share within a batch). What is priced only
when a spec asks, and why each default is what it is: docs/replay.md, "What the
simulator prices".

Two sources of draws, so that every mode of the replay sees the *same* world:

* **Batch truth ("audit")** — :meth:`SimEnvironment.audit` draws, when a batch arrives,
  T_t, the deployment attempts, and T_p of every runtime from a sequential stream that
  only batches consume, so the truth of batch *i* is identical in every mode.
  :class:`SimulatedBackend` serves the calls made for that batch (found through the
  context variable :data:`current_truth`, which tasks inherit) with exactly these
  durations via ``asyncio.sleep``; the replay fast-forwards them with ``looptime``.
* **Probes** — deployments outside any batch (the inquisitor) are keyed by
  (runtime, probe number): uniforms come from a counter-based Philox generator, so the
  value of probe *k* does not depend on which other probes were simulated. That makes
  the replay's probe shortcut exact (``stoic.replay.runner``).

Nothing here is seen by the scheduler: it only sees its own measurements.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stoic.backends.base import Deployment, Invocation, RuntimeBackend, Upload
from stoic.backends.simlink import Link
from stoic.backends.simlink import SharedUplink as SharedUplink
from stoic.errors import DeployTimeout, EnvSpecError
from stoic.normal import ndtr, ndtri
from stoic.values import Job, Runtime, fallback_after

HOUR_S = 3600.0
DAY_S = 86_400.0


# Spec ---------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Period(_Strict):
    """An unavailable period: from ``start_h`` hours after the replay starts, for
    ``duration_h`` hours, repeated every ``every_h`` hours if given."""

    start_h: float = Field(ge=0)
    duration_h: float = Field(gt=0)
    every_h: float | None = Field(None, gt=0)

    def covers(self, at_s: np.ndarray) -> np.ndarray:
        t = np.asarray(at_s, dtype=np.float64) / HOUR_S - self.start_h
        phase = t % self.every_h if self.every_h is not None else t
        return np.asarray((t >= 0) & (phase < self.duration_h))


class Outage(Period):
    """A period when the uplink carries nothing: an upload stalls until it ends. A
    repeating outage must leave the link up part of each cycle (``duration_h <
    every_h``), or no upload would ever finish."""

    @model_validator(mode="after")
    def _check_cycle(self) -> Outage:
        if self.every_h is not None and self.duration_h >= self.every_h:
            raise ValueError("duration_h must be < every_h (the link would never be up)")
        return self


class Regime(_Strict):
    """A regime shift: from ``start_h`` hours after the replay starts, for ``duration_h``
    hours (None: to the end of the replay), repeated every ``every_h`` hours if given,
    some parameters take other values. Where regimes of one list overlap, the last wins."""

    start_h: float = Field(ge=0)
    duration_h: float | None = Field(None, gt=0)
    every_h: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check_window(self) -> Regime:
        if self.every_h is not None and self.duration_h is None:
            raise ValueError("a repeating regime (every_h) needs duration_h")
        return self

    def covers(self, at_s: np.ndarray) -> np.ndarray:
        t = np.asarray(at_s, dtype=np.float64) / HOUR_S - self.start_h
        if self.duration_h is None:
            return np.asarray(t >= 0)
        phase = t % self.every_h if self.every_h is not None else t
        return np.asarray((t >= 0) & (phase < self.duration_h))


class DeploymentRegime(Regime):
    """While it holds, the deployment median is ``median_s`` and, if given, the timeout
    rate ``timeout_rate`` (a contended period of a shared cluster)."""

    median_s: float = Field(gt=0)
    timeout_rate: float | None = Field(None, ge=0, le=1)


class UplinkRegime(Regime):
    """While it holds, the uplink's nominal bandwidth is ``bandwidth_mbps`` (a rain fade,
    a congested cell, a link that fell back to a slower technology)."""

    bandwidth_mbps: float = Field(gt=0)


class ProcessingRegime(Regime):
    """While it holds, T_p is multiplied by ``factor`` (a co-tenant's job sharing the
    node or the GPU; an edge busy with its own nightly work)."""

    factor: float = Field(gt=0)


def _regime_values(
    base: float, regimes: Iterable[Regime], attr: str, at_s: np.ndarray
) -> np.ndarray:
    """``base`` at every instant of ``at_s``, replaced by the regimes' ``attr`` where
    they hold (the last regime wins; a None value leaves the previous one)."""
    out = np.full(np.shape(at_s), base, dtype=np.float64)
    for r in regimes:
        v = getattr(r, attr)
        if v is not None:
            out = np.where(r.covers(at_s), v, out)
    return out


class CacheMiss(_Strict):
    """A deployment whose node does not hold the function's image pulls it first: with
    probability ``rate`` T_d gains ``pull_s`` times the draw's own noise (drift, diurnal
    and σZ, as a pull over the same cluster network), so T_d has two modes, a cache hit
    and a miss. The draw that decides it is the outlier's, from its other end, so a
    deployment is never both (``rate + outlier_rate <= 1``)."""

    rate: float = Field(gt=0, le=1)
    pull_s: float = Field(gt=0)


class DeploymentSpec(_Strict):
    """T_d = floor + (median - floor)·exp(σZ + drift(t))·diurnal(t) [+ Lomax outlier]
    [+ an image pull on a cache miss]; a draw at or above the timeout, a timeout draw,
    or an unavailable period → timeout."""

    floor_s: float = Field(ge=0)
    median_s: float = Field(gt=0)
    sigma: float = Field(ge=0)
    diurnal_amplitude: float = Field(0.0, ge=0, lt=1)
    peak_hour: float = Field(14.0, ge=0, lt=24)
    drift_sigma: float = Field(0.0, ge=0)
    drift_timescale_h: float = Field(6.0, gt=0)
    outlier_rate: float = Field(0.0, ge=0, le=1)
    outlier_scale_s: float = Field(0.0, ge=0)
    outlier_alpha: float = Field(2.0, gt=0)
    timeout_rate: float = Field(0.0, ge=0, le=1)
    cache_miss: CacheMiss | None = None
    unavailable: list[Period] = Field(default_factory=list)
    regimes: list[DeploymentRegime] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> DeploymentSpec:
        if self.median_s < self.floor_s:
            raise ValueError("median_s must be >= floor_s")
        if self.cache_miss is not None and self.cache_miss.rate + self.outlier_rate > 1:
            raise ValueError("cache_miss.rate + outlier_rate must be <= 1")
        for i, r in enumerate(self.regimes):
            if r.median_s < self.floor_s:
                raise ValueError(f"regimes.{i}.median_s must be >= floor_s")
        return self


#: A later call's fixed cost on a warm function instance, as a share of the first call's
#: (share mode calls one instance many times, once per chunk). Measured on stoic's own
#: function server (docs/function.md, "Per-instance model load and per-call overhead"):
#: the first call on a fresh instance pays the model load, 1.03–1.04 s over HTTP; every
#: later call 3.7–4.0 ms of fixed cost (HTTP, request parsing, package lookup, the
#: pipeline's start): 0.4 %. The paper's fixed costs (``fixed_s``) are kept for the first
#: labelling call of each deployment, so one whole-batch call costs exactly the paper's
#: ``per_image_s·n + fixed_s``, and the replay of the other modes is unchanged.
CALL_OVERHEAD_SHARE = 0.004

#: The chunk-size throughput loss of stoic's own function (docs/function.md, "Chunked
#: calls"), as :attr:`ProcessingSpec.chunk_fill_penalty` and ``chunk_fill_images``: a
#: call's first batch of images (64, the model batch the function measured at load) is
#: decoded before the model starts and runs without overlap, at 1.17× the per-image time
#: of a long call. Fitted on the HTTP figures: calls of 1, 10 and 50 images cost 0.50–0.52
#: ms per image above a 3.7–4.0 ms overhead, a 1,000-image call 0.444 ms per image in all
#: (2,247–2,251 img/s); a + b·k + b·p·min(k, 64) through both gives b = 0.436 ms and
#: p = 0.17 (in process: 0.16). It predicts 20 × 50 images at 0.76 of one 1,000-image
#: call (measured 0.74–0.77 over HTTP; in process 0.79 against 0.79–0.80).
FUNCTION_FILL_PENALTY = 0.17
FUNCTION_FILL_IMAGES = 64


class ProcessingSpec(_Strict):
    """T_p = (per_image_s·n + fixed_s)·exp(σZ) [× congestion factor] for the first
    labelling call of a deployment; a later call on the same deployment (share mode's
    chunks) pays ``call_overhead_s`` instead of ``fixed_s`` (``fixed_s`` again if the
    function loads its model on every call), and a call of ``k`` of the batch's ``n``
    images labels at ``φ(n) / φ(k)`` of the whole call's speed, ``φ(k) = 1 + penalty ·
    min(k, fill) / k`` (:data:`FUNCTION_FILL_PENALTY`); one whole-batch call costs the
    same either way."""

    per_image_s: float = Field(ge=0)
    fixed_s: float = Field(ge=0)
    call_overhead_s: float | None = Field(
        None,
        ge=0,
        description="fixed cost of a later call on a warm instance; default fixed_s × "
        "CALL_OVERHEAD_SHARE (measured on stoic's function)",
    )
    loads_model_per_call: bool = Field(
        False,
        description="the function loads its model on every call (STOIC's own): a later "
        "call pays fixed_s again, not call_overhead_s",
    )
    chunk_fill_penalty: float = Field(
        0.0,
        ge=0,
        description="extra per-image time of a call's first chunk_fill_images images "
        "(no pipeline overlap yet); 0: a chunk labels as fast as the whole batch",
    )
    chunk_fill_images: int = Field(FUNCTION_FILL_IMAGES, ge=1)
    sigma: float = Field(0.0, ge=0)
    congestion_rate: float = Field(0.0, ge=0, le=1)
    congestion_factor: tuple[float, float] = (1.5, 3.0)
    model_load_s: float = Field(0.0, ge=0, description="a warm-up call's duration")
    regimes: list[ProcessingRegime] = Field(default_factory=list)

    @property
    def later_call_s(self) -> float:
        if self.loads_model_per_call:
            return self.fixed_s
        if self.call_overhead_s is not None:
            return self.call_overhead_s
        return self.fixed_s * CALL_OVERHEAD_SHARE

    @model_validator(mode="after")
    def _check(self) -> ProcessingSpec:
        lo, hi = self.congestion_factor
        if not 1 <= lo <= hi:
            raise ValueError("congestion_factor must be [lo, hi] with 1 <= lo <= hi")
        return self


class UplinkSpec(_Strict):
    """The site's uplink. ``outage_model`` says what an outage does: ``averaged`` (the
    default, as before) stalls a whole-package upload counted from the batch's arrival,
    spreads that stall over the package's chunks (share mode moves them at the package's
    average rate) and leaves deployments alone; ``stall`` stops every upload, a package
    or a chunk, whenever it runs into an outage, and stalls deployments: one requested
    while the link is down waits for it, and a pod ready during an outage is seen ready
    when the link is back (the cluster's API is across the link)."""

    bandwidth_mbps: float = Field(gt=0)
    sigma: float = Field(0.0, ge=0)
    diurnal_amplitude: float = Field(0.0, ge=0, lt=1)
    peak_hour: float = Field(14.0, ge=0, lt=24)
    drift_sigma: float = Field(0.0, ge=0)
    drift_timescale_h: float = Field(6.0, gt=0)
    bytes_per_image: float = Field(212_000, gt=0)
    regimes: list[UplinkRegime] = Field(default_factory=list)
    outages: list[Outage] = Field(default_factory=list)
    outage_model: Literal["averaged", "stall"] = "averaged"


class RuntimeSpec(_Strict):
    deployment: DeploymentSpec | None = None
    processing: ProcessingSpec


class CloudSpec(_Strict):
    """The cloud cluster as a whole. ``correlation`` ρ couples the pods of one batch (a
    busy cluster slows them together): each cloud runtime's draws for the batch — its
    deployment's timeout, body, outlier and outlier size, its T_p noise and congestion —
    mix one shared standard normal (weight √ρ) with their own (√(1 − ρ)) through a
    Gaussian copula, so each runtime's distribution is unchanged and any two runtimes'
    log-normal bodies have correlation ρ. Probes on the same inquisitor tick share a
    factor too. 0: independent, as before (the same draws, bit for bit)."""

    correlation: float = Field(0.0, ge=0, le=1)


class EnvSpec(_Strict):
    name: str = "environment"
    description: str = ""
    deploy_timeout_s: float = Field(600.0, gt=0)
    uplink: UplinkSpec
    cloud: CloudSpec = Field(default_factory=CloudSpec)
    runtimes: dict[str, RuntimeSpec] = Field(min_length=1)

    @classmethod
    def load(cls, path: Path) -> EnvSpec:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise EnvSpecError(f"{path}: cannot read environment spec: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise EnvSpecError(f"{path}: not valid YAML: {exc}") from None
        return cls.parse(raw, str(path))

    @classmethod
    def parse(cls, raw: Any, source: str = "spec") -> EnvSpec:
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            parts = []
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"]) or "(root)"
                msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
                parts.append(f"{key}: {msg}")
            raise EnvSpecError(f"{source}: " + "; ".join(parts)) from None

    def check_runtimes(self, runtimes: Iterable[Runtime], source: str = "spec") -> None:
        """Every configured runtime needs a section; cloud runtimes need ``deployment``."""
        for r in runtimes:
            spec = self.runtimes.get(r.name)
            if spec is None:
                raise EnvSpecError(
                    f"{source}: runtimes.{r.name}: missing (configured runtimes: "
                    f"{[x.name for x in runtimes]}; spec has {list(self.runtimes)})"
                )
            if not r.is_edge and spec.deployment is None:
                raise EnvSpecError(f"{source}: runtimes.{r.name}.deployment: missing")


# Ground truth ---------------------------------------------------------------------------


@dataclass(slots=True)
class RuntimeTruth:
    """What one runtime would really take for one batch. ``attempts`` are the deployment
    attempts in order (None: timed out); the last is the successful one if any."""

    runtime: str
    transfer_s: float
    attempts: list[float | None]
    processing_s: float
    warmup_s: float
    total_s: float
    served: int = 0  # attempts handed out so far
    # The batch's processing on this runtime, per call (share mode's chunks): seconds
    # per image, the first call's fixed cost and a later call's, noise and congestion
    # of this batch included (so one whole-batch call is exactly ``processing_s``).
    per_image_s: float = 0.0
    first_call_s: float = 0.0
    later_call_s: float = 0.0
    # A call of fewer images than the batch's labels slower (ProcessingSpec's φ).
    fill_penalty: float = 0.0
    fill_images: int = 1
    batch_images: int = 0
    # The cluster's own deployment time (None: it timed out), before any outage stalls
    # it: ``attempts`` holds what a deployment requested at the batch's start sees.
    deploy_work_s: float | None = None

    def _fill(self, k: int) -> float:
        return 1 + self.fill_penalty * min(k, self.fill_images) / k

    def chunk_s(self, n_images: int, *, first: bool) -> float:
        """T_p of a call of ``n_images`` of this batch on a deployment."""
        work = self.per_image_s * n_images
        if self.fill_penalty and 0 < n_images < self.batch_images:
            work *= self._fill(n_images) / self._fill(self.batch_images)
        return work + (self.first_call_s if first else self.later_call_s)

    @property
    def deployment_s(self) -> float:
        last = self.attempts[-1] if self.attempts else 0.0
        return last if last is not None else math.nan

    @property
    def timeouts(self) -> int:
        return sum(a is None for a in self.attempts)


@dataclass(slots=True)
class BatchTruth:
    """The audit of one batch: the truth of every runtime."""

    index: int
    at_s: float
    runtimes: dict[str, RuntimeTruth] = field(default_factory=dict)
    n_images: int = 0
    n_bytes: int = 0
    uplink: SharedUplink | None = None  # concurrent uploads of this batch (share mode)
    # With ``uplink.outage_model: stall`` (else None): the batch's start, its drawn
    # bandwidth (bytes/s) and the link's outages, which every upload and deployment
    # of the batch stalls through from whenever it runs.
    start_s: float | None = None
    bps: float | None = None
    link: Link | None = None

    def totals(self) -> dict[str, float]:
        return {n: t.total_s for n, t in self.runtimes.items()}


#: The truth of the batch whose calls are being made (set by the replay driver).
current_truth: contextvars.ContextVar[BatchTruth | None] = contextvars.ContextVar(
    "stoic_current_truth", default=None
)
#: Set for calls that are neither a batch nor a probe (the scheduler's bootstrap): they
#: draw fresh values from a stream of their own, leaving probes and audits untouched.
fresh_draws: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "stoic_fresh_draws", default=False
)


def _drift(rng: np.random.Generator, timescale_h: float) -> tuple[np.ndarray, np.ndarray]:
    periods = timescale_h * HOUR_S * np.array([1.0, 2.7, 7.3])
    phases = rng.random(3) * 2 * np.pi
    return periods, phases


#: How the cluster's factor moves each uniform (CloudSpec): +1 where a larger uniform is
#: slower (a deployment's body and outlier size; T_p's noise and congestion size), -1
#: where a smaller one is (the timeout, outlier and congestion events fire below a rate).
DEPLOY_SIGNS = np.array([-1.0, 1.0, -1.0, 1.0])
PROCESS_SIGNS = np.array([1.0, -1.0, 1.0])


class SimEnvironment:
    """Draws the ground truth of a spec; see the module docstring."""

    #: Uniforms per probe (one Philox block): timeout, body, outlier?, outlier size.
    PROBE_UNIFORMS = 4

    def __init__(
        self,
        spec: EnvSpec,
        runtimes: Iterable[Runtime],
        *,
        seed: int = 0,
        fallback: str | None = "edge",
        warmup: bool = True,
    ) -> None:
        self.spec = spec
        self.runtimes = {r.name: r for r in runtimes}
        spec.check_runtimes(self.runtimes.values())
        self.seed = seed
        self.timeout_s = spec.deploy_timeout_s
        self.fallback = fallback if fallback in self.runtimes else None
        self.warmup = warmup
        self._audit_rng = np.random.default_rng([seed, 1])
        self._fresh_rng = np.random.default_rng([seed, 3])
        self._informed_rng = np.random.default_rng([seed, 4])
        drift_rng = np.random.default_rng([seed, 2])
        self._drift: dict[str, tuple[np.ndarray, np.ndarray]] = {
            "uplink": _drift(drift_rng, spec.uplink.drift_timescale_h)
        }
        for name in self.runtimes:
            d = spec.runtimes[name].deployment
            self._drift[name] = _drift(drift_rng, d.drift_timescale_h if d else 6.0)
        self._index = {name: i for i, name in enumerate(self.runtimes)}
        # Per runtime: the probe stream and the number of the next probe it would draw.
        self._probe_streams: dict[str, tuple[np.random.Philox, np.random.Generator, int]] = {}
        self.link = Link(spec.uplink.outages)
        #: Outages stall uploads wherever they run, and deployments (UplinkSpec).
        self.stalls = spec.uplink.outage_model == "stall" and bool(self.link)
        self.correlation = spec.cloud.correlation

    # Deterministic functions of time ---------------------------------------------

    def drift(self, key: str, at_s: np.ndarray | float) -> np.ndarray:
        """A smooth, zero-mean, unit-variance function of time (three sinusoids)."""
        periods, phases = self._drift[key]
        t = np.asarray(at_s, dtype=np.float64)[..., None]
        return np.asarray(np.sqrt(2 / 3) * np.sin(2 * np.pi * t / periods + phases).sum(-1))

    @staticmethod
    def diurnal(at_s: np.ndarray | float, amplitude: float, peak_hour: float) -> np.ndarray:
        hour = (np.asarray(at_s, dtype=np.float64) % DAY_S) / HOUR_S
        return np.asarray(1 + amplitude * np.cos(2 * np.pi * (hour - peak_hour) / 24))

    # Deployment ---------------------------------------------------------------------

    def deployment_from_uniforms(self, runtime: str, at_s: np.ndarray, u: np.ndarray) -> np.ndarray:
        """T_d for each row of uniforms ``u`` (shape (n, 4)); NaN = timeout."""
        d = self.spec.runtimes[runtime].deployment
        at = np.asarray(at_s, dtype=np.float64)
        if d is None:
            return np.zeros(at.shape)
        body = np.exp(d.sigma * ndtri(np.clip(u[:, 1], 1e-12, 1 - 1e-12)))
        body *= np.exp(d.drift_sigma * self.drift(runtime, at))
        body *= self.diurnal(at, d.diurnal_amplitude, d.peak_hour)
        median: float | np.ndarray = d.median_s
        timeout_rate: float | np.ndarray = d.timeout_rate
        if d.regimes:  # (no regime: the scalar path, bit for bit what it always was)
            median = _regime_values(d.median_s, d.regimes, "median_s", at)
            timeout_rate = _regime_values(d.timeout_rate, d.regimes, "timeout_rate", at)
        value = d.floor_s + (median - d.floor_s) * body
        lomax = d.outlier_scale_s * ((1 - u[:, 3]) ** (-1 / d.outlier_alpha) - 1)
        value = value + np.where(u[:, 2] < d.outlier_rate, lomax, 0.0)
        if d.cache_miss is not None:
            pull = d.cache_miss.pull_s * body
            value = value + np.where(u[:, 2] >= 1 - d.cache_miss.rate, pull, 0.0)
        down = np.zeros(at.shape, dtype=bool)
        for p in d.unavailable:
            down |= p.covers(at)
        out: np.ndarray = np.where(
            (u[:, 0] < timeout_rate) | (value >= self.timeout_s) | down, np.nan, value
        )
        return out

    def probe_uniforms(self, runtime: str, first: int, count: int) -> np.ndarray:
        """Uniforms of probes ``first .. first+count-1`` of ``runtime``: probe k is
        Philox block k of the key (seed, runtime), whatever else was drawn.

        A probe takes one block (four doubles), so a stream that drew probes up to
        ``first`` is advanced to it rather than made again (probes are asked for in
        order; an earlier one gets a fresh stream)."""
        stream = self._probe_streams.get(runtime)
        if stream is None or first < stream[2]:
            key = np.array([self.seed, self._index[runtime]], np.uint64)
            bitgen = np.random.Philox(key=key)
            stream = (bitgen, np.random.Generator(bitgen), 0)
        bitgen, gen, at = stream
        bitgen.advance(first - at)
        u = gen.random((count, self.PROBE_UNIFORMS))
        self._probe_streams[runtime] = (bitgen, gen, first + count)
        return u

    def probe_deployments(self, runtime: str, first: int, at_s: np.ndarray) -> np.ndarray:
        """T_d (NaN = timeout) of consecutive probes numbered from ``first`` at ``at_s``."""
        at = np.asarray(at_s, dtype=np.float64).reshape(-1)
        u = self.probe_uniforms(runtime, first, at.size)
        if self.correlation > 0 and not self.runtimes[runtime].is_edge:
            u = self._couple(u, self._tick_factor(first, at.size)[:, None], DEPLOY_SIGNS)
        return self.observed(at, self.deployment_from_uniforms(runtime, at, u))

    # The cluster's shared factor and the link's stalls ------------------------------

    def _couple(self, u: np.ndarray, z: np.ndarray | float, signs: np.ndarray) -> np.ndarray:
        """Uniforms ``u`` mixed with the shared standard normal ``z`` (CloudSpec): each
        column's normal gets ``sign·√ρ·z + √(1 − ρ)·own``, still uniform in law."""
        rho = self.correlation
        own = ndtri(np.clip(u, 1e-12, 1 - 1e-12))
        return np.asarray(ndtr(signs * math.sqrt(rho) * z + math.sqrt(1 - rho) * own))

    def _tick_factor(self, first: int, count: int) -> np.ndarray:
        """The cluster's standard normal factor on probe ticks ``first .. +count-1``:
        Philox block k of the key (seed, 2³³), shared by every runtime's probe k."""
        bitgen = np.random.Philox(key=np.array([self.seed, 2 << 32], np.uint64))
        bitgen.advance(first)
        u = np.random.Generator(bitgen).random((count, self.PROBE_UNIFORMS))[:, 0]
        return np.asarray(ndtri(np.clip(u, 1e-12, 1 - 1e-12)))

    def observed(self, at_s: np.ndarray, work_s: np.ndarray) -> np.ndarray:
        """T_d as seen by whoever requested each deployment at ``at_s``, the cluster
        needing ``work_s`` (NaN: timed out): the same unless outages stall deployments
        (UplinkSpec.outage_model), when a stall past the timeout is a timeout."""
        if not self.stalls:
            return work_s
        seen = self.link.ready(at_s, work_s) - at_s
        return np.where(seen >= self.timeout_s, np.nan, seen)

    def observed_one(self, at_s: float, work_s: float | None) -> float | None:
        """:meth:`observed` of one deployment (None: timed out)."""
        if work_s is None:
            return None
        v = float(self.observed(np.array([at_s]), np.array([work_s]))[0])
        return None if math.isnan(v) else v

    def probe_processing(self, runtime: str, key: int, n: int, at_s: float) -> float:
        """T_p of the inquisitor's processing probe on tick ``key``: counter-keyed like
        the deployment probes, on a key of its own, so it draws nothing from any other
        stream and is the same in every mode."""
        words = np.array([self.seed, (1 << 32) + self._index[runtime]], np.uint64)
        bitgen = np.random.Philox(key=words)
        bitgen.advance(key)
        u = np.random.Generator(bitgen).random(3)
        return self.processing_from_uniforms(runtime, n, u, at_s)

    # Processing and transfer ------------------------------------------------------

    def processing_from_uniforms(self, runtime: str, n: int, u: np.ndarray, at_s: float) -> float:
        """T_p of ``n`` images started at ``at_s`` (seconds), from 3 uniforms."""
        p = self.spec.runtimes[runtime].processing
        base = (p.per_image_s * n + p.fixed_s) * math.exp(
            p.sigma * float(ndtri(min(max(u[0], 1e-12), 1 - 1e-12)))
        )
        if u[1] < p.congestion_rate:
            lo, hi = p.congestion_factor
            base *= lo + (hi - lo) * u[2]
        if p.regimes:
            base *= float(_regime_values(1.0, p.regimes, "factor", np.array(at_s)))
        return float(base)

    def processing_factor(self, runtime: str, u: np.ndarray, at_s: float) -> float:
        """The multiplier of one call's nominal T_p: noise, congestion, regimes."""
        p = self.spec.runtimes[runtime].processing
        factor = math.exp(p.sigma * float(ndtri(min(max(u[0], 1e-12), 1 - 1e-12))))
        if u[1] < p.congestion_rate:
            lo, hi = p.congestion_factor
            factor *= lo + (hi - lo) * u[2]
        if p.regimes:
            factor *= float(_regime_values(1.0, p.regimes, "factor", np.array(at_s)))
        return factor

    def processing_factors(self, runtime: str, u: np.ndarray, at_s: float) -> np.ndarray:
        """:meth:`processing_factor` for each row of ``u`` (shape (n, 3)), vectorised for
        the informed bound's many draws (a test holds the two equal)."""
        p = self.spec.runtimes[runtime].processing
        factor = np.exp(p.sigma * ndtri(np.clip(u[:, 0], 1e-12, 1 - 1e-12)))
        lo, hi = p.congestion_factor
        factor *= np.where(u[:, 1] < p.congestion_rate, lo + (hi - lo) * u[:, 2], 1.0)
        if p.regimes:
            factor *= float(_regime_values(1.0, p.regimes, "factor", np.array(at_s)))
        return np.asarray(factor)

    def uplink_state(self, at_s: float) -> tuple[float, float, float]:
        """The uplink's deterministic state at ``at_s``: its nominal Mbit/s (regimes
        included), its drift term and its diurnal dip. Computed once for many draws at
        one instant (the informed references draw 512)."""
        up = self.spec.uplink
        drift = up.drift_sigma * float(self.drift("uplink", at_s))
        # The uplink is slowest at the busiest hour: the diurnal term dips there.
        dip = 2 - float(self.diurnal(at_s, up.diurnal_amplitude, up.peak_hour))
        nominal = up.bandwidth_mbps
        if up.regimes:
            nominal = float(_regime_values(nominal, up.regimes, "bandwidth_mbps", np.array(at_s)))
        return nominal, drift, dip

    def bandwidth_bps(
        self, at_s: float, u: float, state: tuple[float, float, float] | None = None
    ) -> float:
        """The bandwidth (bytes/s) an upload starting at ``at_s`` gets, from a uniform."""
        nominal, drift, dip = state or self.uplink_state(at_s)
        z = float(ndtri(min(max(u, 1e-12), 1 - 1e-12)))
        factor = math.exp(self.spec.uplink.sigma * z + drift)
        return nominal * 1e6 / 8 * factor * dip

    def bandwidths_bps(
        self, at_s: float, us: list[float], state: tuple[float, float, float]
    ) -> list[float]:
        """:meth:`bandwidth_bps` of many uniforms at one instant, the same floats: the
        quantiles in one vectorised call (one per value cost the informed references'
        512 draws a batch more than the replay itself), ``exp`` by ``math`` as there."""
        nominal, drift, dip = state
        sigma = self.spec.uplink.sigma
        zs = ndtri(np.clip(np.array(us), 1e-12, 1 - 1e-12)).tolist()
        return [nominal * 1e6 / 8 * math.exp(sigma * z + drift) * dip for z in zs]

    def transfer_s(
        self, n_bytes: float, at_s: float, u: float, state: tuple[float, float, float] | None = None
    ) -> float:
        """T_t of an upload of ``n_bytes`` started at ``at_s``: the bytes at the rate
        drawn for its start (:meth:`bandwidth_bps`); an outage stalls it until the link
        is back, however far it had got."""
        bps = self.bandwidth_bps(at_s, u, state)
        if not self.link:
            return n_bytes / bps
        return self.link.finish(at_s, n_bytes, bps) - at_s

    def uplink_up(self, at_s: float) -> bool:
        """Whether the uplink carries traffic at ``at_s`` (outside every outage): what a
        request across it (the inquisitor's uplink check) would find."""
        return self.link.up(at_s)

    def warmup_s(self, runtime: str) -> float:
        return self.spec.runtimes[runtime].processing.model_load_s

    def fresh_deployment(self, runtime: str, at_s: float) -> float:
        """T_d (NaN = timeout) of a deployment outside batches and probes."""
        u = self._fresh_rng.random((1, self.PROBE_UNIFORMS))
        at = np.array([at_s])
        return float(self.observed(at, self.deployment_from_uniforms(runtime, at, u))[0])

    def fresh_processing(self, runtime: str, n: int, at_s: float) -> float:
        """T_p of a call made outside any batch (the scheduler's bootstrap)."""
        return self.processing_from_uniforms(runtime, n, self._fresh_rng.random(3), at_s)

    def fresh_transfer(self, n_bytes: int, at_s: float) -> float:
        return self.transfer_s(n_bytes, at_s, float(self._fresh_rng.random()))

    # Audit --------------------------------------------------------------------------

    def audit(
        self, index: int, job: Job, at_s: float, *, start_s: float | None = None
    ) -> BatchTruth:
        """Draw the truth of a batch on every runtime at its arrival ``at_s``.

        Consumes a fixed number of uniforms per runtime (one more per batch with a
        cluster correlation), so batch *i*'s truth depends on nothing but the seed and
        the batches before it: every mode replays the same world. A runtime's total is
        what the requester would see if it chose it: T_t + T_d + warm-up + T_p; a
        timed-out deployment is not retried (the requester treats a timeout as final)
        and the batch falls back to the edge: timeout + edge T_p. Where outages stall
        (UplinkSpec.outage_model), T_d and the uploads are counted from the batch's
        start ``start_s`` (default ``at_s``): the upload after the deployment, in order.
        """
        return self._draw(self._audit_rng, index, job, at_s, start_s)

    def expected_totals(self, job: Job, at_s: float, draws: int = 512) -> dict[str, float]:
        """Each runtime's *expected* total for ``job`` arriving at ``at_s``, over
        ``draws`` independent draws of the batch's dice from a stream of their own (the
        audit and the probes are untouched, so the world replayed stays the same).

        This is what a scheduler that knew the environment's spec and its present state
        (drift, diurnal swing, regimes, outages, unavailable windows) — but not this
        batch's dice — would expect; picking the least is the best any single-runtime
        scheduler can do in expectation: the replay's ``informed`` mode, a bound on
        learning, not a scheduler (docs/evaluation/README.md). A timed-out deployment
        costs the timeout plus the best other runtime's expectation, as the requester's
        fallback (the least predicted total among the others) would get."""
        ok = self._dice(job, at_s, draws, overlap=False)
        edge = float(ok[self.fallback].mean()) if self.fallback is not None else math.nan
        # One level of fallback first (a timeout, then the edge: the audit's rule) ...
        first = {
            n: float(np.where(np.isnan(v), self.timeout_s + edge, v).mean()) for n, v in ok.items()
        }
        # ... then the requester's: a timeout, then the best other runtime.
        out: dict[str, float] = {}
        for name, v in ok.items():
            after = min((e for n, e in first.items() if n != name), default=edge)
            out[name] = float(np.where(np.isnan(v), self.timeout_s + after, v).mean())
        return out

    def expected_duplicates(self, job: Job, at_s: float, draws: int = 512) -> dict[str, float]:
        """Each cloud runtime's expected latency as the duplicator's cloud leg beside the
        edge, with a perfect lagging decision: E[min(edge T_p, max(T_t, T_d) + warm-up +
        T_p)], a timed-out deployment leaving the edge's. An optimistic bound on any
        duplicator that knew the environment (docs/evaluation/bounds.py)."""
        ok = self._dice(job, at_s, draws, overlap=True)
        if self.fallback is None:
            raise EnvSpecError("the duplicator's bound needs an edge runtime")
        edge = ok.pop(self.fallback)
        return {n: float(np.fmin(edge, v).mean()) for n, v in ok.items()}

    def expected_with_actions(
        self,
        job: Job,
        at_s: float,
        *,
        deadline: bool,
        pipelined: bool,
        available: Collection[str] | None = None,
        draws: int = 512,
        fallbacks: dict[str, dict[str, float]] | None = None,
        ranking: dict[str, float] | None = None,
    ) -> tuple[dict[str, float], dict[str, float]]:
        """:meth:`expected_totals` with the selector's two actions beyond the paper's
        (:mod:`stoic.schedule.decide.deadline`): ``pipelined``, the upload runs during
        the deployment; ``deadline``, each cloud runtime abandons its deployment at the
        deadline of least expected total over the draws (then the fallback, as after a
        timeout). Returns the expected totals and those deadlines (none where waiting to
        the timeout is best): the replay's ``informed+deadline+pipelined``, the informed
        reference of that action space.

        ``available``: the runtimes the requester may fall back to (default: all). The
        requester skips those marked unavailable, so a fallback priced at one of them
        is one the batch never gets: on random-000, a deployment abandoned at 12 s on
        the strength of a gpu1 the tracker had marked down (219 s expected) ran on the
        edge, 1,991 s.

        ``fallbacks`` (with ``deadline``; ``policy.deploy_deadline_fallback``): each
        fallback leg gets a deadline of its own too, priced as a fallback down the chain
        the requester runs (:class:`_Chains`): the next runtime is the one its rule picks
        (:func:`~stoic.values.fallback_after`) among the usable runtimes not yet tried,
        with the expected totals without actions (a timeout, then the edge) as its
        ranking, each once, the edge last with none. ``fallbacks`` receives, per first
        choice, the deadlines of its chain's cloud legs; ``ranking``, the usable
        runtimes' ranking totals, which the informed oracle's requester falls back by
        (``SinglePlan.fallback_totals``), so that it runs the chain priced here."""
        deps: dict[str, np.ndarray] = {}
        ok = self._dice(job, at_s, draws, overlap=pipelined, deployments=deps)
        edge = float(ok[self.fallback].mean()) if self.fallback is not None else math.nan
        first = {
            n: float(np.where(np.isnan(v), self.timeout_s + edge, v).mean()) for n, v in ok.items()
        }
        usable = set(ok if available is None else available)
        out: dict[str, float] = {}
        deadlines: dict[str, float] = {}
        chains = None
        if deadline and fallbacks is not None:
            ranks = {n: first[n] for n in ok if n in usable}
            chains = _Chains(ok, deps, ranks, self.fallback, edge, self.timeout_s)
            if ranking is not None:
                ranking.update(ranks)
        for name, v in ok.items():
            if chains is not None and fallbacks is not None:  # the edge: none after it
                chain = chains.value(frozenset(usable - {name})) if name in deps else (edge, {})
                after, fallbacks[name] = chain
            else:
                after = min(
                    (e for n, e in first.items() if n != name and n in usable), default=edge
                )
            out[name] = float(np.where(np.isnan(v), self.timeout_s + after, v).mean())
            if deadline and name in deps:
                d, e = _best_deadline(deps[name], v, after, self.timeout_s)
                if d is not None and e < out[name]:
                    out[name], deadlines[name] = e, d
        return out, deadlines

    def _dice(
        self,
        job: Job,
        at_s: float,
        draws: int,
        *,
        overlap: bool,
        deployments: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """``draws`` fresh draws of ``job``'s total on every runtime (NaN: timed out),
        from the informed stream; ``overlap``: the upload runs during the deployment.
        ``deployments`` receives each cloud runtime's T_d draws (NaN: timed out)."""
        rng = self._informed_rng
        at = np.full(draws, at_s)
        u_bw = rng.random(draws).tolist()
        now = self.uplink_state(at_s)
        rates = self.bandwidths_bps(at_s, u_bw, now)
        transfer = np.array(
            [
                self.link.finish(at_s, job.n_bytes, b) - at_s if self.link else job.n_bytes / b
                for b in rates
            ]
        )
        bps = rates if self.stalls else []
        ok: dict[str, np.ndarray] = {}
        for name, rt in self.runtimes.items():
            u_dep = rng.random((draws, self.PROBE_UNIFORMS))
            u_p = rng.random((draws, 3))
            p = self.spec.runtimes[name].processing
            tp = (p.per_image_s * job.n_images + p.fixed_s) * self.processing_factors(
                name, u_p, at_s
            )
            if rt.is_edge:
                ok[name] = tp
                continue
            warm = self.warmup_s(name) if self.warmup else 0.0
            dep = self.observed(at, self.deployment_from_uniforms(name, at, u_dep))
            if deployments is not None:
                deployments[name] = dep
            if self.stalls and not overlap:  # the upload starts when the pod is ready
                ready = dep + np.array(
                    [
                        self.link.finish(at_s + d, job.n_bytes, b) - (at_s + d)
                        if not math.isnan(d)
                        else math.nan
                        for d, b in zip(dep.tolist(), bps, strict=True)
                    ]
                )
            else:
                ready = np.maximum(transfer, dep) if overlap else transfer + dep  # NaN stays
            ok[name] = ready + warm + tp
        return ok

    def _draw(
        self, rng: np.random.Generator, index: int, job: Job, at_s: float, start_s: float | None
    ) -> BatchTruth:
        bw_u = float(rng.random())
        transfer = self.transfer_s(job.n_bytes, at_s, bw_u)
        truth = BatchTruth(index, at_s, n_images=job.n_images, n_bytes=job.n_bytes)
        at = np.array([at_s])
        dice = [(n, rng.random((1, self.PROBE_UNIFORMS)), rng.random(3)) for n in self.runtimes]
        if self.correlation > 0:  # the cluster's factor, drawn after the runtimes' own
            z = float(ndtri(min(max(float(rng.random()), 1e-12), 1 - 1e-12)))
            dice = [
                (n, d, u)
                if self.runtimes[n].is_edge
                else (n, self._couple(d, z, DEPLOY_SIGNS), self._couple(u, z, PROCESS_SIGNS))
                for n, d, u in dice
            ]
        start, bps = at_s if start_s is None else start_s, 0.0
        if self.stalls:
            bps = self.bandwidth_bps(at_s, bw_u)
            transfer = self.link.finish(start, job.n_bytes, bps) - start
            truth.start_s, truth.bps, truth.link = start, bps, self.link
        for name, u_dep, u_p in dice:
            rt = self.runtimes[name]
            p = self.spec.runtimes[name].processing
            tp = self.processing_from_uniforms(name, job.n_images, u_p, at_s)
            factor = self.processing_factor(name, u_p, at_s)
            calls = (p.per_image_s * factor, p.fixed_s * factor, p.later_call_s * factor)
            fill = (p.chunk_fill_penalty, p.chunk_fill_images, job.n_images)
            if rt.is_edge:
                truth.runtimes[name] = RuntimeTruth(name, 0.0, [], tp, 0.0, tp, 0, *calls, *fill)
                continue
            v = float(self.deployment_from_uniforms(name, at, u_dep)[0])
            work = None if math.isnan(v) else v
            dep = self.observed_one(start, work) if self.stalls else work
            warm = self.warmup_s(name) if self.warmup else 0.0
            if dep is None:
                total = self.timeout_s
            elif self.stalls:  # deploy, then upload from when the pod is ready
                up = self.link.finish(start + dep, job.n_bytes, bps) - (start + dep)
                total = dep + up + warm + tp
            else:
                total = transfer + dep + warm + tp
            truth.runtimes[name] = RuntimeTruth(
                name, transfer, [dep], tp, warm, total, 0, *calls, *fill, deploy_work_s=work
            )
        if self.fallback is not None:
            edge_tp = truth.runtimes[self.fallback].processing_s
            for t in truth.runtimes.values():
                if t.attempts and t.attempts[-1] is None:
                    t.total_s += edge_tp
        return truth


class _Chains:
    """The informed reference's fallback chains with a deadline on every cloud leg
    (:meth:`SimEnvironment.expected_with_actions`'s ``fallbacks``). Falling back into a
    set of untried usable runtimes runs the one the requester's rule picks
    (:func:`~stoic.values.fallback_after` on ``ranks``), with its own best deadline and
    the rest of the set as its fallback: the chain the requester runs, not the best
    order over the set, which it never runs. The edge ends a chain (no deadline) and
    costs its expected total, as where no edge is left. Each set is priced once, when
    first asked."""

    def __init__(
        self,
        ok: dict[str, np.ndarray],
        deps: dict[str, np.ndarray],
        ranks: dict[str, float],
        edge: str | None,
        edge_s: float,
        timeout_s: float,
    ) -> None:
        self.ok, self.deps, self.ranks, self.edge = ok, deps, ranks, edge
        self.edge_s, self.timeout_s = edge_s, timeout_s
        self._memo: dict[frozenset[str], tuple[float, dict[str, float]]] = {}

    def value(self, left: frozenset[str]) -> tuple[float, dict[str, float]]:
        """The expected total of falling back into ``left`` and its cloud legs' deadlines."""
        if left in self._memo:
            return self._memo[left]
        nxt = fallback_after(self.ranks, self.edge or "", (), left.__contains__)
        if nxt is None or nxt not in self.deps:  # the edge, or none left
            out: tuple[float, dict[str, float]] = (self.edge_s, {})
        else:
            out = self._leg(nxt, left - {nxt})
        self._memo[left] = out
        return out

    def _leg(self, name: str, rest: frozenset[str]) -> tuple[float, dict[str, float]]:
        v = self.ok[name]
        after, chain = self.value(rest)
        waited = float(np.where(np.isnan(v), self.timeout_s + after, v).mean())
        d, e = _best_deadline(self.deps[name], v, after, self.timeout_s)
        if d is not None and e < waited:
            return e, {name: d, **chain}
        return waited, dict(chain)


def _best_deadline(
    dep: np.ndarray, total: np.ndarray, after_s: float, timeout_s: float
) -> tuple[float | None, float]:
    """The deploy deadline of least mean total over draws (``dep``: T_d, NaN timed out;
    ``total``: the draw's total when ready; a draw not ready by the deadline costs the
    deadline plus ``after_s``) among the draws' own T_d, and its mean total."""
    n = dep.size
    ready = ~np.isnan(dep) & (dep < timeout_s)
    if n == 0 or not ready.any():
        return None, math.inf
    order = np.argsort(np.where(ready, dep, np.inf), kind="stable")
    d = dep[order][: int(ready.sum())]
    done = np.cumsum(total[order][: d.size])
    j = np.searchsorted(d, d, side="right")  # draws ready by each candidate (ties in)
    means = (done[j - 1] + (n - j) * (d + after_s)) / n
    k = int(np.argmin(means))
    return float(d[k]), float(means[k])


# Backend ------------------------------------------------------------------------------


class SimulatedBackend(RuntimeBackend):
    """A :class:`~stoic.backends.base.RuntimeBackend` that sleeps the ground truth.

    Calls made while :data:`current_truth` holds a batch's truth take exactly its
    durations; with :data:`fresh_draws` set they draw fresh values; any other
    deployment is a probe: it draws probe number ``probe_key()`` (the inquisitor's tick)
    at the current simulated time ``now_s()``.

    ``probe_time`` (optional) says at what simulated time probe *k* would run if it runs
    on its tick. Probes are then drawn ahead, :data:`PROBE_CHUNK` at a time, in one
    vectorised call (a replay makes ~1,440 probes per runtime per simulated day, and a
    one-probe call is mostly numpy overhead); a probe takes the value drawn ahead only if
    it really runs at the predicted instant (the same float), else it is drawn alone.
    Each value is an element-wise function of its own uniforms and time, so a value drawn
    ahead is the value drawn alone (``tests/test_simulated.py`` checks it bit for bit).
    """

    #: Probes drawn ahead per runtime in one vectorised call (see the class docstring).
    PROBE_CHUNK = 256

    def __init__(
        self,
        env: SimEnvironment,
        now_s: Callable[[], float],
        probe_key: Callable[[], int],
        probe_time: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.env = env
        self.now_s = now_s
        self.probe_key = probe_key
        self.probe_time = probe_time
        self.probes: dict[str, int] = dict.fromkeys(env.runtimes, 0)
        self.calls: dict[str, int] = {"deploy": 0, "upload": 0, "invoke": 0, "teardown": 0}
        # runtime -> (first probe key, predicted times, T_d values) of the chunk ahead
        self._ahead: dict[str, tuple[int, list[float], list[float]]] = {}
        self.ahead_hits = 0
        self._called: set[int] = set()  # deployments that made a labelling chunk call
        #: Pod seconds per (kind, runtime) — ``batch`` (a batch's legs) or ``learning``
        #: (probes, the bootstrap) — from each deployment's request to its teardown; a
        #: deployment that timed out to the timeout (not × GPUs: the scorer weighs them).
        self.pod_s: dict[str, dict[str, float]] = {"batch": {}, "learning": {}}
        self._pods: dict[int, tuple[str, str, float]] = {}  # id -> kind, runtime, since

    def _bill(self, kind: str, runtime: str, seconds: float) -> None:
        by = self.pod_s[kind]
        by[runtime] = by.get(runtime, 0.0) + seconds

    def _probe(self, runtime: str, k: int, now: float) -> float:
        """T_d (NaN = timeout) of probe ``k`` run at ``now``."""
        if self.probe_time is not None:
            ahead = self._ahead.get(runtime)
            if ahead is None or not ahead[0] <= k < ahead[0] + len(ahead[1]):
                keys = np.arange(k, k + self.PROBE_CHUNK)
                at = np.asarray(self.probe_time(keys), dtype=np.float64)
                values = self.env.probe_deployments(runtime, k, at)
                ahead = (k, at.tolist(), values.tolist())
                self._ahead[runtime] = ahead
            i = k - ahead[0]
            if ahead[1][i] == now:
                self.ahead_hits += 1
                return ahead[2][i]
        return float(self.env.probe_deployments(runtime, k, np.array([now]))[0])

    def _truth(self, runtime: str) -> RuntimeTruth | None:
        t = current_truth.get()
        return None if t is None else t.runtimes.get(runtime)

    async def deploy(self, runtime: Runtime, *, timeout_s: float) -> Deployment:
        self.calls["deploy"] += 1
        if runtime.is_edge:
            return Deployment(runtime, 0.0, endpoint="sim://edge")
        truth = self._truth(runtime.name)
        batch = current_truth.get()
        value: float | None
        if truth is not None and truth.served < len(truth.attempts):
            value = truth.attempts[truth.served]
            if batch is not None and batch.link is not None:  # stalled from now, not start
                value = self.env.observed_one(self.now_s(), truth.deploy_work_s)
            truth.served += 1
        elif fresh_draws.get():
            v = self.env.fresh_deployment(runtime.name, self.now_s())
            value = None if math.isnan(v) else v
        else:
            self.probes[runtime.name] += 1
            v = self._probe(runtime.name, self.probe_key(), self.now_s())
            value = None if math.isnan(v) else v
        kind = "batch" if batch is not None else "learning"
        limit = min(timeout_s, self.env.timeout_s)
        since = self.now_s()
        try:
            if value is None or value >= limit:
                await asyncio.sleep(limit)
                raise DeployTimeout(runtime.name, limit)
            await asyncio.sleep(value)
        except BaseException:  # a timeout, or cancelled while deploying
            self._bill(kind, runtime.name, self.now_s() - since)
            raise
        dep = Deployment(runtime, value, endpoint=f"sim://{runtime.name}")
        self._pods[id(dep)] = (kind, runtime.name, since)
        return dep

    async def upload(self, runtime: Runtime, job: Job) -> Upload:
        self.calls["upload"] += 1
        ref = job.package_key or job.batch_id
        if runtime.is_edge:
            return Upload(ref, job.n_bytes, 0.0)
        batch = current_truth.get()
        truth = self._truth(runtime.name)
        if job.subset is not None and batch is not None and truth is not None:
            # A chunk: its bytes at the batch's uplink rate, shared with every other
            # upload of the batch in flight (processor sharing, as a link does), and
            # stalled by outages where they stall (else at the package's average rate).
            if batch.uplink is None:
                if batch.link is not None and batch.bps is not None:
                    offset = self.now_s() - asyncio.get_running_loop().time()
                    batch.uplink = SharedUplink(batch.bps, batch.link, offset)
                else:
                    bps = batch.n_bytes / truth.transfer_s if truth.transfer_s > 0 else math.inf
                    batch.uplink = SharedUplink(bps)
            seconds = await batch.uplink.transfer(job.n_bytes)
            return Upload(ref, job.n_bytes, seconds, subset=job.subset)
        if truth is None:
            seconds = self.env.fresh_transfer(job.n_bytes, self.now_s())
        elif batch is not None and batch.link is not None and batch.bps is not None:
            now = self.now_s()  # the package stalls through the outages from now
            seconds = batch.link.finish(now, job.n_bytes, batch.bps) - now
        else:
            seconds = truth.transfer_s
        await asyncio.sleep(seconds)
        return Upload(ref, job.n_bytes, seconds)

    async def invoke(
        self, deployment: Deployment, job: Job, upload: Upload, *, warmup: bool = False
    ) -> Invocation:
        self.calls["invoke"] += 1
        name = deployment.runtime.name
        results: list[dict[str, Any]] | None = None
        if warmup:
            seconds = self.env.warmup_s(name)
        else:
            truth = self._truth(name)
            if job.subset is not None and truth is not None:
                # A chunk: the first labelling call of this deployment pays the fixed
                # cost, later ones the per-call overhead (ProcessingSpec).
                first = id(deployment) not in self._called
                self._called.add(id(deployment))
                seconds = truth.chunk_s(job.n_images, first=first)
                start = job.subset[0]
                results = [{"index": start + i} for i in range(job.n_images)]
            elif truth is not None:
                seconds = truth.processing_s
            elif fresh_draws.get():
                seconds = self.env.fresh_processing(name, job.n_images, self.now_s())
            else:  # the inquisitor's processing probe, keyed by its tick
                seconds = self.env.probe_processing(
                    name, self.probe_key(), job.n_images, self.now_s()
                )
        await asyncio.sleep(seconds)
        return Invocation(seconds, results=results, timings={"processing_s": seconds})

    async def teardown(self, deployment: Deployment) -> None:
        self.calls["teardown"] += 1
        self._called.discard(id(deployment))
        pod = self._pods.pop(id(deployment), None)
        if pod is not None:
            kind, name, since = pod
            self._bill(kind, name, self.now_s() - since)


def load_env(path: Path, runtimes: Iterable[Runtime], **kwargs: Any) -> SimEnvironment:
    """Load and check a spec file against the configured runtimes."""
    spec = EnvSpec.load(path)
    rts = list(runtimes)
    spec.check_runtimes(rts, str(path))
    return SimEnvironment(spec, rts, **kwargs)
