"""``/v1/batches``: submit a batch (streamed ingest), read one, list them, and a done
batch's results in the formats camera-trap tools read (:mod:`stoic.export`)."""

from __future__ import annotations

import asyncio
import json
from enum import StrEnum
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from stoic.api.auth import require_token
from stoic.api.errors import ApiError
from stoic.api.schemas import (
    BatchAccepted,
    BatchList,
    BatchOut,
    BatchSummary,
    ErrorBody,
    ResultsDocument,
    skipped_list,
)
from stoic.api.uploads import BodyReader, UploadGate
from stoic.daemon.controller import Controller
from stoic.errors import ClientDisconnected, IngestError, ObjectNotFound, RequestAborted
from stoic.export.camtrap_dp import camtrap_package
from stoic.export.csvfile import csv_text
from stoic.export.megadetector import megadetector_document
from stoic.export.records import records
from stoic.ingest.metadata import IMAGE_FIELDS
from stoic.ingest.options import API_MODES
from stoic.store.store import BatchRecord
from stoic.values import BatchState

router = APIRouter(prefix="/v1", tags=["batches"], dependencies=[Depends(require_token)])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "empty batch, unsafe archive path, malformed body",
        401: "missing or wrong bearer token",
        408: "the body stopped arriving for api.body_timeout_s",
        409: "Idempotency-Key already used for a different request",
        413: "over api.max_batch_images, api.max_batch_bytes, api.max_image_bytes, "
        "api.max_image_pixels or api.max_batch_pixels",
        415: "a file that is not an image",
        422: "a truncated/corrupt image, too many invalid images, a bad or unknown field",
        503: "the daemon is starting or draining, or every upload slot is taken (busy)",
    }.items()
}

_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "images (JPEG, PNG, ...) or one .zip/.tar/.tar.gz",
                        },
                        "mode": {"type": "string", "enum": [m.value for m in API_MODES]},
                        "runtime": {"type": "string", "description": "pin a runtime"},
                        "skip_invalid": {"type": "boolean", "default": False},
                        "deployment": {
                            "type": "string",
                            "description": "the camera deployment the images come from",
                        },
                    },
                    "required": ["files"],
                }
            }
        },
    }
}


def controller(request: Request) -> Controller:
    c: Controller = request.app.state.controller
    if c.state != "running" or c.draining:
        raise ApiError(503, "unavailable", f"the controller is {c.state}; try again later")
    return c


@router.post(
    "/batches",
    status_code=202,
    response_model=BatchAccepted,
    responses={200: {"model": BatchAccepted, "description": "repeated Idempotency-Key"}, **_ERRORS},
    openapi_extra=_UPLOAD_SCHEMA,
    summary="Submit a batch of images",
)
async def submit_batch(
    request: Request,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
    c: Controller = Depends(controller),
) -> JSONResponse:
    """Images as multipart files (any field name), or one archive. ``mode``,
    ``runtime`` and ``skip_invalid`` may be form fields or query parameters
    (``skip_invalid`` only applies to the files after it: send it first). The batch
    is stored before the answer: 202 with its id and a ``Location`` header (200 and
    the existing batch for a repeated ``Idempotency-Key`` with the same request, 409
    with another)."""
    length = request.headers.get("content-length")
    gate: UploadGate = request.app.state.upload_gate
    async with (
        gate.slot(),
        BodyReader(request.receive, timeout_s=c.settings.api.body_timeout_s) as reader,
    ):
        try:
            accepted = await c.ingestor.ingest(
                content_type=request.headers.get("content-type", ""),
                content_length=int(length) if length and length.isdigit() else None,
                body=reader.chunks(),
                query=dict(request.query_params),
                idempotency_key=idempotency_key,
                cancelled=reader.cancelled,
            )
        except RequestAborted as exc:
            request.state.close_connection = True
            if reader.disconnected and not isinstance(exc, ClientDisconnected):
                raise ClientDisconnected("the client disconnected during the upload") from None
            raise
        except IngestError:
            # The rest of an unread body is not worth waiting for: close after answering.
            if not reader.complete:
                request.state.close_connection = True
            raise
    b = accepted.batch
    location = f"/v1/batches/{b.id}"
    body = BatchAccepted(
        id=b.id,
        state=b.state.value,
        n_images=b.n_images,
        n_bytes=b.n_bytes,
        mode=b.mode.value,
        pinned_runtime=b.pinned_runtime,
        skipped=skipped_list(accepted.skipped),
        location=location,
    )
    return JSONResponse(
        body.model_dump(), status_code=202 if b.is_new else 200, headers={"Location": location}
    )


@router.get(
    "/batches/{batch_id}",
    response_model=BatchOut,
    responses={404: {"model": ErrorBody}, 401: {"model": ErrorBody}},
    summary="One batch: state, what it is doing now, decision, measured times, results",
)
async def get_batch(batch_id: str, request: Request) -> BatchOut:
    c: Controller = request.app.state.controller
    b = await asyncio.to_thread(c.store.get_batch, batch_id)
    results = None
    if b.state is BatchState.DONE and b.results_key:
        try:
            raw = await asyncio.to_thread(c.objects.get_bytes, b.results_key)
            results = list(json.loads(raw).get("results", []))
        except ObjectNotFound:
            results = None
    return BatchOut.full(b, results, c.progress().of(b))


@router.get("/batches", response_model=BatchList, summary="Newest batches first")
async def list_batches(
    request: Request,
    state: BatchState | None = Query(None, description="only batches in this state"),
    limit: int = Query(100, ge=1, le=1000),
) -> BatchList:
    c: Controller = request.app.state.controller
    rows = await asyncio.to_thread(c.store.list_batches, state, limit)
    return BatchList(batches=[BatchSummary.of(b) for b in rows])


class ResultsFormat(StrEnum):
    JSON = "json"
    MEGADETECTOR = "megadetector"
    CAMTRAP_DP = "camtrap-dp"
    CSV = "csv"


def results_document(b: BatchRecord, stored: dict[str, Any]) -> dict[str, Any]:
    """The stored results document with the batch's own fields (a document written
    before they were kept gets them here, and nulls for the images' metadata)."""
    results = [
        {**dict.fromkeys(IMAGE_FIELDS), **r}
        for r in stored.get("results", [])
        if isinstance(r, dict)
    ]
    return {
        "batch_id": b.id,
        "app": b.app,
        "app_version": b.app_version,
        "runtime": stored.get("runtime") or b.winner,
        "mode": stored.get("mode"),
        "deployment": stored.get("deployment"),
        "created_at": b.created_at,
        "finished_at": b.finished_at,
        "n_images": b.n_images,
        "results": results,
    }


@router.get(
    "/batches/{batch_id}/results",
    response_model=ResultsDocument,
    responses={
        200: {
            "description": "format=json: this document; megadetector: a MegaDetector batch "
            "output file (format 1.6); csv: one row per image; camtrap-dp: a zip of a "
            "Camtrap DP 1.0.2 package",
            "content": {"text/csv": {}, "application/zip": {}},
        },
        404: {"model": ErrorBody},
        409: {"model": ErrorBody, "description": "the batch is not done"},
        401: {"model": ErrorBody},
    },
    summary="A done batch's results, as JSON or in the field's formats",
)
async def get_results(
    batch_id: str,
    request: Request,
    fmt: ResultsFormat = Query(ResultsFormat.JSON, alias="format"),
) -> Response:
    c: Controller = request.app.state.controller
    b = await asyncio.to_thread(c.store.get_batch, batch_id)
    return await results_response(c, b, fmt)


async def results_response(c: Controller, b: BatchRecord, fmt: ResultsFormat) -> Response:
    """A batch's results in ``fmt`` (409 ``not_done`` before it is done): the API's
    route and the operator page's download buttons, each behind its own login."""
    if b.state is not BatchState.DONE or not b.results_key:
        raise ApiError(
            409,
            "not_done",
            f"batch {b.id} is {b.state.value}; its results appear when it is done",
        )
    stored = json.loads(await asyncio.to_thread(c.objects.get_bytes, b.results_key))
    document = results_document(b, stored)
    if fmt is ResultsFormat.JSON:
        return JSONResponse(document)
    recs = records(document)
    name = f"stoic-{b.id}"
    if fmt is ResultsFormat.MEGADETECTOR:
        return JSONResponse(
            megadetector_document(recs),
            headers={"Content-Disposition": f'attachment; filename="{name}.json"'},
        )
    if fmt is ResultsFormat.CSV:
        return Response(
            csv_text(recs),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    package = camtrap_package(recs, created=c.clock.now())
    return Response(
        package.zip_bytes(),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}-camtrap-dp.zip"'},
    )
