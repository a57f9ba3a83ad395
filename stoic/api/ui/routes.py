"""The operator page's routes: ``/`` (a landing page) and everything under ``/ui``.

=========================================  ===============================================
``GET /``                                  links to the page, the API docs, health, metrics
``GET /ui``                                the page: every part below, rendered at once
``GET /ui/fragments/{part}``               one part (status, batches, runtimes, usage), for
                                           the page's background refresh
``GET /ui/batches/{id}``                   one batch: estimate table, per-image labels
``POST /ui/batches``                       the upload form (multipart, like ``/v1/batches``)
``POST /ui/batches/{id}/cancel|retry``     an operator's action on a batch
``POST /ui/drain``                         drain (``drain=on``) or resume (``drain=off``)
``POST /ui/runtimes/{name}/service``       out of service (``in_service=false``, ``reason``)
                                           or back (``in_service=true``)
``GET|POST /ui/login``, ``POST /ui/logout``  the login session (:mod:`.session`)
``GET /ui/static/...``                     the stylesheet and the refresh script
=========================================  ===============================================

Pages are server-rendered with Jinja2 (autoescaping on: every file name, archive member
name, reason and error message is escaped) and sent with a Content Security Policy that
allows only this origin's script and stylesheet, no inline script, no framing. The page
is complete without JavaScript; ``static/ui.js`` only re-fetches the parts marked
``data-refresh`` every ``ui.refresh_s`` seconds and swaps them in (polling, because a
page open for days on a field-station laptop should hold no connection open; the
fetch-and-swap is ~40 lines of our own rather than a vendored library, so there is no
third-party code to track). The page and its parts are rendered in a worker thread and
shared by every request for ``ui.render_cache_s`` (:mod:`.render`): however many pages
poll, the event loop that receives uploads is not the one that renders. Failed logins
are throttled per client (:mod:`.throttle`).

The operator's actions (:mod:`stoic.daemon.actions`) are forms that carry the session's
CSRF token in a hidden field (:mod:`.session`); the shared renders hold a placeholder
(:data:`CSRF_MARK`) that each response replaces with its own session's token. An action
is refused (403) without the right token or from another site, is logged with who did
it by :mod:`stoic.daemon.actions`, and sends the browser back to the page it changed,
rendered afresh.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from stoic import __version__
from stoic.api.errors import client_message, status_for
from stoic.api.ui import session, views
from stoic.api.ui.render import RenderCache, Renderer
from stoic.api.ui.session import Sessions
from stoic.api.ui.throttle import Backoff, LoginThrottle, client_key
from stoic.daemon import actions
from stoic.daemon.actions import Actor
from stoic.daemon.controller import Controller
from stoic.errors import BatchNotFound, InvalidField, StoicError
from stoic.ingest.options import API_MODES
from stoic.logging import get_logger
from stoic.settings import UiSettings

log = get_logger("stoic.api.ui")

STATIC_DIR = Path(__file__).with_name("static")
PARTS = ("status", "batches", "runtimes", "usage")
FRAGMENT_HEADER = "x-stoic-fragment"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on form
    # posts, and the same-origin check of the forms needs the real origin.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

CSRF_FIELD = "csrf"
CSRF_MARK = "<stoic-csrf/>"
"""Stands for the session's CSRF token in rendered HTML (a render is shared by every
poller, the token is not): :func:`_send` puts the token in. Text from users cannot
contain it: autoescaping turns ``<`` into ``&lt;``."""

router = APIRouter(include_in_schema=False)
landing_router = APIRouter(include_in_schema=False)


# Formatting (Jinja2 filters) ---------------------------------------------------------


def fmt_seconds(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "—"
    return f"{v:.{digits}f} s"


def fmt_duration(v: float | None) -> str:
    if v is None:
        return "—"
    v = int(v)
    d, rem = divmod(v, 86_400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        return f"{d} d {h} h"
    if h:
        return f"{h} h {m} min"
    if m:
        return f"{m} min {s} s"
    return f"{s} s"


def fmt_when(t: float | None) -> str:
    if t is None:
        return "—"
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def fmt_clock(t: float | None) -> str:
    if t is None:
        return "—"
    return datetime.fromtimestamp(t).strftime("%H:%M:%S")


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def fmt_number(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool) or v is None:
        return "—" if v is None else str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def make_environment() -> Environment:
    env = Environment(
        loader=PackageLoader("stoic.api.ui", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        seconds=fmt_seconds,
        duration=fmt_duration,
        when=fmt_when,
        clock=fmt_clock,
        size=fmt_bytes,
        number=fmt_number,
    )
    env.globals.update(
        version=__version__,
        components=views.COMPONENTS,
        top_score=views.top_score,
        modes=[m.value for m in API_MODES],
        csrf_field=Markup(f'<input type="hidden" name="{CSRF_FIELD}" value="{CSRF_MARK}">'),
    )
    return env


# Access --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PageServices:
    """What the page keeps between requests (``app.state.ui``)."""

    env: Environment
    cache: RenderCache
    renderer: Renderer
    sessions: Sessions
    throttle: LoginThrottle

    @classmethod
    def build(cls, ui: UiSettings, controller: Controller) -> PageServices:
        return cls(
            env=make_environment(),
            cache=RenderCache(ttl_s=ui.render_cache_s, clock=controller.clock),
            renderer=Renderer(),
            sessions=Sessions(idle_s=ui.session_idle_s, lifetime_s=ui.session_ttl_s),
            throttle=LoginThrottle(
                Backoff(
                    free_failures=ui.login_free_failures,
                    first_s=ui.login_backoff_s,
                    max_s=ui.login_backoff_max_s,
                    memory_s=ui.login_failure_memory_s,
                )
            ),
        )


class LoginRequired(Exception):
    """Raised by :func:`viewer` when a request carries neither the token nor a live
    session."""

    def __init__(self, fragment: bool) -> None:
        super().__init__("login required")
        self.fragment = fragment


class LoginThrottled(Exception):
    """Raised when a client that offered too many wrong tokens tries again too soon."""

    def __init__(self, fragment: bool, retry_after_s: float) -> None:
        super().__init__("too many wrong tokens")
        self.fragment = fragment
        self.retry_after_s = retry_after_s


def _ui(request: Request) -> PageServices:
    ui: PageServices = request.app.state.ui
    return ui


def _controller(request: Request) -> Controller:
    c: Controller = request.app.state.controller
    return c


def _client(request: Request) -> str:
    return client_key(request.client.host if request.client else None)


def _refuse_wrong_token(request: Request, now: float) -> None:
    """Count a wrong token from the request's client (logged with the wait it earned)."""
    client = _client(request)
    wait = _ui(request).throttle.failed(client, now)
    log.warning("operator page: wrong token", client=client, wait_s=wait)


def viewer(request: Request) -> Controller:
    """The controller, once the request has shown the token (or a live session)."""
    c = _controller(request)
    token: str | None = request.app.state.api_token
    if token is None:
        return c
    fragment = FRAGMENT_HEADER in request.headers
    ui, now = _ui(request), c.clock.now()
    offered = session.offered_bearer(request)
    if offered is not None:
        wait = ui.throttle.retry_after_s(_client(request), now)
        if wait > 0:
            raise LoginThrottled(fragment, wait)
        if session.token_matches(token, offered):
            ui.throttle.succeeded(_client(request))
            return c
        _refuse_wrong_token(request, now)
        raise LoginRequired(fragment)
    cookie = request.cookies.get(session.COOKIE)
    if cookie is not None and ui.sessions.use(cookie, now):
        return c
    raise LoginRequired(fragment)


def _root(request: Request) -> str:
    """The path prefix the app is mounted under (behind a reverse proxy), or ""."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def render(
    request: Request,
    template: str,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    base = _base(request)
    html = _ui(request).env.get_template(template).render(**base, **context)
    return _html(html, status_code, headers)


def _html(html: str, status_code: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(
        html, status_code=status_code, headers={**SECURITY_HEADERS, **(headers or {})}
    )


def _csrf(request: Request) -> tuple[str, str | None]:
    """The CSRF token the request's forms get, and the id of a session opened for it
    (None if none was): a visitor of a page without ``api.token`` gets an anonymous
    session to hold one; a script showing the bearer token needs none."""
    ui, now = _ui(request), _controller(request).clock.now()
    cookie = request.cookies.get(session.COOKIE)
    if cookie is not None and ui.sessions.use(cookie, now):
        return ui.sessions.csrf(cookie) or "", None
    if request.app.state.api_token is not None:
        return "", None
    opened = ui.sessions.open(now)
    return ui.sessions.csrf(opened) or "", opened


def _send(request: Request, html: str) -> HTMLResponse:
    """A rendered page or part, its forms given the request's CSRF token."""
    token, opened = _csrf(request)
    response = _html(html.replace(CSRF_MARK, token))
    if opened is not None:
        session.set_session(
            response,
            request,
            opened,
            lifetime_s=_ui(request).sessions.lifetime_s,
            path=f"{_root(request)}/ui",
        )
    return response


def _base(request: Request) -> dict[str, Any]:
    """What every page and fragment template needs besides its own context."""
    return {
        "root": _root(request),
        "auth": request.app.state.api_token is not None,
        "refresh_s": _controller(request).settings.ui.refresh_s,
    }


def _message(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return render(request, "message.html", status_code=status, title=title, message=message)


def _failure(request: Request, exc: StoicError) -> HTMLResponse:
    """A typed error while reading (the database is away, ...) as a page, not JSON."""
    status, code = status_for(exc)
    log.warning("operator page read failed", error=str(exc), code=code)
    return _message(request, status, f"Cannot read the controller's state ({code})", str(exc))


# Pages ---------------------------------------------------------------------------------


@landing_router.get("/", response_class=HTMLResponse)
async def landing(request: Request) -> HTMLResponse:
    """Where a browser pointed at the daemon lands: links, nothing more (no token)."""
    return render(request, "landing.html", ui=_controller(request).settings.ui.enabled)


async def _part_job(c: Controller, part: str, limit: int) -> views.Job[dict[str, Any]]:
    if part == "status":
        status = await views.status_job(c)
        return lambda: {"status": status()}
    if part == "batches":
        rows = views.batches_job(c, limit)
        return lambda: {"rows": rows(), "limit": limit}
    if part == "runtimes":
        runtimes = views.runtimes_job(c)
        return lambda: {"runtimes": runtimes()}
    usage = views.usage_job(c)
    return lambda: {"usage": usage()}


ContextJob = Callable[[], Awaitable[views.Job[dict[str, Any]]]]
"""Called on the loop when a render is due; what it returns makes the template's context
in the worker thread."""


async def _rendered(request: Request, key: tuple[Any, ...], template: str, job: ContextJob) -> str:
    """``template`` with the context ``job`` makes, rendered in the worker thread and
    shared for ``ui.render_cache_s`` under ``key`` (with the path prefix added)."""
    ui, base = _ui(request), _base(request)

    async def draw() -> str:
        context = await job()
        return await ui.renderer.run(
            lambda: ui.env.get_template(template).render(**base, **context())
        )

    return await ui.cache.get((*key, base["root"]), draw)


async def _part_html(request: Request, c: Controller, part: str, limit: int) -> str:
    return await _rendered(
        request, ("part", part, limit), f"_{part}.html", lambda: _part_job(c, part, limit)
    )


def _limit(request: Request, limit: int | None) -> int:
    return limit if limit is not None else _controller(request).settings.ui.batches


@router.get("/ui", response_class=HTMLResponse)
async def page(request: Request, batches: int | None = Query(None, ge=1, le=500)) -> HTMLResponse:
    c = viewer(request)
    limit = _limit(request, batches)

    async def job() -> views.Job[dict[str, Any]]:
        parts = {p: Markup(await _part_html(request, c, p, limit)) for p in PARTS}
        context = {
            "parts": parts,
            "limit": limit,
            "runtime_names": list(c.runtime_names),
            "default_mode": str(c.settings.requester.default_mode),
        }
        return lambda: context

    try:
        return _send(request, await _rendered(request, ("page", limit), "index.html", job))
    except StoicError as exc:
        return _failure(request, exc)


@router.get("/ui/fragments/{part}", response_class=HTMLResponse)
async def fragment(
    request: Request, part: str, batches: int | None = Query(None, ge=1, le=500)
) -> HTMLResponse:
    c = viewer(request)
    if part not in PARTS:
        return _message(request, 404, "Not found", f"no such part of the page: {part}")
    try:
        return _send(request, await _part_html(request, c, part, _limit(request, batches)))
    except StoicError as exc:
        return _failure(request, exc)


async def _batch(request: Request, batch_id: str, template: str) -> HTMLResponse:
    """A batch's page or its refreshed fragment: the same detail, two templates."""
    c = viewer(request)

    async def job() -> views.Job[dict[str, Any]]:
        detail = views.batch_detail_job(c, batch_id)
        return lambda: {"detail": detail()}

    try:
        return _send(
            request, await _rendered(request, ("batch", batch_id, template), template, job)
        )
    except BatchNotFound:
        return _message(request, 404, "No such batch", f"there is no batch {batch_id}")
    except StoicError as exc:
        return _failure(request, exc)


@router.get("/ui/batches/{batch_id}", response_class=HTMLResponse)
async def batch_page(request: Request, batch_id: str) -> HTMLResponse:
    return await _batch(request, batch_id, "batch.html")


@router.get("/ui/fragments/batch/{batch_id}", response_class=HTMLResponse)
async def batch_fragment(request: Request, batch_id: str) -> HTMLResponse:
    return await _batch(request, batch_id, "_batch.html")


@router.post("/ui/batches", response_model=None)
async def upload(request: Request) -> Response:
    """The upload form: the same streamed ingest as ``POST /v1/batches`` (mode,
    runtime and skip_invalid are form fields), then on to the batch's page."""
    c = viewer(request)
    if not session.same_origin(request):
        return _message(request, 403, "Refused", "a form posted from another site")
    if c.state != "running" or c.draining:
        return _message(
            request, 503, "Not accepting batches", f"the controller is {c.state}; try later"
        )
    length = request.headers.get("content-length")
    try:
        accepted = await c.ingestor.ingest(
            content_type=request.headers.get("content-type", ""),
            content_length=int(length) if length and length.isdigit() else None,
            body=request.stream(),
            query={},
            idempotency_key=None,
        )
    except StoicError as exc:
        status, code = status_for(exc)
        return _message(request, status, f"Upload refused ({code})", str(exc))
    return RedirectResponse(f"{_root(request)}/ui/batches/{accepted.batch.id}", status_code=303)


# Operator actions ----------------------------------------------------------------------


def _actor(request: Request, form: Any) -> Actor | None:
    """Who posted an action form: the bearer token's holder, or a live session whose
    CSRF token the form carries; None when it is neither (refused)."""
    client = request.client.host if request.client else None
    if request.app.state.api_token is not None and session.offered_bearer(request):
        return Actor("token", client)  # viewer() checked it
    ui = _ui(request)
    cookie = request.cookies.get(session.COOKIE)
    if cookie is None or not ui.sessions.use(cookie, _controller(request).clock.now()):
        return None
    expected, offered = ui.sessions.csrf(cookie), form.get(CSRF_FIELD)
    if expected is None or not isinstance(offered, str):
        return None
    if not session.token_matches(expected, offered):
        return None
    return Actor(f"session {ui.sessions.handle(cookie)}", client)


Action = Callable[[Controller, Actor, Any], Awaitable[str]]
"""Does an operator's action for the page (controller, who, the form) and returns the
path to send the browser to."""


async def _act(request: Request, action: Action) -> Response:
    c = viewer(request)
    if not session.same_origin(request):
        return _message(request, 403, "Refused", "a form posted from another site")
    form = await request.form()
    actor = _actor(request, form)
    if actor is None:
        log.warning("operator page: action refused, CSRF token missing or wrong",
                    path=request.url.path, client=_client(request))  # fmt: skip
        return _message(
            request,
            403,
            "Refused",
            "the form's security token is missing or out of date: reload the page and try again",
        )
    try:
        target = await action(c, actor, form)
    except StoicError as exc:
        status, code = status_for(exc)
        return _message(request, status, f"Refused ({code})", client_message(exc, status))
    _ui(request).cache.clear()
    return RedirectResponse(f"{_root(request)}{target}", status_code=303)


@router.post("/ui/batches/{batch_id}/cancel", response_model=None)
async def cancel_batch(request: Request, batch_id: str) -> Response:
    async def cancel(c: Controller, actor: Actor, _form: Any) -> str:
        await actions.cancel_batch(c, batch_id, actor)
        return f"/ui/batches/{batch_id}"

    return await _act(request, cancel)


@router.post("/ui/batches/{batch_id}/retry", response_model=None)
async def retry_batch(request: Request, batch_id: str) -> Response:
    async def retry(c: Controller, actor: Actor, _form: Any) -> str:
        await actions.retry_batch(c, batch_id, actor)
        return f"/ui/batches/{batch_id}"

    return await _act(request, retry)


def _choice(form: Any, field: str, yes: str, no: str) -> bool:
    value = form.get(field)
    if value not in (yes, no):
        raise InvalidField(f"{field}: expected {yes!r} or {no!r}", field=field)
    return bool(value == yes)


@router.post("/ui/drain", response_model=None)
async def drain(request: Request) -> Response:
    async def act(c: Controller, actor: Actor, form: Any) -> str:
        if _choice(form, "drain", "on", "off"):
            await actions.drain(c, actor)
        else:
            actions.undrain(c, actor)
        return "/ui#status"

    return await _act(request, act)


@router.post("/ui/runtimes/{name}/service", response_model=None)
async def runtime_service(request: Request, name: str) -> Response:
    async def act(c: Controller, actor: Actor, form: Any) -> str:
        if _choice(form, "in_service", "true", "false"):
            await actions.return_to_service(c, name, actor)
        else:
            reason = form.get("reason")
            reason = reason.strip()[:500] if isinstance(reason, str) else ""
            await actions.take_out_of_service(c, name, actor, reason)
        return "/ui#runtimes"

    return await _act(request, act)


# Login ---------------------------------------------------------------------------------


def _login_page(request: Request, status: int, error: str | None = None) -> HTMLResponse:
    return render(
        request,
        "login.html",
        status_code=status,
        error=error,
        headers={"WWW-Authenticate": 'Bearer realm="stoic"'} if status == 401 else None,
    )


@router.get("/ui/login", response_class=HTMLResponse, response_model=None)
async def login_form(request: Request) -> Response:
    if request.app.state.api_token is None:
        return RedirectResponse(f"{_root(request)}/ui", status_code=303)
    return _login_page(request, 200)


def _throttled(request: Request, fragment: bool, retry_after_s: float) -> Response:
    wait = max(1, math.ceil(retry_after_s))
    headers = {"Retry-After": str(wait)}
    if fragment:
        return Response(
            "too many wrong tokens",
            status_code=429,
            media_type="text/plain",
            headers={**headers, **SECURITY_HEADERS},
        )
    return render(
        request,
        "login.html",
        status_code=429,
        error=f"too many wrong tokens from your address: try again in {wait} s",
        headers=headers,
    )


@router.post("/ui/login", response_model=None)
async def login(request: Request) -> Response:
    token: str | None = request.app.state.api_token
    if token is None:
        return RedirectResponse(f"{_root(request)}/ui", status_code=303)
    if not session.same_origin(request):
        return _message(request, 403, "Refused", "a form posted from another site")
    ui, now = _ui(request), _controller(request).clock.now()
    wait = ui.throttle.retry_after_s(_client(request), now)
    if wait > 0:
        return _throttled(request, False, wait)
    form = await request.form()
    offered = form.get("token")
    if not isinstance(offered, str) or not session.token_matches(token, offered):
        _refuse_wrong_token(request, now)
        return _login_page(request, 401, "wrong token")
    ui.throttle.succeeded(_client(request))
    previous = request.cookies.get(session.COOKIE)
    if previous is not None:
        ui.sessions.revoke(previous)
    response = RedirectResponse(f"{_root(request)}/ui", status_code=303)
    session.set_session(
        response,
        request,
        ui.sessions.open(now),
        lifetime_s=ui.sessions.lifetime_s,
        path=f"{_root(request)}/ui",
    )
    return response


@router.post("/ui/logout", response_model=None)
async def logout(request: Request) -> Response:
    if not session.same_origin(request):
        return _message(request, 403, "Refused", "a form posted from another site")
    cookie = request.cookies.get(session.COOKIE)
    if cookie is not None:
        _ui(request).sessions.revoke(cookie)
    target = "/ui/login" if request.app.state.api_token is not None else "/ui"
    response = RedirectResponse(f"{_root(request)}{target}", status_code=303)
    session.clear_session(response, request, path=f"{_root(request)}/ui")
    return response


# Installation --------------------------------------------------------------------------


def install(app: FastAPI, *, enabled: bool = True) -> None:
    """Mount the landing page and (``enabled``: ``ui.enabled``) the operator page on
    ``app`` (its ``state.controller`` and ``state.api_token`` are set): the routes, the
    static files and the login-required handler."""
    c: Controller = app.state.controller
    app.state.ui = PageServices.build(c.settings.ui, c)
    app.include_router(landing_router)
    if not enabled:
        return

    async def on_login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        if exc.fragment:
            return Response(
                "login required",
                status_code=401,
                media_type="text/plain",
                headers={"WWW-Authenticate": 'Bearer realm="stoic"', **SECURITY_HEADERS},
            )
        return _login_page(request, 401)

    async def on_throttled(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginThrottled)
        return _throttled(request, exc.fragment, exc.retry_after_s)

    app.add_exception_handler(LoginRequired, on_login_required)
    app.add_exception_handler(LoginThrottled, on_throttled)
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
