"""``stoic submit``, ``stoic status``, ``stoic export``, ``stoic model default``: thin
HTTP clients of the daemon's REST API.

Usable from any machine: this module imports nothing of the server (no FastAPI, no
controller), only httpx and rich, and those inside the commands so ``stoic --help``
stays fast. Errors the daemon answers become :class:`~stoic.errors.ServerError`, one
line with the error code and the file or field it names. :func:`connect`,
:func:`request` and :func:`post_files` are what ``stoic watch`` (:mod:`stoic.watch`)
uses too.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from stoic.errors import InputError, ServerError

if TYPE_CHECKING:
    from stoic.export.records import ImageRecord

DEFAULT_URL = "http://127.0.0.1:8000"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


def url_option() -> Any:
    return typer.Option(
        None, "--url", envvar="STOIC_URL", help=f"daemon URL (default {DEFAULT_URL})"
    )


def token_option() -> Any:
    return typer.Option(None, "--token", envvar="STOIC_TOKEN", help="bearer token (api.token)")


# submit --------------------------------------------------------------------------------


class LazyFile:
    """A file httpx can stream into a multipart body without opening it early (a
    batch of thousands of files would exhaust file descriptors) and that reports
    every chunk read to a progress callback."""

    def __init__(self, path: Path, on_read: Callable[[int], None]) -> None:
        self.path, self.on_read = path, on_read
        self.size = path.stat().st_size
        self._f: Any = None
        self._pos = 0

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = {os.SEEK_SET: offset, os.SEEK_CUR: self._pos + offset}.get(
            whence, self.size + offset
        )
        if self._f is not None:
            self._f.seek(target)
        self._pos = target
        return target

    def read(self, n: int = -1) -> bytes:
        if self._f is None:
            self._f = self.path.open("rb")
            self._f.seek(self._pos)
        data: bytes = self._f.read(n)
        self._pos += len(data)
        self.on_read(len(data))
        if not data or self._pos >= self.size:
            self._f.close()
            self._f = None
        return data


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def collect_files(paths: list[Path]) -> list[tuple[str, Path]]:
    """``(name sent, path)`` for every file: files as given, directories walked
    (image and archive files, relative names), archives as they are."""
    from stoic.storage.package import IMAGE_SUFFIXES

    out: list[tuple[str, Path]] = []
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and (f.suffix.lower() in IMAGE_SUFFIXES or _is_archive(f)):
                    out.append((f.relative_to(p).as_posix(), f))
        elif p.is_file():
            out.append((p.name, p))
        else:
            raise InputError(f"{p}: no such file or directory")
    if not out:
        raise InputError(f"no image or archive found in {[str(p) for p in paths]}")
    return out


def connect(url: str | None, token: str | None, timeout: float = 30.0) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=url or DEFAULT_URL,
        headers=headers,
        timeout=httpx.Timeout(timeout, read=None),
        trust_env=False,
    )


def check(response: Any) -> Any:
    """The JSON body of a successful answer (None if it is not JSON), else a
    :class:`ServerError` carrying the status, error code and file."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            e = body["error"]
            where = e.get("file") or e.get("field")
            raise ServerError(
                f"HTTP {response.status_code} {e.get('code')}: {e.get('message')}"
                + (f" [{where}]" if where else ""),
                status=response.status_code,
                code=e.get("code"),
                file=e.get("file"),
            )
        raise ServerError(
            f"HTTP {response.status_code}: {response.text[:300]}", status=response.status_code
        )
    return body


def request(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``method(*args, **kwargs)`` (a client's get, post, ...) through :func:`check`; no
    answer at all is a :class:`ServerError` with no status."""
    import httpx

    try:
        return check(method(*args, **kwargs))
    except httpx.HTTPError as exc:
        raise ServerError(f"cannot reach the daemon: {exc}") from None


def get_bytes(client: Any, path: str, **params: Any) -> bytes:
    """The body of ``GET path`` (an export, not JSON), or a :class:`ServerError`."""
    import httpx

    try:
        response = client.get(path, params=params)
    except httpx.HTTPError as exc:
        raise ServerError(f"cannot reach the daemon: {exc}") from None
    if response.status_code >= 400:
        check(response)
    data: bytes = response.content
    return data


def post_files(
    client: Any,
    files: list[tuple[str, Path]],
    data: dict[str, str],
    *,
    idempotency_key: str | None = None,
    on_read: Callable[[int], None] = lambda _n: None,
) -> dict[str, Any]:
    """``POST /v1/batches`` of ``(name sent, path)`` files, streamed from disk."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    multipart = [
        ("files", (name, LazyFile(path, on_read), mime_type(path))) for name, path in files
    ]
    body: dict[str, Any] = request(
        client.post, "/v1/batches", files=multipart, data=data, headers=headers
    )
    return body


def submit(
    paths: list[Path] = typer.Argument(..., help="images, directories or .zip/.tar(.gz) archives"),
    url: str | None = url_option(),
    token: str | None = token_option(),
    mode: str | None = typer.Option(
        None, "--mode", help="selector, selector-paper, duplicator or share"
    ),
    runtime: str | None = typer.Option(None, "--runtime", help="pin a runtime"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="drop invalid images"),
    idempotency_key: str | None = typer.Option(None, "--idempotency-key"),
    deployment: str | None = typer.Option(
        None, "--deployment", help="the camera deployment the images come from"
    ),
    wait: bool = typer.Option(False, "--wait", help="wait for the result and print it"),
    poll_s: float = typer.Option(1.0, "--poll", min=0.05, help="seconds between polls"),
) -> None:
    """Upload a batch and print its id (with --wait: the decision and each label)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    files = collect_files(paths)
    total = sum(p.stat().st_size for _, p in files)
    data: dict[str, str] = {}
    if mode:
        data["mode"] = mode
    if runtime:
        data["runtime"] = runtime
    if skip_invalid:
        data["skip_invalid"] = "true"
    if deployment:
        data["deployment"] = deployment
    with (
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=_stderr_console(),
            transient=True,
        ) as progress,
        connect(url, token) as client,
    ):
        task = progress.add_task(f"uploading {len(files)} file(s)", total=total)

        def advance(n: int) -> None:
            progress.advance(task, n)

        body = post_files(client, files, data, idempotency_key=idempotency_key, on_read=advance)
    skipped = body.get("skipped") or []
    typer.echo(body["id"])
    typer.echo(
        f"accepted {body['n_images']} image(s), {body['n_bytes']} bytes"
        + (f"; skipped {len(skipped)}" if skipped else ""),
        err=True,
    )
    for s in skipped:
        typer.echo(f"  skipped {s['file']}: {s['reason']}", err=True)
    if wait:
        _wait_and_print(url, token, body["id"], poll_s)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def mime_type(path: Path) -> str:
    import mimetypes

    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


class ProgressLine:
    """``submit --wait``'s line of what the batch is doing (the daemon's ``progress``:
    waiting for the demo model, bootstrap run n of m, where it runs): on a terminal a
    spinner that rewrites itself, elsewhere (a log, a pipe) one line per change."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self._status: Any = None
        self._last: str | None = None

    def __enter__(self) -> ProgressLine:
        if self.console.is_terminal:
            self._status = self.console.status("")
            self._status.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._status is not None:
            self._status.stop()

    def show(self, text: str, elapsed_s: float) -> None:
        from rich.text import Text

        line = Text(f"{text} ({_elapsed(elapsed_s)})")
        if self._status is not None:
            self._status.update(line)
        elif text != self._last:
            self.console.print(line, soft_wrap=True)
        self._last = text


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def progress_text(batch: dict[str, Any]) -> str:
    """What a batch is doing, in one line: its progress message, else its state."""
    p = batch.get("progress")
    if isinstance(p, dict) and p.get("message"):
        return f"{batch['state']}: {p['message']}"
    return str(batch["state"])


def wait_for_batch(
    client: Any,
    batch_id: str,
    poll_s: float,
    line: ProgressLine,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll ``GET /v1/batches/{id}`` until it has ended (done, failed, cancelled),
    showing its progress."""
    t0 = clock()
    while True:
        b: dict[str, Any] = request(client.get, f"/v1/batches/{batch_id}")
        if b["state"] in ("done", "failed", "cancelled"):
            return b
        line.show(progress_text(b), clock() - t0)
        sleep(poll_s)


def _wait_and_print(url: str | None, token: str | None, batch_id: str, poll_s: float) -> None:
    with connect(url, token) as client, ProgressLine(_stderr_console()) as line:
        b = wait_for_batch(client, batch_id, poll_s, line)
    _print_batch(b, labels=True)
    if b["state"] in ("failed", "cancelled"):
        raise ServerError(f"batch {batch_id} {b['state']}: {b.get('error')}")


def _print_batch(b: dict[str, Any], *, labels: bool) -> None:
    typer.echo(f"batch {b['id']}: {b['state']} ({b['n_images']} images, mode {b['mode']})")
    d = b.get("decision")
    if d:
        typer.echo(f"  decision: {d['runtime']}: {d['reason']}")
        for name, e in d["estimates"].items():
            typer.echo(
                f"    {name:>8}: T_s {e['total_s']:8.2f} s = T_t {e['transfer_s']:.2f}"
                f" + T_d {e['deployment_s']:.2f} + T_p {e['processing_s']:.2f}"
            )
    m = b.get("measured")
    if m and m.get("total_s") is not None:
        typer.echo(
            f"  measured on {m['winner']}: T_s {m['total_s']:.2f} s (T_t {m['transfer_s']:.2f},"
            f" T_d {m['deployment_s']:.2f}, T_p {m['processing_s']:.2f})"
        )
    if m and m.get("end_to_end_s") is not None:
        typer.echo(f"  end to end (accepted to result): {m['end_to_end_s']:.2f} s")
    if b.get("error"):
        typer.echo(f"  error: {b['error']}")
    if labels:
        for r in b.get("results") or []:
            label = r.get("label") if r.get("error") is None else f"error: {r.get('error')}"
            typer.echo(f"  {r.get('name', r.get('image'))}\t{label}")


# status --------------------------------------------------------------------------------


def status(
    batch: str | None = typer.Argument(None, help="a batch id (default: recent batches)"),
    url: str | None = url_option(),
    token: str | None = token_option(),
    as_json: bool = typer.Option(False, "--json", help="print the raw JSON"),
) -> None:
    """Show one batch (decision, timings, labels) or the recent batches and runtimes."""
    with connect(url, token) as client:
        if batch is not None:
            b = request(client.get, f"/v1/batches/{batch}")
            if as_json:
                typer.echo(json.dumps(b, indent=2))
            else:
                _print_batch(b, labels=True)
            return
        batches = request(client.get, "/v1/batches", params={"limit": 20})["batches"]
        runtimes = request(client.get, "/v1/runtimes")["runtimes"]
    if as_json:
        typer.echo(json.dumps({"batches": batches, "runtimes": runtimes}, indent=2))
        return
    typer.echo("runtimes:")
    for r in runtimes:
        p = r["processing"]
        typer.echo(
            f"  {r['name']:>8} ({r['kind']}, {r['backend']}): "
            f"{_availability(r)}; window {r['deployment_window']};"
            f" T_p ≈ {float(p.get('slope', 0)):.3f}·n + {float(p.get('intercept', 0)):.2f} s"
        )
    typer.echo("batches (newest first):")
    for b in batches:
        total = f"{b['total_s']:.2f} s" if b.get("total_s") is not None else "-"
        typer.echo(
            f"  {b['id']}  {b['state']:>7}  {b['n_images']:>5} img  "
            f"{b.get('winner') or b.get('runtime') or '-':>6}  {total}"
        )


def _availability(r: dict[str, Any]) -> str:
    if not r.get("in_service", True):
        return "OUT OF SERVICE"
    return "available" if r["available"] else "UNAVAILABLE"


# export --------------------------------------------------------------------------------

EXPORT_FORMATS = ("megadetector", "camtrap-dp", "csv")
MAX_LISTED = 1000
"""The most batches ``GET /v1/batches`` lists at once (its ``limit``)."""

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_since(value: str, now: float) -> float:
    """``--since``: an ISO 8601 date or date-time (local time unless it has an offset),
    or a duration back from ``now`` (``90m``, ``12h``, ``7d``); seconds since the epoch."""
    if m := _DURATION.fullmatch(value.strip()):
        return now - float(m[1]) * _UNIT_S[m[2]]
    try:
        return datetime.fromisoformat(value.strip()).timestamp()
    except ValueError:
        raise InputError(
            f"--since {value!r}: give an ISO 8601 date or time (2024-05-01, "
            "2024-05-01T06:00) or a duration (90m, 12h, 7d)"
        ) from None


def export_records(
    client: Any, *, since: float | None, batch_ids: list[str], deployments: list[str]
) -> list[ImageRecord]:
    """The images of the done batches asked for, oldest batch first."""
    from stoic.export.records import records

    if not batch_ids:
        listed = request(client.get, "/v1/batches", params={"state": "done", "limit": MAX_LISTED})
        batches = listed["batches"]
        if len(batches) == MAX_LISTED and (since is None or batches[-1]["created_at"] >= since):
            raise InputError(
                f"more than {MAX_LISTED} done batches to export: narrow --since or name --batch"
            )
        batch_ids = [
            b["id"] for b in reversed(batches) if since is None or b["created_at"] >= since
        ]
    out = []
    for batch_id in batch_ids:
        document = request(client.get, f"/v1/batches/{batch_id}/results")
        out += [r for r in records(document) if not deployments or r.deployment in deployments]
    return out


def export(
    fmt: str = typer.Option(..., "--format", help="megadetector, camtrap-dp or csv"),
    out: Path = typer.Option(
        ..., "--out", help="a file (megadetector, csv) or a folder (camtrap-dp)"
    ),
    since: str | None = typer.Option(
        None, "--since", help="batches accepted since: 2024-05-01, 2024-05-01T06:00, 12h, 7d"
    ),
    deployment: list[str] = typer.Option(
        [], "--deployment", help="only this deployment's images (repeatable)"
    ),
    batch: list[str] = typer.Option([], "--batch", help="only this batch (repeatable)"),
    meta: Path | None = typer.Option(
        None, "--meta", help="the site's metadata, YAML or JSON (docs/camera-traps.md)"
    ),
    url: str | None = url_option(),
    token: str | None = token_option(),
) -> None:
    """Write done batches' results in a camera-trap format: a MegaDetector batch output
    file (Timelapse, AddaxAI), a Camtrap DP package (GBIF, Agouti) or a CSV."""
    from stoic.clock import WallClock
    from stoic.export.camtrap_dp import camtrap_package
    from stoic.export.csvfile import csv_text
    from stoic.export.megadetector import megadetector_document
    from stoic.export.meta import ExportMeta, load_meta

    if fmt not in EXPORT_FORMATS:
        raise InputError(f"--format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    clock = WallClock()
    site = load_meta(meta) if meta is not None else ExportMeta()
    start = parse_since(since, clock.now()) if since is not None else None
    with connect(url, token) as client:
        recs = export_records(client, since=start, batch_ids=batch, deployments=deployment)
    if fmt == "megadetector":
        document = megadetector_document(recs, site.labels)
        out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    elif fmt == "csv":
        out.write_text(csv_text(recs), encoding="utf-8")
    else:
        package = camtrap_package(recs, site, created=clock.now())
        package.write(out)
        for warning in package.warnings:
            typer.echo(f"warning: {warning}", err=True)
    batches = len({r.batch_id for r in recs})
    typer.echo(f"{len(recs)} image(s) of {batches} batch(es) → {out}", err=True)


# model default ----------------------------------------------------------------------------


def model_default(
    version: str | None = typer.Option(
        None, "--version", help="make this stored version the default (omit to show it)"
    ),
    app_name: str | None = typer.Option(None, "--app", help="application (default: the daemon's)"),
    url: str | None = url_option(),
    token: str | None = token_option(),
    as_json: bool = typer.Option(False, "--json", help="print the raw JSON"),
) -> None:
    """Show or set the application version (and so the model) new batches get.

    The version's model must be in the object store (stoic model push). Batches
    accepted afterwards record the new version; its first batch bootstraps it.
    """
    with connect(url, token) as client:
        if version is None:
            body = request(client.get, "/v1/models/default")
        else:
            payload = {"version": version, **({"app": app_name} if app_name else {})}
            body = request(client.put, "/v1/models/default", json=payload)
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    since = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(body["updated_at"]))
        if body.get("updated_at") is not None
        else None
    )
    typer.echo(
        f"{body['app']} version {body['version']} ({body['model_key']}); "
        + (f"set {since}" if since else "from the settings (controller.app_version)")
        + (
            f"; was {body['previous']}"
            if body.get("previous") not in (None, body["version"])
            else ""
        )
    )


def register(app: typer.Typer) -> None:
    """Mount ``submit``, ``status`` and ``export`` on the root ``stoic`` command."""
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("export")(export)


def register_model_commands(model_app: typer.Typer) -> None:
    """Mount ``default`` on ``stoic model`` (whose other commands need TensorFlow and
    live with the function; this one is a REST client)."""
    model_app.command("default")(model_default)
