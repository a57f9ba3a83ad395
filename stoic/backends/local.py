"""Runtimes as processes on this machine: the daemon's default backend.

Every runtime (edge, cpu, gpu1, gpu2) is a child process running the function's
standalone HTTP server (``python -m stoic.function.server --port N``) on a free
loopback port. That keeps the daemon's code path identical to the cloud one — deploy,
wait for ``/healthz``, POST the batch, tear down — with real, measurable times, on a
machine without Kubernetes.

Why the details are the way they are:

* **T_d is measured, not assumed.** :meth:`LocalBackend.deploy` starts the process
  and polls ``GET /healthz`` until it answers 200; the seconds between the two (loop
  clock) are the deployment time the predictor learns from. A process that is not
  ready in ``timeout_s`` is killed before :class:`~stoic.errors.DeployTimeout` is
  raised; one that exits first gives :class:`~stoic.errors.DeployFailure` carrying
  the tail of its log, so the operator sees the function's own traceback.
* **The edge keeps a standby** (paper §3.7: "STOIC creates a standby pod to serve the
  incoming request"). :meth:`LocalBackend.start` launches it ahead of time;
  ``deploy(edge)`` hands it out at once (T_d ≈ 0), tearing the edge deployment down
  leaves it running, and a dead standby is restarted. Unused for
  ``local.standby_idle_s`` (default five minutes) it is stopped, since it holds
  TensorFlow and the model (0.4–0.7 GB) on a machine that may have little more; the
  next edge deployment starts it again and waits for it. ``None`` keeps it until
  :meth:`close`.
* **Upload is a no-op.** All local processes read the daemon's own object store (the
  same directory, or the same S3 endpoint), so the package is already where they
  look; the Kubernetes backend does the real upload to a cloud store.
* **Cancellation stops the work.** If the task awaiting :meth:`invoke` is cancelled
  (the duplicator cancels the loser), the process group is killed before the
  ``CancelledError`` propagates: dropping the HTTP connection alone would leave the
  function classifying images nobody wants. A killed edge standby is replaced in the
  background so the next batch still finds a warm edge.
* **Nothing leaks.** Processes run in their own session so a kill reaches the
  workers they spawn; each is reaped (no zombies), their output goes to a log file
  (no pipes to drain, no transports left open), and the one ``httpx`` client is
  closed by :meth:`close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from stoic.aio import BackgroundTasks
from stoic.backends.base import Deployment, Invocation, Upload
from stoic.errors import DeployFailure, DeployTimeout, InvocationError
from stoic.logging import get_logger
from stoic.settings import LocalBackendSettings, ObjectStoreSettings, Settings
from stoic.storage.package import model_key, package_key
from stoic.values import Job, Runtime

log = get_logger(__name__)

__all__ = ["LocalBackend", "default_command", "objectstore_env"]

_LOG_TAIL_BYTES = 4096
_LOG_TAIL_LINES = 25
_HEALTH_TIMEOUT_S = 2.0
_CONNECT_TIMEOUT_S = 5.0


def default_command() -> list[str]:
    """The function's standalone server, run by this very interpreter."""
    return [sys.executable, "-m", "stoic.function.server"]


def objectstore_env(
    data_dir: Path, store: ObjectStoreSettings, objects_path: Path
) -> dict[str, str]:
    """The ``STOIC_*`` variables that point a child's ``load_settings()`` at our store."""
    env = {
        "STOIC_DATA_DIR": str(data_dir.resolve()),
        "STOIC_OBJECTSTORE__KIND": store.kind,
        "STOIC_OBJECTSTORE__PATH": str(objects_path.resolve()),
        "STOIC_OBJECTSTORE__S3_BUCKET": store.s3_bucket,
        "STOIC_OBJECTSTORE__S3_REGION": store.s3_region,
    }
    if store.s3_endpoint is not None:
        env["STOIC_OBJECTSTORE__S3_ENDPOINT"] = store.s3_endpoint
    if store.s3_access_key is not None:
        env["STOIC_OBJECTSTORE__S3_ACCESS_KEY"] = store.s3_access_key
    if store.s3_secret_key is not None:
        env["STOIC_OBJECTSTORE__S3_SECRET_KEY"] = store.s3_secret_key.get_secret_value()
    return env


def _free_port(host: str) -> int:
    # The port is free now; the child binds it a fraction of a second later. Another
    # process could take it in between: the child then exits and deploy() raises
    # DeployFailure (the requester's back-off retries with a new port).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _LOG_TAIL_BYTES))
            data = f.read()
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"
    lines = data.decode("utf-8", "replace").splitlines()[-_LOG_TAIL_LINES:]
    return "\n".join(lines) if lines else "(no output)"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), so that a pid
    reused by an unrelated process after a reboot or wrap-around is never killed."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def record_process(run_dir: Path, pid: int) -> None:
    """Note a launched function process (its own process group) under ``run_dir``."""
    start = _start_time(pid)
    if start is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / f"{pid}.pid").write_text(f"{pid} {start}\n")


def forget_process(run_dir: Path, pid: int) -> None:
    with contextlib.suppress(OSError):
        (run_dir / f"{pid}.pid").unlink()


def reap_orphans(run_dir: Path) -> list[int]:
    """Kill the process groups recorded under ``run_dir`` that still run; returns them."""
    killed: list[int] = []
    if not run_dir.is_dir():
        return killed
    for f in run_dir.glob("*.pid"):
        try:
            pid_s, start = f.read_text().split()
            pid = int(pid_s)
        except (OSError, ValueError):
            pid, start = 0, ""
        if pid > 0 and _start_time(pid) == start:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
                killed.append(pid)
        with contextlib.suppress(OSError):
            f.unlink()
    if killed:
        log.warning("killed function processes left by a previous run", pids=killed)
    return killed


@dataclass(eq=False)
class _Proc:
    """One function process and what we need to talk to it and to stop it."""

    runtime: Runtime
    proc: asyncio.subprocess.Process
    port: int
    log: Path
    endpoint: str
    standby: bool = False
    users: int = 0  # edge deployments handed out and not torn down (the standby)
    ready_s: float = 0.0
    stopped: bool = False
    stopping: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return not self.stopped and self.proc.returncode is None

    def signal_group(self, sig: signal.Signals) -> None:
        """Signal the process and every worker it spawned (its own session)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def describe_exit(self) -> str:
        rc = self.proc.returncode
        if rc is None:
            return "still running"
        if rc < 0:
            return f"killed by {signal.Signals(-rc).name}"
        return f"exited with code {rc}"


class LocalBackend:
    """:class:`~stoic.backends.base.RuntimeBackend` on local processes.

    Build it with :meth:`from_settings` (the controller) or directly (tests: a
    stand-in ``command``, an ``env`` with extra variables). Call :meth:`start` once
    the event loop runs (it warms the edge standby) and :meth:`close` at shutdown.
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        objectstore: ObjectStoreSettings | None = None,
        objects_path: Path | None = None,
        options: LocalBackendSettings | None = None,
        command: Sequence[str] | None = None,
        model_key: str | None = None,
        edge: Runtime | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        opts = options or LocalBackendSettings()
        store = objectstore or ObjectStoreSettings()
        self._opts = opts
        self._command = list(command or opts.command or default_command())
        self._model_key = model_key or opts.model_key
        self._edge = edge
        self._log_dir = opts.log_dir or data_dir / "logs" / "local"
        self._run_dir = data_dir / "run" / "local"
        self._env = objectstore_env(
            data_dir, store, objects_path or store.path or data_dir / "objects"
        )
        if opts.cuda_visible_devices is not None:
            self._env["CUDA_VISIBLE_DEVICES"] = opts.cuda_visible_devices
        self._env["PYTHONUNBUFFERED"] = "1"
        self._env.update(env or {})
        self._client: httpx.AsyncClient | None = None
        self._procs: dict[int, _Proc] = {}
        self._standby: dict[str, asyncio.Task[_Proc]] = {}
        self._idle: dict[str, asyncio.TimerHandle] = {}  # runtime -> the standby's stop
        self._background = BackgroundTasks("local backend")
        self._seq = itertools.count()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> LocalBackend:
        """The backend as the controller builds it: the daemon's store, the local
        section, and the edge runtime (if it is a local one) as the standby."""
        edge = next(
            (r for r in settings.runtime_list() if r.is_edge and r.backend == "local"), None
        )
        kwargs: dict[str, Any] = {
            "data_dir": settings.data_dir,
            "objectstore": settings.objectstore,
            "objects_path": settings.objects_path,
            "options": settings.local,
            "edge": edge if settings.local.standby else None,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    # Life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Launch the edge standby in the background, so the first edge batch finds it
        warm. Returns at once; ``deploy(edge)`` waits for it if it is not ready yet.

        First it kills the function processes a previous daemon left behind when it was
        killed without a chance to stop them (``kill -9``, a power cut): their process
        groups are recorded under ``data_dir/run/local``."""
        reap_orphans(self._run_dir)
        if self._edge is not None and self._opts.standby:
            self._ensure_standby(self._edge)

    async def aclose(self) -> None:
        """Stop everything: standby launches, the standby, every deployment; close the
        HTTP client. Idempotent."""
        self._closed = True
        for handle in self._idle.values():
            handle.cancel()
        self._idle.clear()
        launches = list(self._standby.values())
        self._standby.clear()
        for t in launches:
            t.cancel()  # a launch being cancelled kills its process
        if launches:
            await asyncio.gather(*launches, return_exceptions=True)
        await self._background.wait()  # they only reap dead standbys: let them finish
        procs = list(self._procs.values())
        if procs:
            await asyncio.gather(*(self._stop(p) for p in procs), return_exceptions=True)
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def __aenter__(self) -> LocalBackend:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def live_pids(self) -> list[int]:
        """Pids of the function processes this backend runs now (for status pages)."""
        return [p.pid for p in self._procs.values() if p.alive]

    def standby_pid(self, runtime: Runtime) -> int | None:
        """Pid of the standby of ``runtime`` if it is up, else None."""
        t = self._standby.get(runtime.name)
        if t is None or not t.done() or t.cancelled() or t.exception() is not None:
            return None
        p = t.result()
        return p.pid if p.alive else None

    # RuntimeBackend -----------------------------------------------------------------

    async def deploy(self, runtime: Runtime, *, timeout_s: float) -> Deployment:
        """Start a function process for ``runtime`` and return it once ``/healthz``
        answers 200; for the edge (with standby on) hand out the warm standby."""
        self._check_open(runtime)
        if runtime.is_edge and self._opts.standby:
            return await self._deploy_standby(runtime, timeout_s)
        p = await self._launch(runtime, timeout_s)
        return self._deployment(p, p.ready_s)

    async def upload(self, runtime: Runtime, job: Job) -> Upload:
        """A no-op: local processes read the daemon's own object store, so the package
        is already in place (T_t = 0). The Kubernetes backend uploads for real."""
        return Upload(
            ref=job.package_key or package_key(job.batch_id), n_bytes=job.n_bytes, seconds=0.0
        )

    async def invoke(
        self, deployment: Deployment, job: Job, upload: Upload, *, warmup: bool = False
    ) -> Invocation:
        """POST the package to the process; T_p is the loop-clock time around the call.

        HTTP errors become :class:`InvocationError` with the function's own message;
        if this call is cancelled, the process is killed before CancelledError goes on.
        """
        p = deployment.handle
        name = deployment.runtime.name
        if not isinstance(p, _Proc):
            raise InvocationError(name, "not a deployment of the local backend")
        if not p.alive:
            raise InvocationError(
                name, f"function process {p.pid} is not running ({p.describe_exit()})"
            )
        body: dict[str, Any] = {
            "action": "classify",
            "package": upload.ref,
            "model": self._model_key or model_key(job.app, job.app_version),
            "warmup": warmup,
        }
        if job.subset is not None and not warmup:  # a chunk: the function reads its range
            body["start"], body["stop"] = job.subset
        timeout = httpx.Timeout(self._opts.invoke_timeout_s, connect=_CONNECT_TIMEOUT_S)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            response = await self._http().post(f"{p.endpoint}/", json=body, timeout=timeout)
        except asyncio.CancelledError:
            await self._kill_cancelled(p)
            raise
        except httpx.HTTPError as exc:
            # Give the child watcher a moment to notice a crash, for a better message.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await asyncio.shield(p.proc.wait())
            raise InvocationError(
                name,
                f"call to function process {p.pid} failed: {exc!r} ({p.describe_exit()}); "
                f"log {p.log}:\n{_log_tail(p.log)}",
            ) from exc
        processing_s = loop.time() - t0
        return _parse_response(name, response, processing_s)

    async def teardown(self, deployment: Deployment) -> None:
        """Stop the deployment's process (SIGTERM, SIGKILL after the grace) and reap
        it. The edge standby is left running. Idempotent."""
        p = deployment.handle
        if not isinstance(p, _Proc):
            return
        if p.standby:
            p.users = max(p.users - 1, 0)
            self._arm_idle(p)
            return
        await self._stop(p)

    # Internals ------------------------------------------------------------------

    def _check_open(self, runtime: Runtime) -> None:
        if self._closed:
            raise DeployFailure(runtime.name, "the local backend is closed")

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # trust_env=False: an http_proxy variable must not route loopback calls.
            self._client = httpx.AsyncClient(trust_env=False)
        return self._client

    def _deployment(self, p: _Proc, deploy_s: float) -> Deployment:
        return Deployment(
            runtime=p.runtime,
            deploy_s=deploy_s,
            endpoint=p.endpoint,
            handle=p,
            info={"pid": p.pid, "port": p.port, "log": str(p.log), "standby": p.standby},
        )

    async def _launch(self, runtime: Runtime, timeout_s: float, *, standby: bool = False) -> _Proc:
        """Start one process and wait until it is ready; kill it on any failure."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        host = self._opts.host
        port = _free_port(host)
        self._log_dir.mkdir(parents=True, exist_ok=True)
        log = self._log_dir / f"{runtime.name}-{os.getpid()}-{next(self._seq)}.log"
        # FUNC_HOST: the server would bind 0.0.0.0 as in a container; keep it on loopback.
        env = {**os.environ, **self._env, "FUNC_PORT": str(port), "FUNC_HOST": host}
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *self._command,
                "--port",
                str(port),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        p = _Proc(runtime, proc, port, log, f"http://{host}:{port}", standby=standby)
        self._procs[p.pid] = p
        record_process(self._run_dir, p.pid)
        try:
            async with asyncio.timeout(timeout_s):
                await self._wait_ready(p)
        except TimeoutError:
            await self._stop(p, grace_s=0.0, keep_log=True)
            raise DeployTimeout(runtime.name, timeout_s) from None
        except BaseException:
            await self._stop(p, grace_s=0.0, keep_log=True)
            raise
        p.ready_s = loop.time() - t0
        return p

    async def _wait_ready(self, p: _Proc) -> None:
        client = self._http()
        url = f"{p.endpoint}/healthz"
        while True:
            if p.proc.returncode is not None:
                raise DeployFailure(
                    p.runtime.name,
                    f"function process {p.pid} {p.describe_exit()} before it was ready; "
                    f"log {p.log}:\n{_log_tail(p.log)}",
                )
            with contextlib.suppress(httpx.TransportError):
                r = await client.get(url, timeout=_HEALTH_TIMEOUT_S)
                if r.status_code == 200:
                    return
                failed = _startup_failure(r)
                if failed is not None:
                    raise DeployFailure(
                        p.runtime.name,
                        f"function process {p.pid} failed to start: {failed}; "
                        f"log {p.log}:\n{_log_tail(p.log)}",
                    )
            await asyncio.sleep(self._opts.ready_poll_s)

    async def _stop(
        self, p: _Proc, grace_s: float | None = None, *, keep_log: bool = False
    ) -> None:
        """Terminate and reap ``p``; concurrent and repeated calls share one stop."""
        if p.stopping is not None:
            await asyncio.shield(p.stopping)
            return
        p.stopping = asyncio.get_running_loop().create_future()
        grace = self._opts.terminate_grace_s if grace_s is None else grace_s
        try:
            if p.proc.returncode is None:
                p.signal_group(signal.SIGTERM if grace > 0 else signal.SIGKILL)
                try:
                    async with asyncio.timeout(grace if grace > 0 else None):
                        await p.proc.wait()
                except TimeoutError:
                    p.signal_group(signal.SIGKILL)
                    await p.proc.wait()
            else:
                await p.proc.wait()
        except BaseException:
            p.signal_group(signal.SIGKILL)  # cancelled mid-stop: never leave it alive
            raise
        finally:
            # Workers the server spawned share its process group; they go too.
            p.signal_group(signal.SIGKILL)
            p.stopped = True
            self._procs.pop(p.pid, None)
            forget_process(self._run_dir, p.pid)
            p.stopping.set_result(None)
        if not (keep_log or self._opts.keep_logs):
            with contextlib.suppress(OSError):
                p.log.unlink()

    async def _kill_cancelled(self, p: _Proc) -> None:
        """The invoke was cancelled: kill at once so the work really stops."""
        p.signal_group(signal.SIGKILL)
        await self._stop(p, grace_s=0.0)
        if p.standby and not self._closed:
            self._ensure_standby(p.runtime)  # a fresh standby, launched in the background

    # The edge standby -------------------------------------------------------------

    def _ensure_standby(self, runtime: Runtime) -> asyncio.Task[_Proc]:
        """The task that yields the live standby of ``runtime``; a new launch if there
        is none, the last one failed, or its process has died."""
        t = self._standby.get(runtime.name)
        if t is not None:
            if not t.done():
                return t
            if not t.cancelled() and t.exception() is None and t.result().alive:
                return t
            if not t.cancelled() and t.exception() is None:
                self._background.spawn(self._stop(t.result(), keep_log=True))
        t = asyncio.create_task(
            self._launch(runtime, self._opts.standby_timeout_s, standby=True),
            name=f"local-standby-{runtime.name}",
        )
        t.add_done_callback(self._launched)
        self._standby[runtime.name] = t
        return t

    def _launched(self, task: asyncio.Task[_Proc]) -> None:
        # A failure is reported to the deploy() that awaits it (marked retrieved here).
        if not task.cancelled() and task.exception() is None:
            self._arm_idle(task.result())

    def _arm_idle(self, p: _Proc) -> None:
        """(Re)start the idle countdown of standby ``p`` once nothing uses it."""
        idle_s = self._opts.standby_idle_s
        if idle_s is None or p.users or self._closed:
            return
        self._disarm_idle(p.runtime)
        loop = asyncio.get_running_loop()
        self._idle[p.runtime.name] = loop.call_later(idle_s, self._idle_out, p)

    def _disarm_idle(self, runtime: Runtime) -> None:
        handle = self._idle.pop(runtime.name, None)
        if handle is not None:
            handle.cancel()

    def _idle_out(self, p: _Proc) -> None:
        """Stop the standby ``p`` if it is still the standby and nothing uses it."""
        name = p.runtime.name
        self._idle.pop(name, None)
        t = self._standby.get(name)
        current = t is not None and t.done() and not t.cancelled() and t.exception() is None
        if not current or t is None or t.result() is not p or p.users or self._closed:
            return
        del self._standby[name]
        log.info(
            "edge standby stopped after being idle; the next edge run starts it again",
            runtime=name,
            pid=p.pid,
            idle_s=self._opts.standby_idle_s,
        )
        self._background.spawn(self._stop(p), name=f"local-standby-idle-{name}")

    async def _deploy_standby(self, runtime: Runtime, timeout_s: float) -> Deployment:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            # The shield keeps the standby launching if this caller gives up or is
            # cancelled: the next batch will want it.
            async with asyncio.timeout(timeout_s):
                for _ in range(2):
                    p = await asyncio.shield(self._ensure_standby(runtime))
                    p.users += 1  # not stopped for idleness from here on
                    self._disarm_idle(runtime)
                    try:
                        answers = p.alive and await self._answers(p)
                    except BaseException:
                        p.users -= 1
                        self._arm_idle(p)
                        raise
                    if answers:
                        return self._deployment(p, loop.time() - t0)
                    p.users -= 1
                    # Died since it was last used (maybe so recently that the child
                    # watcher has not told us yet): reap it; the loop launches anew.
                    await self._stop(p, grace_s=0.0, keep_log=True)
        except TimeoutError:
            raise DeployTimeout(runtime.name, timeout_s) from None
        raise DeployFailure(
            runtime.name,
            f"the standby process {p.pid} {p.describe_exit()} right after it started; "
            f"log {p.log}:\n{_log_tail(p.log)}",
        )

    async def _answers(self, p: _Proc) -> bool:
        """False only if nothing listens on the standby's port any more. A slow answer
        is a busy process (classifying someone else's batch), not a dead one."""
        try:
            await self._http().get(f"{p.endpoint}/healthz", timeout=_HEALTH_TIMEOUT_S)
        except httpx.ConnectError:
            return False
        except httpx.TimeoutException:
            return True  # slow: busy with a batch
        except httpx.TransportError:
            # The connection was cut mid-answer: most likely the process is dying
            # (killed just before this probe). Give the kernel a moment to tell.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_HEALTH_TIMEOUT_S):
                    await p.proc.wait()
            return p.proc.returncode is None
        return True


def _startup_failure(response: httpx.Response) -> str | None:
    """The server's own start-up error: ``/healthz`` answers 503 with
    ``{"status": "failed", "error": ...}`` when, say, TensorFlow cannot be imported;
    waiting for the deploy timeout would only hide it."""
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("status") == "failed":
        return str(body.get("error") or "unknown start-up error")
    return None


def _parse_response(runtime: str, response: httpx.Response, processing_s: float) -> Invocation:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        message = response.text[:500]
        key = None
        if isinstance(body, dict):
            message = str(body.get("error") or body.get("detail") or message)
            key = body.get("key")
        if key is not None and str(key) not in message:
            message = f"{message} (key {key!r})"
        raise InvocationError(runtime, f"function answered HTTP {response.status_code}: {message}")
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise InvocationError(
            runtime, f"function answered 200 without a 'results' list: {response.text[:200]!r}"
        )
    raw = body.get("timings")
    timings = (
        {k: float(v) for k, v in raw.items() if isinstance(v, int | float)}
        if isinstance(raw, dict)
        else {}
    )
    return Invocation(processing_s=processing_s, results=body["results"], timings=timings)
