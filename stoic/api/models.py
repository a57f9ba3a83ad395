"""``/v1/models/default``: which application version (and so which model) new batches get.

A site that trained a model of its own stores it as a new version
(``stoic model push``: checked against its labels, put in the object store), then
makes that version the default here (``stoic model default``). The choice is stored
in the database (it survives a restart; every controller on the database sees it);
batches accepted afterwards record the new version, so the function loads its model
and the scheduler bootstraps the version (paper §3.7). The daemon never loads a
model itself (TensorFlow stays out of it): the model's checks happen at push time,
and here only that it is stored.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from stoic.api.auth import require_token
from stoic.api.schemas import DefaultModelIn, DefaultModelOut, ErrorBody
from stoic.daemon.controller import Controller
from stoic.storage.package import model_key

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=[Depends(require_token)])


def _out(c: Controller, previous: str | None = None) -> DefaultModelOut:
    d = c.default_version
    return DefaultModelOut(
        app=c.app,
        version=c.app_version,
        model_key=model_key(c.app, c.app_version),
        source="store" if d is not None else "settings",
        updated_at=d.updated_at if d is not None else None,
        previous=previous,
    )


@router.get("/default", response_model=DefaultModelOut, summary="The version new batches get")
async def get_default(request: Request) -> DefaultModelOut:
    return _out(request.app.state.controller)


@router.put(
    "/default",
    response_model=DefaultModelOut,
    summary="Make a stored version the default",
    responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)
async def put_default(request: Request, body: DefaultModelIn) -> DefaultModelOut:
    """Batches accepted from now on get ``version`` (its model must be stored: 404
    ``model_not_found`` otherwise); queued batches keep theirs. Idempotent."""
    c: Controller = request.app.state.controller
    previous = c.app_version
    await c.set_default_version(body.app or c.app, body.version)
    return _out(c, previous)
