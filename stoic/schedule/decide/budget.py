"""The cloud budget: what a pod-second costs, and how that price follows the spending.

A site that pays for its GPUs says how much it will spend a day
(``requester.cloud_budget_pod_s_per_day``, pod-seconds × GPUs). Every cloud second
counts against it, whoever holds the pod: a batch's legs, the inquisitor's deployment
and processing probes, the bootstrap and a pod kept warm. The
:class:`~stoic.schedule.execute.legs.LegRunner` tells :meth:`CloudBudget.charge` each
pod's seconds from its deployment's request to its teardown (a deployment that timed
out: the timeout), the way the replay's pod-seconds count them; a warm pod's keep-alive
is charged the same way by whoever keeps it.

The scheduler spends the budget where it buys the most latency. Every decision of every
mode pays a price λ (seconds of latency per pod-second × GPUs) for the pod time it
expects to hold: the selector minimises its objective + λ·pod-seconds, the duplicator
deploys a cloud leg only where the latency it expects to save exceeds λ·pod-seconds,
share adds a leg only where its gain exceeds that too
(:mod:`stoic.schedule.decide.policy`). λ is the dual variable of the daily budget
constraint, adjusted online by projected subgradient steps (the pacing rule of budgeted
online allocation, e.g. Balseiro, Lu and Mirrokni's dual mirror descent): at each
decision,

    λ ← max(0, λ + η · (spent since the last step − what accrued meanwhile) / B)

where what is left of the day's budget accrues evenly over what is left of the day
(so a morning that spent little leaves the afternoon more). Spending faster than that
raises the price, spending slower lowers it, down to 0 (the budget does not bind:
decisions are those of no budget); once the budget is spent nothing accrues, and the
price holds. λ carries over to the next day; what was spent does not. When the day's
budget is spent, or left below what a cloud leg would hold, the edge takes the work and
no probe runs (:attr:`Price.remaining_pod_s`).

Without a budget there is no price: :data:`FREE`, and every figure stays what it was.

**Probes earn their cost** (``inquisitor.probe_pricing``): a probe runs only when what
it would teach is worth its pod time (:func:`probe_value`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

DAY_S = 86_400.0


def utc_day(now: float) -> float:
    """The start of ``now``'s UTC day (the replay's days: its epoch is a UTC midnight)."""
    return math.floor(now / DAY_S) * DAY_S


@dataclass(frozen=True, slots=True)
class BudgetOptions:
    """The budget's knobs (``settings.requester``)."""

    pod_s_per_day: float | None = None  # None: unlimited (no price, no cap)
    price_step: float = 20.0
    """η: the price rises by this many latency seconds per pod-second when a whole
    day's budget is spent beyond what has accrued (and falls likewise)."""


@dataclass(frozen=True, slots=True)
class Price:
    """What one decision pays for cloud time: λ per pod-second × GPUs, and what is left
    of the day's budget. Frozen: a decision sees one price."""

    per_pod_s: float = 0.0
    remaining_pod_s: float = math.inf
    gpus: Mapping[str, int] = field(default_factory=dict)

    @property
    def binds(self) -> bool:
        """Whether this price changes any decision (else: the decisions of no budget)."""
        return self.per_pod_s > 0 or not math.isinf(self.remaining_pod_s)

    def weight(self, runtime: str) -> int:
        """Pod-seconds count × GPUs; a CPU pod counts once."""
        return max(self.gpus.get(runtime, 1), 1)

    def cost(self, runtime: str, pod_s: float) -> float:
        """λ · pod-seconds × GPUs, in seconds of latency."""
        return self.per_pod_s * pod_s * self.weight(runtime) if self.per_pod_s > 0 else 0.0

    def affordable(self, runtime: str, pod_s: float) -> bool:
        """Whether holding ``runtime`` for ``pod_s`` seconds fits in what is left today."""
        return pod_s * self.weight(runtime) <= self.remaining_pod_s


FREE = Price()
"""No budget: no price, nothing to run out of."""


class CloudBudget:
    """Today's spending against the daily budget, and the price that paces it.

    ``now`` is the injected clock (epoch seconds); ``day_start(now)`` the start of the
    budget's day (the daemon's local midnight, UTC by default).
    """

    def __init__(
        self,
        options: BudgetOptions,
        gpus: Mapping[str, int],
        now: Callable[[], float],
        day_start: Callable[[float], float] = utc_day,
    ) -> None:
        self.options = options
        self.gpus = dict(gpus)
        self.now = now
        self.day_start = day_start
        self.per_pod_s = 0.0
        self.spent_today = 0.0
        self.spent_total = 0.0
        self._day: float | None = None
        self._stepped_at = 0.0  # when the price last moved (a clock instant)
        self._spent_at_step = 0.0  # spent_today then

    @property
    def limit(self) -> float | None:
        return self.options.pod_s_per_day

    @property
    def remaining(self) -> float:
        """Pod-seconds × GPUs left today (infinite without a budget)."""
        self._roll()
        return math.inf if self.limit is None else self.limit - self.spent_today

    def _roll(self) -> None:
        """Start a new day when the clock has passed into one: nothing spent yet."""
        now = self.now()
        day = self.day_start(now)
        if day != self._day:
            # The first day accrues from now; a new one from its start.
            self._stepped_at = now if self._day is None else day
            self._day = day
            self.spent_today = 0.0
            self._spent_at_step = 0.0

    def _day_end(self) -> float:
        assert self._day is not None
        return self.day_start(self._day + DAY_S + 1.0)

    def charge(self, runtime: str, seconds: float) -> None:
        """``runtime`` held a pod for ``seconds`` (× its GPUs counts against the budget)."""
        if seconds <= 0:
            return
        self._roll()
        spent = seconds * max(self.gpus.get(runtime, 1), 1)
        self.spent_today += spent
        self.spent_total += spent

    def price(self) -> Price:
        """Step λ for the spending since the last step, and return the price now."""
        self._roll()
        limit = self.limit
        if limit is None:
            return FREE
        now = self.now()
        left_s = max(self._day_end() - self._stepped_at, 1.0)
        left = max(0.0, limit - self._spent_at_step)
        accrued = left * min(1.0, max(0.0, now - self._stepped_at) / left_s)
        over = (self.spent_today - self._spent_at_step) - accrued
        if limit > 0:
            self.per_pod_s = max(0.0, self.per_pod_s + self.options.price_step * over / limit)
        self._stepped_at, self._spent_at_step = now, self.spent_today
        return Price(self.per_pod_s, limit - self.spent_today, self.gpus)

    def quote(self) -> Price:
        """The price now, without a step (probes, metrics, previews)."""
        if self.limit is None:
            return FREE
        return Price(self.per_pod_s, self.remaining, self.gpus)


def probe_value(threshold_s: float, mean_s: float, std_s: float) -> float:
    """What learning one component of a runtime's T_s is worth to one batch, in seconds:
    the chance that the runtime wins a likely batch times the gain where it does. It
    wins when the component comes out below ``threshold_s`` (the best other runtime's
    total minus the runtime's other components) and then saves ``threshold_s`` minus
    the component; with the predictor's belief N(mean, std) that is the expected
    improvement ``d·Φ(d/σ) + σ·φ(d/σ)``, ``d = t − μ`` (``max(0, d)`` for σ = 0).

    The runtime believed to win keeps a value (its margin): probing it keeps its T_d
    window fresh, and a two-sided value of information (only the chance that the
    decision flips; 0 for the winner when σ is small) probed too little and cost 1.5 to
    2 s of mean latency on two of three replays measured (docs/scheduling.md)."""
    d = threshold_s - mean_s
    if not std_s > 0:
        return max(0.0, d)
    z = d / std_s
    cdf = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return max(0.0, d * cdf + std_s * pdf)
