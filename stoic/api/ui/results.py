"""The operator page's results view: a batch's images as thumbnails with their labels.

=================================================  ======================================
``GET /ui/batches/{id}/results``                   the view: ``label``, ``deployment``
                                                   filters (``-``: none), ``page``
``GET /ui/batches/{id}/download/{format}``         ``megadetector``, ``camtrap-dp``,
                                                   ``csv``: the API's results, as a file
=================================================  ======================================

An ecologist checks a batch by looking at it: which pictures got which label, with what
score, from which camera and when. Each card shows the image's thumbnail (made at ingest,
:mod:`stoic.ingest.thumbnail`), its file name, label, score, the runtime that labelled
it, its capture time and deployment. The filters are a plain GET form (the view works
without JavaScript) and the cards are paged (:data:`PAGE_SIZE`), so a batch of
thousands of images costs one page of thumbnails.

Thumbnails are inlined as ``data:`` URIs: one read of the batch's thumbnail tar per
render, streamed, keeping only the page's (no request per image, each needing the
login), and the page's Content Security Policy already allows ``img-src data:``, nothing
from elsewhere. The download buttons call this module's route, not the API's: the page
logs in with its own session cookie (:mod:`.session`), and the API wants the bearer
token, which the browser does not hold. Both write the same bytes
(:func:`stoic.api.batches.results_response`).

Everything shown comes from files and clients (file names, labels, deployment names,
EXIF): the templates are autoescaped, and a file name is only ever text or an attribute.
Renders go through the page's render cache and worker thread like the rest of the page
(:mod:`.render`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response

from stoic.api.batches import ResultsFormat, results_document, results_response
from stoic.api.errors import ApiError
from stoic.api.ui import views
from stoic.api.ui.routes import _failure, _html, _message, _rendered, viewer
from stoic.errors import BatchNotFound, InputError, ObjectNotFound, StoicError
from stoic.storage.objectstore import ObjectStore
from stoic.storage.package import iter_package, thumbnails_key
from stoic.store import Store
from stoic.store.store import BatchRecord
from stoic.values import BatchState

PAGE_SIZE = 100
"""Cards per page (a thumbnail is ~3 KB: a page is a few hundred KB)."""
NONE = "-"
"""The filter value for "no label" (a failed image) and "no deployment"."""
DOWNLOADS = (
    (ResultsFormat.MEGADETECTOR, "MegaDetector JSON"),
    (ResultsFormat.CAMTRAP_DP, "Camtrap DP (zip)"),
    (ResultsFormat.CSV, "CSV"),
)

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True, slots=True)
class Card:
    """One image of the view."""

    name: str
    label: str | None
    score: float | None
    runtime: str | None
    captured_at: str | None
    deployment: str | None
    error: str | None
    thumbnail: str | None
    """A ``data:image/jpeg;base64,...`` URI, None where there is none."""


@dataclass(frozen=True, slots=True)
class ResultsView:
    batch: BatchRecord
    note: str | None
    cards: list[Card]
    total: int
    matching: int
    labels: list[tuple[str, int]]
    """(filter value, images) per label, most frequent first; ``-`` for failed images."""
    deployments: list[tuple[str, int]]
    label: str | None
    deployment: str | None
    page: int
    pages: int
    thumbnails: int

    def query(self, page: int) -> str:
        """The view's query string for ``page`` with the same filters (unescaped:
        the template escapes it)."""
        parts = [(k, v) for k, v in (("label", self.label), ("deployment", self.deployment)) if v]
        parts.append(("page", str(page)))
        return urlencode(parts)


def _value(v: Any) -> str:
    return str(v) if v is not None and v != "" else NONE


def results_view(
    store: Store,
    objects: ObjectStore,
    batch_id: str,
    label: str | None,
    deployment: str | None,
    page: int,
) -> ResultsView:
    """The view of one batch (raises BatchNotFound)."""
    b = store.get_batch(batch_id)
    empty = ResultsView(b, None, [], 0, 0, [], [], label, deployment, 1, 1, 0)
    if b.state is not BatchState.DONE or not b.results_key:
        note = f"the batch is {b.state.value}; its results appear when it is done"
        return _with_note(empty, note)
    try:
        document = results_document(b, json.loads(objects.get_bytes(b.results_key)))
    except ObjectNotFound:
        return _with_note(empty, "the results document is gone from the object store")
    except (StoicError, ValueError) as exc:
        return _with_note(empty, f"the results document cannot be read: {exc}")
    rows: list[Mapping[str, Any]] = document["results"]
    labels = Counter(_value(r.get("label")) for r in rows)
    deployments = Counter(_value(r.get("deployment")) for r in rows)
    chosen = [
        r
        for r in rows
        if (label is None or _value(r.get("label")) == label)
        and (deployment is None or _value(r.get("deployment")) == deployment)
    ]
    pages = max(1, math.ceil(len(chosen) / PAGE_SIZE))
    page = min(max(page, 1), pages)
    shown = chosen[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    thumbs = read_thumbnails(objects, b.id, {str(r.get("name")) for r in shown})
    batch_runtime = document.get("runtime")
    cards = [
        Card(
            name=str(r.get("name", "")),
            label=r.get("label"),
            score=views.top_score(dict(r)),
            runtime=r.get("runtime") or batch_runtime,
            captured_at=r.get("captured_at"),
            deployment=r.get("deployment"),
            error=r.get("error"),
            thumbnail=thumbs.get(str(r.get("name"))),
        )
        for r in shown
    ]
    return ResultsView(
        b,
        None,
        cards,
        len(rows),
        len(chosen),
        labels.most_common(),
        sorted(deployments.items()),
        label,
        deployment,
        page,
        pages,
        sum(c.thumbnail is not None for c in cards),
    )


def _with_note(view: ResultsView, note: str) -> ResultsView:
    return replace(view, note=note)


def read_thumbnails(objects: ObjectStore, batch_id: str, names: set[str]) -> dict[str, str]:
    """The thumbnails of ``names`` as ``data:`` URIs, read in one pass over the batch's
    thumbnail tar (stopping once all are found); none for a batch ingested before
    thumbnails were made, or whose tar cannot be read."""
    found: dict[str, str] = {}
    if not names:
        return found
    try:
        with objects.open_read(thumbnails_key(batch_id)) as stream:
            for name, data in iter_package(stream):
                if name in names:
                    found[name] = "data:image/jpeg;base64," + base64.b64encode(data).decode()
                    if len(found) == len(names):
                        break
    except (StoicError, OSError, InputError):
        return found
    return found


# Routes --------------------------------------------------------------------------------


@router.get("/ui/batches/{batch_id}/results", response_class=HTMLResponse)
async def results_page(
    request: Request,
    batch_id: str,
    label: str | None = Query(None, max_length=200),
    deployment: str | None = Query(None, max_length=200),
    page: int = Query(1, ge=1, le=1_000_000),
) -> HTMLResponse:
    c = viewer(request)
    label, deployment = label or None, deployment or None
    store, objects = c.store, c.objects

    async def job() -> views.Job[dict[str, Any]]:
        def context() -> dict[str, Any]:
            view = results_view(store, objects, batch_id, label, deployment, page)
            return {"view": view, "downloads": DOWNLOADS, "no_value": NONE}

        return context

    key = ("results", batch_id, label, deployment, page)
    try:
        return _html(await _rendered(request, key, "results.html", job))
    except BatchNotFound:
        return _message(request, 404, "No such batch", f"there is no batch {batch_id}")
    except StoicError as exc:
        return _failure(request, exc)


@router.get("/ui/batches/{batch_id}/download/{fmt}", response_model=None)
async def download(request: Request, batch_id: str, fmt: str) -> Response:
    c = viewer(request)
    formats = {f.value: f for f, _ in DOWNLOADS}
    if fmt not in formats:
        return _message(request, 404, "Not found", f"no download format {fmt}")
    try:
        b = await asyncio.to_thread(c.store.get_batch, batch_id)
        return await results_response(c, b, formats[fmt])
    except BatchNotFound:
        return _message(request, 404, "No such batch", f"there is no batch {batch_id}")
    except ApiError as exc:
        return _message(request, exc.status, "No results yet", exc.message)
    except StoicError as exc:
        return _failure(request, exc)


def install(app: FastAPI) -> None:
    """Mount the results view (after :func:`stoic.api.ui.routes.install`, whose login
    handler it relies on)."""
    app.include_router(router)
