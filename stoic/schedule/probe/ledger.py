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
* a cloud runtime's processing probe is admitted only while the probes' pod-seconds so
  far are at most ``share`` × the batches', and while no other admitted probe is still
  running (its seconds are not counted until it ends);
* **the allowance**: each cloud runtime's first processing probe is admitted whatever
  the ledger says. A site whose batches all stay on the edge then still has one probe
  point per cloud line beside its bootstrap, and the allowance does not grow with time
  (an allowance per day would let the ratio grow without bound where batches hold
  little cloud time). It is counted in the ledger like any other probe.

So at any time the probes' pod-seconds are at most ``share`` × the batches' plus the
first probe of each runtime plus the one probe admitted last (it may run past the line)
plus what deployment probes held after ready without a processing probe (nothing in
the replay, the moment of a teardown in the daemon): :meth:`ProbeLedger.bound`. The edge's probes hold no pod and are not the ledger's.

The ledger starts empty with the core (a daemon restart grants the first probes again).
"""

from __future__ import annotations

from collections.abc import Mapping

from stoic.values import Outcome, Plan


class ProbeLedger:
    """Pod-seconds × GPUs of the batches and of the processing probes, and whether a
    processing probe of a cloud runtime may start now."""

    def __init__(self, share: float, gpus: Mapping[str, int]) -> None:
        self.share = share
        self.gpus = dict(gpus)
        self.batch_pod_s = 0.0
        self.probe_pod_s = 0.0
        self.first_pod_s = 0.0  # the first probes' (the allowance)
        self.largest_pod_s = 0.0  # the largest probe admitted on the ledger
        self.idle_pod_s = 0.0  # held after ready with no processing probe admitted
        self.denied = 0
        self._probed: set[str] = set()
        self._first: set[str] = set()  # runtimes whose admitted probe is their first
        self._open = 0  # admitted probes still running

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
        if runtime not in self._probed:
            self._probed.add(runtime)
            self._first.add(runtime)
        elif self._open or self.probe_pod_s > self.share * self.batch_pod_s:
            self.denied += 1
            return False
        self._open += 1
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
        self._open -= 1
        if runtime in self._first:
            self._first.discard(runtime)
            self.first_pod_s += pod_s
        else:
            self.largest_pod_s = max(self.largest_pod_s, pod_s)

    def bound(self) -> float:
        """What the probes' pod-seconds × GPUs can be at most now: ``share`` × the
        batches', the first probes', the largest probe admitted on the ledger (the last
        one admitted may have run past the line) and the pods held with no processing
        probe (a deployment probe's teardown; counted as the report counts them)."""
        return (
            self.share * self.batch_pod_s + self.first_pod_s + self.largest_pod_s + self.idle_pod_s
        )
