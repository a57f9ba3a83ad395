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
    import uvicorn

    from stoic.api.app import create_app
    from stoic.daemon.controller import check_extras
    from stoic.logging import configure_logging, get_logger
    from stoic.settings import load_settings

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
    configure_logging(settings.log.level, json_logs=settings.log.json_logs)
    app = create_app(settings)
    url = f"http://{settings.api.host}:{settings.api.port}"
    get_logger("stoic.serve").info(
        "serving", url=url, docs=f"{url}/docs", data_dir=str(settings.data_dir.resolve())
    )
    typer.echo(f"stoic: serving on {url} (API docs: {url}/docs)", err=True)
    controller = app.state.controller

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the process
        would end "killed by SIGTERM" however cleanly it drained. Here a signal only
        sets flags (uvicorn's exit flag, the controller's draining flag); the lifespan
        then drains the controller and the process exits 0."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()
            controller.mark_draining()

    server = Server(
        uvicorn.Config(
            app,
            host=settings.api.host,
            port=settings.api.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=int(settings.controller.drain_grace_s) + 5,
        )
    )
    server.run()
    if not server.started:
        raise StoicError(f"the daemon did not start on {url}; see the log above")


def register(app: typer.Typer) -> None:
    """Mount ``serve`` on the root ``stoic`` command."""
    app.command("serve")(serve)
