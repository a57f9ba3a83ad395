"""The scheduler: the whole per-batch path, shared by the daemon and the replay.

    job ──► estimates of the *available* runtimes (predictor)
        ──► policy.decide (selector, duplicator, baselines)   = a Plan
        ──► requester.run (deploy, upload, warm, invoke, cancel the loser)
        ──► Outcome (measured components; samples already recorded)

It owns nothing but the wiring and two concerns of its own:

* **scheduling overhead**: the CPU seconds spent in estimate + decide, measured with
  ``time.perf_counter`` (not the loop clock: under looptime and in the replay the loop
  clock does not move while Python computes), stored in ``Outcome.decision_s``.
* **bootstrapping** (paper §3.7): when an application version is first seen, run two
  representative tasks on every runtime so that the processing regression has points
  of its own instead of priors. :class:`ObservationCounter` counts processing samples
  per (app, version, runtime) as they are recorded; the daemon seeds it from the store
  at start-up so a restart does not bootstrap again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from stoic.availability import Availability
from stoic.errors import BackendError, PredictorError
from stoic.model import (
    DeploymentSample,
    Job,
    Mode,
    Outcome,
    Plan,
    ProcessingSample,
    TransferSample,
)
from stoic.policy import PolicyOptions, decide
from stoic.recorder import PredictorLike
from stoic.requester import Requester
from stoic.settings import Settings

log = logging.getLogger(__name__)


class ObservationCounter:
    """A :class:`~stoic.requester.Recorder` that counts processing samples per
    (app, app_version, runtime): what "has been observed" means for bootstrapping."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()

    def seed(self, app: str, app_version: str, runtime: str, count: int) -> None:
        """Add ``count`` samples already in the store (daemon start-up)."""
        self.counts[(app, app_version, runtime)] += count

    def count(self, app: str, app_version: str, runtime: str) -> int:
        return self.counts[(app, app_version, runtime)]

    async def deployment(self, sample: DeploymentSample) -> None:
        return None

    async def processing(self, sample: ProcessingSample) -> None:
        self.counts[(sample.app, sample.app_version, sample.runtime)] += 1

    async def transfer(self, sample: TransferSample) -> None:
        return None


@dataclass(slots=True)
class BootstrapReport:
    """What one bootstrap did: outcomes per runtime, and the runs that failed."""

    app: str
    app_version: str
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return sum(len(v) for v in self.outcomes.values())


class Scheduler:
    """Estimates → policy → requester, plus bootstrapping of new application versions."""

    def __init__(
        self,
        predictor: PredictorLike,
        requester: Requester,
        availability: Availability,
        settings: Settings,
        policy_options: PolicyOptions = PolicyOptions(),
        *,
        observed: ObservationCounter | None = None,
    ) -> None:
        self.predictor = predictor
        self.requester = requester
        self.availability = availability
        self.settings = settings
        self.policy_options = policy_options
        self.observed = observed or ObservationCounter()
        requester.add_recorder(self.observed)
        self.decisions = 0
        self.decision_s_total = 0.0
        self.last_decision_s = 0.0
        self._bootstrap_locks: dict[tuple[str, str], asyncio.Lock] = {}

    # The per-batch path ----------------------------------------------------------------

    def plan(
        self,
        job: Job,
        *,
        mode: Mode,
        pinned: str | None = None,
        truth: Mapping[str, float] | None = None,
    ) -> Plan:
        """Estimate the available runtimes and decide; times itself (CPU overhead)."""
        t = time.perf_counter()
        names = self.availability.available_in_order()
        estimates = self.predictor.estimate_all(
            job.n_images, job.n_bytes, app=job.app, app_version=job.app_version, runtimes=names
        )
        plan = decide(mode, job, estimates, options=self.policy_options, pinned=pinned, truth=truth)
        self.last_decision_s = time.perf_counter() - t
        self.decisions += 1
        self.decision_s_total += self.last_decision_s
        log.info(
            "batch scheduled",
            extra={
                "batch_id": job.batch_id,
                "n_images": job.n_images,
                "mode": str(mode),
                "runtime": plan.runtime,
                "speculative": plan.speculative_edge,
                "reason": plan.reason,
                "available": names,
                "decision_s": self.last_decision_s,
            },
        )
        return plan

    async def handle(
        self,
        job: Job,
        *,
        mode: Mode,
        pinned: str | None = None,
        truth: Mapping[str, float] | None = None,
    ) -> tuple[Plan, Outcome]:
        """Schedule and run one batch. Errors of the requester propagate (typed)."""
        plan = self.plan(job, mode=mode, pinned=pinned, truth=truth)
        decision_s = self.last_decision_s
        outcome = await self.requester.run(job, plan)
        outcome.decision_s = decision_s
        return plan, outcome

    # Bootstrapping (paper §3.7) -----------------------------------------------------------

    @property
    def tasks_per_runtime(self) -> int:
        return self.settings.controller.bootstrap_tasks_per_runtime

    def missing(self, app: str, app_version: str) -> dict[str, int]:
        """Bootstrap runs still needed per *available* runtime (configured order).

        An unavailable runtime cannot be bootstrapped now; when it comes back it is
        missing again, and the next call bootstraps just that one.
        """
        need = self.tasks_per_runtime
        out = {}
        for name in self.availability.available_in_order():
            have = self.observed.count(app, app_version, name)
            if have < need:
                out[name] = need - have
        return out

    def needs_bootstrap(self, app: str, app_version: str) -> bool:
        return bool(self.missing(app, app_version))

    async def bootstrap(
        self, app: str, app_version: str, representative_jobs: Sequence[Job]
    ) -> BootstrapReport:
        """Run the missing representative tasks, runtime after runtime.

        Sequential on purpose: concurrent uploads would share the uplink and concurrent
        runs the edge's CPUs, and both would teach the models wrong numbers. Runs never
        fall back to the edge (that would count as the edge's sample, not this
        runtime's); a failed run is logged and reported, and the runtime stays
        "missing" so the next batch of this version tries again. Concurrent callers for
        the same version wait for one another, so it runs once.
        """
        if not representative_jobs:
            raise PredictorError(f"bootstrap of {app} {app_version}: no representative jobs")
        lock = self._bootstrap_locks.setdefault((app, app_version), asyncio.Lock())
        report = BootstrapReport(app, app_version)
        async with lock:
            missing = self.missing(app, app_version)
            log.info(
                "bootstrapping",
                extra={"app": app, "app_version": app_version, "missing": missing},
            )
            for runtime, n in missing.items():
                done = self.tasks_per_runtime - n
                for i in range(done, self.tasks_per_runtime):
                    base = representative_jobs[i % len(representative_jobs)]
                    job = replace(
                        base,
                        batch_id=f"{base.batch_id}:bootstrap:{runtime}:{i}",
                        app=app,
                        app_version=app_version,
                    )
                    plan = Plan(runtime, Mode.PINNED, f"bootstrap {app} {app_version} on {runtime}")
                    try:
                        outcome = await self.requester.run(job, plan, fallback=False)
                    except BackendError as exc:
                        log.warning(
                            "bootstrap run failed",
                            extra={"runtime": runtime, "batch_id": job.batch_id, "error": str(exc)},
                        )
                        report.failures.setdefault(runtime, []).append(str(exc))
                        break  # the runtime is in trouble; do not hammer it
                    report.outcomes.setdefault(runtime, []).append(outcome)
        return report
