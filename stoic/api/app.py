"""The FastAPI application factory; its lifespan starts and stops the controller.

``create_app(settings)`` builds a :class:`~stoic.daemon.controller.Controller` from the
settings; tests pass a controller of their own (fake backends, injected clock).
Nothing runs until the ASGI server (uvicorn, or ``httpx.ASGITransport`` together with
``app.router.lifespan_context`` in tests) enters the lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from stoic import __version__
from stoic.api import actions, batches, health, models, runtimes
from stoic.api.admission import Admission, Rules
from stoic.api.errors import install_error_handlers
from stoic.api.ui.results import install as install_results
from stoic.api.ui.routes import install as install_ui
from stoic.api.uploads import UploadGate
from stoic.daemon.controller import Controller
from stoic.settings import Settings

DESCRIPTION = """\
The STOIC edge controller: submit image batches; for each, the daemon predicts the
total response time T_s = T_t + T_d + T_p on every available runtime (edge, cloud CPU,
1-GPU, 2-GPU), runs it where it finishes first (selector) or races the edge against a
GPU pod (duplicator), and learns from the measured times.

Errors have one shape: `{"error": {"code", "message", "file"?, "field"?}}`.

The operator page, `/ui`, shows the same in a browser (linked from `/`).
"""


DOCS_ASSETS = "/docs/assets"
DOCS_ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
"""What ``/docs`` and ``/redoc`` load, from the package: public, as the pages are."""


def create_app(settings: Settings, *, controller: Controller | None = None) -> FastAPI:
    """The ASGI app of one daemon."""
    ctl = controller or Controller(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await ctl.start()
        try:
            yield
        finally:
            await ctl.stop()

    # /docs and /redoc with their scripts served from the package (fastapi-offline
    # bundles Swagger UI and ReDoc): an edge site is often offline, and a page that
    # loads them from a public CDN shows nothing there.
    app = FastAPIOffline(
        title="stoic edge controller",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
    )
    app.state.controller = ctl
    api = settings.api
    app.state.upload_gate = UploadGate(
        api.max_concurrent_uploads,
        api.max_queued_uploads,
        api.upload_queue_timeout_s,
        on_change=ctl.metrics.uploads_in_flight.set,
        on_refused=ctl.metrics.uploads_refused.inc,
    )
    token = settings.api.token
    app.state.api_token = token.get_secret_value() if token is not None else None
    install_error_handlers(app)
    app.include_router(batches.router)
    app.include_router(actions.router)
    app.include_router(runtimes.router)
    app.include_router(models.router)
    app.include_router(health.router)
    install_ui(app, enabled=settings.ui.enabled)
    if settings.ui.enabled:
        install_results(app)
    docs = (app.openapi_url, "/docs", "/redoc", app.swagger_ui_oauth2_redirect_url)
    assets = [f"{DOCS_ASSETS}/{name}" for name in DOCS_ASSET_FILES]
    app.add_middleware(Admission, rules=Rules.of(api, [*(p for p in docs if p), *assets]))
    return app
