"""Warm pods: a cloud pod kept up after its batch, for the next one to take.

The paper tears a pod down after every batch, so every cloud batch pays T_d. The
:class:`WarmPool` holds a finished leg's deployment instead of tearing it down, for a
keep-alive chosen when the batch ends by :func:`~stoic.schedule.execute.keepalive.keep_alive_s`
from the arrivals it has seen and the runtime's cold T_d (docs/scheduling.md, "Warm
pods"). A batch that finds a warm pod takes it (:meth:`take`: no T_d, nothing recorded
as a deployment sample, since none happened), and the scheduler prices that runtime's
T_d at 0. When its keep-alive runs out the pool tears the pod down itself.

It is one object for the daemon and the replay: it holds the backends' own
:class:`~stoic.backends.base.Deployment` values, so a local process, a Kubernetes
Deployment, a Knative Service or a simulated pod is kept the same way. The pods
carry the owner labels (or pid records) every deployment carries, so a daemon killed
with warm pods up finds and deletes them at its next start
(``kubernetes.cleanup_orphans_at_start``, the local backend's reaping): warm pods are
torn down across a restart, never adopted.

Pod seconds idled in the pool are counted apart from the batches' (``held_s``, and
``on_held`` as each pod leaves: the daemon's cloud usage, cause ``warm``).

Under a cloud budget a kept pod pays the budget's price like every other decision: the
keep-alive rule prices an idle pod-second at the budget's λ where that is above
``keepalive.price_s_per_pod_s`` (the probes' rule), so a keep whose idle pod-seconds
cost more than the deployment it expects to save is refused; and no pod is kept longer
than what is left of the day's budget would pay for (a fixed keep-alive included).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from stoic.aio import BackgroundTasks, to_the_end
from stoic.backends.base import Deployment
from stoic.clock import Clock
from stoic.logging import get_logger
from stoic.schedule.execute.keepalive import ArrivalModel, KeepAliveOptions, keep_alive_s
from stoic.values import Runtime

log = get_logger(__name__)

Release = Callable[[Runtime, Deployment], Coroutine[Any, Any, None]]
"""Tears a deployment down on its backend (the leg runner's :meth:`release`)."""


class PriceLike(Protocol):
    """What the pool reads of the cloud budget's price
    (:class:`~stoic.schedule.decide.budget.Price`, which executing may not import)."""

    @property
    def per_pod_s(self) -> float: ...

    @property
    def remaining_pod_s(self) -> float: ...

    def cost(self, runtime: str, pod_s: float) -> float: ...


@dataclass(frozen=True, slots=True)
class WarmPod:
    """A pod the pool holds: parked at clock instant ``since``, torn down at ``until``."""

    runtime: str
    since: float
    until: float
    keep_s: float
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class _Entry:
    runtime: Runtime
    deployment: Deployment
    parked_at: float  # loop time
    pod: WarmPod
    timer: asyncio.TimerHandle | None = None


class WarmPool:
    """The warm pods, their keep-alive timers and the arrivals they are chosen from."""

    def __init__(
        self,
        options: KeepAliveOptions,
        *,
        clock: Clock,
        cold_s: Callable[[str], float],
        release: Release,
        on_held: Callable[[str, float], None] | None = None,
        price: Callable[[], PriceLike] | None = None,
    ) -> None:
        self.options = options
        self.clock = clock
        self.cold_s = cold_s  # the expected T_d of a cold deployment of a runtime
        self.release = release
        self.on_held = on_held
        self.price = price  # the cloud budget's price now (its quote); None: no budget
        self.arrivals = ArrivalModel(options.history, options.hour_bandwidth_h)
        self.held_s: dict[str, float] = {}  # runtime -> pod seconds idled warm
        self.kept = self.reused = self.expired = 0
        self._entries: dict[str, list[_Entry]] = {}
        self._background = BackgroundTasks("warm pool")
        self._closed = False

    def arrived(self, at: float) -> None:
        """A batch arrived at clock instant ``at`` (the scheduler tells each one)."""
        self.arrivals.observe(at)

    def warm(self) -> frozenset[str]:
        """The runtimes with a warm pod now."""
        return frozenset(name for name, entries in self._entries.items() if entries)

    def pods(self) -> list[WarmPod]:
        """Every warm pod, oldest first."""
        return sorted((e.pod for es in self._entries.values() for e in es), key=lambda p: p.since)

    def choose(self, runtime: Runtime) -> float:
        """The keep-alive of a pod of ``runtime`` finishing a batch now (seconds), at
        the budget's price and within what is left of it (module docstring)."""
        o = self.options
        gpus = max(runtime.gpus, 1)
        lam, left = (0.0, math.inf)
        if self.price is not None:
            price = self.price()
            lam, left = price.per_pod_s, price.remaining_pod_s
        longest = max(min(o.max_s, left / gpus), 0.0)
        if o.fixed_s is not None:
            return min(o.fixed_s, longest)
        if len(self.arrivals.gaps) < o.min_gaps:
            return 0.0
        residuals, weights = self.arrivals.residuals(self.clock.now())
        return keep_alive_s(
            residuals,
            weights,
            saved_s=self.cold_s(runtime.name),
            price=max(o.price_s_per_pod_s, lam) * gpus,
            max_s=longest,
        )

    def take(self, runtime: Runtime) -> Deployment | None:
        """The newest warm pod of ``runtime``, now the caller's; None if there is none."""
        entries = self._entries.get(runtime.name)
        if not entries:
            return None
        entry = entries.pop()
        self._leave(entry)
        self.reused += 1
        log.info("warm pod reused", runtime=runtime.name, idle_s=self._idle(entry))
        return entry.deployment

    def park(self, runtime: Runtime, deployment: Deployment) -> bool:
        """Keep ``deployment`` warm if the keep-alive rule says so; False: tear it down."""
        if self._closed or runtime.is_edge:
            return False
        entries = self._entries.setdefault(runtime.name, [])
        if len(entries) >= self.options.max_per_runtime:
            return False
        keep = self.choose(runtime)
        if keep <= 0.0:
            return False
        loop = asyncio.get_running_loop()
        now = self.clock.now()
        info = dict(deployment.info)
        entry = _Entry(
            runtime, deployment, loop.time(), WarmPod(runtime.name, now, now + keep, keep, info)
        )
        entry.timer = loop.call_later(keep, self._expire, entry)
        entries.append(entry)
        self.kept += 1
        log.info("pod kept warm", runtime=runtime.name, keep_alive_s=keep)
        return True

    def _idle(self, entry: _Entry) -> float:
        return asyncio.get_running_loop().time() - entry.parked_at

    def _leave(self, entry: _Entry) -> None:
        """``entry`` leaves the pool: stop its timer, count its idle pod seconds."""
        if entry.timer is not None:
            entry.timer.cancel()
        name = entry.runtime.name
        seconds = self._idle(entry)
        self.held_s[name] = self.held_s.get(name, 0.0) + seconds
        if self.on_held is not None and seconds > 0:
            self.on_held(name, seconds)

    def _expire(self, entry: _Entry) -> None:
        entries = self._entries.get(entry.runtime.name, [])
        if entry not in entries:
            return
        entries.remove(entry)
        self._leave(entry)
        self.expired += 1
        log.info("warm pod torn down", runtime=entry.runtime.name, keep_alive_s=entry.pod.keep_s)
        self._background.spawn(
            self.release(entry.runtime, entry.deployment),
            name=f"warm-teardown:{entry.runtime.name}",
        )

    async def aclose(self) -> None:
        """Tear every warm pod down (to the end, even if cancelled); park no more."""
        self._closed = True
        entries = [e for es in self._entries.values() for e in es]
        self._entries.clear()
        for e in entries:
            self._leave(e)
        await to_the_end(asyncio.gather(*(self.release(e.runtime, e.deployment) for e in entries)))
        await self._background.wait()
