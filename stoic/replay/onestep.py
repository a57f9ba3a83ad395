"""One step ahead on a replay: the predictor's estimates against what the batches took.

``stoic evaluate predictor --env SPEC`` scores the predictor in a simulated environment
the way ``--csv`` scores it on measured batches (:mod:`stoic.predict.onestep`): a
selector replay keeps, for every batch, the estimates the policy compared before
placing it (``plan.estimates``) and the components the requester measured where it ran
(``outcome``), so each batch is one :class:`~stoic.predict.onestep.Step` of the runtime
that ran, with no second predictor beside the daemon's. The predictor learnt from
everything the replay fed it (probes, bootstrap, every batch), as the daemon's does.

A batch whose planned cloud deployment timed out and fell back adds a step of that
runtime with T_d at the deploy timeout (how the predictor counts it): a deployment the
intervals must also hold, not one to leave out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from stoic.predict.onestep import MeasuredBatch, Step, components
from stoic.replay.runner import EPOCH_S, ReplayConfig, ReplayResult, run_replay
from stoic.settings import Settings
from stoic.values import Estimate


def replay_steps(result: ReplayResult, *, skip: int = 3) -> list[Step]:
    """The steps of a finished replay's batches, in order; the first ``skip`` of each
    runtime are not scored (as with ``--csv``)."""
    edge = {r.name for r in result.config.settings.runtime_list() if r.is_edge}
    timeout_s = result.config.settings.predictor.deploy_timeout_s
    seen: dict[str, int] = {}
    steps: list[Step] = []

    def add(runtime: str, batch: MeasuredBatch, estimates: Mapping[str, Estimate]) -> None:
        est = estimates.get(runtime)
        if est is None:
            return
        steps.append(Step(batch, components(est), seen.get(runtime, 0) >= skip, runtime in edge))
        seen[runtime] = seen.get(runtime, 0) + 1

    for rec in result.records:
        out, estimates = rec.outcome, rec.plan.estimates
        at = EPOCH_S + rec.started_s
        planned = rec.plan.chosen
        if out.fell_back and planned != out.runtime and planned not in edge:
            add(
                planned,
                MeasuredBatch(at, planned, rec.batch.images, {"deployment": timeout_s}),
                estimates,
            )
        if out.runtime in edge:
            actual = {"processing": out.processing_s, "total": out.processing_s}
        else:
            actual = {
                "transfer": out.transfer_s,
                "deployment": out.deployment_s,
                "processing": out.processing_s,
                "total": out.transfer_s + out.deployment_s + out.processing_s,
            }
        add(out.runtime, MeasuredBatch(at, out.runtime, rec.batch.images, actual), estimates)
    return steps


def env_steps(
    env: Path,
    *,
    days: int = 3,
    seed: int = 0,
    skip: int = 3,
    settings: Settings | None = None,
) -> list[Step]:
    """Replay ``days`` of the default workload (162 batches a day) in ``env`` in
    selector mode and return its steps."""
    cfg = ReplayConfig(
        env_path=env, mode="selector", days=days, seed=seed, settings=settings or Settings()
    )
    return replay_steps(run_replay(cfg), skip=skip)


def env_names(paths: Iterable[Path]) -> list[tuple[str, Path]]:
    """(name, path) of every spec in ``paths`` (files or directories of ``*.yaml``)."""
    from stoic.replay.sweep import discover_envs

    return [(e.name, e.path) for e in discover_envs(paths)]
