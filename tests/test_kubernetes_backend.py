"""The Kubernetes backend against the ``kmock`` Kubernetes emulator on loopback.

The emulator stores what the backend creates but runs no controllers, so each test
plays them itself (:func:`kubelet`): after a delay of its choosing it creates the
function's pod, labelled as the pod template says, first not Ready and then Ready; in
Knative mode it then also plays Knative's controller and writes the Knative Service's
status (``Ready`` condition, revision, address), as Knative does once the revision's
pod is Ready. The backend watches for those same conditions as on a real cluster, so
the measured T_d must follow that delay.

The deploy, failure, clean-up and RBAC tests run in every mode (``MODES``): the
default ``deployment``, ``knative`` and the legacy ``kubeless``.

Invocation is tested two ways: through the API server's service-proxy path served by
kmock (a reaction on ``POST .../services/<svc>:<port>/proxy/`` that plays the
function), and by in-cluster DNS with an ``httpx.MockTransport`` injected into the
backend.

Delays are real but short (0.2-0.4 s); assertions are lower bounds with tolerance.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import jsonschema
import kmock as km
import kubernetes_validate
import pytest
import yaml
from kubernetes import client

from stoic.backends import k8s_objects as objs
from stoic.backends import knative
from stoic.backends.base import Deployment, RuntimeBackend, Upload
from stoic.backends.kubernetes import FunctionHandle, KubernetesBackend
from stoic.clock import WallClock
from stoic.errors import (
    ConfigError,
    DeployFailure,
    DeployTimeout,
    InvocationError,
    KubernetesApiError,
    ObjectNotFound,
)
from stoic.schedule.execute.keepalive import KeepAliveOptions
from stoic.schedule.execute.legs import release_on
from stoic.schedule.execute.warm import WarmPool
from stoic.settings import KubernetesSettings
from stoic.values import Job, Runtime, RuntimeKind
from tests.support.controller import until
from tests.support.paths import REPO

NS = "stoic-test"
CPU = Runtime("cpu", RuntimeKind.CPU, 0, "kubernetes")
GPU1 = Runtime("gpu1", RuntimeKind.GPU, 1, "kubernetes")
GPU2 = Runtime("gpu2", RuntimeKind.GPU, 2, "kubernetes")
FUNCTIONS = f"/apis/kubeless.io/v1beta1/namespaces/{NS}/functions"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
KSVCS = f"/apis/serving.knative.dev/v1/namespaces/{NS}/services"
PODS = f"/api/v1/namespaces/{NS}/pods"
JOB = Job("b1", n_images=3, n_bytes=100, package_key="packages/b1.tar")
UPLOAD = Upload(ref="packages/b1.tar", n_bytes=100, seconds=0.0)
K8S_VERSION = "1.30.0"
MODES = ["deployment", "knative", "kubeless"]


class Owner(NamedTuple):
    """What one mode creates, as the emulator (``resource``, collection ``path``) and
    the backend's messages (``kind``) name it."""

    resource: str
    path: str
    kind: str


OWNERS = {
    "deployment": Owner("deployments.apps", DEPLOYMENTS, "Deployment"),
    "knative": Owner("services.serving.knative.dev", KSVCS, "Service.serving.knative.dev"),
    "kubeless": Owner("functions.kubeless.io", FUNCTIONS, "Function"),
}


def make_settings(**kw: Any) -> KubernetesSettings:
    base: dict[str, Any] = {
        "namespace": NS,
        "controller_id": "ctl-a",
        "ready_poll_s": 0.1,
        "api_timeout_s": 5.0,
        "invoke_timeout_s": 5.0,
        "node_selector": {"stoic.io/pool": "cloud"},
        "gpu_node_selector": {"nvidia.com/gpu.present": "true"},
        "runtime_node_selectors": {"gpu2": {"gpu-count": "2"}},
        "knative_ready_false_grace_s": 0.3,
    }
    return KubernetesSettings(**{**base, **kw})


def fixed_name(runtime: Runtime) -> str:
    return f"stoic-{runtime.name}-t1"


BackendFactory = Callable[..., KubernetesBackend]


@pytest.fixture
async def make_backend(kmock: km.KubernetesEmulator) -> AsyncIterator[BackendFactory]:
    made: list[KubernetesBackend] = []

    def factory(
        *, name_factory: Callable[[Runtime], str] = fixed_name, **kw: Any
    ) -> KubernetesBackend:
        transport = kw.pop("http_transport", None)
        stores = kw.pop("stores", (None, None))
        cfg = client.Configuration()
        cfg.host = str(kmock.url).rstrip("/")
        cfg.api_key = {"authorization": "secret-token"}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        backend = KubernetesBackend(
            make_settings(**kw),
            api_config=cfg,
            http_transport=transport,
            name_factory=name_factory,
            edge_store=stores[0],
            cloud_store=stores[1],
        )
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        await backend.aclose()


def resource_name(res: Any) -> str:
    """``plural`` for the core group, else ``plural.group`` (as RBAC spells it)."""
    return str(res.plural) + (f".{res.group}" if res.group else "")


def live(kmock: km.KubernetesEmulator) -> list[tuple[str, str | None, str]]:
    """Every object in the emulator that is not deleted: (resource, namespace, name)."""
    return sorted(
        (resource_name(res), ns, name)
        for (res, ns, name), obj in kmock.objects.items()
        if not obj.deleted
    )


def stored(kmock: km.KubernetesEmulator, resource: str, name: str) -> dict[str, Any]:
    for (res, _ns, n), obj in kmock.objects.items():
        if resource_name(res) == resource and n == name and not obj.deleted:
            return dict(obj.raw)
    raise AssertionError(f"{resource}/{name} not in the emulator: {live(kmock)}")


async def appeared(kmock: km.KubernetesEmulator, mode: str, name: str) -> None:
    """Wait for the backend to create its owner object: watch it on the emulator."""
    async with kmock.get(f"{OWNERS[mode].path}?watch=true") as resp:
        async for line in resp.content:
            if line.strip() and json.loads(line)["object"]["metadata"]["name"] == name:
                return


def template_of(mode: str, owner: dict[str, Any]) -> dict[str, Any]:
    """The pod template inside the owner object."""
    if mode == "kubeless":
        return dict(owner["spec"]["deployment"]["spec"]["template"])
    return dict(owner["spec"]["template"])


def knative_status(name: str, ready: str = "True", reason: str = "") -> dict[str, Any]:
    """The status Knative's controller writes on a Service (revision 1 of ``name``)."""
    url = f"http://{name}.{NS}.svc.cluster.local"
    cond = {"type": "Ready", "status": ready, **({"reason": reason} if reason else {})}
    status: dict[str, Any] = {
        "observedGeneration": 1,
        "conditions": [
            {"type": "ConfigurationsReady", "status": ready},
            {"type": "RoutesReady", "status": ready},
            cond,
        ],
        "latestCreatedRevisionName": f"{name}-00001",
    }
    if ready == "True":
        status |= {
            "latestReadyRevisionName": f"{name}-00001",
            "url": url,
            "address": {"url": url},
        }
    return status


async def kubelet(
    kmock: km.KubernetesEmulator,
    mode: str,
    name: str,
    *,
    delay_s: float,
    ready: bool = True,
    pod_status: dict[str, Any] | None = None,
    ksvc_status: dict[str, Any] | None = None,
) -> None:
    """Play the controllers and the kubelet: once the owner of ``name`` exists, create
    its pod (not Ready), wait ``delay_s``, then mark it Ready (or ``pod_status``). In
    Knative mode, then write the Knative Service's status as Knative does (Ready once
    the pod is; or ``ksvc_status``)."""
    await appeared(kmock, mode, name)
    owner = OWNERS[mode]
    labels = template_of(mode, stored(kmock, owner.resource, name))["metadata"]["labels"]
    pod_name = f"{name}-pod"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": NS, "labels": labels},
        "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]},
    }
    async with kmock.post(PODS, json=pod) as resp:
        assert resp.status < 300
    if mode == "knative":
        unknown = knative_status(name, "Unknown", "RevisionMissing")
        async with kmock.patch(f"{KSVCS}/{name}", json={"status": unknown}) as resp:
            assert resp.status < 300
    await asyncio.sleep(delay_s)
    patch = pod_status or (
        {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        if ready
        else {"phase": "Running"}
    )
    async with kmock.patch(f"{PODS}/{pod_name}", json={"status": patch}) as resp:
        assert resp.status < 300
    if mode == "knative" and (ready or ksvc_status):
        status = ksvc_status or knative_status(name)
        async with kmock.patch(f"{KSVCS}/{name}", json={"status": status}) as resp:
            assert resp.status < 300


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


async def deploy_with_kubelet(
    kmock: km.KubernetesEmulator, backend: KubernetesBackend, runtime: Runtime, delay_s: float
) -> Deployment:
    mode = backend._s.mode
    play = asyncio.create_task(kubelet(kmock, mode, fixed_name(runtime), delay_s=delay_s))
    try:
        return await backend.deploy(runtime, timeout_s=10)
    finally:
        await play


def validate_owner(mode: str, owner: dict[str, Any]) -> None:
    """The stored owner object is valid for its API: Kubernetes' own schemas (strict),
    the kubeless Function schema, the Knative Service schema; pod specs inside custom
    objects are validated as Kubernetes objects too."""
    if mode == "deployment":
        kubernetes_validate.validate(owner, K8S_VERSION, strict=True)
        return
    schema = objs.FUNCTION_SCHEMA if mode == "kubeless" else knative.SERVICE_SCHEMA
    owner = {k: v for k, v in owner.items() if k != "status"}  # written by the test
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(owner)]
    assert not errors, errors
    template = template_of(mode, owner)
    spec = knative.as_pod_spec(template["spec"]) if mode == "knative" else template["spec"]
    as_deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": template["metadata"]["labels"]},
            "template": {"metadata": template["metadata"], "spec": spec},
        },
    }
    kubernetes_validate.validate(as_deployment, K8S_VERSION, strict=True)


# --------------------------------------------------------------------- deploy


@pytest.mark.parametrize("runtime", [CPU, GPU1, GPU2], ids=lambda r: r.name)
@pytest.mark.parametrize("mode", MODES)
async def test_deploy_measures_time_to_ready_and_teardown_empties(
    kmock: km.KubernetesEmulator, make_backend: BackendFactory, mode: str, runtime: Runtime
) -> None:
    backend = make_backend(mode=mode)
    assert isinstance(backend, RuntimeBackend)
    dep = await deploy_with_kubelet(kmock, backend, runtime, delay_s=0.3)
    name = f"stoic-{runtime.name}-t1"

    assert 0.3 <= dep.deploy_s < 5.0
    assert dep.info["mode"] == mode
    service = f"{name}-00001-private:80" if mode == "knative" else f"{name}:8080"
    assert dep.endpoint == (
        f"{str(kmock.url).rstrip('/')}/api/v1/namespaces/{NS}/services/{service}/proxy/"
    )
    owner = stored(kmock, OWNERS[mode].resource, name)
    validate_owner(mode, owner)
    pod_spec = template_of(mode, owner)["spec"]
    box = pod_spec["containers"][0]
    limits = box["resources"]["limits"]
    assert box["resources"]["requests"] == {"cpu": "1000m", "memory": "2048Mi"}
    if runtime.gpus:
        assert limits == {"cpu": "2000m", "memory": "4096Mi", "nvidia.com/gpu": str(runtime.gpus)}
        assert box["image"] == "ghcr.io/stoic-project/stoic-function-gpu:0.1.0"
        assert pod_spec["nodeSelector"]["nvidia.com/gpu.present"] == "true"
        assert pod_spec["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    else:
        assert limits == {"cpu": "2000m", "memory": "4096Mi"}
        assert box["image"] == "ghcr.io/stoic-project/stoic-function-cpu:0.1.0"
        assert "tolerations" not in pod_spec
        assert "nvidia.com/gpu.present" not in pod_spec["nodeSelector"]
    assert pod_spec["nodeSelector"]["stoic.io/pool"] == "cloud"
    assert ("gpu-count" in pod_spec["nodeSelector"]) == (runtime.name == "gpu2")
    # Restricted Pod Security Standard, probes on the function's /healthz.
    sc = box["securityContext"]
    assert sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True
    assert box["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod_spec["automountServiceAccountToken"] is False
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert box[probe]["httpGet"]["path"] == "/healthz"
        assert ("port" in box[probe]["httpGet"]) == (mode != "knative")
    assert box["startupProbe"]["failureThreshold"] * box["startupProbe"]["periodSeconds"] == 600
    if mode == "knative":
        template = owner["spec"]["template"]
        assert template["metadata"]["annotations"] == {
            "autoscaling.knative.dev/min-scale": "1",
            "autoscaling.knative.dev/max-scale": "1",
        }
        assert (template["spec"]["containerConcurrency"], template["spec"]["timeoutSeconds"]) == (
            1,
            600,
        )
        assert owner["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
        assert dep.info["revision"] == f"{name}-00001"

    await backend.teardown(dep)
    assert live(kmock) == []
    await backend.teardown(dep)  # idempotent


async def test_deployment_mode_creates_valid_deployment_and_service(
    kmock: km.KubernetesEmulator, make_backend: BackendFactory
) -> None:
    backend = make_backend(invoke_via="dns")  # deployment is the default mode
    dep = await deploy_with_kubelet(kmock, backend, GPU1, delay_s=0.2)

    assert dep.deploy_s >= 0.2
    assert dep.endpoint == f"http://stoic-gpu1-t1.{NS}.svc.cluster.local:8080/"
    assert live(kmock) == [
        ("deployments.apps", NS, "stoic-gpu1-t1"),
        ("pods", NS, "stoic-gpu1-t1-pod"),
        ("services", NS, "stoic-gpu1-t1"),
    ]
    for resource in ("deployments.apps", "services"):
        kubernetes_validate.validate(
            stored(kmock, resource, "stoic-gpu1-t1"), K8S_VERSION, strict=True
        )
    assert stored(kmock, "services", "stoic-gpu1-t1")["spec"]["ports"][0]["port"] == 8080

    await backend.teardown(dep)
    assert live(kmock) == []


async def test_knative_mode_by_dns_calls_the_services_address(
    kmock: km.KubernetesEmulator, make_backend: BackendFactory
) -> None:
    backend = make_backend(mode="knative", invoke_via="dns")
    dep = await deploy_with_kubelet(kmock, backend, CPU, delay_s=0.05)
    assert dep.endpoint == f"http://stoic-cpu-t1.{NS}.svc.cluster.local/"
    assert live(kmock) == [
        ("pods", NS, "stoic-cpu-t1-pod"),
        ("services.serving.knative.dev", NS, "stoic-cpu-t1"),
    ]
    await backend.teardown(dep)
    assert live(kmock) == []


@pytest.mark.parametrize("mode", MODES)
async def test_function_that_never_becomes_ready_times_out_and_leaves_nothing(
    kmock: km.KubernetesEmulator, make_backend: BackendFactory, mode: str
) -> None:
    backend = make_backend(mode=mode)
    play = asyncio.create_task(kubelet(kmock, mode, "stoic-cpu-t1", delay_s=0, ready=False))
    with pytest.raises(DeployTimeout) as err:
        await backend.deploy(CPU, timeout_s=0.4)
    await play
    assert err.value.runtime == "cpu" and err.value.timeout_s == 0.4
    assert live(kmock) == []


@pytest.mark.parametrize("mode", MODES)
async def test_nothing_happening_at_all_times_out(
    kmock: km.KubernetesEmulator, make_backend: BackendFactory, mode: str
) -> None:
    backend = make_backend(mode=mode)
    with pytest.raises(DeployTimeout):
        await backend.deploy(CPU, timeout_s=0.3)
    assert live(kmock) == []


FATAL_POD = {
    "phase": "Pending",
    "containerStatuses": [
        {"name": "function", "state": {"waiting": {"reason": "InvalidImageName"}}}
    ],
}


@pytest.mark.parametrize("mode", MODES)
async def test_fatal_state_is_a_deploy_failure(
    kmock: km.KubernetesEmulator, make_backend: BackendFactory, mode: str
) -> None:
    """A pod that cannot start fails the pod modes at once; Knative reports the same
    as ``Ready=False`` on its Service, believed once it has held for the grace."""
    backend = make_backend(mode=mode)
    failed = knative_status("stoic-cpu-t1", "False", "RevisionFailed")
    failed["conditions"][-1]["message"] = "Unable to fetch image: InvalidImageName"
    play = asyncio.create_task(
        kubelet(
            kmock,
            mode,
            "stoic-cpu-t1",
            delay_s=0.05,
            pod_status=FATAL_POD,
            ksvc_status=failed,
        )
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeployFailure, match="InvalidImageName") as err:
        await backend.deploy(CPU, timeout_s=5)
    await play
    if mode == "knative":
        assert "RevisionFailed" in str(err.value)
        assert loop.time() - started >= 0.3  # knative_ready_false_grace_s
    assert live(kmock) == []


async def test_knative_ready_false_for_less_than_the_grace_is_not_a_failure(
    kmock: km.KubernetesEmulator, make_backend: BackendFactory
) -> None:
    """Knative may say ``Ready=False`` while it reconciles; a Service that turns Ready
    within ``knative_ready_false_grace_s`` deploys normally."""
    backend = make_backend(mode="knative", knative_ready_false_grace_s=5.0)
    name = "stoic-cpu-t1"

    async def flap() -> None:
        await kubelet(
            kmock, "knative", name, delay_s=0.05, ksvc_status=knative_status(name, "False", "X")
        )
        await asyncio.sleep(0.2)
        async with kmock.patch(f"{KSVCS}/{name}", json={"status": knative_status(name)}) as r:
            assert r.status < 300

    play = asyncio.create_task(flap())
    dep = await backend.deploy(CPU, timeout_s=5)
    await play
    assert dep.deploy_s >= 0.25
    await backend.teardown(dep)
    assert live(kmock) == []


def test_knative_readiness_reads_the_ready_condition() -> None:
    name = "stoic-cpu-x"
    ready = {"metadata": {"name": name, "generation": 2}, "status": knative_status(name)}
    ready["status"]["observedGeneration"] = 2
    assert knative.service_ready(ready)
    assert knative.service_failure(ready) is None
    stale = {**ready, "metadata": {"name": name, "generation": 3}}
    assert not knative.service_ready(stale)  # status is of an older spec
    no_address = {
        "status": {k: v for k, v in ready["status"].items() if k not in ("url", "address")}
    }
    assert not knative.service_ready(no_address)
    unknown = {"status": knative_status(name, "Unknown", "RevisionMissing")}
    assert not knative.service_ready(unknown) and knative.service_failure(unknown) is None
    failed = {"status": knative_status(name, "False", "ProgressDeadlineExceeded")}
    assert not knative.service_ready(failed)
    assert knative.service_failure(failed) == "Ready=False: ProgressDeadlineExceeded"
    assert not knative.service_ready({"status": {}}) and knative.service_failure({}) is None


@pytest.mark.parametrize("mode", MODES)
async def test_cancelled_deploy_cleans_up(
    kmock: km.KubernetesEmulator, make_backend: BackendFactory, mode: str
) -> None:
    backend = make_backend(mode=mode)
    task = asyncio.create_task(backend.deploy(GPU2, timeout_s=10))
    await appeared(kmock, mode, "stoic-gpu2-t1")
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert live(kmock) == []


@pytest.mark.parametrize(
    ("code", "reason"), [(403, "Forbidden"), (409, "AlreadyExists"), (500, "InternalError")]
)
@pytest.mark.parametrize("mode", MODES)
async def test_api_error_on_create_names_the_object(
    kmock: km.KubernetesEmulator, make_backend: BackendFactory, mode: str, code: int, reason: str
) -> None:
    owner = OWNERS[mode]
    kmock[f"post {owner.path}"] << code << status_body(code, reason, f"injected {code}")
    backend = make_backend(mode=mode)
    with pytest.raises(KubernetesApiError) as err:
        await backend.deploy(GPU1, timeout_s=5)
    assert err.value.status == code
    assert err.value.obj == f"{owner.kind} {NS}/stoic-gpu1-t1"
    assert err.value.runtime == "gpu1"
    assert f"injected {code}" in err.value.reason
    assert f"{owner.kind} {NS}/stoic-gpu1-t1" in str(err.value)
    # The emulator records the create even when a reaction answers an error; the
    # backend's clean-up must still leave nothing of ours behind.
    assert live(kmock) == []


async def test_api_error_on_service_create_removes_the_deployment(
    kmock: km.KubernetesEmulator, make_backend: BackendFactory
) -> None:
    path = f"/api/v1/namespaces/{NS}/services"
    kmock[f"post {path}"] << 403 << status_body(403, "Forbidden", "services are forbidden")
    backend = make_backend(mode="deployment")
    with pytest.raises(KubernetesApiError) as err:
        await backend.deploy(CPU, timeout_s=5)
    assert (err.value.status, err.value.obj) == (403, f"Service {NS}/stoic-cpu-t1")
    assert live(kmock) == []


@pytest.mark.parametrize("mode", MODES)
async def test_api_error_on_watch_names_the_watched_objects(
    kmock: km.KubernetesEmulator, make_backend: BackendFactory, mode: str
) -> None:
    path, kind = (KSVCS, OWNERS[mode].kind) if mode == "knative" else (PODS, "Pod")
    (
        kmock[km.method.GET, path, km.params(watch="true")]
        << 403
        << status_body(403, "Forbidden", "cannot watch")
    )
    backend = make_backend(mode=mode)
    with pytest.raises(KubernetesApiError) as err:
        await backend.deploy(CPU, timeout_s=5)
    assert err.value.status == 403
    assert err.value.obj.startswith(f"{kind} list {NS} [")
    assert "stoic.io/function=stoic-cpu-t1" in err.value.obj
    assert live(kmock) == []


# --------------------------------------------------------------------- orphans


@pytest.mark.parametrize("mode", MODES)
async def test_cleanup_orphans_deletes_only_this_controllers_objects(
    kmock: km.KubernetesEmulator, make_backend: BackendFactory, mode: str
) -> None:
    crashed = make_backend(mode=mode, controller_id="ctl-a")
    await deploy_with_kubelet(kmock, crashed, GPU1, delay_s=0.05)
    other = make_backend(
        mode=mode, controller_id="ctl-b", name_factory=lambda rt: f"stoic-{rt.name}-other"
    )
    play = asyncio.create_task(kubelet(kmock, mode, "stoic-cpu-other", delay_s=0.05))
    await other.deploy(CPU, timeout_s=10)
    await play
    # "crashed" never tears down; a new controller with the same id starts.
    restarted = make_backend(mode=mode, controller_id="ctl-a")
    deleted = await restarted.cleanup_orphans()

    owners = {
        "deployment": ["Deployment", "Service"],
        "knative": ["Service.serving.knative.dev"],
        "kubeless": ["Function"],
    }[mode]
    assert sorted(deleted) == sorted(
        [f"{kind} {NS}/stoic-gpu1-t1" for kind in owners] + [f"Pod {NS}/stoic-gpu1-t1-pod"]
    )
    resources = {
        "deployment": ["deployments.apps", "services"],
        "knative": ["services.serving.knative.dev"],
        "kubeless": ["functions.kubeless.io"],
    }[mode]
    assert live(kmock) == sorted(
        [(r, NS, "stoic-cpu-other") for r in resources] + [("pods", NS, "stoic-cpu-other-pod")]
    )
    assert await restarted.cleanup_orphans() == []


@pytest.mark.parametrize("mode", MODES)
async def test_start_cleans_orphans_as_the_controller_calls_it(
    kmock: km.KubernetesEmulator, make_backend: BackendFactory, mode: str
) -> None:
    crashed = make_backend(mode=mode)
    await deploy_with_kubelet(kmock, crashed, GPU1, delay_s=0.05)
    assert live(kmock) != []
    await make_backend(mode=mode).start()  # the controller calls start() on every backend
    assert live(kmock) == []


@pytest.mark.parametrize("mode", ["deployment", "knative"])
async def test_a_warm_pod_goes_when_its_keep_alive_ends_or_at_the_next_start(
    kmock: km.KubernetesEmulator, make_backend: BackendFactory, mode: str
) -> None:
    backend = make_backend(mode=mode)

    def pool(keep_s: float) -> WarmPool:
        return WarmPool(
            KeepAliveOptions(enabled=True, fixed_s=keep_s),
            clock=WallClock(),
            cold_s=lambda _: 30.0,
            release=lambda rt, dep: release_on({rt.name: backend}, rt, dep),
        )

    # Its keep-alive runs out: the pool deletes its objects.
    short = pool(0.05)
    assert short.park(GPU1, await deploy_with_kubelet(kmock, backend, GPU1, delay_s=0.05))
    assert live(kmock) != []
    await until(lambda: short.expired == 1 and live(kmock) == [])
    # The daemon dies with one warm (its pool never closed): the next start deletes it.
    long = pool(3600.0)
    assert long.park(GPU1, await deploy_with_kubelet(kmock, backend, GPU1, delay_s=0.05))
    assert long.warm() == {"gpu1"} and live(kmock) != []
    await make_backend(mode=mode).start()
    assert live(kmock) == []


# --------------------------------------------------------------------- invoke


GOOD = {
    "results": [{"image": "a.jpg", "label": "deer", "score": 0.9}],
    "timings": {
        "download_s": 0.1,
        "model_load_s": 0.2,
        "decode_s": 0.05,
        "processing_s": 0.3,
        "total_s": 0.65,
    },
    "n_images": 1,
    "n_failed": 0,
}


def deployment_for(backend: KubernetesBackend, runtime: Runtime) -> Deployment:
    name = fixed_name(runtime)
    return Deployment(
        runtime,
        1.0,
        endpoint=backend.endpoint(name),
        handle=FunctionHandle(name, NS, "kubeless", runtime.name, {}),
    )


async def test_invoke_through_the_service_proxy(
    kmock: km.KubernetesEmulator, make_backend: BackendFactory
) -> None:
    proxy = f"/api/v1/namespaces/{NS}/services/stoic-gpu1-t1:8080/proxy/"
    seen: list[Any] = []

    def function(request: km.Request) -> dict[str, Any]:
        seen.append((request.data, request.headers.get("Authorization")))
        return GOOD

    kmock[f"post {proxy}"] << function
    backend = make_backend()
    inv = await backend.invoke(deployment_for(backend, GPU1), JOB, UPLOAD, warmup=True)

    assert seen == [
        (
            {
                "action": "classify",
                "package": "packages/b1.tar",
                "model": "models/classify/1/model.keras",
                "warmup": True,
            },
            "Bearer secret-token",
        )
    ]
    assert inv.results == GOOD["results"]
    assert inv.timings == GOOD["timings"]
    assert inv.processing_s >= 0


@pytest.mark.parametrize(
    ("code", "error"), [(404, "package not found: 'packages/b1.tar'"), (400, "bad request")]
)
async def test_function_errors_become_invocation_errors(
    kmock: km.KubernetesEmulator, make_backend: BackendFactory, code: int, error: str
) -> None:
    proxy = f"/api/v1/namespaces/{NS}/services/stoic-cpu-t1:8080/proxy/"
    kmock[f"post {proxy}"] << code << {"error": error}
    backend = make_backend()
    with pytest.raises(InvocationError) as err:
        await backend.invoke(deployment_for(backend, CPU), JOB, UPLOAD)
    assert err.value.runtime == "cpu"
    assert str(code) in str(err.value) and error in str(err.value)


def dns_backend(make_backend: BackendFactory, handler: Any) -> KubernetesBackend:
    return make_backend(invoke_via="dns", http_transport=httpx.MockTransport(handler))


async def test_invoke_by_dns_sends_no_credentials(make_backend: BackendFactory) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=GOOD)

    backend = dns_backend(make_backend, handler)
    inv = await backend.invoke(deployment_for(backend, CPU), JOB, UPLOAD)
    assert str(seen[0].url) == f"http://stoic-cpu-t1.{NS}.svc.cluster.local:8080/"
    assert "authorization" not in seen[0].headers
    assert json.loads(seen[0].content)["warmup"] is False
    assert inv.results == GOOD["results"]


async def test_request_body_is_what_the_function_accepts(make_backend: BackendFactory) -> None:
    """Contract with stoic/function: its own parser accepts our body, and the model
    key follows its convention (stoic.storage.package.model_key)."""
    from stoic.function.handler import ClassifyRequest, parse_request
    from stoic.storage.package import model_key

    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(200, json=GOOD)

    backend = dns_backend(make_backend, handler)
    await backend.invoke(deployment_for(backend, GPU2), JOB, UPLOAD, warmup=True)
    parsed = parse_request(bodies[0])
    assert isinstance(parsed, ClassifyRequest)
    assert (parsed.package, parsed.model, parsed.warmup) == (
        "packages/b1.tar",
        model_key(JOB.app, JOB.app_version),
        True,
    )


@pytest.mark.parametrize(
    ("response", "match"),
    [
        (httpx.Response(200, text="<html>not json"), "without a results list"),
        (httpx.Response(200, json={"timings": {}}), "without a results list"),
        (httpx.Response(200, json={"results": [], "timings": {"x": "y"}}), "bad timings"),
        (httpx.Response(502, text="Bad Gateway"), "HTTP 502"),
    ],
)
async def test_malformed_answers_become_invocation_errors(
    make_backend: BackendFactory, response: httpx.Response, match: str
) -> None:
    backend = dns_backend(make_backend, lambda request: response)
    with pytest.raises(InvocationError, match=match):
        await backend.invoke(deployment_for(backend, CPU), JOB, UPLOAD)


async def test_unreachable_function_is_an_invocation_error(make_backend: BackendFactory) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    backend = dns_backend(make_backend, handler)
    with pytest.raises(InvocationError, match="ConnectError"):
        await backend.invoke(deployment_for(backend, CPU), JOB, UPLOAD)


async def test_cancelling_invoke_abandons_the_request(make_backend: BackendFactory) -> None:
    started, ended = asyncio.Event(), asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        started.set()
        try:
            await asyncio.Event().wait()  # a function that never answers
        finally:
            ended.set()
        raise AssertionError("unreachable")

    backend = dns_backend(make_backend, handler)
    task = asyncio.create_task(backend.invoke(deployment_for(backend, CPU), JOB, UPLOAD))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended.is_set()  # the request itself was cancelled, not left running


# --------------------------------------------------------------------- upload


class FakeStore:
    """The object-store methods the backend uses, in memory; ``puts`` counts writes."""

    def __init__(self, objects: dict[str, bytes] | None = None) -> None:
        self.objects = dict(objects or {})
        self.puts: list[str] = []

    def open_read(self, key: str) -> io.BytesIO:
        if key not in self.objects:
            raise ObjectNotFound(key, "fake")
        return io.BytesIO(self.objects[key])

    def put_stream(self, key: str, fileobj: Any) -> int:
        data = fileobj.read()
        self.objects[key] = data
        self.puts.append(key)
        return len(data)

    def list(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    def size(self, key: str) -> int:
        if key not in self.objects:
            raise ObjectNotFound(key, "fake")
        return len(self.objects[key])


async def test_upload_copies_the_package_to_the_cloud_store(make_backend: BackendFactory) -> None:
    edge, cloud = FakeStore({"packages/b1.tar": b"x" * 12345}), FakeStore()
    backend = make_backend(stores=(edge, cloud))
    up = await backend.upload(CPU, JOB)
    assert (up.ref, up.n_bytes) == ("packages/b1.tar", 12345)
    assert up.seconds >= 0
    assert cloud.objects == {"packages/b1.tar": b"x" * 12345}


MODEL = "models/classify/1/model.keras"


async def test_upload_brings_the_model_to_the_cloud_store_once(
    make_backend: BackendFactory,
) -> None:
    """The pods read the model the request names from the cloud store: the first upload
    copies it there with its class names, later ones do not, and a model replaced at the
    edge (another size) is copied again."""
    package = {"packages/b1.tar": b"p" * 10}
    model = {MODEL: b"m" * 50, f"{MODEL}.classes.json": b'["a", "b"]'}
    other = {"models/classify/2/model.keras": b"v2"}
    edge, cloud = FakeStore({**package, **model, **other}), FakeStore()
    backend = make_backend(stores=(edge, cloud))
    await backend.upload(CPU, JOB)
    assert cloud.objects == {**package, **model}
    assert sorted(cloud.puts) == sorted([*package, *model])
    await backend.upload(CPU, JOB)
    assert cloud.puts.count(MODEL) == 1
    edge.objects[MODEL] = b"M" * 60
    await backend.upload(CPU, JOB)
    assert cloud.objects[MODEL] == b"M" * 60 and cloud.puts.count(f"{MODEL}.classes.json") == 1

    already = FakeStore(dict(model))  # a cloud store that has it: nothing is copied
    backend = make_backend(stores=(FakeStore({**package, **model}), already))
    await backend.upload(CPU, JOB)
    assert already.puts == ["packages/b1.tar"]


async def test_upload_of_a_missing_package_raises(make_backend: BackendFactory) -> None:
    backend = make_backend(stores=(FakeStore(), FakeStore()))
    with pytest.raises(ObjectNotFound):
        await backend.upload(CPU, JOB)


# --------------------------------------------------------------------- config


async def test_from_settings_reads_a_kubeconfig(
    kmock: km.KubernetesEmulator, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": str(kmock.url).rstrip("/")}}],
                "users": [{"name": "u", "user": {"token": "kubeconfig-token"}}],
                "contexts": [{"name": "edge", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "edge",
            }
        )
    )
    backend = KubernetesBackend.from_settings(make_settings(kubeconfig=kubeconfig))
    try:
        assert await backend.cleanup_orphans() == []
        assert backend._headers() == {"Authorization": "Bearer kubeconfig-token"}
    finally:
        await backend.aclose()
    assert any(r.resource is not None and r.resource.plural == "deployments" for r in kmock)


def test_from_settings_names_a_missing_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kubernetes\.kubeconfig"):
        KubernetesBackend.from_settings(make_settings(kubeconfig=tmp_path / "nope"))


# --------------------------------------------------------------------- RBAC


def k8s_verb(request: km.Request) -> tuple[str, str]:
    """The (resource, verb) pair RBAC checks for one recorded API request."""
    res = request.resource
    assert res is not None, request
    resource = str(res.plural) + (f".{res.group}" if res.group else "")
    if request.subresource:
        resource += f"/{request.subresource}"
    method = str(request.method.value if hasattr(request.method, "value") else request.method)
    if method == "GET":
        verb = (
            "watch"
            if request.params.get("watch") == "true"
            else ("get" if request.name else "list")
        )
    elif method == "DELETE":
        verb = "delete" if request.name else "deletecollection"
    else:
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update"}[method]
    return resource, verb


def role_grants() -> set[tuple[str, str]]:
    docs = list(yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text()))
    roles = [d for d in docs if d and d["kind"] == "Role"]
    assert len(roles) == 1
    grants = set()
    for rule in roles[0]["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                plural, _, sub = resource.partition("/")
                name = plural + (f".{group}" if group else "") + (f"/{sub}" if sub else "")
                for verb in rule["verbs"]:
                    grants.add((name, verb))
    return grants


async def test_role_grants_exactly_what_the_backend_uses(
    kmock: km.KubernetesEmulator, make_backend: BackendFactory
) -> None:
    """Drive every code path that talks to the API server, in every mode, and compare
    the (resource, verb) pairs the emulator saw with what deploy/rbac.yaml grants."""
    kmock[f"post /api/v1/namespaces/{NS}/services/stoic-cpu-t1:8080/proxy/"] << GOOD
    kmock[f"post /api/v1/namespaces/{NS}/services/stoic-cpu-t1-00001-private:80/proxy/"] << GOOD
    for mode in MODES:
        backend = make_backend(mode=mode)
        await backend.cleanup_orphans()
        dep = await deploy_with_kubelet(kmock, backend, CPU, delay_s=0.01)
        await backend.invoke(dep, JOB, UPLOAD)
        await backend.teardown(dep)
        with pytest.raises(DeployTimeout):
            await backend.deploy(CPU, timeout_s=0.2)
        await make_backend(mode=mode).cleanup_orphans()
    used = {
        k8s_verb(r) for r in kmock if not str(r.headers.get("User-Agent", "")).startswith("kmock/")
    }
    assert used == role_grants()


async def test_a_chunk_uploads_only_its_images_and_invokes_on_them(
    make_backend: BackendFactory,
) -> None:
    """Share mode: a chunk crosses the uplink as a package of its own images, and the
    function's indices (within that part) come back as the batch package's."""
    from stoic.storage.package import PackageWriter, iter_package, part_key

    buf = io.BytesIO()
    with PackageWriter(buf) as w:
        for i in range(10):
            w.add_bytes(f"img{i}.jpg", bytes([i]) * 100)
    edge, cloud = FakeStore({"packages/b1.tar": buf.getvalue()}), FakeStore()
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        results = [
            {"name": f"img{i}.jpg", "index": i, "label": "deer"}
            for i in range(body["start"], body["stop"])
        ]
        return httpx.Response(200, json={"results": results, "timings": {}})

    backend = make_backend(
        stores=(edge, cloud), invoke_via="dns", http_transport=httpx.MockTransport(handler)
    )
    job = Job("b1", n_images=10, n_bytes=1000, package_key="packages/b1.tar").chunk(6, 10)
    up = await backend.upload(CPU, job)
    assert up.ref == part_key("packages/b1.tar", 6, 10) and up.subset == (6, 10)
    names = [n for n, _ in iter_package(io.BytesIO(cloud.objects[up.ref]))]
    assert names == ["img6.jpg", "img7.jpg", "img8.jpg", "img9.jpg"]
    assert list(cloud.objects) == [up.ref]  # not the whole package
    # Invoke on part of it (a partial steal left [8, 10) to this pod).
    inv = await backend.invoke(deployment_for(backend, CPU), job.chunk(8, 10), up)
    assert (seen[-1]["package"], seen[-1]["start"], seen[-1]["stop"]) == (up.ref, 2, 4)
    assert [r["index"] for r in inv.results] == [8, 9]
