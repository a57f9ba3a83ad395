"""``stoic serve``: the daemon (uvicorn + the FastAPI app, JSON logs on stderr).

The server side of the command line; the REST clients (``submit``, ``status``) live in
:mod:`stoic.client`, which imports nothing of the server. The web framework and uvicorn
are imported inside the command so ``stoic --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from stoic.errors import StoicError

# serve ---------------------------------------------------------------------------------


def serve(
    config: Path | None = typer.Option(None, "--config", help="settings file (TOML or YAML)"),
    host: str | None = typer.Option(None, "--host", help="bind address (api.host)"),
    port: int | None = typer.Option(None, "--port", help="TCP port (api.port)"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="state directory (data_dir)"),
) -> None:
    """Run the edge controller daemon (REST API + scheduler) until SIGTERM/SIGINT."""
    from stoic.api.app import create_app
    from stoic.api.server import build_server
    from stoic.daemon.controller import Controller, check_extras
    from stoic.daemon.lock import DataDirLock
    from stoic.logging import configure_logging, get_logger
    from stoic.settings import check_listener, load_settings

    overrides: dict[str, Any] = {}
    api: dict[str, Any] = {}
    if host is not None:
        api["host"] = host
    if port is not None:
        api["port"] = port
    if api:
        overrides["api"] = api
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = load_settings(config, **overrides)
    check_extras(settings)  # a missing extra is one line here, not a failed lifespan
    check_listener(settings.api)  # no open API beyond loopback by accident
    # Before anything else touches the data directory: one daemon per data dir.
    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    try:
        configure_logging(
            settings.log.level,
            json_logs=settings.log.json_logs,
            max_repeats=settings.log.max_repeats,
            repeat_window_s=settings.log.repeat_window_s,
        )
        controller = Controller(settings, lock=lock)
        # What may refuse to start (no edge runtime, an object store or database that
        # cannot be used, a daemon holding them): one line and exit 2, before the
        # server says a word.
        controller.claim()
        app = create_app(settings, controller=controller)
        url = f"http://{settings.api.host}:{settings.api.port}"
        get_logger("stoic.serve").info(
            "serving", url=url, docs=f"{url}/docs", data_dir=str(settings.data_dir.resolve())
        )
        typer.echo(f"stoic: serving on {url} (API docs: {url}/docs)", err=True)
        server = build_server(settings, controller, app)
        server.run()
    finally:
        lock.release()
    if server.start_error is not None:
        raise server.start_error
    if not server.started:
        raise StoicError(f"the daemon did not start on {url}; see the log above")


def register(app: typer.Typer) -> None:
    """Mount ``serve`` on the root ``stoic`` command."""
    app.command("serve")(serve)
