"""``stoic watch DIR...``: folder ingest as a client of a running daemon.

The watcher (:mod:`stoic.watch.watcher`) talks to the daemon through
:class:`HttpDaemon`, the REST API's ``POST /v1/batches`` (with ``skip_invalid``, the
``deployment`` label and an ``Idempotency-Key``), ``GET /v1/batches/{id}`` and
``GET /v1/batches/{id}/results?format=``. Between scans it waits for file system events
when ``watchfiles`` is installed (the ``watch`` extra), so a new file is seen at once
even with a long scan period; ``--poll`` (or no ``watchfiles``) scans on a timer only,
which is what a network mount needs (it sends no events). SIGTERM and Ctrl-C stop it
after the current step; ``kill -9`` at any moment loses nothing (the state file).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import typer

from stoic.client import connect, get_bytes, post_files, request, token_option, url_option
from stoic.errors import InputError

if TYPE_CHECKING:
    from stoic.watch.watcher import Submitted

# The watcher's modules (and the settings they reach) are imported inside the command,
# so that `stoic --help` stays fast.

STATE_NAME = ".stoic-watch.db"


class HttpDaemon:
    """The watcher's :class:`~stoic.watch.watcher.DaemonApi` over the REST API."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def submit(self, files: Sequence[tuple[str, Path]], *, deployment: str, key: str) -> Submitted:
        body = post_files(
            self.client,
            list(files),
            {"skip_invalid": "true", "deployment": deployment},
            idempotency_key=key,
        )
        from stoic.watch.watcher import Submitted

        skipped = tuple((str(s["file"]), str(s["reason"])) for s in body.get("skipped") or [])
        return Submitted(str(body["id"]), skipped)

    def batch_state(self, batch_id: str) -> tuple[str, str | None]:
        b = request(self.client.get, f"/v1/batches/{batch_id}")
        return str(b["state"]), b.get("error")

    def results(self, batch_id: str, fmt: str) -> bytes:
        return get_bytes(self.client, f"/v1/batches/{batch_id}/results", format=fmt)


class Waker(Protocol):
    def wait(self) -> None:
        """Return at the next scan time, or sooner when a file changed."""


class Timer:
    def __init__(self, period_s: float, stop: threading.Event) -> None:
        self.period_s, self.stop = period_s, stop

    def wait(self) -> None:
        self.stop.wait(self.period_s)


def is_image_event(_change: object, path: str) -> bool:
    from stoic.storage.package import IMAGE_SUFFIXES

    p = Path(path)
    return p.suffix.lower() in IMAGE_SUFFIXES and not any(x.startswith(".") for x in p.parts)


class FileEvents:
    """``watchfiles``' events on image files (not the state file, not the results the
    watcher writes), with its timeout as the scan period."""

    def __init__(self, roots: Sequence[Path], period_s: float, stop: threading.Event) -> None:
        import watchfiles

        self._events = watchfiles.watch(
            *roots,
            watch_filter=is_image_event,
            stop_event=stop,
            rust_timeout=max(1, int(period_s * 1000)),
            yield_on_timeout=True,
            raise_interrupt=False,
        )

    def wait(self) -> None:
        next(self._events, None)


def watch(
    dirs: list[Path] = typer.Argument(
        ..., help="folders to watch: one sub-folder per camera deployment"
    ),
    url: str | None = url_option(),
    token: str | None = token_option(),
    every: float = typer.Option(
        3600.0, "--every", min=0, help="seconds: a deployment's images wait at most this long"
    ),
    max_images: int = typer.Option(
        1000, "--max-images", min=1, help="a batch holds at most this many images"
    ),
    stable: float = typer.Option(
        10.0, "--stable", min=0, help="seconds a file must stay the same before it is sent"
    ),
    scan_every: float = typer.Option(5.0, "--scan-every", min=0.05, help="seconds between scans"),
    poll: bool = typer.Option(False, "--poll", help="scan on a timer only (network mounts)"),
    fmt: str = typer.Option(
        "megadetector", "--format", help="results per batch: megadetector, csv, json or none"
    ),
    out: Path | None = typer.Option(
        None, "--out", help="results under OUT/<deployment>/ instead of beside the images"
    ),
    move_done: Path | None = typer.Option(
        None, "--move-done", help="move each labelled image to MOVE_DONE/<deployment>/"
    ),
    state: Path | None = typer.Option(
        None, "--state", help=f"the state file (default: the first DIR's {STATE_NAME})"
    ),
    once: bool = typer.Option(
        False, "--once", help="send what is there now, wait for its results, then exit"
    ),
) -> None:
    """Send new images under DIR... to the daemon, batch by batch per deployment, and
    write their results beside them. Never sends a file twice, across restarts."""
    from stoic import extras
    from stoic.clock import WallClock
    from stoic.watch.state import WatchState
    from stoic.watch.watcher import RESULT_SUFFIXES, Watcher, WatchOptions

    for d in dirs:
        if not d.is_dir():
            raise InputError(f"{d}: not a folder")
    if fmt != "none" and fmt not in RESULT_SUFFIXES:
        raise InputError(f"--format {fmt!r}: expected one of {', '.join(RESULT_SUFFIXES)}, none")
    options = WatchOptions(
        roots=tuple(d.resolve() for d in dirs),
        every_s=every,
        max_images=max_images,
        stable_s=stable,
        results_format=None if fmt == "none" else fmt,
        out=out.resolve() if out else None,
        move_done=move_done.resolve() if move_done else None,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    waker: Waker = (
        FileEvents(options.roots, scan_every, stop)
        if not poll and extras.installed("watch")
        else Timer(scan_every, stop)
    )

    def report(message: str) -> None:
        typer.echo(f"stoic watch: {message}", err=True)

    state_path = state or options.roots[0] / STATE_NAME
    with WatchState(state_path) as st, connect(url, token) as client:
        watcher = Watcher(
            options, st, HttpDaemon(client), clock=time.monotonic, now=WallClock(), report=report
        )
        report(f"watching {', '.join(map(str, options.roots))} (state {state_path})")
        while not stop.is_set():
            watcher.tick(flush=once)
            if once and watcher.idle():
                break
            waker.wait()
        counts = st.counts()
    report(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no image seen")


def register(app: typer.Typer) -> None:
    """Mount ``watch`` on the root ``stoic`` command."""
    app.command("watch")(watch)
