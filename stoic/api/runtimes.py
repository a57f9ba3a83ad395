"""``/v1/runtimes`` and ``/v1/estimate``: what the scheduler knows right now."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from stoic.api.auth import require_token
from stoic.api.schemas import (
    DeploymentSampleOut,
    EstimateOut,
    EstimateResponse,
    OutOfServiceOut,
    RuntimeList,
    RuntimeOut,
    UplinkOut,
    WarmPodOut,
)
from stoic.daemon.controller import Controller
from stoic.daemon.runtime_view import RuntimeState, runtime_states, uplink_state
from stoic.values import SinglePlan

router = APIRouter(prefix="/v1", tags=["runtimes"], dependencies=[Depends(require_token)])

BYTES_PER_IMAGE = 212_000
"""Default package bytes per image for /v1/estimate (paper: ≈0.212 MB per image)."""

RECENT_DEPLOYMENTS = 10
RECENT_OUTAGES = 10


@router.get("/runtimes", response_model=RuntimeList, summary="Runtimes and their models")
async def runtimes(request: Request) -> RuntimeList:
    """Availability, recent deployment samples, the deployment window, the
    processing regression of the current default version, and the inquisitor's
    processing probes (whether the runtime is still worth timing, the pod time its
    probes held) of every configured runtime (:mod:`stoic.daemon.runtime_view`)."""
    c: Controller = request.app.state.controller
    watch = uplink_state(c, outages=RECENT_OUTAGES)
    return RuntimeList(
        runtimes=[runtime_out(r) for r in runtime_states(c, deployments=RECENT_DEPLOYMENTS)],
        uplink=(
            None
            if watch is None
            else UplinkOut(
                up=watch.up,
                down_since=watch.down_since,
                expected_wait_s=watch.expected_wait_s,
                outages=watch.outages,
                recent_outages_s=list(watch.recent_outages_s),
            )
        ),
    )


def runtime_out(r: RuntimeState) -> RuntimeOut:
    return RuntimeOut(
        name=r.name,
        kind=r.runtime.kind.value,
        gpus=r.runtime.gpus,
        backend=r.runtime.backend,
        available=r.available,
        unavailable_since=r.unavailable_since,
        deployment_window=r.deployment_window,
        recent_deployments=[
            DeploymentSampleOut(at=d.at, duration_s=d.duration_s, outcome=str(d.outcome))
            for d in r.recent_deployments
        ],
        processing=r.processing.as_dict(),
        worth_probing=r.worth_probing,
        probe_cloud_s=r.probe_cloud_s,
        warm_pods=[WarmPodOut(since=w.since, until=w.until, keep_alive_s=w.keep_s) for w in r.warm],
        in_service=r.in_service,
        out_of_service=(
            None
            if r.out_of_service is None
            else OutOfServiceOut(
                since=r.out_of_service.since,
                reason=r.out_of_service.reason,
                by=r.out_of_service.by,
            )
        ),
    )


@router.get("/estimate", response_model=EstimateResponse, summary="Predict a batch's T_s")
async def estimate(
    request: Request,
    images: int = Query(..., ge=1, le=1_000_000, description="images in the batch"),
    n_bytes: int | None = Query(
        None, alias="bytes", ge=0, description=f"package bytes; default images × {BYTES_PER_IMAGE}"
    ),
) -> EstimateResponse:
    """Per-runtime estimates of the available runtimes, the objective value the
    selector compares for each (``objective_s``), and its choice."""
    c: Controller = request.app.state.controller
    size = n_bytes if n_bytes is not None else images * BYTES_PER_IMAGE
    estimates, plan = c.estimate(images, size)
    after = plan.fallback_deadlines if isinstance(plan, SinglePlan) else {}
    return EstimateResponse(
        images=images,
        bytes=size,
        estimates={
            k: EstimateOut.of(v, plan.scores.get(k), plan.deadlines.get(k), after.get(k))
            for k, v in estimates.items()
        },
        objective=c.settings.policy.objective,
        selector=plan.chosen,
        pipelined=plan.pipelined,
        reason=plan.reason,
    )
