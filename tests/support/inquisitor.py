"""An inquisitor on the fake backend and virtual time (the rig), and probe work whose
package is already where every runtime reads it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from stoic.backends.base import Upload
from stoic.backends.fake import FakeBackend
from stoic.clock import LoopClock
from stoic.schedule.assembly import inquisitor_options
from stoic.schedule.execute.legs import Placer
from stoic.schedule.execute.recorder import MultiRecorder
from stoic.schedule.probe.availability import Availability, AvailabilityChange
from stoic.schedule.probe.inquisitor import Inquisitor, ProcessingClock
from stoic.schedule.probe.ledger import ProbeLedger
from stoic.settings import Settings
from stoic.values import Job, Runtime
from tests.support.core import EPOCH, SPECS, ListRecorder, leg_runner


class ListWork:
    """A :class:`ProbeWork` of ``n`` images: the package is already where runtimes read it."""

    def __init__(self, available: bool = True) -> None:
        self.available = available
        self.asked: list[tuple[str, int]] = []

    async def prepare(
        self, runtime: Runtime, place: Placer, n_images: int
    ) -> tuple[Job, Upload] | None:
        self.asked.append((runtime.name, n_images))
        if not self.available:
            return None
        return Job(f"probe-{n_images}", n_images, 1000 * n_images), Upload("probe", 0, 0.0)


class Rig:
    def __init__(
        self,
        work: ListWork | None = None,
        worth: Callable[[str], bool] = lambda _name: True,
        *,
        deploy_periods: tuple[tuple[str, float], ...] = (),
        on_held: Callable[[str, float], None] | None = None,
        ledger: ProbeLedger | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = Settings(**overrides)
        self.runtimes = {r.name: r for r in self.settings.runtime_list()}
        self.fake = FakeBackend(dict(SPECS))
        self.recorder = ListRecorder()
        self.changes: list[AvailabilityChange] = []
        self.availability = Availability(self.runtimes.values(), listener=self.changes.append)
        self.clock = LoopClock(EPOCH)
        self.backends: dict[str, Any] = {"local": self.fake}
        measured = ProcessingClock()  # in the chain, as build_core puts it
        chain = MultiRecorder(self.recorder, measured)
        self.legs = leg_runner(self.settings, self.backends, self.runtimes, chain, clock=self.clock)
        self.inquisitor = Inquisitor(
            self.legs,
            self.availability,
            work,
            worth=worth,
            measured=measured,
            options=replace(inquisitor_options(self.settings), deploy_periods=deploy_periods),
            on_held=on_held,
            ledger=ledger,
        )
