"""The scheduling core's fakes: a table-driven predictor, a recorder that lists what it
hears, the fake backend's truth, and a requester wired on them as
:func:`~stoic.schedule.assembly.build_core` wires the real one (its option builders).

Times are exact on virtual time: a test can assert every measured duration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stoic.backends.base import RuntimeBackend
from stoic.backends.fake import FakeBackend, FakeSpec
from stoic.clock import LoopClock
from stoic.schedule.assembly import leg_options, share_options
from stoic.schedule.execute.legs import LegRunner
from stoic.schedule.execute.recorder import PredictorLike, Recorder
from stoic.schedule.execute.requester import Requester
from stoic.schedule.probe.availability import Availability
from stoic.settings import Settings
from stoic.values import (
    Component,
    DeploymentSample,
    Estimate,
    Job,
    ProcessingSample,
    Runtime,
    TransferSample,
)


def leg_runner(
    settings: Settings,
    backends: Mapping[str, RuntimeBackend],
    runtimes: Mapping[str, Runtime],
    recorder: Recorder,
    availability: Availability | None = None,
    clock: LoopClock | None = None,
) -> LegRunner:
    """A :class:`LegRunner` with ``settings``' leg options, on virtual time from EPOCH."""
    return LegRunner(
        backends, runtimes, recorder, clock or LoopClock(EPOCH), leg_options(settings), availability
    )


def requester_of(settings: Settings, legs: LegRunner, predictor: PredictorLike) -> Requester:
    """A :class:`Requester` with ``settings``' fallback and share options."""
    return Requester(
        legs,
        predictor,
        fallback_to_edge=settings.requester.fallback_to_edge,
        share=share_options(settings),
    )


EPOCH = 1_700_000_000.0
JOB = Job("b1", n_images=40, n_bytes=40 * 212_000)


# Fakes shared by the scheduling tests ---------------------------------------------------


def est(name: str, t: float, d: float, p: float) -> Estimate:
    return Estimate(name, Component(t), Component(d), Component(p))


# What the fake predictor believes; the fake backend's truth is set per test.
TABLE = {
    "edge": est("edge", 0, 0, 100),
    "cpu": est("cpu", 5, 10, 70),
    "gpu1": est("gpu1", 5, 30, 30),
    "gpu2": est("gpu2", 5, 45, 25),
}


@dataclass
class TablePredictor:
    """Table-driven estimates; remaining edge time = predicted T_p - elapsed."""

    table: dict[str, Estimate] = field(default_factory=lambda: dict(TABLE))
    asked: list[list[str] | None] = field(default_factory=list)
    observed: list[Any] = field(default_factory=list)

    def observe_deployment(self, sample: DeploymentSample) -> None:
        self.observed.append(sample)

    def observe_processing(self, sample: ProcessingSample) -> None:
        self.observed.append(sample)

    def observe_transfer(self, sample: TransferSample) -> None:
        self.observed.append(sample)

    def estimate(
        self, runtime: str, n_images: int, n_bytes: int, *, app: str, app_version: str
    ) -> Estimate:
        return self.table[runtime]

    def estimate_all(
        self,
        n_images: int,
        n_bytes: int,
        *,
        app: str,
        app_version: str,
        runtimes: list[str] | None = None,
    ) -> dict[str, Estimate]:
        self.asked.append(runtimes)
        return {n: self.table[n] for n in (runtimes if runtimes is not None else self.table)}

    def remaining_processing(
        self, runtime: str, n_images: int, elapsed_s: float, *, app: str, app_version: str
    ) -> Component:
        return Component(max(self.table[runtime].processing.mean - elapsed_s, 0.0))


@dataclass
class ListRecorder:
    deployments: list[DeploymentSample] = field(default_factory=list)
    processings: list[ProcessingSample] = field(default_factory=list)
    transfers: list[TransferSample] = field(default_factory=list)

    async def deployment(self, sample: DeploymentSample) -> None:
        self.deployments.append(sample)

    async def processing(self, sample: ProcessingSample) -> None:
        self.processings.append(sample)

    async def transfer(self, sample: TransferSample) -> None:
        self.transfers.append(sample)


# Truth of the fake: edge 2.5 s/image (100 s for 40), gpu1 0.75 s/image (30 s for 40).
SPECS: Mapping[str, FakeSpec] = {
    "edge": FakeSpec(per_image_s=2.5),
    "cpu": FakeSpec(deploy_s=10, upload_s=5, warmup_s=1, per_image_s=1.75),
    "gpu1": FakeSpec(deploy_s=30, upload_s=5, warmup_s=2, per_image_s=0.75),
    "gpu2": FakeSpec(deploy_s=45, upload_s=5, warmup_s=2, per_image_s=0.625),
}


@dataclass
class World:
    settings: Settings
    fake: FakeBackend
    predictor: TablePredictor
    recorder: ListRecorder
    availability: Availability
    requester: Requester


def make_world(**overrides: Any) -> World:
    settings = Settings(**overrides)
    runtimes = {r.name: r for r in settings.runtime_list()}
    fake = FakeBackend(dict(SPECS))
    predictor, recorder = TablePredictor(), ListRecorder()
    availability = Availability(runtimes.values())
    legs = leg_runner(settings, {"local": fake}, runtimes, recorder, availability)
    requester = requester_of(settings, legs, predictor)
    return World(settings, fake, predictor, recorder, availability, requester)
