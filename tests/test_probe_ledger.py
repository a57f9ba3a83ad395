"""The probe ledger (``inquisitor.probe_share``): processing probes paid for by batches.

A property over sequences of batches and overlapping probes on a fake clock (the
bound holds by construction), the inquisitor asking it, the replay counting the spans
its report counts, and the default (no ledger) left as it was.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stoic.replay.runner import ReplayConfig, run_replay
from stoic.replay.scoring import score
from stoic.replay.sweep import metric
from stoic.schedule.probe.ledger import ProbeLedger
from stoic.settings import Settings
from stoic.values import Mode, Outcome, SinglePlan
from tests.support.inquisitor import ListWork, Rig

GPUS = {"edge": 0, "cpu": 0, "gpu1": 1, "gpu2": 2}
CLOUDS = ("cpu", "gpu1", "gpu2")

runtimes = st.sampled_from(CLOUDS)
seconds = st.floats(0.0, 200.0, allow_nan=False)
# A round: a batch (maybe none), a probe asked for, a pod held with no processing
# probe, then the fake clock moves on (maybe less than the probe lasts: probes overlap).
rounds = st.tuples(
    runtimes,
    st.one_of(st.just(0.0), st.floats(0.0, 2_000.0, allow_nan=False)),
    runtimes,
    seconds,
    st.floats(0.0, 1.0, allow_nan=False),
    seconds,
)


def steps(plan: list[tuple[str, float, str, float, float, float]]) -> list[tuple[str, str, float]]:
    return [
        step
        for b, batch_s, r, probe_s, idle_s, wait_s in plan
        for step in (
            ("batch", b, batch_s),
            ("probe", r, probe_s),
            ("idle", r, idle_s),
            ("wait", r, wait_s),
        )
    ]


def single(runtime: str) -> SinglePlan:
    return SinglePlan(runtime, mode=Mode.SELECTOR, reason="test")


@dataclass
class Books:
    """The test's own accounts, kept apart from the ledger's."""

    batches: float = 0.0
    probes: float = 0.0
    spent: dict[str, float] = field(default_factory=dict)  # per runtime
    largest: dict[str, float] = field(default_factory=dict)
    idle: float = 0.0
    seen: set[str] = field(default_factory=set)

    def bound(self, share: float) -> float:
        return share * self.batches + sum(self.largest.values()) + self.idle


@given(st.sampled_from([0.0, 0.1, 0.25, 1.0]), st.lists(rounds, max_size=30))
def test_the_probes_never_hold_more_than_their_share_and_the_allowance(
    share: float, plan: list[tuple[str, float, str, float, float, float]]
) -> None:
    ledger = ProbeLedger(share, GPUS, CLOUDS)
    books = Books()
    now = 0.0
    running: list[tuple[float, str, float]] = []  # end, runtime, pod-s

    def finish(until: float) -> None:
        for end, name, pod_s in sorted(r for r in running if r[0] <= until):
            running.remove((end, name, pod_s))
            ledger.held(name, pod_s / max(GPUS[name], 1), admitted=True)
            books.probes += pod_s
            books.spent[name] = books.spent.get(name, 0.0) + pod_s
            books.largest[name] = max(books.largest.get(name, 0.0), pod_s)

    for kind, name, s in steps(plan):
        w = max(GPUS[name], 1)
        if kind == "batch":
            ledger.batch(single(name), Outcome("b", name, Mode.SELECTOR, cloud_used_s=s))
            books.batches += s * w
        elif kind == "probe":
            first = name not in books.seen
            owed = books.spent.get(name, 0.0) + books.largest.get(name, 0.0)
            paid = owed < share / len(CLOUDS) * books.batches  # room for its largest probe
            alone = all(r[1] != name for r in running)
            if ledger.admit(name):
                assert first or (paid and alone)  # on the ledger: its part paid for, alone
                books.seen.add(name)
                running.append((now + s, name, s * w))
            else:
                assert not (first or (paid and alone))
        elif kind == "idle":
            ledger.held(name, s, admitted=False)
            books.probes += s * w
            books.idle += s * w
        else:
            now += s
            finish(now)
        assert ledger.probe_pod_s == pytest.approx(books.probes)
        assert ledger.batch_pod_s == pytest.approx(books.batches)
        assert books.probes <= books.bound(share) + 1e-6
        assert ledger.bound() == pytest.approx(books.bound(share))
    finish(float("inf"))
    assert books.probes <= books.bound(share) + 1e-6


def test_a_probe_with_nothing_to_time_keeps_the_allowance() -> None:
    ledger = ProbeLedger(0.0, GPUS, CLOUDS)
    assert ledger.admit("gpu1")
    ledger.returned("gpu1")  # no images yet: nothing timed
    ledger.held("gpu1", 5.0, admitted=False)
    assert ledger.admit("gpu1")  # still its first probe
    ledger.held("gpu1", 30.0, admitted=True)
    assert not ledger.admit("gpu1")  # a share of 0 pays for nothing more


def test_share_mode_batches_count_each_pod_with_its_gpus() -> None:
    ledger = ProbeLedger(0.25, GPUS, CLOUDS)
    out = Outcome("b", "edge", Mode.SHARE, cloud_by={"gpu2": (10.0, 4.0), "cpu": (3.0, 0.0)})
    ledger.batch(single("edge"), out)
    assert ledger.batch_pod_s == 23.0  # used, not wasted: 10 s x 2 GPUs + 3 s


@pytest.mark.looptime
async def test_the_inquisitor_probes_processing_only_while_the_ledger_allows() -> None:
    ledger = ProbeLedger(0.25, GPUS, CLOUDS)
    rig = Rig(ListWork(), ledger=ledger, inquisitor={"processing_probe_period_s": 600.0})
    await rig.inquisitor.probe("gpu1")  # the first probe: the allowance, 9.5 s held
    assert [s.images for s in rig.recorder.processings] == [10]
    await asyncio.sleep(600)
    await rig.inquisitor.probe("gpu1")  # due, but no batch has paid for it
    assert len(rig.recorder.processings) == 1 and ledger.denied == 1
    ledger.batch(single("gpu1"), Outcome("b", "gpu1", Mode.SELECTOR, cloud_used_s=240.0))
    await rig.inquisitor.probe("gpu1")  # 9.5 + 9.5 < 0.25 / 3 x 240: due, now paid for
    assert [s.images for s in rig.recorder.processings] == [10, 100]
    assert ledger.probe_pod_s == sum(rig.inquisitor.cloud_s.values()) == 9.5 + 77.0
    await asyncio.sleep(600)
    await rig.inquisitor.probe("gpu1")  # 86.5 + 77 s owed >= 20: no more
    assert len(rig.recorder.processings) == 2 and ledger.denied == 2


def ledger_replay(share: float | None) -> tuple[object, dict[str, float]]:
    i = {"probe_share": share} if share is not None else {}
    cfg = ReplayConfig(
        settings=Settings(inquisitor=i),
        mode="selector",
        days=1,
        batches=40,
        seed=0,
        probes="full",
        warmup_periods=5,
    )
    result = run_replay(cfg)
    scored = score(result)
    keys = ("cloud_used_s", "probe_cloud_s", "vs_min_lat")
    return result.core.scheduler.ledger, {k: metric(k).compute(result, scored) or 0.0 for k in keys}


def test_the_replay_ledger_counts_the_spans_its_report_counts() -> None:
    ledger, figures = ledger_replay(0.1)
    assert isinstance(ledger, ProbeLedger)
    assert ledger.denied > 0  # the ledger bound
    assert ledger.batch_pod_s == pytest.approx(figures["cloud_used_s"])
    assert ledger.probe_pod_s == pytest.approx(figures["probe_cloud_s"])
    assert figures["probe_cloud_s"] <= ledger.bound() + 1e-6
    free, figures_off = ledger_replay(None)
    assert free is None  # the default: no ledger, every processing probe as before
    assert figures_off["probe_cloud_s"] > figures["probe_cloud_s"]
