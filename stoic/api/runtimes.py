"""``/v1/runtimes`` and ``/v1/estimate``: what the scheduler knows right now."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request

from stoic.api.auth import require_token
from stoic.api.schemas import (
    DeploymentSampleOut,
    EstimateOut,
    EstimateResponse,
    RuntimeList,
    RuntimeOut,
    UplinkOut,
)
from stoic.daemon.controller import Controller

router = APIRouter(prefix="/v1", tags=["runtimes"], dependencies=[Depends(require_token)])

BYTES_PER_IMAGE = 212_000
"""Default package bytes per image for /v1/estimate (paper: ≈0.212 MB per image)."""

RECENT_DEPLOYMENTS = 10
RECENT_OUTAGES = 10


@router.get("/runtimes", response_model=RuntimeList, summary="Runtimes and their models")
async def runtimes(request: Request) -> RuntimeList:
    """Availability, recent deployment samples, the deployment window, the
    processing regression, and the inquisitor's processing probes (whether the runtime
    is still worth timing, the pod time its probes held) of every configured runtime."""
    c: Controller = request.app.state.controller
    rows = {r.name: r for r in await asyncio.to_thread(c.store.runtimes)}
    out = []
    for rt in c.settings.runtime_list():
        row = rows.get(rt.name)
        p = c.predictor
        out.append(
            RuntimeOut(
                name=rt.name,
                kind=rt.kind.value,
                gpus=rt.gpus,
                backend=rt.backend,
                available=c.availability.is_available(rt.name),
                unavailable_since=row.unavailable_since if row else None,
                deployment_window=p.deployment_window(rt.name),
                recent_deployments=[
                    DeploymentSampleOut(at=d.at, duration_s=d.duration_s, outcome=str(d.outcome))
                    for d in p.recent_deployments(rt.name, RECENT_DEPLOYMENTS)
                ],
                processing=p.processing_coefficients(rt.name, c.app, c.app_version),
                worth_probing=c.scheduler.worth_probing(rt.name),
                probe_cloud_s=c.inquisitor.cloud_s.get(rt.name, 0.0) if c.inquisitor else 0.0,
            )
        )
    watch = c.predictor.uplink
    uplink = (
        None
        if watch is None
        else UplinkOut(
            up=watch.up,
            down_since=watch.down_since,
            expected_wait_s=watch.wait_s(),
            outages=watch.outages,
            recent_outages_s=list(watch.durations)[-RECENT_OUTAGES:],
        )
    )
    return RuntimeList(runtimes=out, uplink=uplink)


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
    return EstimateResponse(
        images=images,
        bytes=size,
        estimates={k: EstimateOut.of(v, plan.scores.get(k)) for k, v in estimates.items()},
        objective=c.settings.policy.objective,
        selector=plan.runtime,
        reason=plan.reason,
    )
