"""What the daemon knows about its runtimes right now: one read model for every view.

``GET /v1/runtimes`` (:mod:`stoic.api.runtimes`) and the operator page
(:mod:`stoic.api.ui.views`) both render the records built here, so they cannot
disagree; before there was one read model, the page showed the processing fit of
``controller.app_version`` from the settings while the API showed the current default
version's (``PUT /v1/models/default``).

The records are frozen copies taken in one pass on the event loop: the predictor, the
availability registry, the scheduler and the inquisitor are in memory and mutated on the
loop, so a worker thread must not read them, and no database read is needed (the
registry is restored from the store at start and persisted on every change, so its
``unavailable since`` is the stored one).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from stoic.schedule.execute.warm import WarmPod
from stoic.store.store import record_of
from stoic.values import DeploymentSample, Runtime

if TYPE_CHECKING:
    from stoic.daemon.controller import Controller


@dataclass(frozen=True, slots=True)
class ProcessingFit:
    """The regression of T_p on batch size for one (runtime, app, version)."""

    app_version: str
    slope: float
    """Seconds per image."""
    intercept: float
    n_samples: int
    inliers: int
    method: str
    excess: float
    """The processing tail the expected objective prices: E[T_p] over the line, minus 1
    (docs/scheduling.md, "Risk")."""

    def as_dict(self) -> dict[str, float | int | str]:
        """The ``processing`` object of ``GET /v1/runtimes`` (docs/api.md): every field
        but the version, which the runtime's record names once."""
        fields = asdict(self)
        del fields["app_version"]
        return fields


@dataclass(frozen=True, slots=True)
class OutOfService:
    """An operator took the runtime out of service: since when, why, who."""

    since: float
    reason: str
    by: str


@dataclass(frozen=True, slots=True)
class RuntimeState:
    """One configured runtime as the scheduler sees it now."""

    runtime: Runtime
    available: bool
    """Whether the scheduler may place a batch here now: the probes find it usable and
    it is in service."""
    unavailable_since: float | None
    """When the probes found it unavailable (None while they find it usable)."""
    unavailable_reason: str
    deployment_window: int
    """The calibrated sliding-window size (0 for the edge, which never deploys)."""
    deployment_now_s: float | None
    """T_d predicted for a deployment started now (None for the edge)."""
    recent_deployments: tuple[DeploymentSample, ...]
    """The last deployment samples, oldest first."""
    processing: ProcessingFit
    """The fit of the version new batches get (the current default)."""
    worth_probing: bool
    """Whether the inquisitor would time its processing when due (docs/scheduling.md,
    "Processing probes")."""
    probe_cloud_s: float
    """Pod seconds its processing probes held after ready, since the daemon started."""
    out_of_service: OutOfService | None = None
    """An operator's hold (None: in service; :mod:`stoic.daemon.actions`)."""
    warm: tuple[WarmPod, ...] = ()
    """Its pods kept warm after a batch (``keepalive.enabled``), oldest first."""

    @property
    def in_service(self) -> bool:
        return self.out_of_service is None

    @property
    def name(self) -> str:
        return self.runtime.name

    @property
    def is_edge(self) -> bool:
        return self.runtime.is_edge


@dataclass(frozen=True, slots=True)
class UplinkState:
    """The uplink as the inquisitor's checks see it (docs/scheduling.md, "Uplink checks")."""

    up: bool
    down_since: float | None
    """When the first failed check of this outage ran."""
    down_for_s: float
    expected_wait_s: float
    """What a cloud runtime's T_t includes now."""
    outages: int
    """Outages seen to start since the daemon started."""
    recent_outages_s: tuple[float, ...]
    """Durations of the last outages, oldest first."""


def built(c: Controller) -> bool:
    """Whether the controller has built what the read model reads (start() builds it;
    a view asked earlier shows no runtimes)."""
    return all(hasattr(c, name) for name in ("predictor", "availability", "scheduler"))


def runtime_states(c: Controller, *, deployments: int) -> list[RuntimeState]:
    """Every configured runtime in configured order, with its last ``deployments``
    deployment samples (an empty list before the controller is built)."""
    if not built(c):
        return []
    p = c.predictor
    away = c.availability.unavailable()
    held = {
        name: OutOfService(h.at, h.reason, h.by)
        for name, h in c.availability.out_of_service().items()
    }
    pod_s = c.inquisitor.cloud_s if c.inquisitor is not None else {}
    pool = c.scheduler.requester.legs.warm_pods
    warm = pool.pods() if pool is not None else []
    out: list[RuntimeState] = []
    for rt in c.settings.runtime_list():
        change = away.get(rt.name)
        model = p.processing_model(rt.name, c.app, c.app_version)
        out.append(
            RuntimeState(
                runtime=rt,
                available=change is None and rt.name not in held,
                unavailable_since=None if change is None else change.at,
                unavailable_reason="" if change is None else change.reason,
                deployment_window=p.deployment_window(rt.name),
                deployment_now_s=(
                    None if rt.is_edge else p.deployment_model(rt.name).estimate().mean
                ),
                recent_deployments=tuple(p.recent_deployments(rt.name, deployments)),
                processing=record_of(
                    ProcessingFit, model.fit, app_version=c.app_version, excess=model.excess
                ),
                worth_probing=c.scheduler.worth_probing(rt.name),
                probe_cloud_s=pod_s.get(rt.name, 0.0),
                out_of_service=held.get(rt.name),
                warm=tuple(w for w in warm if w.runtime == rt.name),
            )
        )
    return out


def uplink_state(c: Controller, *, outages: int = 0) -> UplinkState | None:
    """The uplink with its last ``outages`` outage durations (None: no uplink checks
    configured, or the controller not built yet)."""
    watch = c.predictor.uplink if built(c) else None
    if watch is None:
        return None
    since = watch.down_since
    return UplinkState(
        up=watch.up,
        down_since=since,
        down_for_s=0.0 if since is None else max(c.clock.now() - since, 0.0),
        expected_wait_s=watch.wait_s(),
        outages=watch.outages,
        recent_outages_s=tuple(watch.durations)[-outages:] if outages > 0 else (),
    )
