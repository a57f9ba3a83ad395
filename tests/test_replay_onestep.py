"""``stoic evaluate predictor --env``: the predictor one step ahead on a replay."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import cast

from typer.testing import CliRunner

from stoic.backends.simulated import BatchTruth
from stoic.cli import app
from stoic.predict.onestep import components, score
from stoic.replay.onestep import replay_steps
from stoic.replay.runner import ReplayConfig, ReplayedBatch, ReplayResult, run_replay
from stoic.replay.workload import Batch
from stoic.settings import Settings
from stoic.values import Component, Estimate, Mode, Outcome, SinglePlan
from tests.support.paths import REPO

ENVS = REPO / "workload" / "envs"
runner = CliRunner()


def test_each_batch_is_the_estimate_of_where_it_ran_against_what_it_took() -> None:
    result = run_replay(ReplayConfig(env_path=ENVS / "fast-cloud.yaml", batches=40, seed=3))
    steps = replay_steps(result, skip=2)
    assert not any(r.outcome.fell_back for r in result.records)
    assert len(steps) == len(result.records)
    for rec, step in zip(result.records, steps, strict=True):
        out = rec.outcome
        assert step.batch.runtime == out.runtime
        assert step.predicted == components(rec.plan.estimates[out.runtime])
        assert step.batch.actual["processing"] == out.processing_s
        if step.edge:
            assert set(step.batch.actual) == {"processing", "total"}
        else:
            assert step.batch.actual["deployment"] == out.deployment_s
            assert step.batch.actual["total"] == (
                out.transfer_s + out.deployment_s + out.processing_s
            )
    ran = {r.outcome.runtime for r in result.records}
    assert sum(not s.scored for s in steps) == sum(
        min(2, [r.outcome.runtime for r in result.records].count(rt)) for rt in ran
    )


def test_a_fallback_scores_the_timed_out_deployment_too() -> None:
    """The planned gpu1 deployment timed out and the batch ran on the edge: gpu1's T_d
    interval is scored against the deploy timeout, the edge's T_p against its run."""
    c = Component(30.0, 5.0)
    est = {rt: Estimate(rt, c, Component(0.0) if rt == "edge" else c, c) for rt in ("edge", "gpu1")}
    plan = SinglePlan(mode=Mode.SELECTOR, reason="selector", estimates=est, runtime="gpu1")
    out = Outcome("b1", "edge", Mode.SELECTOR, processing_s=33.0, total_s=633.0, fell_back=True)
    rec = ReplayedBatch(Batch(1, 0.0, 0, 10, 0), plan, out, cast(BatchTruth, None), 0.0)
    settings = Settings()
    result = SimpleNamespace(config=SimpleNamespace(settings=settings), records=[rec])
    steps = replay_steps(cast(ReplayResult, result), skip=0)
    assert [(s.batch.runtime, s.batch.actual) for s in steps] == [
        ("gpu1", {"deployment": settings.predictor.deploy_timeout_s}),
        ("edge", {"processing": 33.0, "total": 33.0}),
    ]
    figures = score(steps)
    assert figures["gpu1"]["deployment"]["coverage_90"] == 0.0  # 600 s is far outside
    assert figures["edge"]["processing"]["coverage_90"] == 1.0


def test_the_command_scores_environments() -> None:
    one = runner.invoke(
        app,
        ["evaluate", "predictor", "--env", str(ENVS / "fast-cloud.yaml"), "--days", "1", "--json"],
    )
    assert one.exit_code == 0, one.output
    doc = json.loads(one.output)
    every = doc["envs"]["fast-cloud"]["all"]
    assert every["total"]["n"] > 100 and every["deployment"]["n"] > 50
    assert 0.0 <= every["deployment"]["coverage_90"] <= 1.0
    table = runner.invoke(
        app,
        [
            "evaluate",
            "predictor",
            "--env",
            str(ENVS / "fast-cloud.yaml"),
            "--env",
            str(ENVS / "pi-edge.yaml"),
            "--days",
            "1",
        ],
    )
    assert table.exit_code == 0, table.output
    assert "fast-cloud" in table.output and "pi-edge" in table.output and "T_d" in table.output


def test_csv_or_env_not_both() -> None:
    both = runner.invoke(app, ["evaluate", "predictor", "--csv", "x.csv", "--env", "y.yaml"])
    neither = runner.invoke(app, ["evaluate", "predictor"])
    for result in (both, neither):
        assert result.exit_code != 0
        assert "one of --csv FILE and --env SPEC" in str(result.exception)
