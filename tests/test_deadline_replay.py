"""The deploy deadline and the pipelined upload in the replay: predicted by the policy,
executed by the same requester on the simulated backend, and the informed reference of
that action space computed in hindsight as its replay mode runs it."""

from __future__ import annotations

import logging
import math
from functools import cache
from typing import Any

import pytest

from stoic.backends.simulated import SimEnvironment
from stoic.errors import InputError
from stoic.replay.reference import reference
from stoic.replay.report import actions_line
from stoic.replay.runner import ReplayConfig, ReplayResult, parse_mode, resolve_actions, run_replay
from stoic.replay.scoring import score as score_replay
from stoic.replay.sweep import informed_of, is_reference
from stoic.schedule.decide.deadline import cloud_choice
from stoic.schedule.decide.policy import score
from stoic.settings import Settings
from stoic.values import Job, Mode, SinglePlan
from tests.support.paths import REPO

HEAVY = REPO / "workload" / "envs" / "heavy-tail.yaml"
TURBULENT = REPO / "workload" / "envs" / "turbulent-cloud.yaml"
RANDOM_000 = REPO / "docs" / "evaluation" / "sweep" / "envs" / "random-000.yaml"


@pytest.fixture(autouse=True)
def _quiet() -> None:
    logging.getLogger("stoic").setLevel(logging.ERROR)


@cache
def replay(mode: str) -> ReplayResult:
    return run_replay(ReplayConfig(env_path=HEAVY, mode=mode, batches=60, seed=2))


def test_a_pipelined_selector_predicts_and_runs_the_overlap() -> None:
    r = replay("selector+pipelined")
    overlapped = 0
    for rec in r.records:
        plan, out = rec.plan, rec.outcome
        assert plan.pipelined and not plan.deadlines
        for name, e in plan.estimates.items():
            if name == "edge":
                continue
            others = [score(plan.estimates, m, "expected") for m in plan.estimates if m != name]
            fallback = min(others)
            sequential = cloud_choice(e, fallback, deadline=False, pipelined=False)
            assert plan.scores[name] <= sequential.expected_s + 1e-9  # max(T_t, T_d) ≤ T_t + T_d
        t = rec.truth.runtimes[out.runtime]
        if out.runtime == "edge" or out.fell_back:
            continue
        dep = t.attempts[-1]
        assert dep is not None
        assert out.total_s == pytest.approx(max(t.transfer_s, dep) + t.warmup_s + t.processing_s)
        overlapped += t.transfer_s < t.total_s - t.warmup_s - t.processing_s
    assert overlapped > 0


def test_a_deadline_in_the_replay_abandons_the_deployment_and_falls_back() -> None:
    r = replay("selector+deadline")
    abandoned = 0
    for rec in r.records:
        plan, out = rec.plan, rec.outcome
        assert not plan.pipelined
        deadline = plan.deadlines.get(plan.chosen)
        if deadline is None:
            continue
        dep = rec.truth.runtimes[plan.chosen].attempts[-1]
        if dep is not None and dep < deadline:
            assert (out.runtime, out.fell_back) == (plan.chosen, False)
            continue
        abandoned += 1
        # Only the planned leg has a deadline: the fallback waits for its pod.
        assert out.fell_back and out.reason.count("DeployAbandoned") == 1
        if out.reason.count("failed") == 1:  # one fallback (it may time out in turn)
            ran = rec.truth.runtimes[out.runtime]
            assert out.total_s == pytest.approx(deadline + ran.total_s)
    assert abandoned > 0
    # The report counts them (and the paper's selector has no such figure).
    acted = score_replay(r)["summary"]["actions"]
    assert acted["abandoned"] == abandoned and acted["pipelined"] == 0
    assert acted["abandoned_fallback"] == 0  # a fallback leg has no deadline of its own
    assert acted["batches_with_deadline"] >= abandoned
    assert "actions" not in score_replay(replay("selector"))["summary"]


@pytest.mark.parametrize(
    "mode", ["informed+deadline+pipelined", "informed+deadline+pipelined+fallback"]
)
def test_the_informed_reference_of_the_actions_is_what_its_mode_runs(mode: str) -> None:
    r = replay(mode)
    assert all(rec.plan.mode is Mode.ORACLE and rec.plan.pipelined for rec in r.records)
    assert any(rec.plan.deadlines for rec in r.records)
    ref = reference(r).per_batch
    # The same pick, deadline and overlap, in hindsight: the very batch the mode ran,
    # but where it fell back (the requester falls back by the predictor's estimates).
    pairs = zip(ref, r.records, strict=True)
    kept = [(s, rec.outcome.total_s) for s, rec in pairs if not rec.outcome.fell_back]
    assert len(kept) > len(ref) / 2
    assert [s for s, _ in kept] == pytest.approx([ran for _, ran in kept])
    assert all(math.isfinite(s) for s in ref)


def test_the_informed_reference_prices_the_fallbacks_the_requester_may_take(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An abandoned deployment falls back only to a runtime not marked unavailable: the
    # runtimes the policy was offered, which the expectation is given the same instant.
    offered: dict[str, set[str]] = {}
    expect = SimEnvironment.expected_with_actions

    def spy(env: SimEnvironment, job: Job, at_s: float, **kw: Any) -> Any:
        offered[job.batch_id] = set(kw["available"])
        return expect(env, job, at_s, **kw)

    monkeypatch.setattr(SimEnvironment, "expected_with_actions", spy)
    r = run_replay(ReplayConfig(env_path=RANDOM_000, mode="informed+deadline", batches=40))
    assert [offered[rec.outcome.batch_id] for rec in r.records] == [
        set(rec.plan.estimates) for rec in r.records
    ]
    assert any(len(s) < len(r.env.runtimes) for s in offered.values())


def test_the_sweep_pairs_each_mode_with_the_informed_mode_of_its_actions() -> None:
    assert informed_of("selector+deadline+pipelined") == "informed+deadline+pipelined"
    assert informed_of("selector") == informed_of("selector-paper") == "informed"
    assert is_reference("informed+deadline") and not is_reference("selector+deadline")


def test_the_fallback_deadlines_are_a_mode_suffix_and_a_setting() -> None:
    spec = parse_mode("selector+deadline+pipelined+fallback")
    assert (spec.deadline, spec.pipelined, spec.fallback) == (True, True, True)
    assert parse_mode("selector+deadline+pipelined").fallback is False  # named: the rest off
    assert informed_of("selector+deadline+fallback") == "informed+deadline+fallback"
    with pytest.raises(InputError, match=r"\+deadline"):
        parse_mode("selector+fallback")
    on = Settings(policy={"deploy_deadline": True, "deploy_deadline_fallback": True})
    assert resolve_actions(parse_mode("selector"), on) == (True, False, True)
    assert resolve_actions(parse_mode("selector"), Settings()) == (False, False, False)
    alone = Settings(policy={"deploy_deadline_fallback": True})  # no deadline, no chain
    assert resolve_actions(parse_mode("selector"), alone) == (False, False, False)
    assert resolve_actions(parse_mode("oracle"), on) == (False, False, False)  # MIN-LAT


def test_a_fallback_leg_in_the_replay_is_abandoned_at_the_deadline_priced_for_it() -> None:
    r = run_replay(
        ReplayConfig(env_path=TURBULENT, mode="selector+deadline+pipelined+fallback", batches=80)
    )
    twice = 0
    for rec in r.records:
        plan, out = rec.plan, rec.outcome
        assert isinstance(plan, SinglePlan)
        if out.reason.count("DeployAbandoned") < 2:
            continue
        twice += 1
        second = out.reason.split("; ran on ")[1].split(";")[0]
        dep = rec.truth.runtimes[second].attempts[-1]
        limit = plan.fallback_deadlines[second]
        assert dep is None or dep >= limit
    assert twice > 0
    # The report counts the fallback legs abandoned apart from the planned legs.
    acted = score_replay(r)["summary"]["actions"]
    legs = sum(rec.outcome.reason.count("DeployAbandoned") for rec in r.records)
    assert acted["abandoned_fallback"] >= twice
    assert acted["abandoned"] + acted["abandoned_fallback"] == legs
    line = "".join(actions_line(acted))
    assert f"{acted['abandoned']} planned legs, {acted['abandoned_fallback']} fallback legs" in line


def test_the_informed_fallbacks_run_the_chain_their_reference_priced() -> None:
    # The informed requester falls back by the spec's expected totals, the ranking its
    # reference prices the chains on: a batch that fell back runs what the reference
    # says (where it was offered every runtime; the reference knows of no outage). By
    # the predictor's estimates, 2 of these 5 ran another chain.
    r = run_replay(
        ReplayConfig(env_path=TURBULENT, mode="informed+deadline+pipelined+fallback", batches=80)
    )
    assert any(
        isinstance(rec.plan, SinglePlan) and rec.plan.fallback_deadlines for rec in r.records
    )
    ref, everyone = reference(r).per_batch, set(r.env.runtimes)
    fell = [
        (s, rec.outcome.total_s)
        for s, rec in zip(ref, r.records, strict=True)
        if rec.outcome.fell_back and set(rec.plan.estimates) == everyone
    ]
    assert len(fell) >= 5
    assert [s for s, _ in fell] == pytest.approx([ran for _, ran in fell])
