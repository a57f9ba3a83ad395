"""Standalone HTTP server with a kubeless Python runtime's routes.

    POST /         the function (JSON request, JSON response; see docs/function.md)
    GET  /healthz  200 once the function can serve (TensorFlow imported, optional
                   model preloaded), 503 before
    GET  /metrics  Prometheus metrics (``stoic_function_*``), in the format the
                   ``Accept`` header asks for, negotiated as the controller does

Run it as ``python -m stoic.function.server [--port N]`` (port from ``--port``, else
``FUNC_PORT`` (kubeless), else ``STOIC_FUNCTION_PORT``, else 8080; host from ``--host``,
else ``FUNC_HOST``, else 0.0.0.0 as in a container). The local backend runs it as a
process per runtime; in Kubernetes the same routes let a plain Deployment stand in for
kubeless.

Why the standard library's ``ThreadingHTTPServer`` and not Starlette/uvicorn: the work
is one blocking TensorFlow call per request, so an event loop would only add a thread
hop; the stdlib server binds in milliseconds and imports nothing, so the port answers
(``/healthz`` = 503) while TensorFlow is still importing in the background, and the
line ``stoic-function ready on http://HOST:PORT`` is printed the moment it can serve.
Requests are served one at a time by the function (a lock), like a kubeless pod with
one worker; health and metrics stay responsive meanwhile.

Error mapping: ``ObjectNotFound``/``ModelNotFound`` → 404 ``{"error", "key"}``,
``InputError`` → 400 ``{"error"}``, any other failure → 500 ``{"error"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder

from stoic.errors import InputError, MissingExtra, ModelNotFound, ObjectNotFound, StoicError
from stoic.extras import require
from stoic.logging import configure_logging, get_logger

log = get_logger("stoic.function.server")

MAX_BODY_BYTES = 1024 * 1024
"""Requests carry keys, not images; anything bigger is a mistake."""


class Metrics:
    """The function's Prometheus metrics, in a registry of their own (one per server)."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created, as the daemon
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "stoic_function_calls",
            "Function calls by action and HTTP status",
            ["action", "status"],
            registry=self.registry,
        )
        self.images = Counter(
            "stoic_function_images", "Images classified (incl. failed)", registry=self.registry
        )
        self.failed_images = Counter(
            "stoic_function_failed_images",
            "Images that could not be decoded",
            registry=self.registry,
        )
        self.duration = Histogram(
            "stoic_function_duration_seconds",
            "Wall time of a call by action",
            ["action"],
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )


def respond_to(function: Any, body: bytes, metrics: Metrics | None = None) -> tuple[int, Any]:
    """Run one request through ``function``; return (HTTP status, JSON-able body)."""
    t0 = time.perf_counter()
    action = "unknown"
    try:
        try:
            data = json.loads(body or b"{}")
        except json.JSONDecodeError as exc:
            raise InputError(f"request body is not JSON: {exc}") from None
        if isinstance(data, dict):
            action = str(data.get("action", "classify"))[:20]
        out = function(data)
        status, payload = HTTPStatus.OK, out
        if metrics is not None and "n_images" in out:
            metrics.images.inc(out["n_images"])
            metrics.failed_images.inc(out["n_failed"])
    except (ObjectNotFound, ModelNotFound) as exc:
        status, payload = HTTPStatus.NOT_FOUND, {"error": str(exc), "key": exc.key}
    except InputError as exc:
        status, payload = HTTPStatus.BAD_REQUEST, {"error": str(exc)}
    except StoicError as exc:
        status, payload = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)}
    except Exception as exc:  # the process keeps serving; the caller gets a 500
        log.exception("function failed")
        status, payload = (
            HTTPStatus.INTERNAL_SERVER_ERROR,
            {"error": f"{type(exc).__name__}: {exc}"},
        )
    if metrics is not None:
        metrics.calls.labels(action, str(int(status))).inc()
        metrics.duration.labels(action).observe(time.perf_counter() - t0)
    return int(status), payload


class FunctionServer(ThreadingHTTPServer):
    """The HTTP server plus its readiness flag, function and metrics."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], function: Any = None) -> None:
        super().__init__(address, _Handler)
        self.function = function
        self.metrics = Metrics()
        self.ready = threading.Event()
        self.call_lock = threading.Lock()
        self.startup_error: str | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: FunctionServer
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: the headers and the body go out in two writes; with Nagle's
    # algorithm the body waits for the client's delayed ACK of the headers (40 ms on
    # Linux), which was most of a small call's time on a warm instance.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http request", client=self.address_string(), line=format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            if self.server.ready.is_set():
                self._json(200, {"status": "ok"})
            else:
                err = self.server.startup_error
                self._json(503, {"status": "failed" if err else "starting", "error": err})
        elif path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept") or "")
            self._send(200, encoder(self.server.metrics.registry), content_type)
        else:
            self._json(404, {"error": f"no route GET {path}"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._json(413, {"error": f"request body over {MAX_BODY_BYTES} bytes"})
            self.close_connection = True
            return
        body = self.rfile.read(length)
        if path != "/":
            self._json(404, {"error": f"no route POST {path}"})
            return
        if not self.server.ready.wait(timeout=300):
            self._json(503, {"error": self.server.startup_error or "function not ready"})
            return
        with self.server.call_lock:
            status, payload = respond_to(self.server.function, body, self.server.metrics)
        self._json(status, payload)


def _prepare(server: FunctionServer, preload_model: str | None) -> None:
    """Import TensorFlow, build the function, optionally load a model; then ready."""
    try:
        from stoic.function.handler import Function, default_function

        if server.function is None:
            server.function = default_function()
        import tensorflow  # noqa: F401  (the slow import, paid before /healthz says ok)

        if preload_model and isinstance(server.function, Function):
            server.function.get_model(preload_model)
        server.ready.set()
        print(f"stoic-function ready on {server.url}", flush=True)
        log.info("ready", url=server.url)
    except Exception as exc:
        server.startup_error = f"{type(exc).__name__}: {exc}"
        log.exception("start-up failed")
        print(f"stoic-function start-up failed: {server.startup_error}", file=sys.stderr)


def serve(
    host: str = "0.0.0.0",
    port: int = 8080,
    function: Any = None,
    preload_model: str | None = None,
) -> FunctionServer:
    """Bind and start serving in a background thread; readiness follows."""
    server = FunctionServer((host, port), function)
    threading.Thread(target=server.serve_forever, name="stoic-http", daemon=True).start()
    threading.Thread(
        target=_prepare, args=(server, preload_model), name="stoic-prepare", daemon=True
    ).start()
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stoic.function.server", description="stoic serverless function"
    )
    parser.add_argument("--host", default=os.environ.get("FUNC_HOST", "0.0.0.0"))
    env_port = os.environ.get("FUNC_PORT") or os.environ.get("STOIC_FUNCTION_PORT") or "8080"
    parser.add_argument("--port", type=int, default=int(env_port))
    parser.add_argument(
        "--preload-model",
        default=os.environ.get("STOIC_FUNCTION_PRELOAD_MODEL") or None,
        help="model key to load before reporting ready",
    )
    args = parser.parse_args(argv)
    try:
        require("function", "the function server (python -m stoic.function.server)")
    except MissingExtra as exc:
        print(f"stoic-function: error: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging("INFO")  # JSON lines, like the controller
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    server = serve(args.host, args.port, preload_model=args.preload_model)
    print(f"stoic-function listening on {server.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
