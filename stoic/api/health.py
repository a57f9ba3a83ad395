"""Liveness, readiness and metrics.

``/healthz`` answers while the process can serve HTTP at all (restart it if not);
``/readyz`` only while it can do its job: the database answers, no disk it writes to
is full (below ``objectstore.min_free_bytes``, or its last write found no space), the
controller runs and is not draining (take it out of rotation if not). Neither needs a token.
``/metrics`` needs the token when one is configured (see :mod:`stoic.api.auth`).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from stoic.api.auth import require_token
from stoic.api.schemas import Health, Ready
from stoic.daemon.controller import Controller
from stoic.logging import get_logger

router = APIRouter(tags=["health"])

log = get_logger("stoic.api")

STORE_CHECK_TIMEOUT_S = 2.0


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


async def readiness(c: Controller) -> Ready:
    """Whether the daemon can do its job, with one line per check (also shown on the
    operator page)."""
    checks: dict[str, str] = {}
    ok = True
    if c.state in ("running", "draining"):
        try:
            async with asyncio.timeout(STORE_CHECK_TIMEOUT_S):
                await asyncio.to_thread(c.store.count_batches)
            checks["store"] = "ok"
        except TimeoutError:
            checks["store"] = f"no answer within {STORE_CHECK_TIMEOUT_S:g} s"
            ok = False
        except Exception as exc:
            # The message names the database (and its SQL): for the log, not the probe.
            log.warning("readiness: store check failed", error=str(exc))
            checks["store"] = "unavailable; see the daemon's log"
            ok = False
    else:
        checks["store"] = "not open"
        ok = False
    full = [d for d in await asyncio.to_thread(c.disks.states) if d.full]
    checks["disk"] = "; ".join(d.describe() for d in full) if full else "ok"
    ok = ok and not full
    checks["controller"] = "draining" if c.draining else c.state
    ok = ok and c.state == "running" and not c.draining
    checks["model"] = c.model_status
    return Ready(ready=ok, checks=checks)


@router.get("/readyz", response_model=Ready, responses={503: {"model": Ready}})
async def readyz(request: Request) -> JSONResponse:
    """200 when the store is reachable, no disk is full and the controller is running,
    else 503."""
    body = await readiness(request.app.state.controller)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get(
    "/metrics",
    dependencies=[Depends(require_token)],
    response_class=Response,
    summary="Prometheus metrics",
)
async def metrics(request: Request) -> Response:
    c: Controller = request.app.state.controller
    data, content_type = await asyncio.to_thread(c.metrics.render, request.headers.get("accept"))
    return Response(data, headers={"Content-Type": content_type})
