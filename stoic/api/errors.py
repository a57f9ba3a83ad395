"""Every error the REST API returns has one shape, and each cause one status.

Clients branch on ``error.code`` (stable), show ``error.message`` (human) and, for a
rejected upload, point at ``error.file`` or ``error.field``::

    {"error": {"code": "corrupt_image", "message": "b.jpg: ...", "file": "b.jpg"}}

The mapping from the typed :mod:`stoic.errors` hierarchy to HTTP statuses lives here
and only here (the CLI has its own, to exit codes). Anything unexpected becomes a 500
with the same shape, logged with its traceback, never echoed to the client.

What a 5xx says stays in the daemon: a database or object-store failure answers
"the database is unavailable" and logs the detail (URL, SQL, path) for the operator,
never for the client. A client that stalls or leaves mid-upload
(:class:`~stoic.errors.RequestAborted`) is logged once, at INFO or WARNING, without a
traceback: that is the client's doing, not an internal error. An error answered before
the request body was read to its end closes the connection (``Connection: close``), so
the rest of the body is not waited for.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from stoic.errors import (
    ActionRefused,
    BackendError,
    BatchNotFound,
    BatchStateError,
    ClientDisconnected,
    ConfigError,
    IngestError,
    InputError,
    InsufficientStorage,
    ModelNotFound,
    ObjectNotFound,
    ObjectStoreError,
    PackageGone,
    PredictorError,
    RequestAborted,
    RequestTimeout,
    RuntimeNotFound,
    RuntimeUnavailable,
    StoicError,
    StoreError,
)
from stoic.logging import get_logger

log = get_logger("stoic.api")


class ApiError(Exception):
    """An error raised by the API layer itself (auth, unknown route parameters)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status, self.code, self.message = status, code, message
        self.field, self.headers = field, headers
        super().__init__(message)


def error_body(
    code: str, message: str, *, file: str | None = None, field: str | None = None
) -> dict[str, Any]:
    detail: dict[str, Any] = {"code": code, "message": message}
    if file is not None:
        detail["file"] = file
    if field is not None:
        detail["field"] = field
    return {"error": detail}


# Most specific first: the first class an exception is an instance of wins.
_STATUS: tuple[tuple[type[StoicError], int, str], ...] = (
    (PackageGone, 410, "package_gone"),
    (BatchNotFound, 404, "batch_not_found"),
    (RuntimeNotFound, 404, "runtime_not_found"),
    (ObjectNotFound, 404, "object_not_found"),
    (ModelNotFound, 404, "model_not_found"),
    (BatchStateError, 409, "conflict"),
    (ActionRefused, 409, "refused"),
    (InputError, 400, "bad_input"),
    (RuntimeUnavailable, 503, "runtime_unavailable"),
    (BackendError, 502, "backend_error"),
    (PredictorError, 422, "cannot_estimate"),
    (StoreError, 503, "store_unavailable"),
    (ObjectStoreError, 503, "object_store_unavailable"),
    (ConfigError, 500, "config_error"),
)


def status_for(exc: StoicError) -> tuple[int, str]:
    """The HTTP status and error code of a stoic error."""
    if isinstance(exc, IngestError):
        return exc.status, exc.code
    for cls, status, code in _STATUS:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal_error"


_PRIVATE_5XX: dict[type[StoicError], str] = {
    StoreError: "the database is unavailable; see the daemon's log",
    ObjectStoreError: "the object store is unavailable; see the daemon's log",
    ConfigError: "the daemon is misconfigured; see its log",
}
"""5xx errors whose messages name internals (database URL and SQL, paths): the client
gets the fixed text, the log gets the message."""


def client_message(exc: StoicError, status: int) -> str:
    """What the client may read of ``exc``."""
    if status >= 500:
        for cls, text in _PRIVATE_5XX.items():
            if isinstance(exc, cls):
                return text
    return str(exc)


def _close_headers(request: Request | None) -> dict[str, str] | None:
    if request is not None and getattr(request.state, "close_connection", False):
        return {"Connection": "close"}
    return None


def stoic_error_response(exc: StoicError, request: Request | None = None) -> JSONResponse:
    status, code = status_for(exc)
    file = getattr(exc, "file", None) if isinstance(exc, IngestError) else None
    field = getattr(exc, "field", None) if isinstance(exc, IngestError) else None
    if isinstance(exc, RequestAborted):
        level = log.warning if isinstance(exc, RequestTimeout) else log.info
        client = request.client.host if request is not None and request.client else None
        level("upload abandoned", code=code, reason=str(exc), client=client)
    elif status >= 500 and not isinstance(exc, InsufficientStorage):  # the ingest logged it
        log.error("request failed", error=str(exc), error_type=type(exc).__name__)
    headers = _close_headers(request)
    if isinstance(exc, InsufficientStorage):
        headers = {**(headers or {}), "Retry-After": str(exc.retry_after_s)}
    return JSONResponse(
        error_body(code, client_message(exc, status), file=file, field=field),
        status_code=status,
        headers=headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the shape above."""

    async def on_stoic(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StoicError)
        return stoic_error_response(exc, request)

    async def on_disconnect(request: Request, _exc: Exception) -> JSONResponse:
        # Starlette's own (a body read through request.stream()): same as ours.
        return stoic_error_response(
            ClientDisconnected("the client disconnected mid-request"), request
        )

    async def on_api(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        headers = dict(exc.headers or {})
        headers.update(_close_headers(request) or {})
        return JSONResponse(
            error_body(exc.code, exc.message, field=exc.field),
            status_code=exc.status,
            headers=headers or None,
        )

    async def on_validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body", "header")]
        field = ".".join(loc) or None
        message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
        return JSONResponse(error_body("invalid_field", message, field=field), status_code=422)

    async def on_http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    async def on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", error_type=type(exc).__name__)
        return JSONResponse(
            error_body("internal_error", "internal server error; see the daemon's log"),
            status_code=500,
        )

    app.add_exception_handler(StoicError, on_stoic)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(ApiError, on_api)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
