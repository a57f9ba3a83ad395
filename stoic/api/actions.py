"""The operator's actions in the REST API (:mod:`stoic.daemon.actions` does them):

=============================================  ========================================
``POST /v1/batches/{id}/cancel``               a queued or running batch → ``cancelled``
``POST /v1/batches/{id}/retry``                a failed or cancelled batch → ``queued``
``GET|PUT|DELETE /v1/drain``                   whether batches are claimed; hold; resume
``PUT|DELETE /v1/runtimes/{name}/out-of-service``  take a runtime out of service; put back
=============================================  ========================================

Bearer auth as the rest of ``/v1``; the log line of each action names the credential
(``token``, or ``anonymous`` on a daemon without one) and the client's address.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from stoic.api.auth import require_token
from stoic.api.batches import controller
from stoic.api.runtimes import RECENT_DEPLOYMENTS, runtime_out
from stoic.api.schemas import BatchOut, ErrorBody, RuntimeOut
from stoic.daemon import actions
from stoic.daemon.actions import Actor
from stoic.daemon.controller import Controller
from stoic.daemon.runtime_view import runtime_states

router = APIRouter(prefix="/v1", tags=["operator actions"], dependencies=[Depends(require_token)])


_COMMON = {401: "missing or wrong bearer token", 503: "the daemon is not running"}


def _errors(codes: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route, for the OpenAPI page."""
    return {
        code: {"model": ErrorBody, "description": text}
        for code, text in {**_COMMON, **(codes or {})}.items()
    }


def api_actor(request: Request) -> Actor:
    """Who asked, as the log and the stored note name them."""
    who = "token" if request.app.state.api_token is not None else "anonymous"
    return Actor(who, request.client.host if request.client else None)


class DrainOut(BaseModel):
    drained: bool = Field(description="true: no new batch is claimed (running ones go on)")
    since: float | None = Field(None, description="when the drain began")
    by: str | None = Field(None, description="who drained it")
    running: int = Field(description="batches still running in this daemon")


class OutOfServiceIn(BaseModel):
    reason: str = Field("", max_length=500, description="why (shown on the page and logged)")


@router.post(
    "/batches/{batch_id}/cancel",
    response_model=BatchOut,
    responses=_errors(
        {
            404: "no such batch",
            409: "the batch is done, failed or cancelled, or its result is being recorded",
        }
    ),
    summary="Cancel a queued or running batch",
)
async def cancel_batch(
    batch_id: str, request: Request, c: Controller = Depends(controller)
) -> BatchOut:
    """The batch ends ``cancelled`` and is never re-queued; a running batch's legs stop
    (its pods are deleted, its processes killed) before the answer, or within 30 s."""
    record = await actions.cancel_batch(c, batch_id, api_actor(request))
    return BatchOut.full(record, None)


@router.post(
    "/batches/{batch_id}/retry",
    status_code=202,
    response_model=BatchOut,
    responses=_errors(
        {
            404: "no such batch",
            409: "the batch is not failed or cancelled",
            410: "the batch's package is no longer stored (retention); submit it again",
        }
    ),
    summary="Queue a failed or cancelled batch again",
)
async def retry_batch(
    batch_id: str, request: Request, c: Controller = Depends(controller)
) -> JSONResponse:
    """The batch goes back to the queue with its package, to be decided afresh (its
    attempts count from zero); 202 with its ``Location``."""
    record = await actions.retry_batch(c, batch_id, api_actor(request))
    location = f"/v1/batches/{record.id}"
    return JSONResponse(
        BatchOut.full(record, None).model_dump(), status_code=202, headers={"Location": location}
    )


def _drain_out(c: Controller) -> DrainOut:
    held = actions.drain_state(c)
    return DrainOut(
        drained=held is not None,
        since=None if held is None else held.since,
        by=None if held is None else held.by,
        running=len(c.running),
    )


@router.get("/drain", response_model=DrainOut, summary="Whether the daemon claims batches")
async def get_drain(request: Request) -> DrainOut:
    c: Controller = request.app.state.controller
    return _drain_out(c)


@router.put(
    "/drain",
    response_model=DrainOut,
    responses=_errors(),
    summary="Drain: claim no new batch",
)
async def put_drain(request: Request, c: Controller = Depends(controller)) -> DrainOut:
    """Batches running now finish; queued and newly accepted ones wait until
    ``DELETE /v1/drain``. Idempotent (the first drain's time and author are kept)."""
    await actions.drain(c, api_actor(request))
    return _drain_out(c)


@router.delete(
    "/drain",
    response_model=DrainOut,
    responses=_errors(),
    summary="Undrain: claim batches again",
)
async def delete_drain(request: Request, c: Controller = Depends(controller)) -> DrainOut:
    actions.undrain(c, api_actor(request))
    return _drain_out(c)


def _runtime(c: Controller, name: str) -> RuntimeOut:
    states = runtime_states(c, deployments=RECENT_DEPLOYMENTS)
    return runtime_out(next(r for r in states if r.name == name))


@router.put(
    "/runtimes/{name}/out-of-service",
    response_model=RuntimeOut,
    responses=_errors({404: "no such runtime", 409: "the edge cannot be taken out"}),
    summary="Take a runtime out of service",
)
async def put_out_of_service(
    name: str,
    request: Request,
    body: OutOfServiceIn | None = Body(None),
    c: Controller = Depends(controller),
) -> RuntimeOut:
    """No batch is placed on it and the inquisitor does not probe it until ``DELETE``;
    kept in the database, so a restart keeps it out. Batches running there finish."""
    reason = body.reason if body is not None else ""
    await actions.take_out_of_service(c, name, api_actor(request), reason)
    return _runtime(c, name)


@router.delete(
    "/runtimes/{name}/out-of-service",
    response_model=RuntimeOut,
    responses=_errors({404: "no such runtime"}),
    summary="Put a runtime back in service",
)
async def delete_out_of_service(
    name: str, request: Request, c: Controller = Depends(controller)
) -> RuntimeOut:
    await actions.return_to_service(c, name, api_actor(request))
    return _runtime(c, name)
