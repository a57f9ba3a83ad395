"""``stoic serve``: the daemon (uvicorn + the FastAPI app, JSON logs on stderr), and
``stoic config show``: the settings it would run with, and where each came from.

The server side of the command line; the REST clients (``submit``, ``status``) live in
:mod:`stoic.client`, which imports nothing of the server. The web framework and uvicorn
are imported inside the command so ``stoic --help`` stays fast. Both commands find
their settings file the same way (:func:`stoic.configfile.find_config`) and take the
same flags, so ``config show`` shows what ``serve`` would run with.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from stoic.configfile import find_config
from stoic.errors import StoicError
from stoic.settings import default_data_dir

if TYPE_CHECKING:
    from stoic.settings import Settings

# serve ---------------------------------------------------------------------------------


_CONFIG = typer.Option(
    None, "--config", help="settings file (TOML or YAML); default: the first found (stoic.toml)"
)
_HOST = typer.Option(None, "--host", help="bind address (api.host)")
_PORT = typer.Option(None, "--port", help="TCP port (api.port)")
_DATA_DIR = typer.Option(None, "--data-dir", help="state directory (data_dir)")


def _flags(
    host: str | None, port: int | None, data_dir: Path | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings the flags override, and which flag set each dotted key."""
    overrides: dict[str, Any] = {}
    given: dict[str, str] = {}
    api: dict[str, Any] = {}
    if host is not None:
        api["host"], given["api.host"] = host, "--host"
    if port is not None:
        api["port"], given["api.port"] = port, "--port"
    if api:
        overrides["api"] = api
    if data_dir is not None:
        overrides["data_dir"], given["data_dir"] = data_dir, "--data-dir"
    return overrides, given


def _legacy_data_dir(settings: Settings, given: dict[str, str]) -> None:
    """One line when an older daemon's ``./stoic-data`` is here and the new default
    ``data_dir`` is not it (``data_dir`` defaulted to the working directory before)."""
    legacy = Path("stoic-data")
    if "data_dir" in given or not (legacy / "stoic.db").is_file():
        return
    if settings.data_dir != default_data_dir(os.environ):
        return
    typer.echo(
        f"stoic: ./stoic-data holds an older daemon's data, but data_dir is now "
        f"{settings.data_dir} (it no longer defaults to the working directory); pass "
        "--data-dir stoic-data to keep using it",
        err=True,
    )


def serve(
    config: Path | None = _CONFIG,
    host: str | None = _HOST,
    port: int | None = _PORT,
    data_dir: Path | None = _DATA_DIR,
) -> None:
    """Run the edge controller daemon (REST API + scheduler) until SIGTERM/SIGINT."""
    from stoic.api.app import create_app
    from stoic.api.server import build_server
    from stoic.daemon.controller import Controller, check_extras
    from stoic.daemon.lock import DataDirLock
    from stoic.logging import configure_logging, get_logger
    from stoic.settings import check_listener, load_settings

    overrides, given = _flags(host, port, data_dir)
    found = find_config(config)
    settings = load_settings(found.path if found else None, **overrides)
    if found is not None:
        # Children that read settings (the demo model's `stoic model init`) read this file.
        os.environ["STOIC_CONFIG"] = str(found.path.resolve())
    _legacy_data_dir(settings, given)
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
            "serving",
            url=url,
            docs=f"{url}/docs",
            data_dir=str(settings.data_dir.resolve()),
            config=str(found.path) if found else None,
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


# config show ---------------------------------------------------------------------------

config_app = typer.Typer(help="The settings: what they are and where they come from.")


@config_app.command("show")
def show(
    config: Path | None = _CONFIG,
    host: str | None = _HOST,
    port: int | None = _PORT,
    data_dir: Path | None = _DATA_DIR,
    as_json: bool = typer.Option(False, "--json", help="one JSON document"),
) -> None:
    """Print the effective settings (as `stoic serve` with the same flags would run) and
    where each came from: default, the file, an environment variable or a flag.
    Secrets are masked."""
    from stoic.configfile import explain
    from stoic.settings import load_settings, read_config_file

    overrides, given = _flags(host, port, data_dir)
    found = find_config(config)
    file_values = read_config_file(found.path) if found else {}
    settings = load_settings(found.path if found else None, **overrides)
    entries = explain(settings, file=found, file_values=file_values, flags=given)
    if as_json:
        file = None if found is None else {"path": str(found.path), "found_by": found.found_by}
        doc = {
            "file": file,
            "settings": [{"key": e.key, "value": e.value, "source": e.source} for e in entries],
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    if found is None:
        typer.echo("# no settings file found (stoic.toml: see docs/configuration.md)")
    else:
        typer.echo(f"# settings file {found.path} (found by {found.found_by})")
    width = max(len(e.key) for e in entries)
    for e in entries:
        typer.echo(f"{e.key:<{width}} = {json.dumps(e.value)}  # {e.source}")


def register(app: typer.Typer) -> None:
    """Mount ``serve`` and ``config`` on the root ``stoic`` command."""
    app.command("serve")(serve)
    app.add_typer(config_app, name="config")
