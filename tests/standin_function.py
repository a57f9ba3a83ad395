"""A stand-in for the function server, for tests and benchmarks.

    python tests/standin_function.py --port N [--start-delay S] [--fail-startup MSG]
        [--crash MSG] [--invoke-delay S] [--batch-delay S] [--image-delay S]
        [--label-from-name] [--no-model-check]

The real function server, ``python -m stoic.function.server``, imports TensorFlow and
loads a Keras model: seconds to start, and TensorFlow must be installed. Tests of the
local backend, the crash-safety test and the ingest benchmark care about the daemon's
side of the conversation (start-up, health polling, calls, errors, process handling),
not the classification, so they run this file instead (the local backend's
``local.command`` setting, or its ``command=`` argument). It uses the standard library
only, starts in a blink, and speaks the HTTP contract documented in
``docs/function.md``:

* ``GET /healthz``: 200 once ready; 503 ``{"status": "starting"}`` before that, or
  503 ``{"status": "failed", "error": ...}`` with ``--fail-startup``;
* ``POST /`` with ``{"action": "classify", "package": KEY, "model": KEY, "warmup":
  bool, "start": i, "stop": j}``: reads the package (a tar) from the directory object
  store (``STOIC_OBJECTSTORE__PATH``) and answers ``{"results": [...], "timings":
  {...}, "workers": [...], "n_images": n, "n_failed": 0}``, one result per member of
  ``start:stop`` (names sorted, ``index`` the position among them, label
  ``"standin"``, or with ``--label-from-name`` the name's stem up to its first
  ``-``), only the first with ``warmup``; 404 ``{"error": ..., "key": ...}`` for a
  missing model or package, 400 for a malformed request or a range beyond the
  package;
* ``GET /env`` (stand-in only): the environment variables the local backend sets.

Behaviour is picked with the options below and these environment variables (which
the daemon and the local backend pass on to the processes they start):

* ``STANDIN_PIDFILE``: append this process's pid to that file at start, so a test can
  find (and clean up) every stand-in it caused to be started;
* ``STANDIN_NOTIFY``: a loopback port; each ``POST /`` connects to it and sends the
  pid (one line) when the request arrives, so a test knows a call is in flight;
* ``STANDIN_CALLLOG``: append ``pid package start stop`` for every classify call that
  labelled images, so a test can tell which images were labelled by whom, and when.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

ENV_KEYS = (
    "CUDA_VISIBLE_DEVICES",
    "FUNC_HOST",
    "FUNC_PORT",
    "STOIC_DATA_DIR",
    "STOIC_OBJECTSTORE__KIND",
    "STOIC_OBJECTSTORE__PATH",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="A stand-in for the function server.")
    ap.add_argument("--port", type=int, default=int(os.environ.get("FUNC_PORT", "0")))
    ap.add_argument("--host", default=os.environ.get("FUNC_HOST", "127.0.0.1"))
    ap.add_argument(
        "--start-delay", type=float, default=0.0, help="seconds /healthz answers 503 first"
    )
    ap.add_argument("--fail-startup", metavar="MSG", help="/healthz reports this start-up failure")
    ap.add_argument(
        "--crash", metavar="MSG", help="print MSG to stderr and exit with code 3 at once"
    )
    ap.add_argument(
        "--invoke-delay", type=float, default=0.0, help="seconds every POST / waits first"
    )
    ap.add_argument(
        "--batch-delay",
        type=float,
        default=0.0,
        help="seconds every non-warm-up call takes (imitates classifying the batch)",
    )
    ap.add_argument(
        "--image-delay",
        type=float,
        default=0.0,
        help="seconds per image of every non-warm-up call (a chunk costs its size)",
    )
    ap.add_argument(
        "--label-from-name",
        action="store_true",
        help="label each image with its file name's stem up to the first '-' (score 0.75)",
    )
    ap.add_argument(
        "--no-model-check",
        action="store_true",
        help="accept any model key (the store has no model)",
    )
    return ap.parse_args(argv)


def make_handler(
    args: argparse.Namespace, store: Path, ready: threading.Event
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *a: Any) -> None:
            pass

        def send(self, code: int, obj: object) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz" and args.fail_startup:
                self.send(503, {"status": "failed", "error": args.fail_startup})
            elif self.path == "/healthz":
                ok = ready.is_set()
                self.send(200 if ok else 503, {"status": "ok" if ok else "starting"})
            elif self.path == "/env":
                self.send(200, {k: os.environ.get(k) for k in ENV_KEYS})
            else:
                self.send(404, {"error": "no route"})

        def do_POST(self) -> None:
            t0 = time.monotonic()
            try:
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                package, model = req["package"], req["model"]
            except Exception as exc:
                self.send(400, {"error": f"bad request: {exc}"})
                return
            if os.environ.get("STANDIN_NOTIFY"):
                address = ("127.0.0.1", int(os.environ["STANDIN_NOTIFY"]))
                with socket.create_connection(address) as s:
                    s.sendall(f"{os.getpid()}\n".encode())
            time.sleep(args.invoke_delay)
            if not args.no_model_check and not (store / model).is_file():
                self.send(404, {"error": f"model not found: {model!r}", "key": model})
                return
            if not (store / package).is_file():
                self.send(404, {"error": "package not found", "key": package})
                return
            with tarfile.open(store / package) as tar:
                names = sorted(m.name for m in tar if m.isfile())
            start, stop = int(req.get("start") or 0), req.get("stop")
            stop = len(names) if stop is None else int(stop)
            if not 0 <= start < stop <= len(names):
                self.send(400, {"error": f"member range {start}:{stop} of {len(names)}"})
                return
            names = names[start:stop]
            if req.get("warmup"):
                names = names[:1]
            else:
                time.sleep(args.batch_delay + args.image_delay * len(names))
                if os.environ.get("STANDIN_CALLLOG"):
                    with open(os.environ["STANDIN_CALLLOG"], "a") as f:
                        f.write(f"{os.getpid()} {package} {start} {start + len(names)}\n")
            labels = [
                PurePosixPath(n).stem.split("-")[0] if args.label_from_name else "standin"
                for n in names
            ]
            score = 0.75 if args.label_from_name else 1.0
            results = [
                {
                    "name": n,
                    "index": start + i,
                    "label": label,
                    "scores": {label: score},
                    "error": None,
                }
                for i, (n, label) in enumerate(zip(names, labels, strict=True))
            ]
            total = time.monotonic() - t0
            timings = {
                "download_s": 0.0,
                "model_load_s": 0.0,
                "decode_s": 0.0,
                "processing_s": total,
                "input_wait_s": 0.0,
                "total_s": total,
            }
            self.send(
                200,
                {
                    "results": results,
                    "timings": timings,
                    "workers": [{"device": "CPU:0", "images": len(names), "pid": os.getpid()}],
                    "n_images": len(names),
                    "n_failed": 0,
                },
            )

    return Handler


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if os.environ.get("STANDIN_PIDFILE"):
        with open(os.environ["STANDIN_PIDFILE"], "a") as f:
            f.write(f"{os.getpid()}\n")
    if args.crash:
        print("stand-in starting", flush=True)
        print(args.crash, file=sys.stderr, flush=True)
        sys.exit(3)

    store = Path(os.environ["STOIC_OBJECTSTORE__PATH"])
    ready = threading.Event()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(args, store, ready))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    time.sleep(args.start_delay)
    ready.set()
    threading.Event().wait()


if __name__ == "__main__":
    main()
