"""The cloud backend: the function on a Kubernetes cluster, in one of three modes.

One *deployment* of a runtime is one function with one replica:

* ``mode='deployment'`` (default) creates a Deployment and a Service;
* ``mode='knative'`` creates one Knative Serving ``serving.knative.dev/v1`` Service
  (:mod:`stoic.backends.knative`); Knative makes the Revision, its pods and the route;
* ``mode='kubeless'`` (legacy: kubeless is archived since 2021) creates a
  ``kubeless.io/v1beta1`` Function (kubeless's controller then makes the Deployment and
  Service, labelled like the Function).

A mode is a :class:`_Mode`: the kinds it creates (owners first, then pods), the
manifests of one deployment, and its :class:`_Readiness`: which objects to watch and
when one of them means Ready or failed.

**T_d** is measured from the first create call to the moment the function is Ready: a
pod of the function with ``status.conditions[type=Ready]=True`` (as the kubelet writes
it) in the pod modes, the Knative Service's own ``Ready`` condition in Knative mode
(true once the Revision is Ready and routed). Readiness is followed with a *watch* on
the objects labelled ``stoic.io/function=<name>``, run in a worker thread (the official
client is synchronous) whose socket read times out every ``ready_poll_s`` so that the
thread notices when the deploy was cancelled or timed out; a read time-out simply
restarts the watch, which (on a real API server and on the ``kmock`` emulator alike)
begins with the current state of every matching object.

Everything the backend creates carries the owner labels of :mod:`k8s_objects`, so
:meth:`KubernetesBackend.teardown` and :meth:`KubernetesBackend.cleanup_orphans` can
find it again, also after the controller crashed. A deploy that times out, fails or is
cancelled deletes what it created before the exception leaves :meth:`deploy`.

Every API call runs in :func:`asyncio.to_thread`; every API error becomes
:class:`stoic.errors.KubernetesApiError` naming the object. The function is invoked
over HTTP (httpx) either through the API server's service proxy (controller outside
the cluster, the usual case at the edge) or by in-cluster DNS.

The pods read packages and models from the cloud object store, an S3 bucket
(``kubernetes.store``): :meth:`KubernetesBackend.upload` copies the batch's package
there from the edge store (that copy is T_t), and the model that the request names
along with it the first time. Their containers get the bucket's address as
environment variables and its keys by reference to a Secret
(:func:`k8s_objects.store_env`).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol, TypeVar, cast

import httpx
import urllib3.exceptions
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from stoic.backends import k8s_objects as objs
from stoic.backends import knative
from stoic.backends.base import Deployment, Invocation, Upload
from stoic.errors import (
    BackendError,
    ConfigError,
    DeployFailure,
    DeployTimeout,
    InvocationError,
    KubernetesApiError,
    ObjectNotFound,
)
from stoic.logging import get_logger
from stoic.settings import KubernetesSettings
from stoic.storage.objectstore import S3ObjectStore
from stoic.storage.package import part_key, write_part
from stoic.values import Job, Runtime

log = get_logger(__name__)

T = TypeVar("T")


class PackageSource(Protocol):
    """The edge object store, as far as upload needs it (``stoic.storage.objectstore``)."""

    def open_read(self, key: str) -> BinaryIO: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def size(self, key: str) -> int: ...


class PackageSink(Protocol):
    """The cloud object store (S3), as far as upload needs it (``stoic.storage.objectstore``)."""

    def put_stream(self, key: str, fileobj: BinaryIO) -> int: ...

    def size(self, key: str) -> int: ...


@dataclass(frozen=True, slots=True)
class FunctionHandle:
    """What :meth:`KubernetesBackend.teardown` needs to find a deployment again."""

    name: str
    namespace: str
    mode: str
    runtime: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Kind:
    """One kind of object the backend manages, with its sync client calls."""

    kind: str
    create: Callable[[str, objs.Manifest], Any]
    list: Callable[[str, str], list[dict[str, Any]]]
    delete: Callable[[str, str], Any]


@dataclass(frozen=True, slots=True)
class _Readiness:
    """What a mode watches until its function is Ready.

    ``list`` is the client's list call, watched with the positional ``args(namespace)``
    and our label selector; ``ready`` and ``failure`` read one watched object (a raw
    dict); a failure
    counts once it has held for ``failure_grace_s``; ``endpoint`` gives the URL to POST
    to from the function's name and the object that was Ready."""

    kind: str
    list: Callable[..., Any]
    args: Callable[[str], tuple[Any, ...]]
    ready: Callable[[objs.Manifest], bool]
    failure: Callable[[objs.Manifest], str | None]
    failure_grace_s: float
    endpoint: Callable[[str, objs.Manifest], str]


@dataclass(frozen=True, slots=True)
class _Mode:
    """One way of running a function on Kubernetes (``kubernetes.mode``)."""

    kinds: list[_Kind]  # owners first (deleted first), then pods
    manifests: Callable[[Runtime, str], list[tuple[_Kind, objs.Manifest]]]
    readiness: _Readiness


def _reason(exc: ApiException) -> str:
    """The API server's ``Status.message`` (or reason) from an ApiException."""
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        body = {}
    if isinstance(body, dict) and (body.get("message") or body.get("reason")):
        return str(body.get("message") or body.get("reason"))
    return str(exc.reason or "unknown")


class KubernetesBackend:
    """:class:`stoic.backends.base.RuntimeBackend` on a Kubernetes cluster.

    ``api_config`` is a loaded ``kubernetes.client.Configuration`` (see
    :meth:`from_settings`); ``cloud_store`` and ``edge_store`` are the object stores
    that :meth:`upload` copies packages and models between; ``http_transport`` replaces
    httpx's network transport (tests); ``name_factory`` names each deployment.
    """

    def __init__(
        self,
        settings: KubernetesSettings,
        *,
        api_config: client.Configuration,
        cloud_store: PackageSink | None = None,
        edge_store: PackageSource | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        name_factory: Callable[[Runtime], str] = objs.function_name,
    ) -> None:
        self._s = settings
        self._cfg = api_config
        self._api_client = client.ApiClient(api_config)
        self._core = client.CoreV1Api(self._api_client)
        self._apps = client.AppsV1Api(self._api_client)
        self._custom = client.CustomObjectsApi(self._api_client)
        self._cloud = cloud_store
        self._edge = edge_store
        self._models: dict[str, int] = {}  # model objects known in the cloud store: size
        self._name_factory = name_factory
        self._http = self._make_http_client(http_transport)
        self._mode = self._make_mode()
        self._kinds = self._mode.kinds

    @classmethod
    def from_settings(
        cls, settings: KubernetesSettings, *, edge_store: PackageSource | None = None
    ) -> KubernetesBackend:
        """Load the cluster credentials (in-cluster service account or kubeconfig) and
        connect to the cloud object store (``kubernetes.store``), where packages go."""
        store = settings.store
        secret = store.secret_key.get_secret_value() if store.secret_key else None
        cloud_store = S3ObjectStore.connect(
            store.endpoint, store.region, store.bucket, store.access_key, secret
        )
        cfg = client.Configuration()
        try:
            if settings.in_cluster:
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=str(settings.kubeconfig) if settings.kubeconfig else None,
                    context=settings.context,
                    client_configuration=cfg,
                )
        except (config.ConfigException, OSError, ValueError, TypeError) as exc:
            key = "kubernetes.in_cluster" if settings.in_cluster else "kubernetes.kubeconfig"
            where = f" ({settings.kubeconfig})" if settings.kubeconfig else ""
            raise ConfigError(f"{key}{where}: cannot load Kubernetes credentials: {exc}") from None
        return cls(settings, api_config=cfg, cloud_store=cloud_store, edge_store=edge_store)

    async def start(self) -> None:
        """Called by the controller once at start-up: make sure the cloud store's bucket
        exists, and delete what a crashed controller left behind
        (``kubernetes.cleanup_orphans_at_start``)."""
        if isinstance(self._cloud, S3ObjectStore):
            await asyncio.to_thread(self._cloud.ensure_bucket)
        if self._s.cleanup_orphans_at_start:
            await self.cleanup_orphans()

    async def aclose(self) -> None:
        await self._http.aclose()
        await asyncio.to_thread(self._api_client.close)

    # ------------------------------------------------------------------ set-up

    def _make_http_client(self, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        timeout = httpx.Timeout(self._s.invoke_timeout_s, connect=self._s.api_timeout_s)
        if transport is not None:
            return httpx.AsyncClient(transport=transport, timeout=timeout)
        verify: ssl.SSLContext | bool = True
        if self._s.invoke_via == "proxy" and self._cfg.host.startswith("https"):
            # Talk to the API server exactly as the Kubernetes client does.
            ctx = ssl.create_default_context(cafile=self._cfg.ssl_ca_cert or None)
            if not self._cfg.verify_ssl:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if self._cfg.cert_file:
                ctx.load_cert_chain(self._cfg.cert_file, self._cfg.key_file or None)
            verify = ctx
        proxy = self._cfg.proxy if self._s.invoke_via == "proxy" else None
        return httpx.AsyncClient(verify=verify, timeout=timeout, proxy=proxy, trust_env=False)

    def _make_mode(self) -> _Mode:
        """The kinds, manifests and readiness of ``kubernetes.mode``.

        Every call asks for the raw response (``_preload_content=False``) and reads the
        JSON itself: the client's typed models reject objects with fields they do not
        know or miss (they are strict pydantic models), and we only need a few keys.
        """
        s = self._s
        raw: dict[str, Any] = {"_request_timeout": s.api_timeout_s, "_preload_content": False}
        grace = s.pod_grace_period_s
        bg = "Background"
        custom, apps, core = self._custom, self._apps, self._core

        def items(resp: Any) -> list[dict[str, Any]]:
            return list(json.loads(resp.data).get("items") or [])

        def custom_kind(kind: str, g: str, v: str, p: str) -> _Kind:
            return _Kind(
                kind,
                lambda ns, body: custom.create_namespaced_custom_object(g, v, ns, p, body, **raw),
                lambda ns, sel: items(
                    custom.list_namespaced_custom_object(g, v, ns, p, label_selector=sel, **raw)
                ),
                lambda ns, name: custom.delete_namespaced_custom_object(
                    g, v, ns, p, name, propagation_policy=bg, **raw
                ),
            )

        pod = _Kind(
            "Pod",
            lambda ns, body: None,  # pods are made by the Deployment, never by us
            lambda ns, sel: items(core.list_namespaced_pod(ns, label_selector=sel, **raw)),
            lambda ns, name: core.delete_namespaced_pod(
                name, ns, grace_period_seconds=grace, **raw
            ),
        )
        pods_ready = _Readiness(
            "Pod",
            core.list_namespaced_pod,
            lambda ns: (ns,),
            objs.pod_ready,
            objs.pod_failure,
            0.0,
            lambda name, _obj: self.endpoint(name),
        )

        if s.mode == "kubeless":
            g, v, p = objs.KUBELESS_GROUP, objs.KUBELESS_VERSION, objs.KUBELESS_PLURAL
            function = custom_kind("Function", g, v, p)
            return _Mode(
                [function, pod],
                lambda rt, name: [(function, objs.kubeless_function(s, rt, name))],
                pods_ready,
            )
        if s.mode == "knative":
            g, v, p = knative.GROUP, knative.VERSION, knative.PLURAL
            ksvc = custom_kind(f"Service.{g}", g, v, p)
            host = self._cfg.host
            return _Mode(
                [ksvc, pod],
                lambda rt, name: [(ksvc, knative.service(s, rt, name))],
                _Readiness(
                    ksvc.kind,
                    custom.list_namespaced_custom_object,
                    lambda ns: (g, v, ns, p),
                    knative.service_ready,
                    knative.service_failure,
                    s.knative_ready_false_grace_s,
                    lambda _name, obj: knative.endpoint(s, host, obj),
                ),
            )
        deployment = _Kind(
            "Deployment",
            lambda ns, body: apps.create_namespaced_deployment(ns, cast(Any, body), **raw),
            lambda ns, sel: items(apps.list_namespaced_deployment(ns, label_selector=sel, **raw)),
            lambda ns, name: apps.delete_namespaced_deployment(
                name, ns, propagation_policy=bg, **raw
            ),
        )
        service = _Kind(
            "Service",
            lambda ns, body: core.create_namespaced_service(ns, cast(Any, body), **raw),
            lambda ns, sel: items(core.list_namespaced_service(ns, label_selector=sel, **raw)),
            lambda ns, name: core.delete_namespaced_service(name, ns, **raw),
        )
        return _Mode(
            [deployment, service, pod],
            lambda rt, name: [
                (deployment, objs.deployment(s, rt, name)),
                (service, objs.service(s, rt, name)),
            ],
            pods_ready,
        )

    # ------------------------------------------------------------------ API calls

    async def _api(self, runtime: str, obj: str, fn: Callable[..., T], *args: Any) -> T:
        """Run one sync client call in a thread; API errors name ``obj``."""
        try:
            return await asyncio.to_thread(fn, *args)
        except ApiException as exc:
            raise KubernetesApiError(runtime, obj, int(exc.status or 0), _reason(exc)) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubernetesApiError(runtime, obj, 0, f"{type(exc).__name__}: {exc}") from exc

    async def _delete(self, runtime: str, kind: _Kind, ns: str, name: str) -> bool:
        """Delete one object; False if it was already gone (teardown is idempotent)."""
        try:
            await self._api(runtime, f"{kind.kind} {ns}/{name}", kind.delete, ns, name)
        except KubernetesApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def _delete_labelled(self, runtime: str, labels: Mapping[str, str]) -> list[str]:
        """Delete every object of our kinds that carries all ``labels``."""
        ns, sel, deleted = self._s.namespace, objs.selector(dict(labels)), []
        for kind in self._kinds:
            try:
                items = await self._api(
                    runtime, f"{kind.kind} list {ns} [{sel}]", kind.list, ns, sel
                )
            except KubernetesApiError as exc:
                if exc.status == 404:  # the kind is not served (no kubeless CRD): none left
                    continue
                raise
            for item in items:
                meta = item.get("metadata") or {}
                if not objs.matches(meta.get("labels"), dict(labels)):
                    continue
                if await self._delete(runtime, kind, ns, meta["name"]):
                    deleted.append(f"{kind.kind} {ns}/{meta['name']}")
        return deleted

    async def _remove(self, handle: FunctionHandle) -> list[str]:
        """Delete the owners by name (robust even before they are listable), then
        whatever else carries the deployment's labels (its pods)."""
        deleted = []
        for kind in self._kinds:
            if kind.kind != "Pod" and await self._delete(
                handle.runtime, kind, handle.namespace, handle.name
            ):
                deleted.append(f"{kind.kind} {handle.namespace}/{handle.name}")
        deleted += await self._delete_labelled(handle.runtime, handle.labels)
        return deleted

    @staticmethod
    async def _run_to_end(coro: Coroutine[Any, Any, T], name: str) -> T:
        """Await ``coro`` to its end even if the caller is cancelled meanwhile, then
        re-raise the cancellation. For a create call (its thread would otherwise land
        the object after the clean-up looked for it) and for the clean-up itself."""
        task = asyncio.create_task(coro, name=name)
        cancelled = False
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                cancelled = True
            except BaseException:
                break
        if cancelled:
            if not task.cancelled() and task.exception() is not None:
                log.warning("step failed while cancelled", step=name, error=str(task.exception()))
            raise asyncio.CancelledError
        return task.result()

    async def _remove_despite_cancel(self, handle: FunctionHandle) -> None:
        """Clean up after a failed, timed-out or cancelled deploy, to the end. An error
        while cleaning is logged, not raised: the deploy's own error matters more."""
        try:
            await self._run_to_end(self._remove(handle), f"stoic-cleanup-{handle.name}")
        except Exception as exc:
            log.warning("clean-up failed", object=handle.name, error=str(exc))

    # ------------------------------------------------------------------ readiness

    def _watch_until_ready(
        self, handle: FunctionHandle, stop: threading.Event
    ) -> objs.Manifest | None:
        """Block (in a worker thread) until an object of ``handle`` is Ready (returned)
        or ``stop`` (None). A failure raises once it has held for the mode's grace."""
        ns, runtime, rd = handle.namespace, handle.runtime, self._mode.readiness
        wanted = {objs.FUNCTION: handle.name, **objs.owner_labels(self._s)}
        sel = objs.selector(wanted)
        what = f"{rd.kind} list {ns} [{sel}]"
        failing_since: dict[str, float] = {}

        def list_objects(*args: Any, **kwargs: Any) -> Any:
            # No return type and no docstring: the watch then yields plain dicts
            # instead of strict typed models (see _make_mode).
            return rd.list(*args, **kwargs)

        while not stop.is_set():
            w = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for event in w.stream(  # type: ignore[no-untyped-call]
                    list_objects,
                    *rd.args(ns),
                    label_selector=sel,
                    _request_timeout=(self._s.api_timeout_s, self._s.ready_poll_s),
                ):
                    if stop.is_set():
                        return None
                    obj = event.get("raw_object") or {}
                    meta = obj.get("metadata") or {}
                    obj_name = str(meta.get("name"))
                    if event.get("type") == "DELETED" or not objs.matches(
                        meta.get("labels"), wanted
                    ):
                        continue
                    failure = rd.failure(obj)
                    if failure is None:
                        failing_since.pop(obj_name, None)
                    else:
                        since = failing_since.setdefault(obj_name, time.monotonic())
                        if time.monotonic() - since >= rd.failure_grace_s:
                            raise DeployFailure(runtime, f"{rd.kind} {ns}/{obj_name}: {failure}")
                        continue  # maybe transient: look again on the next event or re-watch
                    if rd.ready(obj):
                        return dict(obj)
            except urllib3.exceptions.ReadTimeoutError:
                continue  # nothing happened for ready_poll_s: look at `stop`, re-watch
            except ApiException as exc:
                if exc.status == 410:  # watch expired: start again from the current state
                    continue
                raise KubernetesApiError(runtime, what, int(exc.status or 0), _reason(exc)) from exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                # A blip of the API server must not fail a deployment that the timeout
                # still allows; wait a little, then watch again.
                log.info("watch interrupted; retrying", object=handle.name, error=str(exc))
                stop.wait(self._s.ready_poll_s)
        return None

    async def _wait_ready(self, handle: FunctionHandle) -> objs.Manifest:
        stop = threading.Event()
        try:
            ready = await asyncio.to_thread(self._watch_until_ready, handle, stop)
        finally:
            stop.set()  # the thread notices within ready_poll_s
        if ready is None:  # the watch stops early only when told to, on the way out
            raise BackendError(handle.runtime, f"readiness watch of {handle.name} stopped")
        return ready

    # ------------------------------------------------------------------ protocol

    def endpoint(self, name: str) -> str:
        """The URL of a function's Kubernetes Service (the pod modes; in Knative mode
        the endpoint comes from the Knative Service's status, see :mod:`knative`)."""
        ns, port = self._s.namespace, self._s.service_port
        if self._s.invoke_via == "dns":
            return f"http://{name}.{ns}.svc.cluster.local:{port}/"
        host = self._cfg.host.rstrip("/")
        return f"{host}/api/v1/namespaces/{ns}/services/{name}:{port}/proxy/"

    async def deploy(self, runtime: Runtime, *, timeout_s: float) -> Deployment:
        """Create the function and wait for a Ready pod; T_d is create → Ready."""
        name = self._name_factory(runtime)
        ns = self._s.namespace
        handle = FunctionHandle(
            name, ns, self._s.mode, runtime.name, objs.labels_for(self._s, runtime, name)
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(timeout_s):
                for kind, manifest in self._mode.manifests(runtime, name):
                    what = f"{kind.kind} {ns}/{name}"
                    create = self._api(runtime.name, what, kind.create, ns, manifest)
                    await self._run_to_end(create, f"stoic-create-{name}")
                ready = await self._wait_ready(handle)
                endpoint = self._mode.readiness.endpoint(name, ready)
        except TimeoutError:
            await self._remove_despite_cancel(handle)
            raise DeployTimeout(runtime.name, timeout_s) from None
        except BaseException:
            await self._remove_despite_cancel(handle)
            raise
        deploy_s = loop.time() - started
        info = {"name": name, "namespace": ns, "mode": self._s.mode}
        if self._s.mode == "knative":
            info["revision"] = str((ready.get("status") or {}).get("latestReadyRevisionName"))
        log.info("deployed", object=name, runtime=runtime.name, deploy_s=round(deploy_s, 3))
        return Deployment(
            runtime=runtime,
            deploy_s=deploy_s,
            endpoint=endpoint,
            handle=handle,
            info=info,
        )

    async def upload(self, runtime: Runtime, job: Job) -> Upload:
        """Copy the job's package from the edge store to the cloud store; T_t is the
        duration of the copy (both ends stream, so it is bounded by the uplink)."""
        if not job.package_key:
            raise BackendError(runtime.name, f"batch {job.batch_id} has no package key")
        if self._edge is None or self._cloud is None:
            raise ConfigError("kubernetes backend: upload needs both an edge and a cloud store")
        edge, cloud, key = self._edge, self._cloud, job.package_key
        subset = job.subset
        await asyncio.to_thread(self._ensure_model, edge, cloud, self.model_key(job))

        def copy() -> int:
            src = edge.open_read(key)
            try:
                return cloud.put_stream(key, src)
            finally:
                src.close()

        def cut(start: int, stop: int) -> int:
            # A chunk (share mode): only its images cross the uplink, as a package of
            # their own; spooled on disk past 8 MiB so a big chunk costs no memory.
            with tempfile.SpooledTemporaryFile(8 * 1024 * 1024) as part:
                src = edge.open_read(key)
                try:
                    write_part(src, part, start, stop)  # type: ignore[arg-type]
                finally:
                    src.close()
                part.seek(0)
                return cloud.put_stream(part_key(key, start, stop), cast(BinaryIO, part))

        loop = asyncio.get_running_loop()
        started = loop.time()
        if subset is None:
            n_bytes = await asyncio.to_thread(copy)
            return Upload(ref=key, n_bytes=n_bytes, seconds=loop.time() - started)
        n_bytes = await asyncio.to_thread(cut, *subset)
        return Upload(
            ref=part_key(key, *subset),
            n_bytes=n_bytes,
            seconds=loop.time() - started,
            subset=subset,
        )

    def _ensure_model(self, edge: PackageSource, cloud: PackageSink, key: str) -> None:
        """Copy the model that ``key`` names, with its side files (every object whose key
        starts with it: the class names), from the edge store to the cloud store where
        it is missing or of another size: the pods read it there. A model the edge does
        not have is left for the function to report (404, naming the key). Runs inside
        the first upload of each model version, so that batch's T_t includes it."""
        for k in edge.list(key):
            size = edge.size(k)
            if self._models.get(k) == size:
                continue
            try:
                present = cloud.size(k) == size
            except ObjectNotFound:
                present = False
            if not present:
                src = edge.open_read(k)
                try:
                    cloud.put_stream(k, src)
                finally:
                    src.close()
                log.info("model copied to the cloud store", key=k, bytes=size)
            self._models[k] = size

    def model_key(self, job: Job) -> str:
        return self._s.model_key_template.format(app=job.app, app_version=job.app_version)

    def _headers(self) -> dict[str, str]:
        """The API server's credentials, for the service proxy only (never sent to the
        function directly). Asked for per call: exec plugins refresh tokens."""
        if self._s.invoke_via != "proxy":
            return {}
        headers = {}
        settings = cast(dict[str, dict[str, Any]], self._cfg.auth_settings())
        for auth in settings.values():  # as the client itself does
            if auth.get("in") == "header" and auth.get("value"):
                headers[str(auth["key"]).title()] = str(auth["value"])
        return headers

    async def invoke(
        self, deployment: Deployment, job: Job, upload: Upload, *, warmup: bool = False
    ) -> Invocation:
        """POST the job to the function. Cancelling the calling task closes the HTTP
        request at once (httpx); the pod itself stops when ``teardown`` deletes it."""
        rt = deployment.runtime.name
        body: dict[str, Any] = {
            "action": "classify",  # the function's action; job.app only picks the model
            "package": upload.ref,
            "model": self.model_key(job),
            "warmup": warmup,
        }
        # A chunk: its range within the uploaded object (a part cut for it, or the
        # whole package); the results' indices are mapped back to the package's.
        offset = upload.subset[0] if upload.subset is not None else 0
        if job.subset is not None and not warmup:
            body["start"], body["stop"] = job.subset[0] - offset, job.subset[1] - offset
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            resp = await self._http.post(deployment.endpoint, json=body, headers=self._headers())
        except httpx.HTTPError as exc:
            raise InvocationError(
                rt, f"POST {deployment.endpoint}: {type(exc).__name__}: {exc}"
            ) from exc
        processing_s = loop.time() - started
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code != 200:
            msg = data.get("error") if isinstance(data, dict) else None
            raise InvocationError(
                rt, f"function answered HTTP {resp.status_code}: {msg or resp.text[:200]!r}"
            )
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise InvocationError(
                rt, f"function answered without a results list: {resp.text[:200]!r}"
            )
        raw_timings = data.get("timings") or {}
        try:
            timings = {str(k): float(v) for k, v in dict(raw_timings).items()}
        except (TypeError, ValueError):
            raise InvocationError(rt, f"function answered bad timings: {raw_timings!r}") from None
        results = data["results"]
        if offset:
            results = [
                {**r, "index": int(r["index"]) + offset}
                if isinstance(r, dict) and isinstance(r.get("index"), int)
                else r
                for r in results
            ]
        return Invocation(processing_s=processing_s, results=results, timings=timings)

    async def teardown(self, deployment: Deployment) -> None:
        """Delete the function, its objects and its pods. Idempotent."""
        handle = deployment.handle
        if not isinstance(handle, FunctionHandle):
            raise BackendError(deployment.runtime.name, "not a Kubernetes deployment")
        deleted = await self._remove(handle)
        log.info("tore down", object=handle.name, deleted=deleted)

    async def cleanup_orphans(self) -> list[str]:
        """Delete everything that carries this controller's owner labels: what a
        crashed controller left behind. Call once at start-up, before deploying."""
        deleted = await self._delete_labelled("(orphans)", objs.owner_labels(self._s))
        if deleted:
            log.warning("deleted orphaned objects", count=len(deleted), objects=deleted)
        return deleted
