"""A kubelet for the kmock emulator: it runs, for real, the pods the Kubernetes backend
asks for.

kmock stores objects and runs nothing: no controllers, no kubelet, no service proxy.
:class:`Kubelet` plays each of them in one namespace, for the end-to-end cloud test:

* **the controllers**: for each owner the backend creates (a Deployment, a Knative
  Service or a kubeless Function, seen on a watch of the emulator) it creates the pod
  of the owner's template;
* **the kubelet**: it resolves the container's environment as a kubelet does
  (``value``; ``valueFrom.secretKeyRef`` read from the Secret on the API server, a
  missing one being ``CreateContainerConfigError``), starts the container with a
  :class:`ContainerRuntime`, polls the container's readiness probe and reports the pod
  Ready as the backend reads it (for Knative also the Service, with its revision and
  address, as Knative's controller does) or Failed, with the end of its log, when the
  container exits; it stops the container when the pod or its owner is deleted;
* **the API server's service proxy**: ``POST .../services/<name>:<port>/proxy/`` (in
  Knative mode ``<revision>-private:80``) is forwarded to the pod's port.

The container runs the image's command (the ``CMD`` of its Dockerfile) either as a local
process (:class:`ProcessRuntime`) with exactly the container's environment, or with
podman from the built image (:class:`PodmanRuntime`). Pods share this machine's
network, where each would have an address of its own, so the container is told to
listen on loopback (``--host 127.0.0.1``: an argument, not environment) and two pods
may not run on one port at once: the test gives the function a free port
(``kubernetes.service_port``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import kmock as km

from tests.support.paths import REPO

FUNCTION_DOCKERFILE = REPO / "docker" / "Dockerfile.function-cpu"
KNATIVE_PRIVATE_PORT = 80  # stoic.backends.knative.PRIVATE_SERVICE_PORT
OWNERS = {
    "deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "knative": "/apis/serving.knative.dev/v1/namespaces/{ns}/services",
    "kubeless": "/apis/kubeless.io/v1beta1/namespaces/{ns}/functions",
}


def image_command(dockerfile: Path = FUNCTION_DOCKERFILE) -> list[str]:
    """The ``CMD`` (exec form) of a Dockerfile: what its container runs."""
    for line in reversed(dockerfile.read_text().splitlines()):
        if line.startswith("CMD "):
            return [str(arg) for arg in json.loads(line[4:])]
    raise AssertionError(f"{dockerfile}: no CMD")


class Container(Protocol):
    log: Path

    def exit_code(self) -> int | None: ...

    def environ(self) -> dict[str, str] | None:
        """The environment the container's process was started with, where it can be
        read from outside (a local process: ``/proc/<pid>/environ``)."""

    def stop(self) -> None: ...


class ContainerRuntime(Protocol):
    """Starts a pod's container: ``image`` running ``command`` with ``env``."""

    def start(
        self, name: str, image: str, command: list[str], env: dict[str, str], workdir: Path
    ) -> Container: ...


@dataclass
class _Process:
    """A container that is a child process of the test (SIGTERM stops it)."""

    proc: subprocess.Popen[bytes]
    log: Path

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def environ(self) -> dict[str, str] | None:
        try:
            raw = Path(f"/proc/{self.proc.pid}/environ").read_bytes()
        except OSError:
            return None
        pairs = [item.split(b"=", 1) for item in raw.split(b"\0") if item]
        return {k.decode(): v.decode() for k, v in pairs}

    def _end(self) -> None:
        self.proc.terminate()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self._end()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class _Podman(_Process):
    """A container run by ``podman run`` in the foreground (a child process of the test)."""

    name: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def environ(self) -> dict[str, str] | None:
        return None  # podman's own environment, not the container's

    def _end(self) -> None:
        rm = ["podman", "rm", "-f", "-t", "0", self.name]
        subprocess.run(rm, env=self.env, capture_output=True, timeout=60)


class ProcessRuntime:
    """The container's command as a local process, with exactly the container's
    environment and nothing inherited. ``python`` is this interpreter, named by its
    full path, so no ``PATH`` is needed to find it; the one variable added is
    ``PYTHONPATH`` where the test run has one, because that is how this interpreter
    finds the tree under test (the image has the code installed; an editable install,
    as in CI, needs nothing)."""

    def start(
        self, name: str, image: str, command: list[str], env: dict[str, str], workdir: Path
    ) -> Container:
        python = command[0] in ("python", "python3")
        argv = [sys.executable if python else command[0], *command[1:], "--host", "127.0.0.1"]
        child_env = dict(env)
        if "PYTHONPATH" in os.environ:
            child_env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        log = workdir / "container.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, env=child_env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT
            )
        return _Process(proc, log)


class PodmanRuntime:
    """The built image with podman, run as the pods' restricted security context runs it
    (the image's user, read-only root, a ``/tmp`` tmpfs, no capabilities, no privilege
    gain) on the host's network. Uses the container storage that ``make images``
    (docker/build-images.sh) configures under ``.images/`` (``$STOIC_IMAGES_DIR``).
    The environment goes to podman as its own (``-e NAME``), so no key is on a command
    line."""

    def __init__(self, images_dir: Path | None = None) -> None:
        scratch = images_dir or Path(os.environ.get("STOIC_IMAGES_DIR") or REPO / ".images")
        self.env = {
            **os.environ,
            "CONTAINERS_STORAGE_CONF": str(scratch / "storage.conf"),
            "CONTAINERS_CONF": str(scratch / "containers.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(scratch / "registries.conf"),
        }
        self.scratch = scratch

    def missing(self, image: str) -> str | None:
        """Why this runtime cannot run ``image`` here, or None."""
        if shutil.which("podman") is None:
            return "podman is not installed"
        if not (self.scratch / "storage.conf").is_file():
            return f"no podman storage configured in {self.scratch} (make images)"
        found = subprocess.run(
            ["podman", "image", "exists", image], env=self.env, capture_output=True, timeout=60
        )
        return None if found.returncode == 0 else f"image {image} not built (make images)"

    def start(
        self, name: str, image: str, command: list[str], env: dict[str, str], workdir: Path
    ) -> Container:
        container = f"stoic-kubelet-{name}"
        argv = [
            "podman", "run", "--rm", "--name", container, "--network", "host",
            "--user", "10001:10001", "--read-only", "--read-only-tmpfs=false",
            "--tmpfs", "/tmp:rw,size=1g,mode=1777", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges",
            *(arg for name in env for arg in ("-e", name)),
            image, *command, "--host", "127.0.0.1",
        ]  # fmt: skip
        log = workdir / "container.log"
        run_env = {**self.env, **env}
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=run_env, stdout=out, stderr=subprocess.STDOUT)
        return _Podman(proc, log, container, self.env)


@dataclass
class Pod:
    """One pod the stand-in ran: what it was given and what became of it."""

    name: str
    owner: str
    env: dict[str, str]
    container: Container | None = None
    ready: bool = False
    stopped: bool = False
    environ: dict[str, str] | None = None
    """The container process's environment, read when it was Ready (local processes)."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the container has stopped after a deletion."""


class SecretMissing(Exception):
    """A ``secretKeyRef`` names a Secret or key that does not exist."""


class Kubelet:
    """Runs the pods of ``mode``'s owners in ``namespace`` of the emulator (see the
    module docstring); use as ``async with Kubelet(...) as kubelet``."""

    def __init__(
        self,
        emulator: km.KubernetesEmulator,
        namespace: str,
        mode: str,
        runtime: ContainerRuntime,
        workdir: Path,
        *,
        probe_period_s: float = 0.2,
    ) -> None:
        self.k = emulator
        self.ns = namespace
        self.mode = mode
        self.runtime = runtime
        self.workdir = workdir
        self.probe_period_s = probe_period_s
        self.pods: dict[str, Pod] = {}
        self._by_owner: dict[str, str] = {}
        self._routes: dict[str, int] = {}  # service proxy path -> pod port
        self._proxied: set[str] = set()  # paths with a reaction on the emulator
        self._tasks: list[asyncio.Task[None]] = []
        self._http = httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(600, connect=5))

    async def __aenter__(self) -> Kubelet:
        owners = OWNERS[self.mode].format(ns=self.ns)
        pods = f"/api/v1/namespaces/{self.ns}/pods"
        self._tasks = [
            asyncio.create_task(self._watch(owners, self._on_owner), name="kubelet-owners"),
            asyncio.create_task(self._watch(pods, self._on_pod), name="kubelet-pods"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for pod in self.pods.values():
            await self._stop(pod)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()

    def check(self) -> None:
        """Raise what broke the stand-in itself (a watch that ended with an error), so
        that a test fails with it instead of waiting for a batch that cannot finish."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise AssertionError(f"kubelet stand-in failed: {task.get_name()}") from (
                    task.exception()
                )

    def logs(self) -> str:
        """Every container's log, for a failing test's message."""
        out = []
        for pod in self.pods.values():
            if pod.container is not None:
                out.append(f"--- {pod.name}\n{pod.container.log.read_text()[-3000:]}")
        return "\n".join(out)

    # Watching ----------------------------------------------------------------------

    async def _watch(self, path: str, handle: Any) -> None:
        async with self.k.get(f"{path}?watch=true") as resp:
            async for line in resp.content:
                if line.strip():
                    await handle(json.loads(line))

    async def _on_owner(self, event: dict[str, Any]) -> None:
        owner = event["object"]
        name = owner["metadata"]["name"]
        if event["type"] == "DELETED":
            pod_name = self._by_owner.get(name)
            if pod_name is not None:
                await self._stop(self.pods[pod_name])
        elif event["type"] == "ADDED" and name not in self._by_owner:
            await self._create_pod(owner)

    async def _on_pod(self, event: dict[str, Any]) -> None:
        pod = self.pods.get(event["object"]["metadata"]["name"])
        if pod is not None and event["type"] == "DELETED":
            await self._stop(pod)

    # The controllers and the kubelet -----------------------------------------------

    def _template(self, owner: dict[str, Any]) -> dict[str, Any]:
        spec = owner["spec"]
        if self.mode == "kubeless":
            return dict(spec["deployment"]["spec"]["template"])
        return dict(spec["template"])

    async def _create_pod(self, owner: dict[str, Any]) -> None:
        owner_name = owner["metadata"]["name"]
        template = self._template(owner)
        pod_name = f"{owner_name}-pod"
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": self.ns,
                "labels": template["metadata"]["labels"],
            },
            "spec": template["spec"],
            "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]},
        }
        async with self.k.post(f"/api/v1/namespaces/{self.ns}/pods", json=body) as resp:
            assert resp.status < 300, await resp.text()
        box = template["spec"]["containers"][0]
        pod = Pod(pod_name, owner_name, {})
        self.pods[pod_name] = pod
        self._by_owner[owner_name] = pod_name
        try:
            pod.env = await self._resolve_env(box.get("env") or [])
        except SecretMissing as exc:
            waiting = {"reason": "CreateContainerConfigError", "message": str(exc)}
            status = {"containerStatuses": [{"name": box["name"], "state": {"waiting": waiting}}]}
            await self._patch_pod(pod, status)
            return
        workdir = self.workdir / pod_name
        workdir.mkdir(parents=True)
        pod.container = await asyncio.to_thread(
            self.runtime.start, pod_name, box["image"], image_command(), pod.env, workdir
        )
        port = int(box["ports"][0]["containerPort"])
        probe = (box.get("readinessProbe") or {}).get("httpGet") or {}
        task = asyncio.create_task(
            self._probe(pod, owner_name, port, str(probe.get("path", "/"))),
            name=f"kubelet-probe-{pod_name}",
        )
        pod.tasks.append(task)

    async def _resolve_env(self, env: list[dict[str, Any]]) -> dict[str, str]:
        out: dict[str, str] = {}
        for var in env:
            if "value" in var:
                out[var["name"]] = str(var["value"])
                continue
            ref = var["valueFrom"]["secretKeyRef"]
            path = f"/api/v1/namespaces/{self.ns}/secrets/{ref['name']}"
            async with self.k.get(path) as resp:
                secret = await resp.json() if resp.status == 200 else None
            data = (secret or {}).get("data") or {}
            if ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise SecretMissing(f"secret {ref['name']!r} has no key {ref['key']!r}")
            out[var["name"]] = base64.b64decode(data[ref["key"]]).decode()
        return out

    async def _probe(self, pod: Pod, owner: str, port: int, path: str) -> None:
        """Poll the readiness probe until it answers 200 (Ready) or the container exits
        (Failed, with the end of its log)."""
        assert pod.container is not None
        url = f"http://127.0.0.1:{port}{path}"
        while not pod.stopped:
            code = pod.container.exit_code()
            if code is not None:
                tail = pod.container.log.read_text()[-1500:]
                await self._patch_pod(
                    pod,
                    {"phase": "Failed", "reason": "Error", "message": f"exit {code}: {tail}"},
                )
                return
            with contextlib.suppress(httpx.TransportError):
                if (await self._http.get(url, timeout=2)).status_code == 200:
                    break
            await asyncio.sleep(self.probe_period_s)
        else:
            return
        pod.environ = pod.container.environ()
        pod.ready = True
        ready = {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
        }
        if self.mode == "knative":
            revision = f"{owner}-00001"
            self._serve(pod, f"{revision}-private:{KNATIVE_PRIVATE_PORT}", port)
            await self._patch_pod(pod, ready)
            await self._knative_ready(owner, revision)
        else:
            self._serve(pod, f"{owner}:{port}", port)
            await self._patch_pod(pod, ready)

    async def _patch_pod(self, pod: Pod, status: dict[str, Any]) -> None:
        path = f"/api/v1/namespaces/{self.ns}/pods/{pod.name}"
        async with self.k.patch(path, json={"status": status}) as resp:
            assert resp.status < 300 or pod.stopped, await resp.text()

    async def _knative_ready(self, name: str, revision: str) -> None:
        url = f"http://{name}.{self.ns}.svc.cluster.local"
        ready = {"type": "Ready", "status": "True"}
        status = {
            "conditions": [{**ready, "type": "ConfigurationsReady"}, ready],
            "latestCreatedRevisionName": revision,
            "latestReadyRevisionName": revision,
            "url": url,
            "address": {"url": url},
        }
        path = f"{OWNERS['knative'].format(ns=self.ns)}/{name}"
        async with self.k.patch(path, json={"status": status}) as resp:
            assert resp.status < 300, await resp.text()

    async def _stop(self, pod: Pod) -> None:
        if pod.stopped:
            return
        pod.stopped = True
        for task in pod.tasks:
            task.cancel()
        await asyncio.gather(*pod.tasks, return_exceptions=True)
        for path in pod.routes:
            self._routes.pop(path, None)
        if pod.container is not None:
            await asyncio.to_thread(pod.container.stop)
        pod.gone.set()

    # The service proxy -------------------------------------------------------------

    def _serve(self, pod: Pod, service: str, port: int) -> None:
        """Route the API server's proxy path of ``service`` to the pod's ``port``."""
        path = f"/api/v1/namespaces/{self.ns}/services/{service}/proxy/"
        if path not in self._proxied:
            self.k[f"post {path}"] << (lambda request: self._forward(path, request))
            self._proxied.add(path)
        self._routes[path] = port
        pod.routes.append(path)

    async def _forward(self, path: str, request: km.Request) -> km.Response:
        port = self._routes.get(path)
        if port is None:
            body = json.dumps({"kind": "Status", "code": 503, "message": "no endpoints"})
            return km.Response(status=503, payload=body.encode())
        resp = await self._http.post(
            f"http://127.0.0.1:{port}/",
            content=request.body,
            headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
        )
        content_type = resp.headers.get("content-type", "application/json")
        return km.Response(
            status=resp.status_code, payload=resp.content, headers={"Content-Type": content_type}
        )


def secret(namespace: str, name: str, values: Mapping[str, str]) -> dict[str, Any]:
    """A v1 Secret as the API server stores it (``data`` in base64)."""
    data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": data,
    }
