"""Operator actions: cancel a batch, retry one, drain the daemon, take a runtime out of
service, and undo the last two. The REST routes (:mod:`stoic.api.actions`) and the
operator page's buttons (:mod:`stoic.api.ui.routes`) call these functions and nothing
else, so an action does the same, and is logged the same, whoever asks.

Why it looks the way it does:

* **The store first.** A cancel is written (``cancelled``) before the batch's task is
  cancelled, and a runtime's hold before the scheduler sees it, so what a restart finds
  is what the operator was told: a cancelled batch is never re-queued by crash recovery,
  and a runtime out of service stays out (:func:`restore_out_of_service` at start-up).
* **Every action is one log line** (logger ``stoic.operator``, event ``operator
  action``, ``audit: true``: never dropped by the log's repeat filter) with ``action``,
  its target, ``by`` (the credential: ``token``, ``session
  1a2b3c4d`` (a hash of the page's session id, never the id) or ``anonymous`` on a
  daemon without a token) and ``client`` (the address it came from), and counts in
  ``stoic_operator_actions_total{action}``.
* **Drain is the operator's, not the shutdown's.** It stops claiming until undrained;
  running batches go on, uploads are still accepted and queued, ``/readyz`` stays
  ready (the daemon still takes batches). It lives in memory: a restart claims again.
  A stop (SIGTERM) is another thing: :meth:`~stoic.daemon.controller.Controller.drain`.
* **Out of service is not unavailable.** The inquisitor owns availability (a timed-out
  probe takes a runtime away, a good one brings it back); an operator's hold is kept
  apart (:class:`~stoic.schedule.probe.availability.Availability`), so no probe undoes
  it, and the held runtime is not probed. The edge cannot be held: everything falls
  back to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stoic.daemon.dispatcher import Dispatcher, Drain
from stoic.errors import ActionRefused, BatchStateError, PackageGone, RuntimeNotFound
from stoic.logging import get_logger
from stoic.schedule.probe.availability import Availability
from stoic.store.store import BatchRecord, RuntimeRow
from stoic.values import BatchState

if TYPE_CHECKING:
    from stoic.daemon.controller import Controller

log = get_logger("stoic.operator")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked for an action: ``who`` names the credential shown (``token``,
    ``session 1a2b3c4d``, ``anonymous``), ``client`` the address it came from."""

    who: str
    client: str | None = None

    def __str__(self) -> str:
        return f"{self.who} from {self.client}" if self.client else self.who


def _logged(c: Controller, action: str, actor: Actor, **target: object) -> None:
    c.metrics.operator_actions.labels(action).inc()
    log.info(
        "operator action", audit=True, action=action, by=actor.who, client=actor.client, **target
    )


def _dispatcher(c: Controller) -> Dispatcher:
    """The dispatcher of a running controller (actions need one)."""
    if c.dispatcher is None or c.state != "running":
        raise ActionRefused(f"the controller is {c.state}; try again when it is running")
    return c.dispatcher


# Batches -------------------------------------------------------------------------------


async def cancel_batch(c: Controller, batch_id: str, actor: Actor) -> BatchRecord:
    """End a queued or running batch as ``cancelled``; a running one's legs are torn
    down (pods deleted, processes killed) before this returns, or within
    :data:`~stoic.daemon.dispatcher.CANCEL_WAIT_S`."""
    record = await _dispatcher(c).cancel(batch_id, f"cancelled by {actor}")
    _logged(c, "cancel", actor, batch_id=batch_id)
    return record


async def retry_batch(c: Controller, batch_id: str, actor: Actor) -> BatchRecord:
    """Queue a failed or cancelled batch again, as if it had just been accepted (it is
    decided afresh, its attempts count from zero). Its package must still be stored:
    :class:`~stoic.errors.PackageGone` (410) if retention deleted it."""
    _dispatcher(c)
    record = await asyncio.to_thread(c.store.get_batch, batch_id)
    wanted = (BatchState.FAILED, BatchState.CANCELLED)
    if record.state not in wanted:
        raise BatchStateError(batch_id, record.state.value, "retry", tuple(s.value for s in wanted))
    if not await asyncio.to_thread(c.objects.exists, record.package_key):
        raise PackageGone(batch_id, record.package_key)
    record = await asyncio.to_thread(c.store.retry_batch, batch_id, c.clock.now())
    _logged(c, "retry", actor, batch_id=batch_id)
    c.notify()
    return record


# Drain ---------------------------------------------------------------------------------


def drain_state(c: Controller) -> Drain | None:
    """The operator's drain (None: the daemon claims batches)."""
    return c.dispatcher.drained if c.dispatcher is not None else None


async def drain(c: Controller, actor: Actor) -> Drain:
    """Claim no new batch until :func:`undrain`; running batches finish."""
    held = await _dispatcher(c).drain(str(actor))
    c.metrics.drained.set(1)
    _logged(c, "drain", actor, running=sorted(c.running))
    return held


def undrain(c: Controller, actor: Actor) -> None:
    """Claim batches again."""
    _dispatcher(c).undrain()
    c.metrics.drained.set(0)
    _logged(c, "undrain", actor)


# Runtimes ------------------------------------------------------------------------------


def _known(c: Controller, name: str) -> None:
    if name not in c.runtime_names:
        raise RuntimeNotFound(name)


async def take_out_of_service(c: Controller, name: str, actor: Actor, reason: str = "") -> None:
    """Place nothing on ``name`` and stop probing it until it is put back; kept in the
    store, so a restart keeps it out. Batches already running there finish."""
    _dispatcher(c)
    _known(c, name)
    now = c.clock.now()
    changed = c.availability.take_out_of_service(name, now, reason, str(actor))
    try:
        await asyncio.to_thread(
            c.store.set_out_of_service, name, True, now, reason=reason, by=str(actor)
        )
    except BaseException:
        if changed:
            c.availability.return_to_service(name, now)
        raise
    c.metrics.runtime_in_service.labels(name).set(0)
    _logged(c, "out_of_service", actor, runtime=name, reason=reason)


async def return_to_service(c: Controller, name: str, actor: Actor) -> None:
    """Let the scheduler place batches on ``name`` again (and the inquisitor probe it)."""
    _dispatcher(c)
    _known(c, name)
    now = c.clock.now()
    await asyncio.to_thread(c.store.set_out_of_service, name, False, now)
    c.availability.return_to_service(name, now, str(actor))
    c.metrics.runtime_in_service.labels(name).set(1)
    _logged(c, "in_service", actor, runtime=name)
    c.notify()


def restore_out_of_service(availability: Availability, rows: Iterable[RuntimeRow]) -> None:
    """At start-up: hold again the runtimes the store says are out of service (an edge
    row marked so by hand is ignored, with a warning)."""
    for row in rows:
        if row.out_of_service_since is None:
            continue
        try:
            availability.take_out_of_service(
                row.name,
                row.out_of_service_since,
                row.out_of_service_reason or "",
                row.out_of_service_by or "",
            )
        except ActionRefused as exc:
            log.warning("ignoring a stored hold", runtime=row.name, error=str(exc))
