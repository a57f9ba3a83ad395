"""Which runtimes may be scheduled right now (paper §3.7).

A cloud runtime whose deployment hits the deployment timeout is marked unavailable,
"from the point of view of the requester": the scheduler stops estimating it, so no
policy can choose it. The inquisitor keeps probing it and marks it available again after
one successful deployment. The edge runs locally and is always available.

The registry is a plain in-memory object shared by the inquisitor (writer), the requester
(writer, on a timed-out batch deployment) and the scheduler (reader). Listeners are
called synchronously on every *change* so that the daemon can persist it (it schedules
the database write itself); a listener that raises is logged and ignored, because losing
a status row must not stop scheduling.

An operator may also take a runtime **out of service** (and put it back): it is then not
available whatever the probes find, and the inquisitor does not probe it. Kept apart
from the probes' view, because a successful probe must not put back a runtime that an
operator took away; the daemon persists it itself (the operator's action writes the
store first), so listeners do not hear it. The edge cannot be taken out of service:
everything falls back to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from stoic.errors import ActionRefused, ConfigError
from stoic.logging import get_logger
from stoic.values import Runtime, runtime_named

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class AvailabilityChange:
    """One transition of one runtime, at an instant of the injected clock."""

    runtime: str
    available: bool
    at: float
    reason: str = ""
    by: str = ""
    """Who made it (an operator's change only)."""


Listener = Callable[[AvailabilityChange], None]


class Availability:
    """The availability of every configured runtime; all start available but those in
    ``down`` (known before this start: the daemon's store), which no listener hears."""

    def __init__(
        self,
        runtimes: Iterable[Runtime],
        *,
        down: Iterable[AvailabilityChange] = (),
        listener: Listener | None = None,
    ) -> None:
        self._runtimes = {r.name: r for r in runtimes}
        self._order = list(self._runtimes)
        self._down: dict[str, AvailabilityChange] = {
            c.runtime: c for c in down if not c.available and not self._check(c.runtime).is_edge
        }
        self._listeners: list[Listener] = [listener] if listener else []
        self._held: dict[str, AvailabilityChange] = {}

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _check(self, name: str) -> Runtime:
        return runtime_named(self._runtimes, name, ConfigError)

    def is_available(self, name: str) -> bool:
        self._check(name)
        return name not in self._down and name not in self._held

    def available(self) -> set[str]:
        return set(self.available_in_order())

    def available_in_order(self) -> list[str]:
        """Available runtimes in configured order (the policy breaks ties by order)."""
        return [n for n in self._order if n not in self._down and n not in self._held]

    def in_service(self, name: str) -> bool:
        """Whether no operator has taken ``name`` out of service."""
        self._check(name)
        return name not in self._held

    def out_of_service(self) -> dict[str, AvailabilityChange]:
        """Runtimes an operator took out of service, with the change that did it."""
        return dict(self._held)

    def take_out_of_service(self, name: str, at: float, reason: str = "", by: str = "") -> bool:
        """An operator's hold on ``name``; returns whether it changed anything. The edge
        is refused with :class:`~stoic.errors.ActionRefused`."""
        if self._check(name).is_edge:
            raise ActionRefused(
                f"runtime {name!r} is the edge: every batch falls back to it, so it cannot "
                "be taken out of service (drain the daemon instead)"
            )
        if name in self._held:
            return False
        self._held[name] = AvailabilityChange(name, False, at, reason, by)
        log.warning("runtime out of service", runtime=name, at=at, reason=reason, by=by)
        return True

    def return_to_service(self, name: str, at: float, by: str = "") -> bool:
        """Lift an operator's hold on ``name``; returns whether it changed anything."""
        self._check(name)
        if self._held.pop(name, None) is None:
            return False
        log.info("runtime back in service", runtime=name, at=at, by=by)
        return True

    def unavailable(self) -> dict[str, AvailabilityChange]:
        """Unavailable runtimes with the change that made them so."""
        return dict(self._down)

    def mark_unavailable(self, name: str, at: float, reason: str = "") -> bool:
        """Mark ``name`` unavailable; returns whether this changed anything.

        The edge is never marked unavailable: it is where everything falls back to.
        """
        runtime = self._check(name)
        if runtime.is_edge:
            log.warning(
                "refusing to mark the edge unavailable",
                runtime=name,
                reason=reason,
            )
            return False
        if name in self._down:
            return False
        change = AvailabilityChange(name, False, at, reason)
        self._down[name] = change
        log.warning("runtime unavailable", runtime=name, at=at, reason=reason)
        self._notify(change)
        return True

    def mark_available(self, name: str, at: float, reason: str = "") -> bool:
        """Mark ``name`` available again; returns whether this changed anything."""
        self._check(name)
        if name not in self._down:
            return False
        del self._down[name]
        change = AvailabilityChange(name, True, at, reason)
        log.info("runtime available again", runtime=name, at=at, reason=reason)
        self._notify(change)
        return True

    def _notify(self, change: AvailabilityChange) -> None:
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:
                log.exception("availability listener failed", runtime=change.runtime)
