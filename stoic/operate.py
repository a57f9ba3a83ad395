"""``stoic batch cancel|retry``, ``stoic drain``, ``stoic runtime disable|enable``: the
operator's actions from a shell, as REST clients of ``/v1`` (docs/api.md, "Operator
actions"; docs/operations.md says when to use each).

Beside :mod:`stoic.client` rather than in it: the same thin clients (:func:`connect`,
:func:`request`, one line per answer, a :class:`~stoic.errors.ServerError` for a refusal),
but commands an operator runs, not the ones a camera-trap workflow does. Nothing of the
server is imported.
"""

from __future__ import annotations

import json
import time
from typing import Any

import typer

from stoic.client import connect, request, token_option, url_option

batch_app = typer.Typer(
    help="Act on one batch: cancel it, or retry it.", no_args_is_help=True, add_completion=False
)
runtime_app = typer.Typer(
    help="Take a runtime out of service, or put it back.",
    no_args_is_help=True,
    add_completion=False,
)


def _json_option() -> Any:
    return typer.Option(False, "--json", help="print the raw JSON")


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _echo(body: Any, as_json: bool, line: str) -> None:
    typer.echo(json.dumps(body, indent=2) if as_json else line)


@batch_app.command("cancel")
def cancel(
    batch_id: str = typer.Argument(..., help="the batch's id"),
    url: str | None = url_option(),
    token: str | None = token_option(),
    as_json: bool = _json_option(),
) -> None:
    """Cancel a queued or running batch: it ends 'cancelled' and is never re-queued; a
    running one's deployments are torn down first."""
    with connect(url, token) as client:
        b = request(client.post, f"/v1/batches/{batch_id}/cancel")
    _echo(b, as_json, f"batch {b['id']}: {b['state']} ({b.get('error') or 'cancelled'})")


@batch_app.command("retry")
def retry(
    batch_id: str = typer.Argument(..., help="the batch's id"),
    url: str | None = url_option(),
    token: str | None = token_option(),
    as_json: bool = _json_option(),
) -> None:
    """Queue a failed or cancelled batch again with its stored images (refused with
    HTTP 410 once retention has deleted them)."""
    with connect(url, token) as client:
        b = request(client.post, f"/v1/batches/{batch_id}/retry")
    _echo(b, as_json, f"batch {b['id']}: {b['state']} again")


def drain(
    off: bool = typer.Option(False, "--off", help="claim batches again (undrain)"),
    show: bool = typer.Option(False, "--status", help="only say whether it is drained"),
    url: str | None = url_option(),
    token: str | None = token_option(),
    as_json: bool = _json_option(),
) -> None:
    """Drain the daemon: it claims no new batch (running ones finish, uploads still
    queue) until 'stoic drain --off'. A restart ends a drain."""
    with connect(url, token) as client:
        if show:
            d = request(client.get, "/v1/drain")
        elif off:
            d = request(client.delete, "/v1/drain")
        else:
            d = request(client.put, "/v1/drain")
    line = (
        f"drained since {_when(d['since'])} by {d['by']}; {d['running']} batch(es) still running"
        if d["drained"]
        else f"claiming batches; {d['running']} running"
    )
    _echo(d, as_json, line)


def _runtime_line(r: dict[str, Any]) -> str:
    held = r.get("out_of_service")
    if held is None:
        return f"runtime {r['name']}: in service ({'available' if r['available'] else 'away'})"
    why = f": {held['reason']}" if held.get("reason") else ""
    return f"runtime {r['name']}: out of service since {_when(held['since'])} by {held['by']}{why}"


@runtime_app.command("disable")
def disable(
    name: str = typer.Argument(..., help="the runtime's name"),
    reason: str = typer.Option("", "--reason", help="why (shown on the page and logged)"),
    url: str | None = url_option(),
    token: str | None = token_option(),
    as_json: bool = _json_option(),
) -> None:
    """Take a runtime out of service: no batch is placed on it and it is not probed
    until 'stoic runtime enable'; a restart keeps it out. The edge cannot be."""
    with connect(url, token) as client:
        r = request(client.put, f"/v1/runtimes/{name}/out-of-service", json={"reason": reason})
    _echo(r, as_json, _runtime_line(r))


@runtime_app.command("enable")
def enable(
    name: str = typer.Argument(..., help="the runtime's name"),
    url: str | None = url_option(),
    token: str | None = token_option(),
    as_json: bool = _json_option(),
) -> None:
    """Put a runtime back in service."""
    with connect(url, token) as client:
        r = request(client.delete, f"/v1/runtimes/{name}/out-of-service")
    _echo(r, as_json, _runtime_line(r))


def register(app: typer.Typer) -> None:
    """Mount ``batch``, ``drain`` and ``runtime`` on the root ``stoic`` command."""
    app.add_typer(batch_app, name="batch")
    app.command("drain")(drain)
    app.add_typer(runtime_app, name="runtime")
