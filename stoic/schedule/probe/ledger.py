"""The probe ledger: processing probes paid for by the batches (``inquisitor.probe_share``).

A processing probe holds a cloud pod to time the function (docs/scheduling.md,
"Processing probes"). Where the cloud is seldom chosen, an hourly probe per runtime
holds more pod time than the batches do (jetson-edge 184 %, random-009 551 % of the
batches' pod-seconds). Probe pricing (``inquisitor.probe_pricing``) weighs each probe's
value against its price, which cuts them to 6–21 % but moves the learning gaps by
several points. The ledger is the simpler rule, with a bound that holds by
construction rather than by calibration:

* it counts the batches' pod-seconds × GPUs, ready to teardown, as the replay's report
  does (``cloud_used_s`` of each batch's outcome; share mode's ``cloud_by``), and the
  processing probes' pod-seconds × GPUs held after ready (the inquisitor's
  ``cloud_s``, the report's "probe cloud s");
* each of the site's ``n`` cloud runtimes has an equal part of the line,
  ``share`` / ``n`` × the batches'. Its processing probe is admitted only while its own
  probes' pod-seconds so far plus its largest probe so far (what the next one may hold)
  stay below its part, and while its last admitted probe has ended (its seconds are
  counted when it ends). An equal part rather than one pool: with one pool the runtime
  that deploys fastest (the CPU pod, whose probes are the dearest) took the credit
  first and the GPUs' lines were probed least. Holding back the largest probe so far
  keeps the line from being crossed by a probe of the usual size, so the measured
  share stays at ``share`` rather than one probe per runtime above it;
* **the allowance**: each cloud runtime's first processing probe is admitted whatever
  the ledger says, and charged to its part like any other. A site whose batches all
  stay on the edge then still has one probe point per cloud line beside its bootstrap
  (the replay's: during the warm-up, before any batch), and the allowance does not
  grow with time (an allowance per day would let the ratio grow without bound where
  batches hold little cloud time).

So at any time a runtime's probes hold at most its part plus its largest probe (the
first one, or one larger than any before it, may cross the line), and all probes at
most ``share`` × the batches' plus each runtime's largest probe plus what deployment
probes held after ready without a processing probe (nothing in the replay, the moment
of a teardown in the daemon): :meth:`ProbeLedger.bound`. The edge's probes hold no pod
and are not the ledger's.

The ledger starts empty with the core (a daemon restart grants the first probes again).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from stoic.values import Outcome, Plan


class ProbeLedger:
    """Pod-seconds × GPUs of the batches and of the processing probes, and whether a
    processing probe of a cloud runtime may start now: each of the ``clouds`` may hold
    an equal part of ``share`` × the batches'."""

    def __init__(self, share: float, gpus: Mapping[str, int], clouds: Collection[str]) -> None:
        self.share = share
        self.gpus = dict(gpus)
        self.part = share / max(len(clouds), 1)  # each cloud runtime's part of the batches'
        self.batch_pod_s = 0.0
        self.probe_pod_s = 0.0
        self.spent: dict[str, float] = {}  # runtime -> its probes' pod-seconds × GPUs
        self.largest: dict[str, float] = {}  # runtime -> its largest probe's
        self.idle_pod_s = 0.0  # held after ready with no processing probe admitted
        self.denied = 0
        self._open: set[str] = set()  # runtimes whose admitted probe still runs

    def weight(self, runtime: str) -> int:
        """Pod-seconds count × GPUs; a CPU pod counts once."""
        return max(self.gpus.get(runtime, 1), 1)

    def batch(self, plan: Plan, outcome: Outcome) -> None:
        """A batch ran: its cloud legs' pod-seconds (ready to teardown) × GPUs."""
        if outcome.cloud_by:
            held = sum(used * self.weight(k) for k, (used, _) in outcome.cloud_by.items())
        else:
            held = outcome.cloud_used_s * self.weight(plan.chosen)
        self.batch_pod_s += held

    def admit(self, runtime: str) -> bool:
        """Whether a processing probe of ``runtime`` may start now; a yes must be
        followed by :meth:`held` with ``admitted=True`` when the probe's pod is done."""
        if runtime in self.spent:
            owed = self.spent[runtime] + self.largest[runtime]
            if runtime in self._open or owed >= self.part * self.batch_pod_s:
                self.denied += 1
                return False
        self.spent.setdefault(runtime, 0.0)
        self.largest.setdefault(runtime, 0.0)
        self._open.add(runtime)
        return True

    def held(self, runtime: str, seconds: float, *, admitted: bool) -> None:
        """A probe's pod of ``runtime`` was held ``seconds`` after ready (the
        inquisitor's ``cloud_s``); ``admitted``: it was a processing probe :meth:`admit`
        let start, now over."""
        pod_s = max(seconds, 0.0) * self.weight(runtime)
        self.probe_pod_s += pod_s
        if not admitted:
            self.idle_pod_s += pod_s
            return
        self._open.discard(runtime)
        self.spent[runtime] += pod_s
        self.largest[runtime] = max(self.largest[runtime], pod_s)

    def returned(self, runtime: str) -> None:
        """An admitted probe of ``runtime`` found nothing to time (no images yet): its
        turn ends, and a first probe stays the runtime's allowance for one that runs.
        Its pod's seconds still come to :meth:`held`, as not admitted."""
        self._open.discard(runtime)
        if self.spent.get(runtime) == 0.0:
            del self.spent[runtime], self.largest[runtime]

    def bound(self) -> float:
        """What the probes' pod-seconds × GPUs can be at most now: ``share`` × the
        batches', each runtime's largest probe (its first, or one larger than any
        before it, may cross its line) and the pods held with no processing probe (a
        deployment probe's teardown; counted as the report counts them)."""
        over = sum(self.largest.values())
        return self.share * self.batch_pod_s + over + self.idle_pod_s
