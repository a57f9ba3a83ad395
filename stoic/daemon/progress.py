"""What a batch is doing now: for ``GET /v1/batches/{id}``, ``submit --wait`` and the page.

A batch's row says queued, running, done or failed. A first batch on a fresh daemon
can stay "running" for minutes with nothing to show for it: it waits for the demo
model, then bootstraps the new application version (paper §3.7), run after run, before
it is even planned. The dispatcher keeps one :class:`Progress` per batch it works on
and replaces it as the batch moves on, so a client can say what is happening and how
far along it is ("bootstrap run 3 of 4: 10 images on edge").

In memory only: it describes the present, which a restart ends anyway, and reading it
costs the API nothing but a dictionary look-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from stoic.values import BatchState, Plan, RacePlan, SharePlan, SinglePlan


class Phase(StrEnum):
    WAITING = "waiting"  # queued while the daemon trains the demo model (first start)
    BOOTSTRAP = "bootstrap"  # a new application version's representative runs
    PROCESSING = "processing"  # planned and running where the plan says
    RECORDING = "recording"  # ran; the result is being stored


@dataclass(frozen=True, slots=True)
class Progress:
    """One line of what a batch is doing, and since when (a clock instant)."""

    phase: Phase
    message: str
    since: float
    runtime: str | None = None
    run: int | None = None  # bootstrap: the run in progress, from 1
    runs: int | None = None  # bootstrap: the runs planned so far
    images: int | None = None  # bootstrap: the images of the run in progress


class _Batch(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def state(self) -> BatchState: ...


@dataclass(frozen=True, slots=True)
class Board:
    """What the batches are doing at one instant: a copy taken on the event loop, so
    the operator page may read it in its worker thread."""

    running: Mapping[str, Progress] = field(default_factory=dict)
    waiting: Progress | None = None  # every queued batch's while the model is trained

    def of(self, batch: _Batch) -> Progress | None:
        if batch.state is BatchState.QUEUED:
            return self.waiting
        if batch.state is BatchState.RUNNING:
            return self.running.get(batch.id)
        return None


def waiting_for_model(since: float) -> Progress:
    return Progress(
        Phase.WAITING,
        "waiting for the demo model, which the daemon's first start trains",
        since,
    )


def bootstrapping(
    app: str, version: str, runtime: str, run: int, runs: int, images: int, since: float
) -> Progress:
    return Progress(
        Phase.BOOTSTRAP,
        f"bootstrapping {app} {version} before its first batch: run {run} of {runs}, "
        f"{images} image{'s' if images != 1 else ''} on {runtime}",
        since,
        runtime=runtime,
        run=run,
        runs=runs,
        images=images,
    )


def placement(plan: Plan) -> str:
    """Where a plan runs, in words."""
    match plan:
        case RacePlan():
            return f"{plan.edge} and {plan.cloud}, raced (duplicator)"
        case SharePlan():
            return " + ".join((plan.lead, *plan.clouds)) + " (share)"
        case SinglePlan():
            return plan.runtime


def processing(plan: Plan, since: float) -> Progress:
    return Progress(Phase.PROCESSING, f"running on {placement(plan)}", since, plan.chosen)


def recording(since: float) -> Progress:
    return Progress(Phase.RECORDING, "storing the results", since)
