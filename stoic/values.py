"""Plain values shared by every part of stoic; no I/O here.

Times are floats: durations in seconds (``*_s``), instants in seconds since the Unix
epoch as given by an injected clock (``at``). The replay's virtual clock and the
daemon's wall clock both produce such floats, so the predictor, the policy and the
requester cannot tell the two worlds apart (docs/architecture.md, "Two worlds, one code path").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeVar


class RuntimeKind(StrEnum):
    """Where a runtime runs: the edge site itself, or a cloud pod with CPU or GPUs."""

    EDGE = "edge"
    CPU = "cpu"
    GPU = "gpu"


@dataclass(frozen=True, slots=True)
class Runtime:
    """One place a batch can run (the paper's scenarios: edge, cpu, gpu1, gpu2)."""

    name: str
    kind: RuntimeKind
    gpus: int = 0
    backend: str = "local"

    @property
    def is_edge(self) -> bool:
        return self.kind is RuntimeKind.EDGE


@dataclass(frozen=True, slots=True)
class Component:
    """A predicted duration: mean and standard deviation, in seconds."""

    mean: float
    std: float = 0.0

    def __add__(self, other: Component) -> Component:
        # Components are treated as independent, so variances add.
        return Component(self.mean + other.mean, math.hypot(self.std, other.std))


ZERO = Component(0.0, 0.0)


@dataclass(frozen=True, slots=True)
class Risk:
    """What the mean of a cloud runtime's T_s hides (docs/scheduling.md, "Risk").

    The deployment component of an :class:`Estimate` is the paper's median window: the
    best guess of the *next* deployment, robust to outliers. A batch placed on the
    runtime pays the whole distribution, though: the heavy tail above the median, and a
    chance that the deployment times out, after which the requester falls back to the
    edge having lost ``timeout_s``. These are the predictor's own samples, summarised.
    """

    p_timeout: float = 0.0
    """Probability that the next deployment times out (recent samples, weak prior)."""
    timeout_s: float = 0.0
    """Seconds lost to a timeout before the fallback starts (the deployment timeout)."""
    deployment_excess_s: float = 0.0
    """E[T_d | ready] minus the median: the tail's share of the mean."""
    deployment_quantile_s: float | None = None
    """The configured quantile of T_d (None: beyond the timeout, or not computed)."""
    processing_excess: float = 0.0
    """E[T_p] over the fitted line, minus 1: what congestion adds on average. RANSAC
    leaves congested runs out of the line, rightly for the *next* run's best guess, but
    a batch pays them at their rate (:attr:`ProcessingModel.excess`). Edge too."""
    ready_s: tuple[float, ...] = ()
    """T_d of the deployments kept that became ready, ascending, shifted to the
    window's level (the long view gives the shape, the window the level): the
    distribution a deploy deadline is chosen on (:mod:`stoic.schedule.decide.deadline`)."""


NO_RISK = Risk()


@dataclass(frozen=True, slots=True)
class Estimate:
    """Predicted response time of one runtime for one batch: T_s = T_t + T_d + T_p."""

    runtime: str
    transfer: Component
    deployment: Component
    processing: Component
    risk: Risk = NO_RISK
    processing_line: tuple[float, float] | None = None
    """``(per_image_s, fixed_s)`` of the fitted T_p line, when the predictor has one
    (share mode sizes chunks and picks runtimes with it)."""
    processing_seen: int | None = None
    """The largest batch among the T_p samples behind the line (None: not known): a
    larger batch's T_p is an extrapolation."""
    uplink_wait_s: float = 0.0
    """Seconds of ``transfer`` that are the wait for an uplink that is down now
    (:class:`~stoic.predict.uplink.UplinkWatch`): no byte moves before it ends."""
    total: Component = field(init=False, repr=False, compare=False)
    """T_s = T_t + T_d + T_p (independent: the variances add). Summed once, when the
    estimate is made: the policy reads it a few dozen times a batch."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", self.transfer + self.deployment + self.processing)

    def per_image_s(self, n_images: int) -> float:
        """Seconds per image: the fitted slope, else T_p spread over the batch."""
        if self.processing_line is not None:
            return self.processing_line[0]
        return self.processing.mean / max(n_images, 1)

    def fixed_s(self) -> float:
        """The fixed cost of a call: the fitted intercept, else 0."""
        return self.processing_line[1] if self.processing_line is not None else 0.0

    @property
    def processing_tail_s(self) -> float:
        """Seconds the processing congestion adds to T_p in expectation."""
        return self.risk.processing_excess * self.processing.mean

    def expected_total(self, fallback_s: float) -> float:
        """E[T_s] with the risk in: the tail above the median when the deployment is
        ready, and ``p_timeout`` × (the timeout, then ``fallback_s`` on the edge)."""
        r = self.risk
        ready = self.total.mean + r.deployment_excess_s + self.processing_tail_s
        return (1.0 - r.p_timeout) * ready + r.p_timeout * (r.timeout_s + fallback_s)

    def quantile_total(self, fallback_s: float) -> float:
        """T_s with the deployment at its configured quantile (a timeout if the
        quantile lies beyond it): a risk-averse total."""
        r = self.risk
        if r.deployment_quantile_s is None:
            if r.p_timeout > 0.0:
                return r.timeout_s + fallback_s
            return self.total.mean
        return self.transfer.mean + r.deployment_quantile_s + self.processing.mean

    def as_dict(self) -> dict[str, float]:
        t = self.total
        return {
            "transfer_s": self.transfer.mean,
            "transfer_std_s": self.transfer.std,
            "deployment_s": self.deployment.mean,
            "deployment_std_s": self.deployment.std,
            "processing_s": self.processing.mean,
            "processing_std_s": self.processing.std,
            "total_s": t.mean,
            "total_std_s": t.std,
            "p_timeout": self.risk.p_timeout,
            "deployment_excess_s": self.risk.deployment_excess_s,
            "processing_excess": self.risk.processing_excess,
            "uplink_wait_s": self.uplink_wait_s,
        }


class Mode(StrEnum):
    """Scheduling policies. ``selector`` and ``duplicator`` are the paper's
    (``selector-paper``: the selector without the deploy deadline and the pipelined
    upload, whatever the settings say, for comparison); ``share`` splits a batch across
    the edge and cloud runtimes (the paper's future work); the rest are baselines used
    by the replay (``oracle`` is MIN-LAT and needs ground truth)."""

    SELECTOR = "selector"
    SELECTOR_PAPER = "selector-paper"
    DUPLICATOR = "duplicator"
    SHARE = "share"
    EDGE_ONLY = "edge-only"
    GPU1_ONLY = "gpu1-only"
    THRESHOLD = "threshold"
    ORACLE = "oracle"
    PINNED = "pinned"


API_MODES = (Mode.SELECTOR, Mode.SELECTOR_PAPER, Mode.DUPLICATOR, Mode.SHARE)
"""Modes a client may ask for, and the daemon's default may be; the replay's baselines
are not offered over HTTP (``pinned`` is what a request naming a runtime gets)."""


@dataclass(frozen=True, slots=True)
class Job:
    """What the scheduler knows of a batch when it decides: its size, not its content."""

    batch_id: str
    n_images: int
    n_bytes: int
    app: str = "classify"
    app_version: str = "1"
    package_key: str = ""
    subset: tuple[int, int] | None = None
    """Images ``[start, stop)`` of the package only (share mode's chunks); None: all."""

    def chunk(self, start: int, stop: int) -> Job:
        """The job of images ``[start, stop)`` of this job's package (bytes pro rata)."""
        k = stop - start
        n_bytes = round(self.n_bytes * k / self.n_images) if self.n_images else 0
        return replace(self, n_images=k, n_bytes=n_bytes, subset=(start, stop))


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanBase:
    """What every policy decision carries: the mode that made it and why, the
    estimates it compared, the objective's ``scores`` per runtime, and ``decision_s``,
    the CPU time the scheduler spent estimating and deciding (0 until it has timed it)."""

    mode: Mode
    reason: str
    estimates: Mapping[str, Estimate] = field(default_factory=dict)
    decision_s: float = 0.0
    scores: Mapping[str, float] = field(default_factory=dict)
    deadlines: Mapping[str, float] = field(default_factory=dict)
    """Per cloud runtime, the deploy deadline: seconds from the start of its deployment
    after which it is abandoned and the batch falls back (absent: the timeout)."""
    pipelined: bool = False
    """A single cloud leg uploads while its pod deploys (the duplicator's always do)."""

    def estimates_as_dicts(self) -> dict[str, dict[str, float]]:
        """Each runtime's estimate as stored with the decision, its deploy deadline in
        (``deadline_s``) where the plan set one."""
        out = {name: e.as_dict() for name, e in self.estimates.items()}
        for name, d in self.deadlines.items():
            if name in out:
                out[name]["deadline_s"] = d
        return out


@dataclass(frozen=True, slots=True)
class SinglePlan(PlanBase):
    """The batch runs on ``runtime`` (selector, the baselines, a pinned or bootstrap
    run), falling back if it fails."""

    runtime: str
    fallback_deadlines: Mapping[str, float] = field(default_factory=dict)
    """Per cloud runtime, its deploy deadline where the batch falls back to it
    (``policy.deploy_deadline_fallback``): priced as a fallback of this plan, its own
    fallback the next runtime of the requester's chain (absent: the timeout)."""
    fallback_totals: Mapping[str, float] = field(default_factory=dict)
    """The totals the requester ranks this plan's fallbacks by (:func:`fallback_after`)
    where they are not its estimates' predicted totals: the informed oracle's expected
    totals (the replay's ``informed…+fallback``), so that it runs the chain its reference
    priced. Empty: the estimates'."""

    @property
    def chosen(self) -> str:
        """The runtime the decision names (stored and scored as "planned")."""
        return self.runtime

    def estimates_as_dicts(self) -> dict[str, dict[str, float]]:
        """:meth:`PlanBase.estimates_as_dicts`, and each runtime's deadline as a fallback
        of this plan (``fallback_deadline_s``) where it has one: what an operator reads
        to see why a fallback leg was abandoned too."""
        out = PlanBase.estimates_as_dicts(self)
        for name, d in self.fallback_deadlines.items():
            if name in out:
                out[name]["fallback_deadline_s"] = d
        return out


@dataclass(frozen=True, slots=True)
class RacePlan(PlanBase):
    """Duplicator: ``edge`` starts at once while ``cloud`` uploads and deploys; when its
    pod is ready the requester re-predicts and keeps the predicted winner."""

    cloud: str
    edge: str
    pod_price: float = 0.0
    """The cloud budget's price of a pod-second of ``cloud`` (× its GPUs) in latency
    seconds when the plan was made: the lagging decision weighs the pod time it would
    hold (0: no budget)."""

    @property
    def chosen(self) -> str:
        return self.cloud


@dataclass(frozen=True, slots=True)
class SharePlan(PlanBase):
    """Share: ``lead`` (the edge, or the best cloud runtime without one) starts at once
    and ``clouds`` deploy beside it; all label chunks of the batch."""

    lead: str
    clouds: tuple[str, ...] = ()

    @property
    def chosen(self) -> str:
        return self.lead


Plan = SinglePlan | RacePlan | SharePlan
"""A policy's decision, one type per way of executing it (matched by the requester)."""


class DeployOutcome(StrEnum):
    OK = "ok"
    TIMEOUT = "timeout"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class DeploymentSample:
    """One measured deployment (by the inquisitor or a batch): time to ready."""

    runtime: str
    at: float
    duration_s: float
    outcome: DeployOutcome = DeployOutcome.OK


@dataclass(frozen=True, slots=True)
class ProcessingSample:
    """One measured processing run of ``images`` images on ``runtime``."""

    app: str
    app_version: str
    runtime: str
    images: int
    n_bytes: int
    duration_s: float
    at: float


@dataclass(frozen=True, slots=True)
class TransferSample:
    """One measured upload: ``n_bytes`` in ``seconds`` (so a bandwidth)."""

    n_bytes: int
    seconds: float
    at: float
    runtime: str = ""

    @property
    def bytes_per_s(self) -> float:
        return self.n_bytes / self.seconds if self.seconds > 0 else math.inf


class BatchState(StrEnum):
    """queued → running → done | failed; queued | running → cancelled (an operator's
    cancel); failed | cancelled → queued (an operator's retry)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """Nothing more happens to the batch unless an operator retries it."""
        return self in (BatchState.DONE, BatchState.FAILED, BatchState.CANCELLED)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one batch: where it ran and the measured components.

    Built once by the executor that ran the batch (the single-runtime path, the
    duplicator, the share session) and frozen from then on; the scheduler adds its own
    ``decision_s`` with :func:`dataclasses.replace`. ``cloud_used_s`` counts the cloud
    seconds a runtime held (pod seconds × GPUs are not multiplied here; the report does
    that); ``cloud_wasted_s`` the part of them that a cancelled loser consumed.
    """

    batch_id: str
    runtime: str
    mode: Mode
    transfer_s: float = 0.0
    deployment_s: float = 0.0
    processing_s: float = 0.0
    total_s: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    winner: str = ""
    cancelled: tuple[str, ...] = ()
    cloud_used_s: float = 0.0
    cloud_wasted_s: float = 0.0
    results: Any = None
    error: str | None = None
    fell_back: bool = False
    reason: str = ""
    """Why it ran where it ran (a fallback's cause, the duplicator's decision, shares)."""
    warmup_s: float = 0.0
    """The one-image warm-up call on a cloud pod."""
    decision_s: float = 0.0
    """CPU seconds spent in estimate + decide (the scheduling overhead)."""
    kept_cloud: bool | None = None
    """Duplicator: the decision at pod-ready (None: none made)."""
    choice_correct: bool | None = None
    """Duplicator: did that decision win (None: unknown)."""
    shares: Mapping[str, int] = field(default_factory=dict)
    """Share: images labelled per runtime."""
    cloud_by: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """Share: (used, wasted) pod seconds per cloud runtime (× GPUs is the report's)."""
    duplicate_images: int = 0
    """Share: images labelled twice (the straggler hedge)."""
    abandoned: tuple[str, ...] = ()
    """The runtimes whose deployment was abandoned at its deploy deadline, in the order
    tried: the planned leg's, then the fallback legs' (the replay report counts both)."""


T = TypeVar("T")


def fallback_after(
    totals: Mapping[str, float],
    edge: str,
    tried: Collection[str],
    available: Callable[[str], bool] = lambda _: True,
) -> str | None:
    """The requester's fallback rule over its ranking ``totals``: the edge, or the cloud
    runtime ``available`` and not yet ``tried`` with the least total that beats the
    edge's (first listed on a tie); None once the edge has been tried. Here, below both,
    so that the requester and the policy's chain (on ``policy.predicted_totals``) and the
    simulator's informed reference (on its expected totals) share one rule."""
    if edge in tried:
        return None
    best, best_total = edge, totals.get(edge, math.inf)
    for name, total in totals.items():
        if name in tried or name == edge or not available(name):
            continue
        if total < best_total:
            best, best_total = name, total
    return best


def runtime_named(runtimes: Mapping[str, T], name: str, error: type[Exception]) -> T:
    """``runtimes[name]``; an unknown name raises ``error`` (the caller's kind: a bad
    setting, a question the predictor cannot answer) naming the configured ones."""
    try:
        return runtimes[name]
    except KeyError:
        raise error(f"unknown runtime {name!r}; configured: {list(runtimes)}") from None
